"""payments.store.BatchWriter against a recording stand-in for the database.

What is checked is the batching contract: each turn is one transaction; writes nobody waits on
gather for the linger (or ride along with an awaited one) and are acknowledged only once their
transaction committed; an awaited write is not held back by the linger.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

import pytest

from payments.store import BatchWriter, ClaimState
from runtime.db import DatabaseUnavailable

_NOW_US = 1_764_072_000_000_000  # 2025-11-25T12:00:00Z
_WAIT_S = 5.0


def _ids(literal: str) -> list[str]:
    """The items of an array literal as the writer builds it: ``{"a","b"}``."""
    inner = literal[1:-1]
    return [item.strip('"') for item in inner.split(",")] if inner else []


class RecordingDatabase:
    """Records each transaction's statements (kind and ids); can be made unavailable, or made
    to fail one kind of statement."""

    def __init__(self) -> None:
        self.transactions: list[list[tuple[str, list[str]]]] = []
        self.available = threading.Event()
        self.available.set()
        self.failing_kind: str | None = None
        self.ran = threading.Condition()

    def transaction(self, statements: list[tuple[str, dict[str, Any]]]) -> list[list[list[Any]]]:
        if not self.available.is_set():
            raise DatabaseUnavailable("connection refused")
        ran, results = [], []
        for sql, params in statements:
            kind = "claim" if "purge" in sql else "processed" if "'processed'" in sql else "attempt"
            if kind == self.failing_kind:
                raise ValueError(f"{kind} statement failed")  # rolled back: nothing recorded
            ids = _ids(params["ids"])
            ran.append((kind, ids))
            # Every claim is new: claimed, not purged, nothing existing.
            claimed = [[i, True, False, None, None, None, None, None] for i in ids]
            results.append(claimed if kind == "claim" else [])
        with self.ran:
            self.transactions.append(ran)
            self.ran.notify_all()
        return results


@pytest.fixture
def database() -> RecordingDatabase:
    return RecordingDatabase()


def writer_for(database: RecordingDatabase, linger_ms: float, **kwargs: Any) -> BatchWriter:
    writer = BatchWriter(database, batch_max=500, linger_ms=linger_ms, **kwargs)  # type: ignore[arg-type]
    writer.start()
    return writer


def processed(writer: BatchWriter, correlation_id: str, then: Any) -> None:
    writer.record_processed(correlation_id, Decimal("19.90"), "default", _NOW_US, then=then)


def claim_row(correlation_id: str) -> tuple[str, Decimal, str, int, int]:
    return (correlation_id, Decimal("19.90"), "default", _NOW_US, _NOW_US)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, _WAIT_S))


def test_unawaited_writes_within_the_linger_become_one_statement_acknowledged_after_it(
    database: RecordingDatabase,
) -> None:
    writer = writer_for(database, linger_ms=300)
    acked: list[str] = []
    all_acked = threading.Event()

    def ack(name: str) -> Any:
        def then() -> None:
            acked.append(name)
            if len(acked) == 3:
                all_acked.set()

        return then

    async def scenario() -> None:
        for name in ("p1", "p2", "p3"):
            processed(writer, name, ack(name))
        await asyncio.sleep(0.1)
        assert acked == []  # nothing is acknowledged before its statement ran
        assert database.transactions == []  # still gathering
        await asyncio.to_thread(all_acked.wait, _WAIT_S)

    run(scenario())
    writer.stop()
    assert database.transactions == [[("processed", ["p1", "p2", "p3"])]]
    assert acked == ["p1", "p2", "p3"]


def test_an_awaited_claim_takes_the_lingering_writes_along_in_one_transaction(
    database: RecordingDatabase,
) -> None:
    writer = writer_for(database, linger_ms=60_000)  # a linger no test would wait out
    acked = threading.Event()

    async def scenario() -> list[Any]:
        processed(writer, "p1", acked.set)
        return await writer.claim([claim_row("c1")])

    claims = run(scenario())

    assert [claim.state for claim in claims] == [ClaimState.CLAIMED]
    assert database.transactions == [[("claim", ["c1"]), ("processed", ["p1"])]]
    assert acked.wait(_WAIT_S)
    writer.stop()


def test_concurrent_claims_share_a_turn_and_each_gets_its_own_rows(
    database: RecordingDatabase,
) -> None:
    writer = writer_for(database, linger_ms=0)

    async def claim_both() -> list[list[str]]:
        first, second = await asyncio.gather(
            writer.claim([claim_row("a1"), claim_row("a2")]), writer.claim([claim_row("b1")])
        )
        return [[c.state.value for c in first], [c.state.value for c in second]]

    answers = run(claim_both())
    writer.stop()

    assert answers == [["claimed", "claimed"], ["claimed"]]
    claimed = [ids for turn in database.transactions for kind, ids in turn if kind == "claim"]
    assert sorted(i for ids in claimed for i in ids) == ["a1", "a2", "b1"]


def test_a_failing_kind_fails_alone_and_the_rest_of_its_turn_commits(
    database: RecordingDatabase,
) -> None:
    database.failing_kind = "claim"
    writer = writer_for(database, linger_ms=60_000)
    acked = threading.Event()

    async def scenario() -> None:
        processed(writer, "p1", acked.set)
        await writer.claim([claim_row("c1")])

    with pytest.raises(ValueError, match="claim statement failed"):
        run(scenario())

    assert acked.wait(_WAIT_S)  # the processed write ran again on its own, and committed
    writer.stop()
    assert database.transactions == [[("processed", ["p1"])]]


def test_an_unawaited_write_is_kept_while_the_database_is_away(
    database: RecordingDatabase,
) -> None:
    database.available.clear()
    writer = writer_for(database, linger_ms=0)
    acked = threading.Event()

    async def scenario() -> None:
        processed(writer, "p1", acked.set)

    run(scenario())
    assert not acked.wait(0.3)  # retried meanwhile, never acknowledged
    database.available.set()
    assert acked.wait(_WAIT_S)
    writer.stop()
    assert database.transactions == [[("processed", ["p1"])]]


def test_what_gathered_is_written_when_the_writer_stops(database: RecordingDatabase) -> None:
    writer = writer_for(database, linger_ms=60_000)
    acked = threading.Event()

    async def scenario() -> None:
        processed(writer, "p1", acked.set)
        writer.stop()  # the forwarder stops it from its loop

    run(scenario())
    assert acked.is_set()
    assert database.transactions == [[("processed", ["p1"])]]


def test_a_write_that_fails_for_good_is_never_acknowledged(database: RecordingDatabase) -> None:
    stopping = threading.Event()
    database.available.clear()
    writer = writer_for(database, linger_ms=0, stopping=stopping)
    acked = threading.Event()

    async def scenario() -> None:
        processed(writer, "p1", acked.set)
        stopping.set()  # stopping during an outage: the write fails instead of waiting
        writer.stop()

    run(scenario())
    assert not acked.is_set()
    assert database.transactions == []


def test_a_claim_during_an_outage_at_shutdown_fails_instead_of_hanging(
    database: RecordingDatabase,
) -> None:
    stopping = threading.Event()
    database.available.clear()
    writer = writer_for(database, linger_ms=0, stopping=stopping)

    async def claim_then_stop() -> None:
        claiming = asyncio.ensure_future(writer.claim([claim_row("c1")]))
        await asyncio.sleep(0.2)  # retried meanwhile: the database is away
        assert not claiming.done()
        stopping.set()
        await claiming

    with pytest.raises(DatabaseUnavailable):
        run(claim_then_stop())
    writer.stop()
