"""The bundle's HTTP functions in-process: the real manifest, app, config and queue.

The app is built by ``runtime.testing`` exactly as ``serve`` builds it; PostgreSQL and
Memcached are spec'd fakes handed to it, and everything else (the journal in tmp_path, the
metrics files, Falcon) is real.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

import falcon.testing
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymemcache.client.base import PooledClient

import runtime.queue
from payments.payment import Payment
from runtime import testing
from runtime.db import Database, DatabaseUnavailable
from runtime.deps import Deps
from runtime.metrics import render
from runtime.queue import QueueConsumer
from tests.functional.fakes import ROOT, FakeClock

UUID = "4A7901B8-7D26-4D9D-AA19-4DC1C7CF60B3"


@dataclass
class World:
    client: falcon.testing.TestClient
    deps: Deps
    database: Any
    memcache: Any
    metrics_dir: Path

    def queued(self) -> list[bytes]:
        """What is on the payments queue, read without acknowledging it."""
        consumer = QueueConsumer(self.deps.queue_dir("payments"))
        try:
            consumer.claim()
            return [item.body for item in consumer.read(1000)]
        finally:
            consumer.close()

    def metric(self, sample: str, **labels: str) -> float | None:
        """A sample's value as /metrics would add it up, or None when it is absent."""
        text = render(self.metrics_dir).decode()  # writes this process's buffers first
        for family in text_string_to_metric_families(text):
            for found in family.samples:
                if found.name == sample and found.labels == labels:
                    return found.value
        return None


@pytest.fixture
def make_world(
    config_data: dict[str, Any], clock: FakeClock, multiprocess_metrics: Path
) -> Callable[..., World]:
    def make(**sections: object) -> World:
        database = create_autospec(Database, instance=True)
        memcache = create_autospec(PooledClient, instance=True)
        bundle = testing.bundle(ROOT / "functions.yaml", config={**config_data, **sections})
        deps = testing.deps(bundle, clock=clock, database=database, memcache=memcache)
        app = testing.create_app(bundle, deps)
        return World(falcon.testing.TestClient(app), deps, database, memcache, multiprocess_metrics)

    return make


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


def post_payment(world: World, body: bytes | str, content_type: str | None = "application/json"):
    headers = {"Content-Type": content_type} if content_type else {}
    return world.client.simulate_post("/payments", body=body, headers=headers)


def payment(amount: str = "19.90", correlation_id: str = UUID) -> str:
    return f'{{"correlationId": "{correlation_id}", "amount": {amount}}}'


# --- POST /payments ---------------------------------------------------------------------


def test_intake_accepts_a_payment_with_202_and_queues_exactly_one_canonical_record(
    world: World, clock: FakeClock
) -> None:
    result = post_payment(world, payment("19.9"))

    assert result.status_code == 202
    assert result.text == ""
    [record] = world.queued()
    assert record == (
        b'{"id":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":"19.90","t":1752150896.000000}'
    )
    assert Payment.decode(record) == Payment(UUID.lower(), Decimal("19.90"), clock.now())
    assert world.metric("payments_accepted_total") == 1.0


def test_intake_queues_each_accepted_payment_in_order(world: World) -> None:
    ids = [f"00000000-0000-0000-0000-00000000000{n}" for n in range(3)]
    for correlation_id in ids:
        assert post_payment(world, payment("1", correlation_id)).status_code == 202

    assert [Payment.decode(record).correlation_id for record in world.queued()] == ids


def test_intake_accepts_json_with_a_charset(world: World) -> None:
    result = post_payment(world, payment(), content_type="application/json; charset=utf-8")

    assert result.status_code == 202
    assert len(world.queued()) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("not json", 400, "invalid_json"),
        ("", 400, "invalid_json"),
        ("[]", 422, "invalid_body"),
        (f'{{"correlationId": "{UUID}"}}', 422, "missing_field"),
        (f'{{"correlationId": "{UUID}", "amount": 1, "fee": 0}}', 422, "unknown_field"),
        (payment("1", "not-a-uuid"), 422, "invalid_correlation_id"),
        (payment("1", UUID + "\\n"), 422, "invalid_correlation_id"),
        (payment("0"), 422, "invalid_amount"),
        (payment("-5.00"), 422, "invalid_amount"),
        (payment("10.001"), 422, "invalid_amount"),
        (payment("NaN"), 422, "invalid_amount"),
        (payment('"10.00"'), 422, "invalid_amount"),
        (payment("true"), 422, "invalid_amount"),
        (payment("null"), 422, "invalid_amount"),
        (payment("1000000.01"), 422, "invalid_amount"),
    ],
)
def test_intake_refuses_a_bad_payment_in_json_and_queues_nothing(
    world: World, body: str, status: int, code: str
) -> None:
    result = post_payment(world, body)

    assert result.status_code == status
    assert result.headers["content-type"] == "application/json"
    assert result.json["error"] == code
    assert isinstance(result.json["detail"], str) and result.json["detail"]
    assert world.queued() == []
    assert world.metric("payments_rejected_total", reason=code) == 1.0
    assert world.metric("payments_accepted_total") == 0.0


def test_intake_refuses_a_body_over_the_limit_with_413_and_queues_nothing(world: World) -> None:
    body = payment(correlation_id=UUID) + " " * 5000

    result = post_payment(world, body)

    assert result.status_code == 413
    assert result.json["error"] == "body_too_large"
    assert world.queued() == []


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        None,
        "application/jsonx",
        "application/json-patch+json",
    ],
)
def test_intake_refuses_a_body_that_is_not_json_with_415(
    world: World, content_type: str | None
) -> None:
    result = post_payment(world, payment(), content_type=content_type)

    assert result.status_code == 415
    assert result.json == {
        "error": "unsupported_media_type",
        "detail": "send the body as application/json",
    }
    assert world.queued() == []


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json"]
)
def test_intake_takes_json_whatever_its_parameters_or_case(world: World, content_type: str) -> None:
    result = post_payment(world, payment(), content_type=content_type)

    assert result.status_code == 202
    assert len(world.queued()) == 1


class _FullDisk:
    """Stands in for ``os`` inside runtime.queue: every ``write`` fails with ENOSPC."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_intake_answers_503_and_accepts_nothing_when_the_queue_cannot_take_the_payment(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(runtime.queue, "os", _FullDisk())
        result = post_payment(world, payment())

    assert result.status_code == 503
    assert result.json == {
        "error": "queue_unavailable",
        "detail": "the payment could not be stored; nothing was accepted, retry later",
    }
    assert world.queued() == []
    assert world.metric("payments_rejected_total", reason="queue_full") == 1.0
    assert world.metric("payments_accepted_total") == 0.0

    # Once the disk has room again the same payment goes through.
    assert post_payment(world, payment()).status_code == 202
    assert len(world.queued()) == 1


def test_intake_does_not_touch_the_database(world: World) -> None:
    post_payment(world, payment())

    assert world.database.run.call_count == 0


# --- GET /payments-summary ---------------------------------------------------------------


def test_summary_shows_both_processors_with_two_decimal_amounts(world: World) -> None:
    world.database.run.return_value = [
        ["default", 3, Decimal("30.5")],
        ["fallback", 1, Decimal("10")],
    ]

    result = world.client.simulate_get("/payments-summary")

    assert result.status_code == 200
    assert result.headers["content-type"] == "application/json"
    assert result.text == (
        '{"default":{"totalRequests":3,"totalAmount":30.50},'
        '"fallback":{"totalRequests":1,"totalAmount":10.00}}'
    )


def test_summary_shows_zeros_for_a_processor_without_payments(world: World) -> None:
    world.database.run.return_value = [["default", 2, Decimal("39.80")]]

    result = world.client.simulate_get("/payments-summary")

    assert result.text == (
        '{"default":{"totalRequests":2,"totalAmount":39.80},'
        '"fallback":{"totalRequests":0,"totalAmount":0.00}}'
    )


def test_summary_counts_only_processed_payments_grouped_by_processor(world: World) -> None:
    world.database.run.return_value = []

    world.client.simulate_get("/payments-summary")

    [call] = world.database.run.call_args_list
    sql = call.args[0]
    assert "FROM payments" in sql
    assert "status = 'processed'" in sql
    assert "GROUP BY processor" in sql
    assert "requested_at" not in sql
    assert call.kwargs == {"prepared": True}


def test_summary_bounds_requested_at_inclusively_by_from_and_to(world: World) -> None:
    world.database.run.return_value = []

    result = world.client.simulate_get(
        "/payments-summary",
        params={"from": "2025-07-10T12:00:00.000Z", "to": "2025-07-10T09:30:00.000-03:00"},
    )

    assert result.status_code == 200
    [call] = world.database.run.call_args_list
    assert "requested_at >= :start" in call.args[0]
    assert "requested_at <= :end" in call.args[0]
    assert call.kwargs == {
        "prepared": True,
        "start": datetime(2025, 7, 10, 12, 0, tzinfo=UTC),
        "end": datetime(2025, 7, 10, 12, 30, tzinfo=UTC),
    }


def test_summary_takes_one_bound_alone(world: World) -> None:
    world.database.run.return_value = []

    world.client.simulate_get("/payments-summary", params={"to": "2025-07-10T12:00:00Z"})

    [call] = world.database.run.call_args_list
    assert call.kwargs == {"prepared": True, "end": datetime(2025, 7, 10, 12, 0, tzinfo=UTC)}


@pytest.mark.parametrize("name", ["from", "to"])
@pytest.mark.parametrize("value", ["yesterday", "2025-13-45T00:00:00Z", "1752150896"])
def test_summary_refuses_a_bad_date_with_400_json(world: World, name: str, value: str) -> None:
    result = world.client.simulate_get("/payments-summary", params={name: value})

    assert result.status_code == 400
    assert result.json == {
        "error": "invalid_date",
        "detail": f"'{name}' must be an ISO-8601 timestamp such as 2025-07-10T12:34:56.000Z",
    }
    assert world.database.run.call_count == 0


def test_summary_refuses_from_after_to_with_400_json(world: World) -> None:
    result = world.client.simulate_get(
        "/payments-summary",
        params={"from": "2025-07-10T12:00:00.001Z", "to": "2025-07-10T12:00:00.000Z"},
    )

    assert result.status_code == 400
    assert result.json == {"error": "invalid_range", "detail": "'from' is after 'to'"}
    assert world.database.run.call_count == 0


def test_summary_answers_503_when_the_store_does_not_answer(world: World) -> None:
    world.database.run.side_effect = DatabaseUnavailable("connection refused")

    result = world.client.simulate_get("/payments-summary")

    assert result.status_code == 503
    assert result.json["error"] == "store_unavailable"
    assert "refused" not in result.text


# --- POST /purge-payments ----------------------------------------------------------------


def test_purge_enabled_deletes_every_payment_in_one_statement(world: World) -> None:
    result = world.client.simulate_post("/purge-payments")

    assert result.status_code == 200
    assert result.json == {"message": "All payments purged."}
    [call] = world.database.run.call_args_list
    assert "DELETE FROM payments" in call.args[0]
    assert "purges" in call.args[0]  # and moves the purge mark for queued items


def test_purge_disabled_answers_404_and_deletes_nothing(make_world: Callable[..., World]) -> None:
    world = make_world(purge={"enabled": False})

    result = world.client.simulate_post("/purge-payments")

    assert result.status_code == 404
    assert result.json == {"error": "not_found", "detail": "purge is disabled"}
    assert world.database.run.call_count == 0


@pytest.mark.parametrize("headers", [{}, {"X-Purge-Token": "guess"}, {"X-Purge-Token": ""}])
def test_purge_with_a_token_configured_refuses_a_missing_or_wrong_token_with_401(
    make_world: Callable[..., World], headers: dict[str, str]
) -> None:
    world = make_world(purge={"token": "s3cret"})

    result = world.client.simulate_post("/purge-payments", headers=headers)

    assert result.status_code == 401
    assert result.json == {
        "error": "unauthorized",
        "detail": "a valid X-Purge-Token header is required",
    }
    assert world.database.run.call_count == 0


def test_purge_with_the_right_token_purges(make_world: Callable[..., World]) -> None:
    world = make_world(purge={"token": "s3cret"})

    result = world.client.simulate_post("/purge-payments", headers={"X-Purge-Token": "s3cret"})

    assert result.status_code == 200
    assert world.database.run.call_count == 1


def test_purge_answers_503_when_the_store_does_not_answer(world: World) -> None:
    world.database.run.side_effect = DatabaseUnavailable("connection refused")

    result = world.client.simulate_post("/purge-payments")

    assert result.status_code == 503
    assert result.json["error"] == "store_unavailable"


# --- GET /health -------------------------------------------------------------------------


def test_health_answers_200_with_the_instance_name_when_every_check_passes(world: World) -> None:
    world.database.run.return_value = [[1]]
    world.memcache.version.return_value = b"1.6.21"

    result = world.client.simulate_get("/health")

    assert result.status_code == 200
    assert result.json == {"status": "ok", "instance": "test1", "down": []}
    world.database.run.assert_called_once_with("SELECT 1")
    world.memcache.version.assert_called_once_with()


@pytest.mark.parametrize(
    ("postgres_up", "memcached_up", "down"),
    [
        (False, True, ["postgres"]),
        (True, False, ["memcached"]),
        (False, False, ["postgres", "memcached"]),
    ],
)
def test_health_answers_503_naming_what_is_down(
    world: World, postgres_up: bool, memcached_up: bool, down: list[str]
) -> None:
    if not postgres_up:
        world.database.run.side_effect = DatabaseUnavailable("connection refused")
    if not memcached_up:
        world.memcache.version.side_effect = ConnectionRefusedError(111, "Connection refused")

    result = world.client.simulate_get("/health")

    assert result.status_code == 503
    assert result.json == {"status": "down", "instance": "test1", "down": down}


def test_health_reuses_its_result_for_cache_s_then_checks_again(
    world: World, clock: FakeClock
) -> None:
    # functions.yaml gives health settings: {cache_s: 0.5}
    world.database.run.side_effect = DatabaseUnavailable("connection refused")
    assert world.client.simulate_get("/health").status_code == 503

    world.database.run.side_effect = None
    clock.advance(0.4)
    assert world.client.simulate_get("/health").status_code == 503
    assert world.database.run.call_count == 1

    clock.advance(0.1)
    assert world.client.simulate_get("/health").status_code == 200
    assert world.database.run.call_count == 2


# --- GET /metrics ------------------------------------------------------------------------


def test_metrics_answers_prometheus_text_that_adds_up_what_intake_counted(world: World) -> None:
    post_payment(world, payment())
    post_payment(world, payment("0"))
    post_payment(world, payment("-1"))

    result = world.client.simulate_get("/metrics")

    assert result.status_code == 200
    assert result.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {family.name: family for family in text_string_to_metric_families(result.text)}
    assert families["payments_accepted"].type == "counter"
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families.values()
        for sample in family.samples
    }
    assert samples[("payments_accepted_total", ())] == 1.0
    assert samples[("payments_rejected_total", (("reason", "invalid_amount"),))] == 2.0


def test_metrics_adds_up_every_process_sharing_the_folder(world: World) -> None:
    # Another instance's process counts one payment into the same folder.
    other = (
        "import sys; from pathlib import Path\n"
        "from payments.metrics import PaymentMetrics\n"
        "from runtime.metrics import Registry, enable_multiprocess, flush_buffered\n"
        "enable_multiprocess(Path(sys.argv[1]), 'other')\n"
        "PaymentMetrics(Registry()).accepted.inc()\n"
        "flush_buffered()\n"
    )
    subprocess.run(
        [sys.executable, "-c", other, str(world.metrics_dir)],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    post_payment(world, payment())

    text = world.client.simulate_get("/metrics").text

    [accepted] = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "payments_accepted_total"
    ]
    assert accepted.value == 2.0
