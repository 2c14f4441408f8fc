"""The supervisor's promise about its children, with real processes.

A supervisor that dies must not leave children behind: an orphaned forwarder would keep its
journal locked, and the instance started after it could never forward its own payments.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from emulator.processors import Processors
from stack.memcached import MemcachedServer
from stack.postgres import PostgresServer
from tests.support.backend import running_backend
from tests.support.procs import wait_until

pytestmark = pytest.mark.integration

_ROUNDS = 3


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return False


@pytest.mark.parametrize("round_number", range(_ROUNDS))
def test_every_child_exits_when_its_supervisor_is_killed(
    round_number: int,
    reachable_tmp_path: Path,
    postgres: PostgresServer,
    memcached: MemcachedServer,
    emulators: Processors,
) -> None:
    env = {"APP__MEMCACHED__KEY_PREFIX": f"sup{uuid.uuid4().hex[:8]}:"}
    with running_backend(
        reachable_tmp_path, postgres, memcached, emulators, env=env, instances=("app1",)
    ) as backend:
        children = backend.child_pids("app1")
        assert {"http", "forwarder-0", "health_poller"} <= set(children)
        # Let the workers settle into their idle waits, where a stop signal used to deadlock.
        time.sleep(0.2 * (round_number + 1))
        backend.supervisors["app1"].send_signal(signal.SIGKILL)
        wait_until(
            lambda: not any(_alive(pid) for pid in children.values()),
            timeout_s=10,
            what=f"children {sorted(children.values())} gone after their supervisor died",
        )
