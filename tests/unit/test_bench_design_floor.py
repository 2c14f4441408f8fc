"""The design floor's pure parts: the hello-world's answers and the report's ratios."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import falcon.testing
import pytest

from stack.bench import cli, floor
from stack.bench.hello_app import build_app
from stack.bench.modes import MODES


@pytest.fixture
def client() -> falcon.testing.TestClient:
    return falcon.testing.TestClient(build_app())


def test_a_payment_is_accepted_like_our_intake_accepts_it(client) -> None:
    body = {"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 19.9}

    assert client.simulate_post("/payments", json=body).status_code == 202


def test_the_summaries_are_the_floors_zeros(client) -> None:
    backend = client.simulate_get("/payments-summary", params={"from": "2025-01-01T00:00:00Z"})
    processor = client.simulate_get("/admin/payments-summary")

    assert backend.status_code == processor.status_code == 200
    assert backend.json == json.loads(floor.BACKEND_SUMMARY)
    assert processor.json == json.loads(floor.PROCESSOR_SUMMARY)
    assert backend.json["default"]["totalRequests"] == 0


def test_the_admin_calls_get_what_the_k6_script_checks(client) -> None:
    # common.js aborts unless the token answers 204 and purge, delay and failure answer 200.
    assert client.simulate_put("/admin/configurations/token").status_code == 204
    assert client.simulate_post("/admin/purge-payments").status_code == 200
    assert client.simulate_put("/admin/configurations/delay").status_code == 200
    assert client.simulate_put("/admin/configurations/failure").status_code == 200
    assert client.simulate_post("/purge-payments").status_code == 200


def _measured(p99_ms: float) -> cli.Measured:
    metrics = {"http_req_duration{expected_response:true}": {"p(99)": p99_ms}}
    return cli.Measured(0, Path("/x"), {"metrics": metrics})


def test_the_report_gives_what_our_code_adds_and_what_the_design_costs() -> None:
    args = argparse.Namespace(vus=None, scale=1.0, backend=None)
    lines, data = cli.summarize(
        MODES["steady"], args, None, _measured(1.5), design_run=_measured(2.25)
    )
    design_only = cli.summarize(MODES["steady"], args, None, None, design_run=_measured(3.0))[1]
    text = "\n".join(lines)

    assert "design floor    p99 2.25 ms" in text
    assert "design / floor 1.50x" in text
    assert data["design_floor"]["p99_ms"] == 2.25
    assert data["design_floor_over_floor"] == pytest.approx(1.5)
    assert "p99_over_design_floor" not in data  # no run of ours to compare
    assert design_only["design_floor"]["p99_ms"] == 3.0
    assert "design_floor_over_floor" not in design_only
