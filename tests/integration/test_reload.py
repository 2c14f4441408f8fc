"""SIGHUP to ``runtime serve``: new config taken up under load, one instance at a time, with
nothing refused, lost or charged twice; a broken config refused while the old one serves."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.faults import config_reload_fault, healthy_through_nginx, run_scenario
from emulator.processors import Processors
from stack import nginx, probes
from stack.memcached import MemcachedServer
from stack.postgres import PostgresServer
from stack.reload import reload_supervisors
from tests.support.backend import Backend, running_backend
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
_RATE = 120.0
_SECONDS = 10.0


@pytest.fixture
def config_file(reachable_tmp_path: Path) -> Path:
    """A copy of config/app.yaml that the instances read, for the test to change."""
    path = reachable_tmp_path / "app.yaml"
    shutil.copy(ROOT / "config" / "app.yaml", path)
    path.chmod(0o600)
    return path


@pytest.fixture
def backend(
    reachable_tmp_path: Path,
    config_file: Path,
    postgres: PostgresServer,
    memcached: MemcachedServer,
    emulators: Processors,
) -> Iterator[Backend]:
    with running_backend(
        reachable_tmp_path, postgres, memcached, emulators, env={"APP_CONFIG": str(config_file)}
    ) as running:
        yield running


class _Target:
    def __init__(self, backend: Backend, processors: Processors) -> None:
        self.url = backend.url
        self.processors = processors

    def healthy(self) -> bool:
        return healthy_through_nginx(self.url)


def reload_instances(backend: Backend) -> str | None:
    """Each instance in turn, waiting for its own socket's /health before the next."""
    for name, proc in backend.supervisors.items():
        socket = str(backend.dir / "run" / f"{name}.sock")
        reload_supervisors(
            {name: (proc.pid, backend.dir / "state" / f"{name}.ready")},
            lambda socket=socket: probes.answers_200(
                lambda: probes.unix_http_get(socket, "/health")
            ),
            alive=lambda _name, proc=proc: proc.poll() is None,
            settle_s=nginx.fail_timeout_s() + 0.5,
        )
    return None


def test_a_reload_under_load_refuses_nothing_and_the_new_value_takes_effect(
    backend: Backend, config_file: Path, emulators: Processors
) -> None:
    pids = {name: proc.pid for name, proc in backend.supervisors.items()}
    fault = config_reload_fault(backend.url, config_file, lambda: reload_instances(backend))

    row = run_scenario(_Target(backend, emulators), fault, _RATE, _SECONDS)

    print(row)
    assert row.problem is None
    assert row.accepted == int(_RATE * _SECONDS)
    assert (row.refused, row.lost, row.duplicated) == (0, 0, 0), row.refused_why
    assert row.totals_equal
    # The same supervisors (a reload is not a restart), each of them reloaded twice (the
    # change, then the original put back).
    assert {name: proc.pid for name, proc in backend.supervisors.items()} == pids
    for name in pids:
        assert backend.log_text(name).count('"msg": "reloaded"') == 2


def test_a_broken_config_is_refused_and_the_running_code_keeps_serving(
    backend: Backend, config_file: Path
) -> None:
    ready = backend.dir / "state" / "app1.ready"
    stamp = ready.read_text()
    config_file.write_text(config_file.read_text().replace('"1000000.00"', '"a lot"'))
    proc = backend.supervisors["app1"]

    proc.send_signal(1)  # SIGHUP

    wait_until(lambda: "reload refused" in backend.log_text("app1"), what="reload refused")
    assert "limits.max_amount" in backend.log_text("app1")
    assert proc.poll() is None
    assert ready.read_text() == stamp
    assert backend.request("GET", "/health")[0] == 200
    assert backend.pay() is not None
