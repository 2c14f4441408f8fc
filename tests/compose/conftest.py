"""The compose tier: docker-compose.yml built and run for real, on a Docker engine of its own.

One deployment for the whole session (a project, a processors' network and loopback ports of
its own, so a developer's `make compose-up` is left alone), brought up by the same code as
`python -m stack compose up`. Where no engine can run here (not root, no cgroup v1, the
packages cannot be installed), every test is skipped with the reason; once the engine runs,
anything that fails (an image that does not build, a service that does not come up) fails.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from stack import engine
from stack.deployment import Deployment
from tests.support.procs import free_port

pytestmark = pytest.mark.compose


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    reason = engine.why_not()
    if reason and not engine.answers():
        pytest.skip(f"no Docker engine can run here: {reason}")
    try:
        started = engine.ensure(sys.stderr)
    except engine.EngineUnavailable as exc:
        pytest.skip(f"no Docker engine could be installed or started here: {exc}")
    tag = f"{os.getpid()}"
    deployed = Deployment(
        project=f"rinha-test-{tag}",
        port=free_port(),
        default_port=free_port(),
        fallback_port=free_port(),
        network=f"payment-processor-test-{tag}",
    )
    try:
        deployed.up(out=sys.stderr)
        yield deployed
    finally:
        deployed.down(volumes=True, out=sys.stderr)
        if started:
            engine.stop(sys.stderr)
