"""The design floor: our Nginx config in front of two bjoern servers running a Falcon hello-world.

The floor (``floor.py``) is what the machine allows: Nginx answering by itself. A backend of
our design cannot beat the same Nginx config proxying to two bjoern processes that answer at
once (``hello_app.py``), under the app1, app2 and nginx limits. Our p99 over this one is what
our own code adds (intake, journal, forwarding); its p99 over the floor is what the design
itself costs (the proxy hop, Python, bjoern).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from stack import daemons, nginx
from stack.bench import floor
from stack.cgroups import StackCgroups, Usage
from stack.probes import answers_200, tcp_open, unix_http_get
from stack.settings import PROJECT_ROOT

APP_SERVICES = ("app1", "app2")
SERVICES = (*APP_SERVICES, "nginx")
_READY_TIMEOUT_S = 20.0


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


@contextlib.contextmanager
def design_floor(dir: Path) -> Iterator[DesignFloor]:
    """Run the design floor under the compose limits of app1, app2 and nginx until the block
    ends. The processes are started, awaited and stopped by the stack's own ``daemons`` (pid
    files in ``dir``), and the cgroups are removed afterwards."""
    dir.mkdir(parents=True, exist_ok=True)
    joins, cgroups, why_not = floor.limit_services(dir, list(SERVICES))
    if why_not:
        print(f"bench: the design floor runs WITHOUT limits: {why_not}", flush=True)
    port = floor.free_port()
    sockets = [dir / f"{service}.sock" for service in APP_SERVICES]
    started: list[tuple[subprocess.Popen, daemons.PidRecord]] = []
    result = DesignFloor(url=f"http://127.0.0.1:{port}", cgroups=cgroups)

    def start(service: str, argv: list[str], stop_signal: int, ready: Callable[[], bool]) -> None:
        proc, record = daemons.spawn(
            service,
            floor.limited_argv(joins.get(service, []), argv),
            order=len(started),
            env=os.environ,
            cwd=PROJECT_ROOT,
            log_path=dir / f"{service}.out",
            pid_path=dir / f"{service}.pid",
            stop_signal=stop_signal,
        )
        started.append((proc, record))
        daemons.wait_ready(proc, record, ready, _READY_TIMEOUT_S)

    try:
        for service, path in zip(APP_SERVICES, sockets, strict=True):
            start(
                service,
                [sys.executable, "-m", "stack.bench.hello_app", f"unix:{path}"],
                signal.SIGINT,  # bjoern's graceful stop
                partial(_answers, path),
            )
        conf = nginx.write_config(sockets, port, dir / "nginx")
        start("nginx", nginx.argv(conf, dir / "nginx"), signal.SIGQUIT, partial(tcp_open, port))
        yield result
    finally:
        result.usage = result.usage_now()
        for proc, record in reversed(started):
            daemons.stop(record)
            proc.wait(timeout=daemons.STOP_TIMEOUT_S)  # reap it: no zombie left behind
        if cgroups is not None:
            for problem in cgroups.remove(list(SERVICES)):
                print(f"bench: could not remove cgroup {problem}", flush=True)


def _answers(socket_path: Path) -> bool:
    """Whether the hello-world on ``socket_path`` answers HTTP."""
    return answers_200(lambda: unix_http_get(str(socket_path), "/payments-summary"))
