"""The stack's STACK_* variables: defaults, overrides and messages naming the variable."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from stack.settings import SettingsError, StackSettings

ROOT = Path("/project")


def test_defaults_put_the_stack_under_var_stack_on_port_9999() -> None:
    settings = StackSettings.from_env({}, root=ROOT)
    assert settings.dir == ROOT / "var" / "stack"
    assert settings.url == "http://127.0.0.1:9999"
    assert (settings.default_fee, settings.fallback_fee) == (0.05, 0.15)
    assert settings.processor_urls() == ("http://127.0.0.1:8001", "http://127.0.0.1:8002")
    assert settings.emulated and settings.limits


def test_every_port_and_the_fees_can_be_moved() -> None:
    settings = StackSettings.from_env(
        {
            "STACK_DIR": "/tmp/other",
            "STACK_PORT": "19999",
            "STACK_PG_PORT": "15432",
            "STACK_MEMCACHED_PORT": "21212",
            "STACK_DEFAULT_PORT": "18001",
            "STACK_FALLBACK_PORT": "18002",
            "STACK_FEES": "0.07,0.10",
            "STACK_LIMITS": "0",
        },
        root=ROOT,
    )
    assert settings.dir == Path("/tmp/other")
    assert (settings.port, settings.pg_port, settings.memcached_port) == (19999, 15432, 21212)
    assert settings.processor_urls() == ("http://127.0.0.1:18001", "http://127.0.0.1:18002")
    assert (settings.default_fee, settings.fallback_fee) == (0.07, 0.10)
    assert not settings.limits


def test_real_processor_urls_mean_no_emulators() -> None:
    settings = StackSettings.from_env(
        {
            "PAYMENT_PROCESSOR_URL_DEFAULT": "http://127.0.0.1:8001",
            "PAYMENT_PROCESSOR_URL_FALLBACK": "http://127.0.0.1:8002",
        },
        root=ROOT,
    )
    assert not settings.emulated


def test_the_queue_may_get_a_small_disk_of_its_own() -> None:
    assert StackSettings.from_env({}, root=ROOT).queue_tmpfs_mb == 0
    assert StackSettings.from_env({"STACK_QUEUE_TMPFS_MB": "16"}, root=ROOT).queue_tmpfs_mb == 16


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STACK_PORT", "http"),
        ("STACK_PG_PORT", "70000"),
        ("STACK_FEES", "0.07"),
        ("STACK_FEES", "7,10"),
        ("STACK_LIMITS", "maybe"),
        ("STACK_QUEUE_TMPFS_MB", "16MB"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        StackSettings.from_env({name: value}, root=ROOT)


def test_a_stack_folder_others_can_reach_keeps_everything() -> None:
    open_dir = Path(tempfile.mkdtemp(prefix="rinha-open-"))
    try:
        open_dir.chmod(0o755)
        settings = StackSettings.from_env({"STACK_DIR": str(open_dir / "stack")}, root=ROOT)
        assert settings.reachable_dir == open_dir / "stack"
        assert settings.run_dir == open_dir / "stack" / "run"
    finally:
        open_dir.rmdir()


def test_a_stack_folder_below_a_private_one_moves_sockets_and_data_out(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    settings = StackSettings.from_env({"STACK_DIR": str(private / "stack")}, root=ROOT)
    assert settings.reachable_dir.parent == Path("/var/tmp")
    assert settings.run_dir == settings.reachable_dir / "run"
    assert settings.postgres_dir == settings.reachable_dir / "postgres"
    assert settings.logs_dir == private / "stack" / "logs"
