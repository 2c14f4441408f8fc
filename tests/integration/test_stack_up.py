"""``python -m stack up`` brings the whole stack up on its own ports, ``down`` leaves nothing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from stack import daemons, probes
from stack.cgroups import StackCgroups
from stack.settings import StackSettings
from tests.support.procs import free_port, wait_until
from tests.support.services import reachable_tmp_dir

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
_STACK_CLI_TIMEOUT_S = 300.0
_BOTH_INSTANCES_TIMEOUT_S = 20.0
_SERVICES = {
    "postgres",
    "memcached",
    "payment-processor-default",
    "payment-processor-fallback",
    "app1",
    "app2",
    "worker1",
    "worker2",
    "nginx",
}


def _stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stack", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=_STACK_CLI_TIMEOUT_S,
        check=False,
    )


def _session_members(leaders: set[int]) -> dict[int, int]:
    """Every process in the sessions the stack's services lead: pid -> start time."""
    members = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) in leaders:  # field 6, the session id
            members[int(entry.name)] = int(fields[19])
    return members


def _still_running(members: dict[int, int]) -> list[int]:
    left = []
    for pid, ticks in members.items():
        record = daemons.PidRecord("", pid, ticks, 0, 0, "", [])
        if record.alive():
            left.append(pid)
    return left


@pytest.mark.skipif(
    not (ROOT / "runtime" / "__main__.py").exists(), reason="the runtime is not written yet"
)
def test_stack_up_serves_both_instances_through_nginx_and_down_stops_every_process() -> None:
    # Below a 0700 folder, like a checkout in root's home: sockets and data must move out.
    private = Path(tempfile.mkdtemp(prefix="rinha-private-"))
    stack_dir = private / "stack"
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PAYMENT_PROCESSOR_URL_DEFAULT", "PAYMENT_PROCESSOR_URL_FALLBACK")
    }
    env.update(
        STACK_DIR=str(stack_dir),
        STACK_PORT=str(port),
        STACK_PG_PORT=str(free_port()),
        STACK_MEMCACHED_PORT=str(free_port()),
        STACK_DEFAULT_PORT=str(free_port()),
        STACK_FALLBACK_PORT=str(free_port()),
    )
    pids_dir = stack_dir / "pids"
    reachable = StackSettings.from_env(env).reachable_dir
    assert reachable != stack_dir
    members: dict[int, int] = {}
    try:
        up = _stack("up", env)
        records = daemons.read_records(pids_dir)
        members = _session_members({record.pid for record in records})
        assert up.returncode == 0, up.stdout + up.stderr
        assert {record.name for record in records} == _SERVICES
        assert f"http://127.0.0.1:{port}" in up.stdout

        seen: set[str] = set()

        def both_instances_answered() -> bool:
            status, body = probes.http_get(port, "/health")
            if status == 200:
                seen.add(json.loads(body)["instance"])
            return seen >= {"app1", "app2"}

        wait_until(
            both_instances_answered,
            timeout_s=_BOTH_INSTANCES_TIMEOUT_S,
            what="GET /health through Nginx answered by app1 and app2",
        )

        again = _stack("up", env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stdout
        assert {record.pid for record in daemons.read_records(pids_dir)} == {
            record.pid for record in records
        }
    finally:
        down = _stack("down", env)
    try:
        assert down.returncode == 0, down.stdout + down.stderr
        # The supervisors' children (server, workers) are in the same sessions: all must end.
        wait_until(lambda: not _still_running(members), timeout_s=10, what="every process gone")
        assert not list(pids_dir.glob("*.pid"))
        assert StackCgroups.load(pids_dir) is None
    finally:
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(reachable, ignore_errors=True)


def test_stack_up_refuses_a_taken_port_and_starts_nothing() -> None:
    stack_dir = reachable_tmp_dir("rinha-stack-")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env = {
            **os.environ,
            "STACK_DIR": str(stack_dir),
            "STACK_PORT": str(holder.getsockname()[1]),
            "STACK_PG_PORT": str(free_port()),
            "STACK_MEMCACHED_PORT": str(free_port()),
            "STACK_DEFAULT_PORT": str(free_port()),
            "STACK_FALLBACK_PORT": str(free_port()),
        }
        try:
            up = _stack("up", env)
            assert up.returncode == 1
            assert "STACK_PORT" in up.stdout
            assert not list((stack_dir / "pids").glob("*.pid"))
        finally:
            _stack("down", env)
            shutil.rmtree(stack_dir, ignore_errors=True)
