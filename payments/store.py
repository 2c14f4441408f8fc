"""Payments in PostgreSQL: batched writes for the forwarder, reads for the summary.

The forwarder's event loop never talks to PostgreSQL itself: it hands an operation to the
``BatchWriter`` and awaits its result. The writer, in a thread of its own, takes everything
queued, runs one statement per kind of operation (``unnest`` over arrays, so a batch of 500
costs one round trip), all in one transaction (one commit, one WAL flush), and answers each
caller. While PostgreSQL is away it keeps the batch and retries: callers wait, nothing is
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from runtime.db import Database, DatabaseUnavailable

_log = logging.getLogger("payments.store")
_RETRY_INITIAL_S = 0.05
_RETRY_MAX_S = 2.0

# Timestamps travel as whole microseconds since the epoch: exact, and cheaper to send than
# rendered text.
_CLAIM_SQL = """
WITH v AS (
    SELECT id, amount, processor,
           timestamptz 'epoch' + requested_us * interval '1 microsecond' AS requested_at,
           timestamptz 'epoch' + intake_us * interval '1 microsecond' AS intake_at
    FROM unnest(CAST(:ids AS uuid[]), CAST(:amounts AS numeric[]), CAST(:processors AS text[]),
                CAST(:requested AS bigint[]), CAST(:intake AS bigint[]))
        AS u(id, amount, processor, requested_us, intake_us)
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
WHERE ins.correlation_id IS NULL
"""

_ATTEMPT_SQL = """
UPDATE payments
SET processor = v.processor,
    requested_at = timestamptz 'epoch' + v.requested_us * interval '1 microsecond',
    attempted_at = now(), updated_at = now()
FROM unnest(CAST(:ids AS uuid[]), CAST(:processors AS text[]), CAST(:requested AS bigint[]))
    AS v(id, processor, requested_us)
WHERE payments.correlation_id = v.id AND payments.status = 'pending'
"""

_PROCESSED_SQL = """
INSERT INTO payments (correlation_id, amount, status, processor, requested_at, attempted_at)
SELECT v.id, v.amount, 'processed', v.processor,
       timestamptz 'epoch' + v.requested_us * interval '1 microsecond', now()
FROM unnest(CAST(:ids AS uuid[]), CAST(:amounts AS numeric[]), CAST(:processors AS text[]),
            CAST(:requested AS bigint[])) AS v(id, amount, processor, requested_us)
ON CONFLICT (correlation_id) DO UPDATE
SET status = 'processed', amount = excluded.amount, processor = excluded.processor,
    requested_at = excluded.requested_at, updated_at = now()
"""


# Each operation's tuple, in order: the array parameter each position fills.
_CLAIM_COLUMNS = ("ids", "amounts", "processors", "requested", "intake")
ClaimRow = tuple[str, Decimal, str, int, int]
"""A claim: correlation id, amount, the first attempt's processor and requestedAt, and when
intake took it; both times in microseconds since the epoch."""
_ATTEMPT_COLUMNS = ("ids", "processors", "requested")
_PROCESSED_COLUMNS = ("ids", "amounts", "processors", "requested")


def _columns(rows: list[tuple], names: tuple[str, ...]) -> dict[str, str]:
    """Rows of operation arguments as one array literal per column, for ``unnest``.

    The literal (``{"a","b"}``) is built here rather than by pg8000 from a list: its per-item
    conversion cost more than the rest of a batch's bookkeeping. Every value is quoted, and
    the two characters that matter inside quotes are escaped.
    """
    return {
        name: "{" + ",".join(_array_item(value) for value in values) + "}"
        for name, values in zip(names, zip(*rows, strict=True), strict=True)
    }


def _array_item(value: Any) -> str:
    text = str(value)
    if '"' in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


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
    """Operation kinds, in the order a turn's transaction runs them."""

    ATTEMPT = 1
    CLAIM = 2
    PROCESSED = 3


_SQL = {_Kind.ATTEMPT: _ATTEMPT_SQL, _Kind.CLAIM: _CLAIM_SQL, _Kind.PROCESSED: _PROCESSED_SQL}


class _Awaited:
    """A caller awaiting the answer on its event loop; answered from the writer's thread."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()


class _Then:
    """A caller that does not wait: ``then`` runs on the writer thread once committed."""

    __slots__ = ("_then", "_what")

    def __init__(self, then: Callable[[], None], what: str) -> None:
        self._then = then
        self._what = what

    def fill(self) -> None:
        self._then()

    def fail(self, error: BaseException) -> None:
        # Not committed, so not acknowledged: the payment is redelivered after a restart and
        # its claim, pinned to the processor that holds it, finds it there.
        _log.error(
            "write failed; its queue item stays unacknowledged",
            extra={"correlation_id": self._what, "error": repr(error)},
        )


_Op = tuple[_Kind, list[tuple], "_Awaited | _Then"]
"""One queued operation: its kind, its rows, and who gets the answer."""


class BatchWriter:
    """Writes payments for an event loop, in batches, on its own connection in its own thread.

    On the loop's side, records nobody waits on (``record_processed``) gather for up to
    ``linger_ms``, and an awaited operation (``claim``, ``record_attempt``) takes whatever
    gathered along at once; each hand-off to the thread is one queue put, so the thread wakes a
    few dozen times a second rather than once a payment. The thread makes each turn (all that
    was handed over meanwhile) one transaction. While PostgreSQL is away, a turn is retried
    until it commits; once ``stopping`` is set, it fails instead, so a stopping process is
    never held up by an outage.

    Call every method but ``start`` from the event loop's thread.
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
        self._handed: queue.SimpleQueue[list[_Op] | None] = queue.SimpleQueue()
        self._unsent: list[_Op] = []
        self._timer: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._loop, name="batch-writer", daemon=True)
        self._started = False
        self._stopping = stopping or threading.Event()

    def start(self) -> None:
        """Start the writer thread."""
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self) -> None:
        """Hand over what gathered, finish everything, then stop."""
        self._hand_over()
        self._handed.put(None)
        if self._started:
            self._thread.join(timeout=10)

    async def claim(self, rows: list[ClaimRow]) -> list[Claim]:
        """Record new payments as pending at their first attempt's processor, in one
        statement; for each row, say what already existed instead, if anything."""
        return await self._submit(_Kind.CLAIM, rows)

    async def record_attempt(self, correlation_id: str, processor: str, requested_us: int) -> None:
        """Note, before sending, which processor the next attempt goes to and its requestedAt
        (microseconds since the epoch)."""
        await self._submit(_Kind.ATTEMPT, [(correlation_id, processor, requested_us)])

    def record_processed(
        self,
        correlation_id: str,
        amount: Decimal,
        processor: str,
        requested_us: int,
        then: Callable[[], None],
    ) -> None:
        """Record that ``processor`` holds the payment with this requestedAt (microseconds since
        the epoch); returns at once, and ``then`` is called (on the writer's thread) once it is
        committed."""
        rows = [(correlation_id, amount, processor, requested_us)]
        self._unsent.append((_Kind.PROCESSED, rows, _Then(then, correlation_id)))
        if not self._linger_s or len(self._unsent) >= self._batch_max:
            self._hand_over()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger_s, self._hand_over)

    async def _submit(self, kind: _Kind, rows: list[tuple]) -> Any:
        if not rows:
            return []
        waiter = _Awaited(asyncio.get_running_loop())
        self._unsent.append((kind, rows, waiter))
        self._hand_over()
        return await waiter.future

    def _hand_over(self) -> None:
        """Give the thread what gathered on the loop's side, in one put."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._unsent:
            self._handed.put(self._unsent)
            self._unsent = []

    def _loop(self) -> None:
        while True:
            handed = self._handed.get()
            if handed is None:
                return
            ops = list(handed)
            while len(ops) < self._batch_max:  # whatever else was handed over joins this turn
                try:
                    more = self._handed.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._handed.put(None)
                    break
                ops += more
            self._turn(ops)

    def _turn(self, ops: list[_Op]) -> None:
        """One transaction for ``ops``; each caller is answered once it is committed."""
        if not ops:
            return
        groups = [(kind, group) for kind in _Kind if (group := [op for op in ops if op[0] is kind])]
        delay_s = _RETRY_INITIAL_S
        while True:
            try:
                results = self._execute(groups)
            except DatabaseUnavailable as exc:
                if self._stopping.is_set():
                    self._answer([(group, exc) for _, group in groups])
                    return
                _log.warning(
                    "postgres unavailable; batch kept for retry",
                    extra={"error": str(exc), "ops": len(ops), "retry_in_s": delay_s},
                )
                self._stopping.wait(delay_s)
                delay_s = min(delay_s * 2, _RETRY_MAX_S)
                continue
            except Exception:
                if len(groups) == 1:
                    results = [sys.exc_info()[1]]
                else:  # run each kind on its own, so only the one at fault fails
                    for group in groups:
                        self._turn(group[1])
                    return
            self._answer(list(zip((group for _, group in groups), results, strict=True)))
            return

    def _execute(self, groups: list[tuple[_Kind, list[_Op]]]) -> list[list[Any]]:
        """Each group's answers, one per row, after one transaction for them all."""
        statements = []
        rows_of = []
        for kind, group in groups:
            rows = [row for _, op_rows, _ in group for row in op_rows]
            rows_of.append(rows)
            if kind is _Kind.PROCESSED:
                rows = list({row[0]: row for row in rows}.values())  # an upsert touches a row once
            statements.append((_SQL[kind], _columns(rows, _COLUMNS[kind])))
        found = self._db.transaction(statements)
        return [
            _claims(rows, answer) if kind is _Kind.CLAIM else [None] * len(rows)
            for (kind, _), rows, answer in zip(groups, rows_of, found, strict=True)
        ]

    def _answer(self, outcomes: list[tuple[list[_Op], list[Any] | BaseException]]) -> None:
        """Hand each caller its rows' answers (or the error): ``then`` callbacks here, and every
        awaiting loop in one wake-up."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for group, results in outcomes:
            start = 0
            for _, op_rows, caller in group:
                if isinstance(results, BaseException):
                    answer: Any = results
                else:
                    answer = results[start : start + len(op_rows)]
                    start += len(op_rows)
                if isinstance(caller, _Awaited):
                    by_loop.setdefault(caller.loop, []).append((caller.future, answer))
                elif isinstance(answer, BaseException):
                    caller.fail(answer)
                else:
                    caller.fill()
        for loop, answers in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, answers)


def _settle(answers: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """On the awaiting loop: resolve each future with its answer or error."""
    for future, answer in answers:
        if future.done():  # its caller was cancelled
            continue
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)


_COLUMNS = {
    _Kind.ATTEMPT: _ATTEMPT_COLUMNS,
    _Kind.CLAIM: _CLAIM_COLUMNS,
    _Kind.PROCESSED: _PROCESSED_COLUMNS,
}


_CLAIMED = Claim(ClaimState.CLAIMED)


def _claims(rows: list[tuple], found: list[list[Any]]) -> list[Claim]:
    """What the claim statement found, as one ``Claim`` per row, in the rows' order.

    The statement answers only for the rows it did not claim (a repeat, a redelivery, a purged
    one): in the common case it sends nothing back, which spares PostgreSQL the output and
    pg8000 the decoding of eight columns a payment.
    """
    by_id: dict[str, Claim] = {}
    for cid, claimed, purged, status, processor, amount, requested_at, attempted_at in found:
        if claimed:
            claim = _CLAIMED
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
        claim = by_id.get(row[0], _CLAIMED)
        if row[0] in seen and claim.state is ClaimState.CLAIMED:
            # The same id twice in one batch: the first copy owns the claim, the second finds
            # it pending, like a repeat that arrives a moment later.
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
