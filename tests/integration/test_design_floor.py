"""The design floor for real: Nginx with our config in front of two bjoern hello-worlds."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request

import pytest

from stack.bench import floor
from stack.bench.design_floor import SERVICES, design_floor
from stack.probes import tcp_open
from tests.support.services import reachable_tmp_dir


def _answer(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST" if data else "GET",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read()


def test_it_answers_through_both_servers_and_leaves_nothing_behind() -> None:
    base = reachable_tmp_dir("rinha-design-")
    try:
        with design_floor(base / "design") as design:
            body = json.dumps(
                {"correlationId": "0b6e5d1c-1f7e-4e0e-9a55-8a4b1b7e2f10", "amount": 1}
            )
            statuses = {_answer(f"{design.url}/payments", body.encode())[0] for _ in range(20)}
            status, summary = _answer(f"{design.url}/payments-summary")
            pids = {
                service: design.cgroups.pids(service) if design.cgroups else []
                for service in SERVICES
            }
        assert statuses == {202}
        assert status == 200 and json.loads(summary) == json.loads(floor.BACKEND_SUMMARY)
        assert not tcp_open(int(design.url.rsplit(":", 1)[1]))
        if os.geteuid() == 0:  # root: each service ran under its compose limits
            assert design.cgroups is not None
            assert all(pids[service] for service in SERVICES)
            assert all(design.usage[service].cpu_s for service in SERVICES)
            assert not any(path.exists() for path in design.cgroups.parents.values())
        for service_pids in pids.values():
            for pid in service_pids:
                with pytest.raises(ProcessLookupError):
                    os.kill(pid, 0)
    finally:
        shutil.rmtree(base, ignore_errors=True)
