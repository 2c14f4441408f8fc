"""Payments in PostgreSQL: batched writes for the forwarder, reads for the summary.

The forwarder's threads never talk to PostgreSQL themselves: they hand an operation to the
``BatchWriter`` and wait for its result. The writer takes everything queued, runs one statement
per kind of operation (``unnest`` over arrays, so a batch of 500 costs one round trip), and
answers each caller. While PostgreSQL is away it keeps the batch and retries: callers wait,
nothing is dropped.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from runtime.db import Database, DatabaseUnavailable

_log = logging.getLogger("payments.store")
_RETRY_INITIAL_S = 0.05
_RETRY_MAX_S = 2.0

_CLAIM_SQL = """
WITH v AS (
    SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:amounts AS numeric[]),
                         CAST(:processors AS text[]), CAST(:requested AS timestamptz[]),
                         CAST(:intake AS timestamptz[]))
        AS v(id, amount, processor, requested_at, intake_at)
), purge AS (
    SELECT coalesce((SELECT purged_at FROM purges), '-infinity'::timestamptz) AS purged_at
), ins AS (
    INSERT INTO payments (correlation_id, amount, status, processor, requested_at, attempted_at)
    SELECT v.id, v.amount, 'pending', v.processor, v.requested_at, now()
    FROM v, purge WHERE v.intake_at > purge.purged_at
    ON CONFLICT (correlation_id) DO NOTHING
    RETURNING correlation_id
)
SELECT v.id::text, ins.correlation_id IS NOT NULL, v.intake_at <= purge.purged_at,
       existing.status, existing.processor, existing.amount,
       extract(epoch FROM existing.requested_at)::float8,
       extract(epoch FROM existing.attempted_at)::float8
FROM v CROSS JOIN purge
LEFT JOIN ins ON ins.correlation_id = v.id
LEFT JOIN payments existing ON existing.correlation_id = v.id
"""

_ATTEMPT_SQL = """
UPDATE payments SET processor = v.processor, requested_at = v.requested_at,
                    attempted_at = now(), updated_at = now()
FROM unnest(CAST(:ids AS uuid[]), CAST(:processors AS text[]), CAST(:requested AS timestamptz[]))
    AS v(id, processor, requested_at)
WHERE payments.correlation_id = v.id AND payments.status = 'pending'
"""

_PROCESSED_SQL = """
INSERT INTO payments (correlation_id, amount, status, processor, requested_at, attempted_at)
SELECT v.id, v.amount, 'processed', v.processor, v.requested_at, now()
FROM unnest(CAST(:ids AS uuid[]), CAST(:amounts AS numeric[]), CAST(:processors AS text[]),
            CAST(:requested AS timestamptz[])) AS v(id, amount, processor, requested_at)
ON CONFLICT (correlation_id) DO UPDATE
SET status = 'processed', amount = excluded.amount, processor = excluded.processor,
    requested_at = excluded.requested_at, updated_at = now()
"""


# Each operation's tuple, in order: the array parameter each position fills.
_CLAIM_COLUMNS = ("ids", "amounts", "processors", "requested", "intake")
ClaimRow = tuple[str, Decimal, str, datetime, datetime]
"""A claim: correlation id, amount, the first attempt's processor and requestedAt, intake."""
_ATTEMPT_COLUMNS = ("ids", "processors", "requested")
_PROCESSED_COLUMNS = ("ids", "amounts", "processors", "requested")


def _columns(rows: list[tuple], names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Rows of operation arguments as one list per column, for ``unnest`` over arrays."""
    return {name: list(values) for name, values in zip(names, zip(*rows, strict=True), strict=True)}


class ClaimState(enum.Enum):
    """What a claim found."""

    CLAIMED = "claimed"
    """New: the row is ours, pending, with this attempt's processor and requestedAt."""
    PROCESSED = "processed"
    """A payment with this id is already recorded: nothing to do."""
    PENDING = "pending"
    """Claimed earlier (a redelivery after a crash, or a repeat): resume from its attempt."""
    PURGED = "purged"
    """Accepted before the last purge: dropped."""


@dataclass(frozen=True)
class Claim:
    """A claim's answer; for ``PENDING``, the attempt recorded last."""

    state: ClaimState
    processor: str | None = None
    amount: Decimal | None = None
    requested_at: float | None = None
    attempted_at: float | None = None


class _Kind(enum.Enum):
    CLAIM = 1
    ATTEMPT = 2
    PROCESSED = 3


class _Slot:
    """One caller's answer from the writer thread: a lock held until the answer is in.

    Lighter than ``concurrent.futures.Future``, whose every wait builds a Condition and a
    waiter lock: here a hand-off is one release and one acquire.
    """

    __slots__ = ("_done", "_error", "_result")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._result: Any = None
        self._error: BaseException | None = None

    def fill(self, result: Any) -> None:
        self._result = result
        self._done.release()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.release()

    def wait(self) -> Any:
        self._done.acquire()
        if self._error is not None:
            raise self._error
        return self._result


class _Then:
    """A caller that does not wait: ``then`` runs on the writer thread once committed."""

    __slots__ = ("_then", "_what")

    def __init__(self, then: Callable[[], None], what: str) -> None:
        self._then = then
        self._what = what

    def fill(self, result: Any) -> None:
        self._then()

    def fail(self, error: BaseException) -> None:
        # Not committed, so not acknowledged: the payment is redelivered after a restart and
        # its claim, pinned to the processor that holds it, finds it there.
        _log.error(
            "write failed; its queue item stays unacknowledged",
            extra={"correlation_id": self._what, "error": repr(error)},
        )


_Op = tuple[_Kind, list[tuple], "_Slot | _Then"]
"""One queued operation: its kind, its rows, and who gets the answer."""
_FLUSH: Any = object()


class BatchWriter:
    """Runs queued operations in batches on its own connection, in its own thread.

    While PostgreSQL is away, a batch is retried until it commits; once ``stopping`` is set,
    it fails instead, so a stopping process is never held up by an outage. Writes nobody
    waits on (``then``) wait up to ``linger_ms`` for company, unless a waiting one arrives.
    """

    def __init__(
        self,
        database: Database,
        batch_max: int,
        linger_ms: float = 0.0,
        stopping: threading.Event | None = None,
    ) -> None:
        self._db = database
        self._batch_max = batch_max
        self._linger_s = linger_ms / 1000
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="batch-writer", daemon=True)
        self._started = False
        self._stopping = stopping or threading.Event()

    def start(self) -> None:
        """Start the writer thread."""
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then stop."""
        self._ops.put(None)
        if self._started:
            self._thread.join(timeout=10)

    def claim(self, rows: list[ClaimRow]) -> list[Claim]:
        """Record new payments as pending at their first attempt's processor, in one
        statement; for each row, say what already existed instead, if anything."""
        return self._submit(_Kind.CLAIM, rows)

    def record_attempt(self, correlation_id: str, processor: str, requested_at: datetime) -> None:
        """Note, before sending, which processor the next attempt goes to and when."""
        self._submit(_Kind.ATTEMPT, [(correlation_id, processor, requested_at)])

    def record_processed(
        self,
        correlation_id: str,
        amount: Decimal,
        processor: str,
        requested_at: datetime,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Record that ``processor`` holds the payment. Without ``then``, returns once
        committed; with it, returns at once and ``then`` is called once committed."""
        rows = [(correlation_id, amount, processor, requested_at)]
        if then is None:
            self._submit(_Kind.PROCESSED, rows)
        else:
            self._ops.put((_Kind.PROCESSED, rows, _Then(then, correlation_id)))

    def _submit(self, kind: _Kind, rows: list[tuple]) -> Any:
        if not rows:
            return []
        slot = _Slot()
        self._ops.put((kind, rows, slot))
        return slot.wait()

    def _loop(self) -> None:
        # Writes nobody waits on (``then``) gather here for up to the linger, so a trickle of
        # them becomes one statement; a write somebody waits on goes at the next turn.
        held: list[_Op] = []
        held_rows = 0
        deadline = 0.0
        while True:
            try:
                if held:
                    op = self._ops.get(timeout=max(deadline - time.monotonic(), 0))
                else:
                    op = self._ops.get()
            except queue.Empty:
                op = _FLUSH
            if op is None:
                self._run(held)
                return
            if op is _FLUSH:
                self._run(held)
                held, held_rows = [], 0
                continue
            batch = [op]
            while len(batch) < self._batch_max:  # whatever else is queued joins this turn
                try:
                    more = self._ops.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._ops.put(None)
                    break
                batch.append(more)
            waited_on = [op for op in batch if isinstance(op[2], _Slot)]
            for op in batch:
                if not isinstance(op[2], _Slot):
                    if not held:
                        deadline = time.monotonic() + self._linger_s
                    held.append(op)
                    held_rows += len(op[1])
            if held_rows >= self._batch_max or not self._linger_s:
                waited_on += held
                held, held_rows = [], 0
            self._run(waited_on)

    def _run(self, ops: list[_Op]) -> None:
        for kind in _Kind:
            group = [op for op in ops if op[0] is kind]
            if group:
                self._run_group(kind, group)

    def _run_group(self, kind: _Kind, group: list[_Op]) -> None:
        rows = [row for _, op_rows, _ in group for row in op_rows]
        delay_s = _RETRY_INITIAL_S
        while True:
            try:
                results = self._execute(kind, rows)
            except DatabaseUnavailable as exc:
                if self._stopping.is_set():
                    for _, _, slot in group:
                        slot.fail(exc)
                    return
                _log.warning(
                    "postgres unavailable; batch kept for retry",
                    extra={"error": str(exc), "ops": len(rows), "retry_in_s": delay_s},
                )
                self._stopping.wait(delay_s)
                delay_s = min(delay_s * 2, _RETRY_MAX_S)
                continue
            except Exception as exc:
                for _, _, slot in group:
                    slot.fail(exc)
                return
            start = 0
            for _, op_rows, slot in group:
                slot.fill(results[start : start + len(op_rows)])
                start += len(op_rows)
            return

    def _execute(self, kind: _Kind, rows: list[tuple]) -> list[Any]:
        if kind is _Kind.CLAIM:
            return self._claim(rows)
        if kind is _Kind.ATTEMPT:
            self._db.run(_ATTEMPT_SQL, prepared=True, **_columns(rows, _ATTEMPT_COLUMNS))
            return [None] * len(rows)
        latest = list({row[0]: row for row in rows}.values())  # an upsert touches a row once
        self._db.run(_PROCESSED_SQL, prepared=True, **_columns(latest, _PROCESSED_COLUMNS))
        return [None] * len(rows)

    def _claim(self, rows: list[tuple]) -> list[Claim]:
        found = self._db.run(_CLAIM_SQL, prepared=True, **_columns(rows, _CLAIM_COLUMNS))
        by_id: dict[str, Claim] = {}
        for cid, claimed, purged, status, processor, amount, requested_at, attempted_at in found:
            if claimed:
                claim = Claim(ClaimState.CLAIMED)
            elif purged:
                claim = Claim(ClaimState.PURGED)
            elif status == "processed":
                claim = Claim(ClaimState.PROCESSED, processor, amount, requested_at, attempted_at)
            else:
                claim = Claim(ClaimState.PENDING, processor, amount, requested_at, attempted_at)
            by_id.setdefault(cid, claim)
        claims = []
        seen: set[str] = set()
        for row in rows:
            claim = by_id[row[0]]
            if row[0] in seen and claim.state is ClaimState.CLAIMED:
                # The same id twice in one batch: the first copy owns the claim, the second
                # finds it pending, like a repeat that arrives a moment later.
                claim = Claim(ClaimState.PENDING, row[2], row[1], None, None)
            seen.add(row[0])
            claims.append(claim)
        return claims


@dataclass(frozen=True)
class Totals:
    """One processor's part of the summary."""

    count: int
    amount: Decimal


def summarize(db: Database, start: datetime | None, end: datetime | None) -> dict[str, Totals]:
    """Processed payments per processor with ``start <= requested_at <= end`` (bounds optional)."""
    where = ["status = 'processed'"]
    params: dict[str, Any] = {}
    if start is not None:
        where.append("requested_at >= :start")
        params["start"] = start
    if end is not None:
        where.append("requested_at <= :end")
        params["end"] = end
    rows = db.run(
        "SELECT processor, count(*), coalesce(sum(amount), 0) FROM payments "
        f"WHERE {' AND '.join(where)} GROUP BY processor",
        prepared=True,
        **params,
    )
    return {processor: Totals(int(count), Decimal(total)) for processor, count, total in rows}


def purge(db: Database) -> None:
    """Forget every payment; queued items accepted before now are then dropped by their claim.

    One statement, so a reconnect-and-retry can never leave it half done.
    """
    db.run(
        "WITH gone AS (DELETE FROM payments) "
        "INSERT INTO purges (id, purged_at) VALUES (true, clock_timestamp()) "
        "ON CONFLICT (id) DO UPDATE SET purged_at = excluded.purged_at"
    )
