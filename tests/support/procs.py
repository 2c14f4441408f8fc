"""Start and stop real server processes for tests, with bounded readiness polls."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

_READY_TIMEOUT_S = 20.0
_POLL_INTERVAL_S = 0.05
_STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    check: Callable[[], bool], *, timeout_s: float = _READY_TIMEOUT_S, what: str = "condition"
) -> None:
    """Poll ``check`` until it returns true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # a not-yet-ready server raises; keep polling
            last_error = exc
        time.sleep(_POLL_INTERVAL_S)
    raise TimeoutError(f"{what} not reached within {timeout_s:.0f} s (last error: {last_error!r})")


def http_ok(url: str, *, timeout_s: float = 1.0) -> bool:
    """Whether ``url`` answers with any HTTP status below 500."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connect to ``host:port`` succeeds."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def unix_socket_open(path: str | Path) -> bool:
    """Whether a connect to the unix socket at ``path`` succeeds."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(0.5)
        sock.connect(str(path))
        return True
    return False


def stop(proc: subprocess.Popen, *, sig: int = signal.SIGTERM) -> None:
    """Send ``sig``, wait a bounded time, then SIGKILL; never leaves a zombie."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=_STOP_TIMEOUT_S)


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    ready: Callable[[], bool],
    what: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    user: str | None = None,
) -> Iterator[subprocess.Popen]:
    """Run ``argv`` until the block ends; yield once ``ready()`` holds.

    The process's output goes to ``log_path`` so a failed readiness poll can show it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            user=user,
            start_new_session=True,
        )
    try:
        try:
            wait_until(lambda: proc.poll() is None and ready(), what=what)
        except TimeoutError as exc:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise TimeoutError(f"{exc}; exit code {proc.poll()}; log tail:\n{tail}") from None
        yield proc
    finally:
        stop(proc)
