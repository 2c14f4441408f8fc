"""docker-compose.yml as the contest runs it: every endpoint, exactly-once under container
kills, payments kept across a restart of the whole deployment, memory within each limit, and
an image that carries nothing but the runtime and its bundle."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.audit import check_each, our_summary, totals_equal
from bench.faults import ComposeStack, compose_faults, run_scenario
from stack import compose, engine, submission
from stack.deployment import COMPOSE_FILE, SERVICES, Deployment
from stack.settings import PROJECT_ROOT
from tests.support.procs import wait_until

pytestmark = pytest.mark.compose
APP_IMAGE = "rinha-functions:latest"
_SETTLE_S = 60.0


def request(
    deployment: Deployment, method: str, path: str, body: bytes | None = None
) -> tuple[int, str, bytes]:
    """One call through the published port: status, Content-Type, body."""
    call = urllib.request.Request(
        deployment.url + path,
        data=body,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(call, timeout=5) as answer:
            return answer.status, answer.headers.get("Content-Type", ""), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def pay(deployment: Deployment, amount: str = "19.90") -> str:
    correlation_id = str(uuid.uuid4())
    body = f'{{"correlationId":"{correlation_id}","amount":{amount}}}'.encode()
    status, _, _ = request(deployment, "POST", "/payments", body)
    assert status == 202
    return correlation_id


def recorded(deployment: Deployment) -> int:
    return sum(part["totalRequests"] for part in our_summary(deployment.url).values())


@pytest.fixture
def target(deployment: Deployment) -> ComposeStack:
    """The deployment, its processors reset and its store purged."""
    stack = ComposeStack(deployment)
    for processor in stack.processors:
        processor.reset()
    assert request(deployment, "POST", "/purge-payments")[0] == 200
    return stack


def test_every_endpoint_answers_through_the_published_port(
    deployment: Deployment, target: ComposeStack
) -> None:
    pay(deployment)

    health = request(deployment, "GET", "/health")
    summary = request(deployment, "GET", "/payments-summary?from=2000-01-01T00:00:00Z")
    metrics = request(deployment, "GET", "/metrics")
    refused = request(deployment, "POST", "/payments", b"{}")
    too_large = request(deployment, "POST", "/payments", b"x" * 10_000)

    assert health[0] == 200 and json.loads(health[2])["status"] == "ok"
    assert summary[0] == 200 and set(json.loads(summary[2])) == {"default", "fallback"}
    assert metrics[0] == 200 and b"payments_accepted_total" in metrics[2]
    assert refused[0] == 422 and json.loads(refused[2])["error"] == "missing_field"
    assert too_large[0] == 413 and too_large[1] == "application/json"  # Nginx's own, in JSON


def test_payments_reach_the_processors_on_their_network_and_the_summary_agrees(
    deployment: Deployment, target: ComposeStack
) -> None:
    ids = [pay(deployment, "20.05") for _ in range(40)]

    wait_until(lambda: recorded(deployment) >= len(ids), timeout_s=_SETTLE_S, what="recorded")

    holdings = check_each(ids, target.processors)
    assert (holdings.lost, holdings.duplicated) == ([], [])
    assert holdings.default == len(ids)  # the cheaper one, healthy
    equal, sides = totals_equal(deployment.url, target.processors)
    assert equal, sides


@pytest.mark.parametrize("service", ["app1", "worker1", "postgres"])
def test_a_service_killed_under_load_loses_nothing_and_charges_nothing_twice(
    target: ComposeStack, service: str
) -> None:
    fault = compose_faults(target)[f"compose kill {service}"]

    row = run_scenario(target, fault, rate=80, seconds=8)

    assert row.accepted > 0
    assert (row.lost, row.duplicated) == (0, 0), row
    assert row.totals_equal, row


def test_a_restart_of_the_whole_deployment_keeps_the_payments(
    deployment: Deployment, target: ComposeStack
) -> None:
    ids = [pay(deployment) for _ in range(20)]
    wait_until(lambda: recorded(deployment) >= len(ids), timeout_s=_SETTLE_S, what="recorded")
    before = our_summary(deployment.url)

    deployment.run(deployment.backend("down"), timeout_s=180)  # volumes stay
    deployment.up()

    assert our_summary(deployment.url) == before
    assert totals_equal(deployment.url, target.processors)[0]


def test_every_service_stayed_within_its_memory_limit(deployment: Deployment) -> None:
    # Last in the module's order of heavy tests: the peaks include the loads above.
    limits = compose.service_limits(compose.load(COMPOSE_FILE))
    usage = deployment.usage()

    assert set(usage) == set(SERVICES)
    for service, used in usage.items():
        assert used.memory_peak_bytes is not None
        assert used.memory_peak_bytes <= limits[service].memory_bytes, service


def _in_image(*argv: str, user: str | None = None) -> str:
    as_user = ["--user", user] if user else []
    return engine.docker("run", "--rm", *as_user, "--entrypoint", argv[0], APP_IMAGE, *argv[1:])


def test_the_image_runs_as_a_user_and_holds_only_the_runtime_and_its_bundle(
    deployment: Deployment,
) -> None:
    inspected: list[dict[str, Any]] = json.loads(engine.docker("image", "inspect", APP_IMAGE))
    config = inspected[0]["Config"]

    assert config["User"] == "app"
    assert _in_image("id", "-u").strip() == "10001"
    # The project's tests, tools (stack, bench, emulator) and docs stay out (.dockerignore).
    assert sorted(_in_image("ls", "-A", "/app").split()) == [
        "config",
        "functions",
        "functions.yaml",
        "migrations",
        "payments",
        "runtime",
    ]
    # No key, certificate or build secret anywhere, and no installer left to add to it.
    found = _in_image(
        "find",
        "/",
        "-xdev",
        "(",
        "-name",
        "*.pem",
        "-o",
        "-name",
        "*.key",
        "-o",
        "-name",
        "pip_ca",
        "-o",
        "-name",
        ".git",
        "-o",
        "-name",
        "pip",
        ")",
        user="root",
    )
    assert found.split() == []
    assert not any(entry.startswith(("PIP_", "SSL_CERT")) for entry in config["Env"])


def test_an_instance_stopped_and_started_again_serves_within_seconds(
    deployment: Deployment, target: ComposeStack
) -> None:
    deployment.run(deployment.backend("stop", "app2"), timeout_s=60)
    pay(deployment)  # app1 alone meanwhile
    started = time.monotonic()

    deployment.start("app2")
    took_s = time.monotonic() - started

    print(f"app2 healthy again {took_s:.1f} s after `docker compose start`")
    assert recorded_soon(deployment, 1)
    assert Decimal(str(our_summary(deployment.url)["default"]["totalAmount"])) == Decimal("19.90")


def recorded_soon(deployment: Deployment, count: int) -> bool:
    wait_until(lambda: recorded(deployment) >= count, timeout_s=_SETTLE_S, what="recorded")
    return True


def test_the_submission_is_a_valid_compose_that_pulls_and_never_builds(
    deployment: Deployment, tmp_path: Path
) -> None:
    image = "docker.io/someone/rinha-functions:1"
    submission.write(PROJECT_ROOT, image, tmp_path)

    resolved = json.loads(
        deployment.run(
            [
                "docker",
                "compose",
                "-f",
                str(tmp_path / "docker-compose.yml"),
                "config",
                "--format",
                "json",
            ],
            timeout_s=60,
        )
    )

    services = resolved["services"]
    assert [name for name, service in services.items() if "build" in service] == []
    assert {services[name]["image"] for name in ("app1", "app2", "worker1", "worker2")} == {image}
    assert services["nginx"]["ports"][0]["published"] == "9999"


def test_sighup_reloads_each_container_in_place(
    deployment: Deployment, target: ComposeStack
) -> None:
    before = {name: deployment.container(name) for name in ("app1", "worker1")}

    for name in before:
        deployment.kill(name, signal.SIGHUP)

    def reloaded(name: str) -> bool:
        return '"msg": "reloaded"' in deployment.run(deployment.backend("logs", name), timeout_s=60)

    wait_until(lambda: all(reloaded(name) for name in before), timeout_s=_SETTLE_S, what="reloads")
    assert {name: deployment.container(name) for name in before} == before  # not restarted
    count = recorded(deployment)
    pay(deployment)
    assert recorded_soon(deployment, count + 1)
