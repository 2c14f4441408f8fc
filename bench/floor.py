"""The floor: the same load test against an Nginx alone that answers everything at once.

No backend can answer faster than the Nginx in front of it, so the p99 this Nginx reaches,
under the same cgroup limits and worker settings, on the same machine, with the same k6,
is the best p99 this machine allows. Our p99 divided by it says how much our own code adds.
The processors' admin URLs point here too: the setup, stage and consistency calls get the
answers the script expects (204 for the token, zero summaries) without any emulator running.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stack import compose, nginx
from stack.cgroups import CgroupsUnavailable, StackCgroups, Usage
from stack.probes import tcp_open
from stack.settings import PROJECT_ROOT

_READY_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.05
_HTTP_BLOCK_RE = re.compile(r"^\s*http\s*\{", re.MULTILINE)
# Main-context lines the floor sets itself: its own files, and no user switch.
_OWN_DIRECTIVE_RE = re.compile(r"^\s*(pid|error_log|user|daemon|include)\b[^;]*;\s*$", re.MULTILINE)
_COMMENT_RE = re.compile(r"^\s*#.*\n", re.MULTILINE)
_DEFAULT_MAIN = "worker_processes 1;\nevents {\n    worker_connections 4096;\n}\n"

BACKEND_SUMMARY = (
    '{"default":{"totalRequests":0,"totalAmount":0},"fallback":{"totalRequests":0,"totalAmount":0}}'
)
PROCESSOR_SUMMARY = '{"totalRequests":0,"totalAmount":0,"totalFee":0,"feePerTransaction":0}'


def main_context(template: str | None) -> str:
    """The part of the stack's nginx.conf before ``http {``: worker and event settings.

    Taking it from the stack's own config keeps the floor's Nginx the same as ours (worker
    count, connections, epoll), which is what makes the ratio fair.
    """
    if not template:
        return _DEFAULT_MAIN
    match = _HTTP_BLOCK_RE.search(template)
    head = template[: match.start()] if match else ""
    head = _OWN_DIRECTIVE_RE.sub("", _COMMENT_RE.sub("", head)).strip()
    return head + "\n" if "events" in head else _DEFAULT_MAIN


def floor_config(
    port: int, dir: Path, template: str | None = None, extra_ports: tuple[int, ...] = ()
) -> str:
    """An nginx.conf answering the backend's and the processors' endpoints with fixed bodies
    (on ``extra_ports`` too: the contest's scripts call the processors on ports of their own)."""
    extra = "".join(f"        listen 127.0.0.1:{p} backlog=4096;\n" for p in extra_ports)
    return f"""# The benchmark's floor: Nginx alone, answering every endpoint at once.
{main_context(template)}pid {dir / "nginx.pid"};
error_log {dir / "error.log"} warn;

http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {dir / "tmp"};
    default_type application/json;

    server {{
        listen 127.0.0.1:{port} backlog=4096;
{extra}
        location = /admin/configurations/token {{ return 204; }}
        location = /admin/payments-summary {{ return 200 '{PROCESSOR_SUMMARY}'; }}
        location = /payments-summary {{ return 200 '{BACKEND_SUMMARY}'; }}
        location / {{ return 200 '{{}}'; }}
    }}
}}
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class FloorNginx:
    """A running floor Nginx: its URL, and its usage once stopped (``None`` if unlimited)."""

    url: str
    usage: Usage | None = None
    limited: bool = False


def limit_services(
    dir: Path, services: list[str]
) -> tuple[dict[str, list[str]], StackCgroups | None, str]:
    """Cgroup folders to join for each service's compose limits, or why there are none.

    Uses the stack's own cgroup code, so a floor's processes are limited exactly like ours;
    where cgroups cannot be had the floor still runs, unlimited, and the caller says so.
    """
    try:
        limits = compose.service_limits(compose.load(PROJECT_ROOT / "docker-compose.yml"))
        missing = [service for service in services if service not in limits]
        if missing:
            return {}, None, f"docker-compose.yml has no service {missing[0]!r}"
        cgroups = StackCgroups.locate(dir)
        joins = {
            service: [str(path) for path in cgroups.create(service, limits[service])]
            for service in services
        }
    except (CgroupsUnavailable, compose.ComposeError) as exc:
        return {}, None, str(exc)
    return joins, cgroups, ""


def limited_argv(joins: list[str], argv: list[str]) -> list[str]:
    """``argv`` run inside the cgroup folders ``joins`` (as it is when there are none)."""
    if not joins:
        return argv
    return [sys.executable, "-m", "stack.cgexec", *(f"--join={j}" for j in joins), "--", *argv]


@contextlib.contextmanager
def floor_nginx(
    dir: Path,
    *,
    service: str = "nginx",
    template: Path | None = None,
    ports: tuple[int, ...] = (),
) -> Iterator[FloorNginx]:
    """Run the floor Nginx under ``service``'s compose limits until the block ends.

    Nginx is started by us and stopped by its pid (SIGQUIT, then SIGKILL after a bound);
    its cgroups are read for usage and removed afterwards.
    """
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "tmp").mkdir(exist_ok=True)
    port = ports[0] if ports else free_port()
    text = template.read_text() if template and template.is_file() else None
    conf = dir / "nginx.conf"
    conf.write_text(floor_config(port, dir, text, tuple(ports[1:])))
    joined, cgroups, why_not = limit_services(dir, [service])
    joins = joined.get(service, [])
    if why_not:
        print(f"bench: floor Nginx runs WITHOUT limits: {why_not}", flush=True)
    argv = limited_argv(joins, nginx.argv(conf, dir))
    floor = FloorNginx(url=f"http://127.0.0.1:{port}", limited=bool(joins))
    with open(dir / "nginx.out", "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while not tcp_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (dir / "nginx.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the floor Nginx did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(_POLL_INTERVAL_S)
        yield floor
    finally:
        if cgroups is not None:
            floor.usage = cgroups.usage(service)
        _stop(proc)
        if cgroups is not None:
            for problem in cgroups.remove([service]):
                print(f"bench: could not remove cgroup {problem}", flush=True)


def _stop(proc: subprocess.Popen) -> None:
    """Graceful stop for Nginx is SIGQUIT; kill it after a bound so nothing is left behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # Its own session: the group is the master and the workers it forked, all ours.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=_STOP_TIMEOUT_S)
