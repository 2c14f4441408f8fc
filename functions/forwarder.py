"""Forwarder (background): takes payments off the queue and delivers each exactly once.

``payments/delivery.py`` holds the state machine; this file wires it and logs the outcomes.
It is a coroutine function: the runtime runs one task per payment on an event loop, so
hundreds of payments wait on the processors at once without a thread each.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Annotated

from payments.delivery import Claimed, Delivered, Delivery
from payments.payment import Payment
from payments.processors import AsyncProcessorClient
from payments.router import LatencyTracker, Router
from payments.shared_state import SharedStateClient
from payments.store import BatchWriter
from payments.wiring import processor_clients, shared_state
from runtime.deps import FunctionContext
from runtime.schema import AtLeast, Range
from runtime.workers import Message

_log = logging.getLogger("functions.forwarder")
_TALLY_INTERVAL_S = 10.0


class Forwarder:
    """The runtime calls ``prepare`` with each batch read from the queue, then ``handle`` once
    per payment, up to ``concurrency`` at a time."""

    @dataclass(frozen=True)
    class Settings:
        max_connections: Annotated[int, Range(1, 4096)] = 512
        """Kept-alive connections to each processor at most."""
        batch_max: Annotated[int, AtLeast(1)] = 500
        """Writes to PostgreSQL in one transaction at most."""
        batch_linger_ms: Annotated[float, Range(0, 1000)] = 50.0
        """How long the writes that nobody waits on (a payment's final record, whose queue item
        is acknowledged on commit) wait for company: fewer, larger round trips. Keep it well
        under the auditor's 2 s margin; a write somebody waits on (a claim) goes at once."""

    def __init__(self, context: FunctionContext) -> None:
        deps = context.deps
        config = context.config
        settings = context.settings
        self._clients = processor_clients(config, AsyncProcessorClient, settings.max_connections)
        self._writer = BatchWriter(
            deps.database,
            settings.batch_max,
            settings.batch_linger_ms,
            stopping=context.stopping,
        )
        self._shared = SharedStateClient(
            shared_state(config, deps), config.router.state_cache_ms / 1000
        )
        latency = LatencyTracker(deps.clock.monotonic)
        self._delivery = Delivery(
            processors=dict(self._clients),
            router=Router(config.router, config.fees, latency),
            latency=latency,
            shared=self._shared,
            writer=self._writer,
            clock=deps.clock,
            config=config.forwarder,
            attempts=deps.metrics.attempts,
            sleep=context.stopping.sleep,
        )
        self._clock = deps.clock
        self._active: set[str] = set()
        self._tally = _Tally()

    def start(self) -> None:
        """Start the batch writer and the shared-state thread before the first item arrives."""
        self._writer.start()
        self._shared.start()

    def stop(self) -> None:
        """Flush the writer, stop the shared-state thread, close the connections."""
        self._writer.stop()
        self._shared.stop()
        for client in self._clients.values():
            client.close()
        self._tally.report(force=True)

    async def prepare(self, messages: list[Message]) -> list[Message]:
        """Claim the batch just read in one statement before its items are dispatched.

        An id already being delivered here is left out (and so acknowledged): the copy in
        flight settles it.
        """
        taken: list[Message] = []
        for message in messages:
            correlation_id = message.body.correlation_id
            if correlation_id in self._active:
                self._repeat(correlation_id)
                continue
            self._active.add(correlation_id)
            taken.append(message)
        payments: list[Payment] = [message.body for message in taken]
        try:
            claimed = await self._delivery.claim_many(payments)
        except BaseException:
            for payment in payments:
                self._active.discard(payment.correlation_id)
            raise
        for message, found in zip(taken, claimed, strict=True):
            message.note = _Taken(found)
        return taken

    async def handle(self, message: Message) -> None:
        """Deliver one payment; it is acknowledged once its end state is committed."""
        taken: _Taken | None = message.note
        payment: Payment = message.body
        correlation_id = payment.correlation_id
        if taken is None:  # not through prepare (it failed, or this is a retry)
            if correlation_id in self._active:
                self._repeat(correlation_id)
                return
            self._active.add(correlation_id)
        started = self._clock.monotonic()
        try:
            delivered = await self._delivery.deliver(
                payment, taken.claimed if taken else None, message.defer()
            )
        finally:
            self._active.discard(correlation_id)
        self._tally.add(delivered)
        if delivered.attempts == 1 and len(delivered.path) == 1:
            return  # the common case: counted in the tally, in the metrics and in PostgreSQL
        _log.info(
            "payment outcome",
            extra={
                "correlation_id": correlation_id,
                "outcome": delivered.outcome,
                "amount": str(payment.amount),
                "attempts": delivered.attempts,
                "seconds": round(self._clock.monotonic() - started, 4),
                "path": list(delivered.path),
            },
        )

    def _repeat(self, correlation_id: str) -> None:
        self._tally.counts["repeat_in_flight"] += 1
        _log.info(
            "payment outcome",
            extra={"correlation_id": correlation_id, "outcome": "repeat_in_flight"},
        )


class _Tally:
    """Outcomes counted and logged as one line every ``_TALLY_INTERVAL_S``.

    A payment delivered at the first attempt gets no line of its own: at hundreds a second,
    formatting them would cost more than delivering them. Everything else (a retry, a lookup,
    a repeat) is logged with its path.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._since = time.monotonic()

    def add(self, delivered: Delivered) -> None:
        self.counts[delivered.outcome] += 1
        self.report()

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not (force or now - self._since >= _TALLY_INTERVAL_S):
            return
        if self.counts:
            _log.info(
                "payments delivered",
                extra={"seconds": round(now - self._since, 1), "outcomes": dict(self.counts)},
            )
        self.counts.clear()
        self._since = now


@dataclass(frozen=True)
class _Taken:
    """``prepare`` marked the id as in flight here and claimed it if it could."""

    claimed: Claimed | None
