"""``python -m runtime dev``: one instance on a TCP port, reloaded when its files change.

The instance is an ordinary ``runtime serve`` (every role, instance ``dev``) with its HTTP
server on ``--host:--port``. This process only watches: it polls the files the bundle loads
(the folders its manifest references, the manifest, the config and env files, the
migrations), and on a change runs ``runtime check``. A bundle that checks is reloaded in place
(SIGHUP: the supervisor loads it, then swaps its processes); one that does not is printed
with its fault, and the last good one keeps serving until a fix arrives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import yaml

from runtime.config import ConfigSource, RuntimeConfig, read_config, runtime_config
from runtime.errors import RuntimeStartError

DEV_INSTANCE = "dev"
_POLL_S = 0.4
_SETTLE_S = 0.3
_CHECK_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 20.0
_WATCHED_SUFFIXES = (".py", ".yaml", ".yml", ".sql", ".env")


def watched_paths(config: RuntimeConfig, source: ConfigSource) -> list[Path]:
    """The files and folders whose change means a reload."""
    manifest = Path(config.manifest)
    paths = [manifest, Path(config.migrations)]
    if source.file is not None:
        paths.append(source.file.parent)
    if config.env_file:
        paths.append(Path(config.env_file))
    with contextlib.suppress(OSError, yaml.YAMLError):
        data = yaml.safe_load(manifest.read_text()) or {}
        for ref in _references(data):
            top = Path(ref.partition(":")[0]).parts[:1]
            if top:
                paths.append(manifest.parent / top[0])
    return list(dict.fromkeys(path.resolve() for path in paths))


def _references(data: dict) -> Iterator[str]:
    for entry in data.get("functions") or []:
        if isinstance(entry, dict) and isinstance(entry.get("handler"), str):
            yield entry["handler"]
    for key in ("metrics",):
        if isinstance(data.get(key), str):
            yield data[key]
    if isinstance(data.get("config"), dict) and isinstance(data["config"].get("schema"), str):
        yield data["config"]["schema"]
    for queue in (data.get("queues") or {}).values():
        if isinstance(queue, dict) and isinstance(queue.get("record"), str):
            yield queue["record"]


def snapshot(paths: list[Path]) -> dict[Path, float]:
    """Each watched file's modification time (folders walked, bytecode skipped)."""
    found: dict[Path, float] = {}
    for path in paths:
        candidates = path.rglob("*") if path.is_dir() else [path]
        for file in candidates:
            if file.suffix not in _WATCHED_SUFFIXES or "__pycache__" in file.parts:
                continue
            with contextlib.suppress(OSError):
                found[file] = file.stat().st_mtime_ns
    return found


def describe_dependencies(config: RuntimeConfig, source: ConfigSource) -> list[str]:
    """Which PostgreSQL and Memcached the instance will use, where that came from, and
    whether they answer now."""
    pg = config.postgres
    mc = config.memcached.server
    pg_where = f"{pg.host}:{pg.port}" if not pg.host.startswith("/") else f"{pg.host} ({pg.port})"
    lines = []
    for label, target, origin, up in (
        ("PostgreSQL", pg_where, source.origin("postgres.host"), _pg_answers(config)),
        ("Memcached", mc, source.origin("memcached.server"), _answers(mc)),
    ):
        state = "answers" if up else "does not answer (is the stack up? `make up`)"
        lines.append(f"  {label}: {target}, from {origin or 'the defaults'}: {state}")
    return lines


def _answers(address: str, timeout_s: float = 0.5) -> bool:
    try:
        if address.startswith("unix:"):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(timeout_s)
                sock.connect(address[len("unix:") :])
        else:
            host, _, port = address.rpartition(":")
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError):
        return False
    return True


def _pg_answers(config: RuntimeConfig) -> bool:
    pg = config.postgres
    if pg.host.startswith("/"):
        return _answers(f"unix:{pg.host}/.s.PGSQL.{pg.port}")
    return _answers(f"{pg.host}:{pg.port}")


class DevServer:
    """The ``serve`` process and what it was started with."""

    def __init__(self, argv: list[str], env: dict[str, str], out: TextIO) -> None:
        self._argv = argv
        self._env = env
        self._out = out
        self.proc: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = subprocess.Popen(self._argv, env=self._env)

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def check(config_args: list[str], env: dict[str, str]) -> str | None:
    """``runtime check`` in a fresh interpreter; ``None`` when it passes, else its fault."""
    done = subprocess.run(
        [sys.executable, "-m", "runtime", "check", *config_args],
        env=env,
        capture_output=True,
        text=True,
        timeout=_CHECK_TIMEOUT_S,
        check=False,
    )
    if done.returncode == 0:
        return None
    return (done.stderr.strip() or done.stdout.strip()) or f"exit {done.returncode}"


def run(
    *,
    config: str | None,
    instance: str | None,
    host: str,
    port: int,
    out: TextIO = sys.stdout,
    max_s: float | None = None,
) -> int:
    """Serve and reload until Ctrl-C (or ``max_s``); returns the exit status."""
    name = instance or DEV_INSTANCE
    env = {**os.environ, "APP__SERVER__BIND": f"{host}:{port}"}
    source = read_config(config, environ=env, instance=name)
    runtime = runtime_config(source)
    if _answers(f"{host}:{port}"):
        raise RuntimeStartError(f"{host}:{port} is in use; choose another --port")
    config_args = [*(["--config", config] if config else []), "--instance", name]
    server = DevServer([sys.executable, "-m", "runtime", "serve", *config_args], env, out)
    paths = watched_paths(runtime, source)
    print(f"dev: http://{host}:{port}, instance {name}, every role", file=out)
    for line in describe_dependencies(runtime, source):
        print(line, file=out)
    shown = ", ".join(_shown(path) for path in paths)
    print(f"  watching {shown}", file=out, flush=True)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        del signum, frame
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = None if max_s is None else time.monotonic() + max_s
    seen = snapshot(paths)
    fault = check(config_args, env)
    if fault:
        print(f"dev: the bundle does not check, waiting for a fix:\n  {fault}", file=out)
    else:
        server.start()
    exited_reported = False
    try:
        while not stopping and (deadline is None or time.monotonic() < deadline):
            time.sleep(_POLL_S)
            if server.proc is not None and not server.running() and not exited_reported:
                print(
                    f"dev: the instance exited ({server.proc.returncode}); waiting for a change",
                    file=out,
                    flush=True,
                )
                exited_reported = True
            now = snapshot(paths)
            if now == seen:
                continue
            time.sleep(_SETTLE_S)  # an editor's save is often several writes
            now = snapshot(paths)
            changed = sorted({*now, *seen} - {p for p in now if seen.get(p) == now[p]})
            seen = now
            print(f"dev: changed {', '.join(_shown(p) for p in changed[:5])}", file=out)
            fault = check(config_args, env)
            if fault:
                print(
                    f"dev: not reloaded, still serving the last good bundle:\n  {fault}", file=out
                )
            elif server.running():
                print("dev: reloading", file=out, flush=True)
                server.reload()
            else:
                print("dev: starting", file=out, flush=True)
                exited_reported = False
                server.start()
            out.flush()
    finally:
        server.stop()
    return 0


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)
