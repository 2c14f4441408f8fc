"""Our backend for integration tests: two real runtime instances behind a real Nginx.

Built on the session's PostgreSQL, Memcached and emulators; each test gets fresh sockets,
queue and metrics folders, so runs never see each other's journals.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.processors import Processors
from stack.memcached import MemcachedServer
from stack.postgres import PostgresServer
from tests.support.procs import free_port, running, unix_socket_open, wait_until
from tests.support.services import start_nginx

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_REQUEST_TIMEOUT_S = 5.0


@dataclass
class Backend:
    """The running backend: its URL, its processes and helpers to drive it."""

    url: str
    dir: Path
    supervisors: dict[str, subprocess.Popen] = field(default_factory=dict)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """One HTTP call through Nginx; returns status, decoded JSON (or text) and headers."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(request, timeout=_REQUEST_TIMEOUT_S) as response:
                return response.status, _decode(response.read()), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read()), dict(exc.headers)

    def pay(self, amount: str = "19.90") -> str:
        """Post one new payment; returns its id (asserts it was accepted)."""
        correlation_id = str(uuid.uuid4())
        status, body, _ = self.request(
            "POST",
            "/payments",
            f'{{"correlationId":"{correlation_id}","amount":{amount}}}'.encode(),
        )
        assert status == 202, (status, body)
        return correlation_id

    def summary(self, start: str | None = None, end: str | None = None) -> dict[str, Any]:
        """``GET /payments-summary`` with optional bounds."""
        query = ""
        if start or end:
            query = "?" + "&".join(
                f"{key}={value}" for key, value in (("from", start), ("to", end)) if value
            )
        status, body, _ = self.request("GET", "/payments-summary" + query)
        assert status == 200, (status, body)
        return body

    def child_pids(self, instance: str) -> dict[str, int]:
        """The supervisor's children by role (``http``, ``forwarder-0``...), read from its log."""
        pids: dict[str, int] = {}
        for line in (self.dir / f"{instance}.log").read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("msg") == "started" and "child" in entry:
                    pids[entry["child"]] = entry["child_pid"]
        return pids

    def log_text(self, instance: str) -> str:
        """Everything an instance has logged."""
        return (self.dir / f"{instance}.log").read_text()


@contextlib.contextmanager
def running_backend(
    work_dir: Path,
    postgres: PostgresServer,
    memcached: MemcachedServer,
    processors: Processors,
    *,
    env: dict[str, str] | None = None,
    instances: tuple[str, ...] = ("app1", "app2"),
) -> Iterator[Backend]:
    """Start ``instances`` and Nginx in front of them; stop everything afterwards.

    ``work_dir`` must be reachable by Nginx's workers (``reachable_tmp_path``).
    """
    port = free_port()
    sockets = {name: work_dir / "run" / f"{name}.sock" for name in instances}
    (work_dir / "run").mkdir(parents=True, exist_ok=True)
    (work_dir / "run").chmod(0o755)
    base_env = {
        **postgres.env(),
        **memcached.env(),
        **processors.env(),
        "APP__QUEUE__DIR": str(work_dir / "queue"),
        "APP__METRICS_DIR": str(work_dir / "metrics"),
        "APP__STATE_DIR": str(work_dir / "state"),
        "APP__MANIFEST": str(_PROJECT_ROOT / "functions.yaml"),
        "APP__MIGRATIONS": str(_PROJECT_ROOT / "migrations"),
        "APP_CONFIG": str(_PROJECT_ROOT / "config" / "app.yaml"),
        "PYTHONPATH": str(_PROJECT_ROOT),
        **(env or {}),
    }
    backend = Backend(url=f"http://127.0.0.1:{port}", dir=work_dir)
    with contextlib.ExitStack() as stack:
        for name, sock in sockets.items():
            proc = stack.enter_context(
                running(
                    [sys.executable, "-m", "runtime", "serve", "--instance", name],
                    ready=lambda sock=sock: unix_socket_open(sock),
                    what=f"runtime instance {name}",
                    log_path=work_dir / f"{name}.log",
                    env={**base_env, "APP__SERVER__BIND": f"unix:{sock}"},
                    cwd=_PROJECT_ROOT,
                )
            )
            backend.supervisors[name] = proc
        stack.enter_context(start_nginx(list(sockets.values()), port, work_dir / "nginx"))
        wait_until(lambda: backend.request("GET", "/health")[0] == 200, what="backend /health")
        yield backend


def kill_child(backend: Backend, instance: str, role: str) -> int:
    """SIGKILL one child of an instance's supervisor; returns the killed pid."""
    pid = backend.child_pids(instance)[role]
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_restarted(backend: Backend, instance: str, role: str, old_pid: int) -> int:
    """Wait until the supervisor has started ``role`` again; returns the new pid."""
    wait_until(
        lambda: backend.child_pids(instance).get(role, old_pid) != old_pid,
        what=f"{instance}/{role} restarted",
    )
    return backend.child_pids(instance)[role]


def settle(check: Any, *, timeout_s: float = 60.0, what: str = "backend settled") -> None:
    """``wait_until`` with a longer default, for payments crossing processors."""
    wait_until(check, timeout_s=timeout_s, what=what)


def now_iso(offset_s: float = 0.0) -> str:
    """UTC now (plus ``offset_s``) in the contest's format."""
    moment = time.time() + offset_s
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
        + f".{int(moment * 1000) % 1000:03d}Z"
    )


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")
