"""``python -m runtime check``: a bad bundle or config exits 2 with one line saying what to fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.errors import ManifestError
from runtime.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "tests" / "bundles"
_CHECK_TIMEOUT_S = 60.0


def check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the check from tmp_path with a config file there and ``env`` on top."""
    config = tmp_path / "app.yaml"
    config.write_text("instance: checker\n")
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("APP__") and key not in ("APP_CONFIG", "PROMETHEUS_MULTIPROC_DIR")
    }
    environ.update(
        PYTHONPATH=str(ROOT),
        APP_CONFIG=str(config),
        APP__METRICS_DIR=str(tmp_path / "metrics"),
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "runtime", "check"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environ,
        timeout=_CHECK_TIMEOUT_S,
    )


@pytest.mark.parametrize("bundle", ["syntax_error", "import_error", "duplicate_route"])
def test_check_with_a_broken_bundle_exits_2_with_the_message_on_stderr(
    tmp_path: Path, bundle: str
) -> None:
    manifest = BUNDLES / bundle / "functions.yaml"
    with pytest.raises(ManifestError) as expected:
        load_manifest(manifest)

    result = check(tmp_path, APP__MANIFEST=str(manifest))

    assert result.returncode == 2
    assert result.stderr == f"error: {expected.value}\n"
    assert result.stdout == ""


def test_check_with_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    result = check(tmp_path, APP__QUEUE__SEGMENT_MAX_BYTES="1024")

    assert result.returncode == 2
    assert result.stderr == "error: queue.segment_max_bytes: expected at least 4096\n"


def test_check_with_the_projects_own_bundle_exits_0(tmp_path: Path) -> None:
    manifest = ROOT / "functions.yaml"
    count = len(load_manifest(manifest).functions)

    result = check(tmp_path, APP__MANIFEST=str(manifest))

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok: {count} functions in {manifest}, config valid\n"
