"""Shared pieces of the functional tier: a config in tmp_path, a clock, multiprocess metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.config import RuntimeConfig
from runtime.metrics import ENV_MULTIPROC_DIR, ENV_PROCESS_ID, enable_multiprocess
from runtime.schema import build
from tests.functional.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config_data(tmp_path: Path) -> dict[str, Any]:
    """A config file's content with every path under tmp_path and quick queue polls."""
    return {
        "instance": "test1",
        "state_dir": str(tmp_path / "var"),
        "metrics_dir": str(tmp_path / "metrics"),
        "queue": {"dir": str(tmp_path / "queue"), "poll_interval_ms": 1, "commit_interval_ms": 5},
    }


@pytest.fixture
def config(config_data: dict[str, Any]) -> RuntimeConfig:
    """The runtime's config from ``config_data``."""
    return build(RuntimeConfig, config_data)


@pytest.fixture
def multiprocess_metrics(config: RuntimeConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Metrics in multiprocess mode, in this test's own folder; undone afterwards.

    ``enable_multiprocess`` swaps prometheus_client's value class even when another test has
    imported prometheus_client already (metrics look the class up on each creation), so each
    test gets fresh files. The environment and the value class are restored at teardown.
    """
    from prometheus_client import values

    from runtime import metrics

    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    # This test's buffered figures write to this test's files: forgotten with them.
    monkeypatch.setattr(metrics, "_FLUSHES", [])
    monkeypatch.setenv(ENV_MULTIPROC_DIR, "")
    monkeypatch.setenv(ENV_PROCESS_ID, "")
    metrics_dir = Path(config.metrics_dir)
    enable_multiprocess(metrics_dir, config.instance)
    assert values.ValueClass._multiprocess
    yield metrics_dir
    values.close_all_multiprocess_files()
