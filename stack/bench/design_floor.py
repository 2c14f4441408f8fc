"""The design floor: our Nginx config in front of two bjoern servers running a Falcon hello-world.

The floor (``floor.py``) is what the machine allows: Nginx answering by itself. A backend of
our design cannot beat the same Nginx config proxying to two bjoern processes that answer at
once (``hello_app.py``), under the app1, app2 and nginx limits. Our p99 over this one is what
our own code adds (intake, journal, forwarding); its p99 over the floor is what the design
itself costs (the proxy hop, Python, bjoern).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stack import nginx
from stack.bench import floor
from stack.cgroups import StackCgroups, Usage
from stack.settings import PROJECT_ROOT

APP_SERVICES = ("app1", "app2")
SERVICES = (*APP_SERVICES, "nginx")
_READY_TIMEOUT_S = 20.0
_POLL_INTERVAL_S = 0.05


@dataclass
class DesignFloor:
    """A running design floor: its URL, and each service's usage once stopped."""

    url: str
    usage: dict[str, Usage] = field(default_factory=dict)
    cgroups: StackCgroups | None = None

    def usage_now(self) -> dict[str, Usage]:
        """Each service's usage so far (none without cgroups): read before the test, it lets
        the start-up be left out."""
        if self.cgroups is None:
            return {}
        return {service: self.cgroups.usage(service) for service in SERVICES}


def socket_accepts(path: Path) -> bool:
    """Whether a server accepts connections on the unix socket ``path``."""
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
    ):
        sock.settimeout(0.5)
        sock.connect(str(path))
        return True
    return False


def _start(argv: list[str], dir: Path, service: str) -> subprocess.Popen:
    """Start one service in its own session, its output in ``dir/<service>.out``."""
    with open(dir / f"{service}.out", "ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, start_new_session=True
        )


def _wait_until(ready: Callable[[], bool], procs: list[subprocess.Popen], dir: Path) -> None:
    """Return once ``ready()``; raise with the services' output if one exits or time runs out."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while not ready():
        if any(proc.poll() is not None for proc in procs) or time.monotonic() > deadline:
            outputs = "".join(
                f"--- {out.name}\n{out.read_text(errors='replace')[-1000:]}"
                for out in sorted(dir.glob("*.out"))
            )
            raise RuntimeError(f"the design floor did not start:\n{outputs}")
        time.sleep(_POLL_INTERVAL_S)


@contextlib.contextmanager
def design_floor(dir: Path) -> Iterator[DesignFloor]:
    """Run the design floor under the compose limits of app1, app2 and nginx until the block
    ends; every process is ours, stopped by its pid, and the cgroups are removed afterwards."""
    dir.mkdir(parents=True, exist_ok=True)
    joins, cgroups, why_not = floor.limit_services(dir, list(SERVICES))
    if why_not:
        print(f"bench: the design floor runs WITHOUT limits: {why_not}", flush=True)
    port = floor.free_port()
    sockets = [dir / f"{service}.sock" for service in APP_SERVICES]
    procs: list[tuple[subprocess.Popen, signal.Signals]] = []
    result = DesignFloor(url=f"http://127.0.0.1:{port}", cgroups=cgroups)
    try:
        for service, path in zip(APP_SERVICES, sockets, strict=True):
            argv = [sys.executable, "-m", "stack.bench.hello_app", f"unix:{path}"]
            limited = floor.limited_argv(joins.get(service, []), argv)
            procs.append((_start(limited, dir, service), signal.SIGINT))
        conf = nginx.write_config(sockets, port, dir / "nginx")
        limited = floor.limited_argv(joins.get("nginx", []), nginx.argv(conf, dir / "nginx"))
        procs.append((_start(limited, dir, "nginx"), signal.SIGQUIT))
        _wait_until(
            lambda: all(socket_accepts(path) for path in sockets) and floor.port_open(port),
            [proc for proc, _ in procs],
            dir,
        )
        yield result
    finally:
        result.usage = result.usage_now()
        for proc, graceful in reversed(procs):
            floor.stop(proc, graceful)
        if cgroups is not None:
            for problem in cgroups.remove(list(SERVICES)):
                print(f"bench: could not remove cgroup {problem}", flush=True)
