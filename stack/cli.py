"""``python -m stack up|down|status|reload|compose``: the local stack's command line.

``up`` starts every service of :func:`stack.services.plan` in order, each one only once the one
before it answers, then prints where things are and returns; ``down`` stops what ``up``
started, by pid, newest first; ``status`` says what runs and what it has used.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from stack import compose, daemons, probes, services
from stack.cgroups import CgroupsUnavailable, StackCgroups, Usage
from stack.nginx import NginxConfigError
from stack.postgres import PostgresError
from stack.settings import SettingsError, StackSettings

_LEFTOVER_KILL_WAIT_S = 5.0
_START_ERRORS = (
    daemons.StartError,
    PostgresError,
    NginxConfigError,
    CgroupsUnavailable,
    compose.ComposeError,
    OSError,
    subprocess.TimeoutExpired,
)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["compose"]:
        # The compose deployment has a command line of its own, --help included.
        from stack import deployment

        return deployment.main(args[1:])
    parser = argparse.ArgumentParser(
        prog="python -m stack", description="The local stack: up, down, status, reload, compose."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the stack (a no-op when it runs already)")
    commands.add_parser("down", help="stop the stack and remove its cgroups")
    commands.add_parser("status", help="what runs, with CPU and memory used under the limits")
    commands.add_parser(
        "reload",
        help="pick up new code and config, one instance at a time, no request refused",
    )
    commands.add_parser(
        "compose", help="docker-compose.yml for real: python -m stack compose --help"
    )
    command = parser.parse_args(args).command
    try:
        settings = StackSettings.from_env(os.environ)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command == "reload":
        from stack.reload import reload

        return reload(settings)
    return {"up": up, "down": down, "status": status}[command](settings)


def up(settings: StackSettings, out: TextIO = sys.stdout) -> int:
    """Start the stack unless it runs; 0 once every service answers, 1 on any failure."""
    _prepare_folders(settings)
    with _locked(settings) as locked:
        if not locked:
            print("another `stack up` or `stack down` is running on this folder", file=out)
            return 1
        records = daemons.read_records(settings.pids_dir)
        alive = [record for record in records if record.alive()]
        if alive:
            names = ", ".join(f"{r.name} (pid {r.pid})" for r in alive)
            if len(alive) == len(records):
                print(f"already running, nothing started: {names}", file=out)
                print(f"  {settings.url}; stop it with `make down`", file=out)
                return 0
            print(f"partly running ({names}); run `make down` first", file=out)
            return 1
        if records or StackCgroups.load(settings.pids_dir):
            _stop_all(settings, out=None)  # leftovers of a stack that died
        taken = [
            f"{what} {port}"
            for what, port in services.tcp_ports(settings).items()
            if probes.tcp_open(port)
        ]
        if taken:
            print(
                f"error: already in use on 127.0.0.1: {', '.join(taken)}; stop what "
                "listens there or choose other ports with the variables named",
                file=out,
            )
            return 1
        try:
            _mount_queue(settings)
            limits_note = _start_all(settings, out)
        except _START_ERRORS as exc:
            print(f"error: {exc}", file=out)
            print("stopping what was started...", file=out)
            _stop_all(settings, out=None)
            return 1
        except BaseException:
            # Anything unforeseen, or Ctrl-C: nothing may keep running behind the traceback.
            _stop_all(settings, out=None)
            raise
    services.write_tools_env(settings)
    _print_summary(settings, limits_note, out)
    return 0


def down(settings: StackSettings, out: TextIO = sys.stdout) -> int:
    """Stop every service ``up`` started and remove the cgroups; 1 if something remains."""
    if not settings.dir.is_dir():
        print(f"not running (no {_shown(settings.dir)})", file=out)
        return 0
    with _locked(settings) as locked:
        if not locked:
            print("another `stack up` or `stack down` is running on this folder", file=out)
            return 1
        return _stop_all(settings, out=out)


def status(settings: StackSettings, out: TextIO = sys.stdout) -> int:
    """Print each service's pid and state; 0 when all run, 1 when some, 3 when none."""
    records = daemons.read_records(settings.pids_dir)
    if not records:
        print(f"not running (no pid files in {_shown(settings.pids_dir)})", file=out)
        return 3
    loaded = StackCgroups.load(settings.pids_dir)
    print(f"{settings.url}", file=out)
    alive = 0
    for record in records:
        running = record.alive()
        alive += running
        line = f"  {record.name:<27} pid {record.pid:<7} {'up' if running else 'DOWN':<5}"
        if loaded and record.name in loaded[1]:
            line += "  " + format_usage(loaded[0].usage(record.name))
        print(line, file=out)
    if not loaded:
        print("  (no cgroup limits)", file=out)
    return 0 if alive == len(records) else 1


def format_usage(usage: Usage) -> str:
    """One line: CPU seconds, throttled periods, peak memory."""

    def num(value: float | int | None, fmt: str) -> str:
        return "?" if value is None else format(value, fmt)

    peak = None if usage.memory_peak_bytes is None else usage.memory_peak_bytes / 2**20
    return (
        f"cpu {num(usage.cpu_s, '.2f')} s, throttled {num(usage.throttled_periods, 'd')} periods"
        f" ({num(usage.throttled_s, '.2f')} s), memory peak {num(peak, '.1f')} MiB"
    )


def _start_all(settings: StackSettings, out: TextIO) -> str:
    """Start the plan in order; returns a line about the limits applied."""
    plan = services.plan(settings)
    cgroups, limits_note = _cgroups_for(settings, [s.name for s in plan if s.limited])
    limits = compose.service_limits(compose.load(settings.compose_file)) if cgroups else {}
    for order, service in enumerate(plan):
        if service.before:
            service.before()
        joins: list[Path] = []
        if cgroups and service.limited:
            if service.name not in limits:
                raise compose.ComposeError(
                    f"{settings.compose_file}: no service '{service.name}' to take limits from"
                )
            joins = cgroups.create(service.name, limits[service.name])
        print(f"starting {service.name}...", file=out, flush=True)
        proc, record = daemons.spawn(
            service.name,
            _wrapped(service.argv, joins, service.user),
            order=order,
            env={**os.environ, **service.env},
            cwd=settings.root,
            log_path=settings.logs_dir / f"{service.name}.log",
            pid_path=settings.pids_dir / f"{service.name}.pid",
            stop_signal=service.stop_signal,
        )
        daemons.wait_ready(proc, record, service.ready, service.ready_timeout_s)
        if service.after:
            service.after()
    return limits_note


def _wrapped(argv: list[str], joins: list[Path], user: str | None) -> list[str]:
    """``argv`` behind :mod:`stack.cgexec` when it must join cgroups or change user."""
    if not joins and not user:
        return argv
    wrapper = [sys.executable, "-m", "stack.cgexec"]
    for folder in joins:
        wrapper += ["--join", str(folder)]
    if user:
        wrapper += ["--user", user, "--chdir", "/"]
    return [*wrapper, "--", *argv]


def _cgroups_for(settings: StackSettings, names: list[str]) -> tuple[StackCgroups | None, str]:
    if not settings.limits:
        return None, "running without limits (STACK_LIMITS=0)"
    try:
        cgroups = StackCgroups.locate(settings.dir)
    except CgroupsUnavailable as exc:
        return None, f"running without limits: {exc}"
    cgroups.save(settings.pids_dir, names)
    return cgroups, f"limits from {_shown(settings.compose_file)} (cgroup v1): {', '.join(names)}"


def _stop_all(settings: StackSettings, *, out: TextIO | None) -> int:
    settings.tools_env_file.unlink(missing_ok=True)
    records = daemons.read_records(settings.pids_dir)
    loaded = StackCgroups.load(settings.pids_dir)
    if not records and not loaded:
        _say(out, "not running")
        return 0
    for record in reversed(records):
        result = daemons.stop(record)
        _say(out, f"{record.name}: {result}")
        (settings.pids_dir / f"{record.name}.pid").unlink(missing_ok=True)
    problems: list[str] = []
    if os.path.ismount(settings.queue_dir):
        unmounted = subprocess.run(
            ["umount", str(settings.queue_dir)], capture_output=True, text=True, check=False
        )
        if unmounted.returncode:
            problems.append(f"{settings.queue_dir} (umount: {unmounted.stderr.strip()})")
    if loaded:
        cgroups, names = loaded
        for name in names:
            _kill_leftovers(cgroups, name)
        problems = cgroups.remove(names)
        if not problems:
            StackCgroups.forget(settings.pids_dir)
    for problem in problems:
        _say(out, f"cannot remove {problem}")
    return 1 if problems else 0


def _mount_queue(settings: StackSettings) -> None:
    """Put the queue on a tmpfs of ``STACK_QUEUE_TMPFS_MB`` MiB, if asked: a disk small enough
    for the fault suite to fill."""
    size = settings.queue_tmpfs_mb
    folder = settings.queue_dir
    if not size or os.path.ismount(folder):
        return
    if os.geteuid() != 0:
        raise daemons.StartError("STACK_QUEUE_TMPFS_MB needs root (it mounts a tmpfs)")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}m,mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode:
        raise daemons.StartError(f"cannot mount a tmpfs on {folder}: {mounted.stderr.strip()}")


def _kill_leftovers(cgroups: StackCgroups, name: str) -> None:
    """SIGKILL what still sits in a service's cgroup: only our services were put there."""
    deadline = time.monotonic() + _LEFTOVER_KILL_WAIT_S
    while (pids := cgroups.pids(name)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _prepare_folders(settings: StackSettings) -> None:
    # Nginx's workers (nobody) reach the sockets and PostgreSQL (postgres) its data: 0755.
    for path in (settings.dir, settings.reachable_dir, settings.run_dir):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
    for path in (settings.logs_dir, settings.pids_dir):
        path.mkdir(exist_ok=True)
    if settings.reachable_dir != settings.dir:
        # Keep everything findable from the stack folder.
        for path in (settings.run_dir, settings.postgres_dir):
            link = settings.dir / path.name
            if not link.is_symlink() and not link.exists():
                link.symlink_to(path)


@contextlib.contextmanager
def _locked(settings: StackSettings) -> Iterator[bool]:
    """Hold the stack folder's lock for one ``up`` or ``down``; yields whether we got it."""
    settings.dir.mkdir(parents=True, exist_ok=True)
    with open(settings.dir / "stack.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _print_summary(settings: StackSettings, limits_note: str, out: TextIO) -> None:
    records = daemons.read_records(settings.pids_dir)
    default_url, fallback_url = settings.processor_urls()
    print(f"\nstack up: {settings.url}", file=out)
    for record in records:
        print(f"  {record.name:<27} pid {record.pid:<7} log {_shown(Path(record.log))}", file=out)
    print(
        f"  processors: default {default_url} (fee {settings.default_fee}), fallback "
        f"{fallback_url} (fee {settings.fallback_fee})",
        file=out,
    )
    print(
        f"  postgres: 127.0.0.1:{settings.pg_port}, user {settings.pg_user}, "
        f"database {settings.pg_database}; data in {_shown(settings.postgres_dir)}",
        file=out,
    )
    if settings.reachable_dir != settings.dir:
        print(
            f"  sockets and PostgreSQL's data are in {settings.reachable_dir}: a folder above "
            f"{_shown(settings.dir)} is closed to the postgres and nobody users",
            file=out,
        )
    if settings.queue_tmpfs_mb:
        print(
            f"  queue: {_shown(settings.queue_dir)} on a tmpfs of {settings.queue_tmpfs_mb} MiB",
            file=out,
        )
    print(f"  {limits_note}", file=out)
    print("stop it with `make down` (python -m stack down); `make status` shows usage", file=out)


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is below it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _say(out: TextIO | None, line: str) -> None:
    if out is not None:
        print(line, file=out, flush=True)
