"""Background processes that outlive ``python -m stack up``, tracked by pid files.

A pid file records the pid with the process's start time (from ``/proc``), so ``down`` never
signals an unrelated process that reused the pid. Each service starts in its own session, and
is its own process group, so a SIGKILL after the grace period also reaches what it forked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

_POLL_INTERVAL_S = 0.05
STOP_TIMEOUT_S = 10.0
_TAIL_BYTES = 4000


class StartError(RuntimeError):
    """A service did not come up; the message holds its log's tail."""


@dataclass(frozen=True)
class PidRecord:
    """One started service, as its pid file holds it."""

    name: str
    pid: int
    start_ticks: int
    order: int
    """Start position: ``down`` stops in the reverse order."""
    stop_signal: int
    log: str
    argv: list[str]

    def alive(self) -> bool:
        """Whether this very process (same pid, same start time) still runs."""
        return _start_ticks(self.pid) == self.start_ticks


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    order: int,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    pid_path: Path,
    stop_signal: int = signal.SIGTERM,
) -> tuple[subprocess.Popen, PidRecord]:
    """Start ``argv`` detached, output to ``log_path``, and write its pid file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    record = PidRecord(
        name=name,
        pid=proc.pid,
        start_ticks=_start_ticks(proc.pid) or 0,
        order=order,
        stop_signal=int(stop_signal),
        log=str(log_path),
        argv=list(argv),
    )
    tmp = pid_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(pid_path)
    return proc, record


def wait_ready(
    proc: subprocess.Popen, record: PidRecord, ready: Callable[[], bool], timeout_s: float
) -> None:
    """Poll ``ready`` until it holds; fail at once if the process exits, or at the deadline.

    Raises:
        StartError: with the exit status or the timeout, and the log's tail.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise StartError(f"{record.name} exited with status {code}\n{log_tail(record.log)}")
        if ready():
            return
        if time.monotonic() >= deadline:
            raise StartError(
                f"{record.name} did not answer within {timeout_s:.0f} s\n{log_tail(record.log)}"
            )
        time.sleep(_POLL_INTERVAL_S)


def read_records(pids_dir: Path) -> list[PidRecord]:
    """Every pid file in ``pids_dir``, in start order; unreadable files are skipped."""
    records = []
    for path in pids_dir.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            records.append(PidRecord(**json.loads(path.read_text())))
    return sorted(records, key=lambda record: record.order)


def stop(record: PidRecord, *, timeout_s: float = STOP_TIMEOUT_S) -> str:
    """Stop one service: its stop signal, a bounded wait, then SIGKILL to its process group.

    Returns what happened: ``"not running"``, ``"stopped"`` or ``"killed"``.
    """
    if not record.alive():
        return "not running"
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, record.stop_signal)
    if _wait_gone(record, timeout_s):
        return "stopped"
    # We made it a session (and group) leader at spawn, so its group is ours to end.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    _wait_gone(record, timeout_s)
    return "killed"


def log_tail(path: str | Path, size: int = _TAIL_BYTES) -> str:
    """The end of a log file, for error messages."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - size))
            text = log.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path} ---\n{text.rstrip()}"


def _wait_gone(record: PidRecord, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while record.alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL_S)
    return True


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks, or ``None`` if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])
