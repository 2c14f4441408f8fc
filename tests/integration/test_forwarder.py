"""The forwarder in-process, through ``runtime.testing.deliver``: records written by the queue's
own type, read by the runtime's own runner, delivered to the emulators with real PostgreSQL.

What this tier adds to the unit tests of ``payments.delivery``: the forwarder is built the way
a worker builds it (typed settings, the bundle's config, deps), and each record makes the whole
trip, queue record to processor to the ``processed`` row that the summary counts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from emulator.processors import Processors
from payments.payment import Payment
from payments.store import purge, summarize
from runtime import testing
from runtime.bundle import Bundle
from runtime.db import Database
from runtime.migrations import migrate
from stack.memcached import MemcachedServer
from stack.postgres import PostgresServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bundle(
    postgres: PostgresServer,
    memcached: MemcachedServer,
    emulators: Processors,
    tmp_path: Path,
) -> Bundle:
    environ = {**postgres.env(), **memcached.env(), **emulators.env()}
    return testing.bundle(
        ROOT / "functions.yaml",
        config={
            "instance": "fwd1",
            "metrics_dir": str(tmp_path / "metrics"),
            # Breakers this test opens stay its own: other tests share the Memcached.
            "memcached": {"key_prefix": f"test-{uuid.uuid4()}:"},
        },
        environ=environ,
    )


@pytest.fixture
def database(bundle: Bundle, emulators: Processors) -> Iterator[Database]:
    database = Database(bundle.runtime.postgres)
    migrate(database, ROOT / "migrations")
    purge(database)
    emulators.reset()
    yield database
    emulators.reset()
    database.close()


def payment(amount: str = "20.05", correlation_id: str | None = None) -> Payment:
    # Accepted now, after the fixture's purge: a purge drops what was accepted before it.
    return Payment(correlation_id or str(uuid.uuid4()), Decimal(amount), time.time())


def test_each_record_reaches_the_default_once_and_is_counted_by_the_summary(
    bundle: Bundle, database: Database, emulators: Processors
) -> None:
    payments = [payment("20.05"), payment("19.90"), payment("0.01")]

    result = testing.deliver(bundle, "forwarder", *payments)

    assert sorted(result.settled) == [0, 1, 2]
    held = emulators.default.summary()
    assert held["totalRequests"] == 3
    assert Decimal(str(held["totalAmount"])) == Decimal("39.96")
    assert emulators.fallback.summary()["totalRequests"] == 0
    totals = summarize(database, None, None)
    assert totals["default"].count == 3
    assert totals["default"].amount == Decimal("39.96")


def test_the_same_id_twice_in_one_batch_is_charged_once_and_both_are_settled(
    bundle: Bundle, database: Database, emulators: Processors
) -> None:
    twice = payment()

    result = testing.deliver(bundle, "forwarder", twice, twice)

    assert sorted(result.settled) == [0, 1]
    assert emulators.default.summary()["totalRequests"] == 1
    assert summarize(database, None, None)["default"].count == 1


def test_a_payment_delivered_again_later_is_settled_without_a_second_charge(
    bundle: Bundle, database: Database, emulators: Processors
) -> None:
    once = payment()
    assert testing.deliver(bundle, "forwarder", once).settled == [0]

    again = testing.deliver(bundle, "forwarder", once)

    assert again.settled == [0]
    assert emulators.default.summary()["totalRequests"] == 1
    assert summarize(database, None, None)["default"].count == 1


def test_a_payment_accepted_before_the_last_purge_is_dropped_not_charged(
    bundle: Bundle, database: Database, emulators: Processors
) -> None:
    old = payment()
    purge(database)  # after intake accepted it: the harness's reset between runs

    result = testing.deliver(bundle, "forwarder", old)

    assert result.settled == [0]
    assert emulators.default.summary()["totalRequests"] == 0
    assert summarize(database, None, None) == {}


def test_while_the_default_fails_payments_go_to_the_fallback(
    bundle: Bundle, database: Database, emulators: Processors
) -> None:
    emulators.default.set_failure(True)

    result = testing.deliver(bundle, "forwarder", payment(), payment())

    assert sorted(result.settled) == [0, 1]
    assert emulators.default.summary()["totalRequests"] == 0
    assert emulators.fallback.summary()["totalRequests"] == 2
    assert summarize(database, None, None)["fallback"].count == 2


def test_a_payment_no_processor_takes_stays_unsettled_until_the_timeout(
    bundle: Bundle, database: Database, emulators: Processors
) -> None:
    emulators.default.set_failure(True)
    emulators.fallback.set_failure(True)

    result = testing.deliver(bundle, "forwarder", payment(), timeout_s=2.0)

    assert result.settled == []
    assert result.unsettled == [0]
    assert summarize(database, None, None) == {}
