"""``python -m stack reload``: the running stack picks up new code and config, no request lost.

The bundle and config are checked first, as each instance would load them (its environment,
its name): a broken one is refused with its fault and nothing is signalled. Then one instance
at a time, its HTTP and workers supervisors get SIGHUP (``runtime.supervisor`` says what that
does) and the next waits until both run the new code, ``GET /health`` answers 200 on its
socket, and Nginx's ``fail_timeout`` has passed (Nginx takes back an instance it saw refuse
only then). Nginx sends the requests of an instance between two servers to the other one; the
journals and payments in flight are not touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from runtime.supervisor import unit_name
from stack import daemons, nginx, probes
from stack.services import APP_INSTANCES, WORKER_SERVICES, Layout, app_env
from stack.settings import StackSettings

_CHECK_TIMEOUT_S = 120.0
_RELOAD_TIMEOUT_S = 90.0
_POLL_S = 0.05
_SETTLE_MARGIN_S = 0.5


class ReloadError(RuntimeError):
    """The reload stopped; the message says where and why."""


def check(settings: StackSettings, instance: str) -> None:
    """``runtime check`` as ``instance`` would run it.

    Raises:
        ReloadError: the bundle or config does not check (its fault in the message).
    """
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "check", "--instance", instance],
        cwd=settings.root,
        env={**os.environ, **app_env(Layout(settings), instance)},
        capture_output=True,
        text=True,
        timeout=_CHECK_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        fault = (done.stderr.strip() or done.stdout.strip()) or f"exit {done.returncode}"
        raise ReloadError(f"refused, nothing reloaded: {fault}")


def _ready_stamp(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def reload(settings: StackSettings, out: TextIO = sys.stdout) -> int:
    """Check, then reload each instance in turn; returns the exit status."""
    layout = Layout(settings)
    records = {r.name: r for r in daemons.read_records(settings.pids_dir) if r.alive()}
    services = [(instance, "http", instance) for instance in APP_INSTANCES]
    services += [(instance, "workers", name) for name, instance in WORKER_SERVICES.items()]
    missing = [name for _, _, name in services if name not in records]
    if missing:
        print(f"error: not running: {', '.join(missing)}; start the stack first", file=out)
        return 1
    started = time.monotonic()
    try:
        for instance in APP_INSTANCES:
            check(settings, instance)
        print("checked: the bundle and config load for every instance", file=out)
        for instance in APP_INSTANCES:
            took = _reload_instance(layout, instance, records)
            print(f"  {instance}: new code serving in {took:.1f} s", file=out)
    except (ReloadError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=out)
        return 1
    print(f"reloaded in {time.monotonic() - started:.1f} s", file=out)
    return 0


def reload_supervisors(
    supervisors: dict[str, tuple[int, Path]],
    healthy: Callable[[], bool],
    *,
    alive: Callable[[str], bool] | None = None,
    timeout_s: float = _RELOAD_TIMEOUT_S,
    settle_s: float = 0.0,
) -> float:
    """SIGHUP to each supervisor (name -> its pid and its ready file); returns once every
    ready file says it runs the new code and ``healthy()``, and ``settle_s`` more: Nginx
    leaves an instance it saw refuse out for its ``fail_timeout``, and the next instance may
    go only once this one is back in (else both are out, and Nginx answers 502).

    Raises:
        ReloadError: one exited (``alive``) or did not come back in time.
    """
    before = {name: _ready_stamp(path) for name, (_, path) in supervisors.items()}
    started = time.monotonic()
    for pid, _ in supervisors.values():
        os.kill(pid, signal.SIGHUP)
    deadline = started + timeout_s
    pending = dict(supervisors)
    while pending or not healthy():
        for name, (_, path) in list(pending.items()):
            stamp = _ready_stamp(path)
            if stamp is not None and stamp != before[name]:
                del pending[name]
            elif alive is not None and not alive(name):
                raise ReloadError(f"{name} exited while reloading")
        if time.monotonic() > deadline:
            waiting = ", ".join(pending) or "its health"
            raise ReloadError(f"{waiting} not back within {timeout_s:.0f} s")
        time.sleep(_POLL_S)
    took = time.monotonic() - started
    time.sleep(settle_s)
    return took


def _reload_instance(layout: Layout, instance: str, records: dict[str, daemons.PidRecord]) -> float:
    """Both of ``instance``'s supervisors; returns once they run the new code and its socket
    answers ``/health``."""
    state_dir = layout.state_dir(instance)
    worker = next(name for name, of in WORKER_SERVICES.items() if of == instance)
    supervisors = {
        instance: (records[instance].pid, state_dir / f"{unit_name(instance, 'http')}.ready"),
        worker: (records[worker].pid, state_dir / f"{unit_name(instance, 'workers')}.ready"),
    }
    socket = str(layout.socket(instance))
    try:
        return reload_supervisors(
            supervisors,
            lambda: probes.answers_200(lambda: probes.unix_http_get(socket, "/health")),
            alive=lambda name: records[name].alive(),
            settle_s=nginx.fail_timeout_s() + _SETTLE_MARGIN_S,
        )
    except ReloadError as exc:
        logs = "\n".join(
            f"{name}: {records[name].log}\n{daemons.log_tail(records[name].log)}"
            for name in supervisors
        )
        raise ReloadError(f"{instance}: {exc}; the rest was not reloaded\n{logs}") from None
