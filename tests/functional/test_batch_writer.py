"""payments.store.BatchWriter against a recording stand-in for the database.

What is checked is the batching contract: writes nobody waits on gather for the linger and are
acknowledged only once their statement ran; a write somebody waits on is not held back by it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from payments.store import BatchWriter
from runtime.db import DatabaseUnavailable

_NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
_WAIT_S = 5.0


class RecordingDatabase:
    """Records each statement's kind and ids; can be made unavailable, or made to block."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, list[str]]] = []
        self.available = threading.Event()
        self.available.set()
        self.ran = threading.Condition()

    def run(self, sql: str, *, prepared: bool = False, **params: Any) -> list[list[Any]]:
        if not self.available.is_set():
            raise DatabaseUnavailable("connection refused")
        kind = "claim" if "purge" in sql else "processed" if "'processed'" in sql else "attempt"
        with self.ran:
            self.statements.append((kind, list(params["ids"])))
            self.ran.notify_all()
        if kind == "claim":  # every claim is new: claimed, not purged, nothing existing
            return [[i, True, False, None, None, None, None, None] for i in params["ids"]]
        return []


@pytest.fixture
def database() -> RecordingDatabase:
    return RecordingDatabase()


def writer_for(database: RecordingDatabase, linger_ms: float) -> BatchWriter:
    writer = BatchWriter(database, batch_max=500, linger_ms=linger_ms)  # type: ignore[arg-type]
    writer.start()
    return writer


def processed(writer: BatchWriter, correlation_id: str, then: Any) -> None:
    writer.record_processed(correlation_id, Decimal("19.90"), "default", _NOW, then=then)


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

    for name in ("p1", "p2", "p3"):
        processed(writer, name, ack(name))
    assert acked == []  # nothing is acknowledged before its statement ran
    assert all_acked.wait(_WAIT_S)
    writer.stop()

    assert database.statements == [("processed", ["p1", "p2", "p3"])]
    assert acked == ["p1", "p2", "p3"]


def test_a_claim_is_not_held_back_by_the_linger(database: RecordingDatabase) -> None:
    writer = writer_for(database, linger_ms=60_000)  # a linger no test would wait out
    acked = threading.Event()
    processed(writer, "p1", acked.set)
    claims: list[Any] = []
    claiming = threading.Thread(
        target=lambda: claims.extend(
            writer.claim([("c1", Decimal("19.90"), "default", _NOW, _NOW)])
        ),
        daemon=True,
    )
    claiming.start()
    claiming.join(_WAIT_S)

    assert [claim.state.value for claim in claims] == ["claimed"]
    assert database.statements == [("claim", ["c1"])]
    assert not acked.is_set()
    writer.stop()  # stopping flushes what the linger still holds
    assert acked.is_set()
    assert database.statements[-1] == ("processed", ["p1"])


def test_an_unawaited_write_is_kept_while_the_database_is_away(
    database: RecordingDatabase,
) -> None:
    database.available.clear()
    writer = writer_for(database, linger_ms=0)
    acked = threading.Event()
    processed(writer, "p1", acked.set)

    assert not acked.wait(0.3)  # retried meanwhile, never acknowledged
    database.available.set()
    assert acked.wait(_WAIT_S)
    writer.stop()
    assert database.statements == [("processed", ["p1"])]


def test_a_write_that_fails_for_good_is_never_acknowledged(database: RecordingDatabase) -> None:
    stopping = threading.Event()
    database.available.clear()
    writer = BatchWriter(database, 500, 0, stopping=stopping)  # type: ignore[arg-type]
    writer.start()
    acked = threading.Event()
    processed(writer, "p1", acked.set)
    stopping.set()  # stopping during an outage: the write fails instead of waiting
    writer.stop()

    assert not acked.is_set()
    assert database.statements == []
