"""Forwarder (background): takes payments off the queue and delivers each exactly once.

``payments/delivery.py`` holds the state machine; this file wires it and logs one line per
payment outcome.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from payments.delivery import Claimed, Delivery, Payment
from payments.router import LatencyTracker, Router
from payments.store import BatchWriter
from payments.wiring import processor_clients, shared_state
from runtime.deps import FunctionContext
from runtime.metrics import AttemptRecorder
from runtime.workers import Message

_log = logging.getLogger("functions.forwarder")


class Forwarder:
    """The runtime calls ``prepare`` with each batch read from the queue, then ``handle`` from
    ``concurrency`` threads, one payment per call."""

    def __init__(self, context: FunctionContext) -> None:
        deps = context.deps
        config = deps.config
        concurrency = int(context.settings.get("pool_size", 256))
        self._clients = processor_clients(deps, concurrency)
        self._writer = BatchWriter(
            deps.database,
            config.postgres.batch_max,
            config.postgres.batch_linger_ms,
            stopping=context.stopping,
        )
        latency = LatencyTracker(deps.clock.monotonic)
        fees = {name: p.fee for name, p in config.processors.items()}
        self._delivery = Delivery(
            processors=self._clients,
            router=Router(config.router, fees, latency),
            latency=latency,
            shared=shared_state(deps),
            writer=self._writer,
            clock=deps.clock,
            config=config.forwarder,
            attempts=AttemptRecorder(deps.metrics),
            stopping=context.stopping,
        )
        self._clock = deps.clock
        self._active: set[str] = set()
        self._active_lock = threading.Lock()

    def start(self) -> None:
        """Start the batch writer before the first item arrives."""
        self._writer.start()

    def stop(self) -> None:
        """Flush the writer and close the pools."""
        self._writer.stop()
        for client in self._clients.values():
            client.close()

    def prepare(self, messages: list[Message]) -> list[Message]:
        """Claim the batch just read in one statement before its items are dispatched.

        An id already being delivered here is left out (and so acknowledged): the copy in
        flight settles it.
        """
        taken: list[Message] = []
        with self._active_lock:
            for message in messages:
                correlation_id = message.body["id"]
                if correlation_id in self._active:
                    _log_repeat(correlation_id)
                    continue
                self._active.add(correlation_id)
                taken.append(message)
        try:
            claimed = self._delivery.claim_many([_payment(message.body) for message in taken])
        except BaseException:
            with self._active_lock:
                for message in taken:
                    self._active.discard(message.body["id"])
            raise
        for message, found in zip(taken, claimed, strict=True):
            message.note = _Taken(found)
        return taken

    def handle(self, message: Message) -> None:
        """Deliver one payment; it is acknowledged once its end state is committed."""
        payment = _payment(message.body)
        correlation_id = payment.correlation_id
        taken: _Taken | None = message.note
        if taken is None:  # not through prepare (it failed, or this is a retry)
            with self._active_lock:
                if correlation_id in self._active:
                    _log_repeat(correlation_id)
                    return
                self._active.add(correlation_id)
        started = self._clock.monotonic()
        try:
            delivered = self._delivery.deliver(
                payment, taken.claimed if taken else None, settled=message.defer()
            )
        finally:
            with self._active_lock:
                self._active.discard(correlation_id)
        fields = {
            "correlation_id": correlation_id,
            "outcome": delivered.outcome,
            "amount": message.body["amount"],
            "attempts": delivered.attempts,
            "seconds": round(self._clock.monotonic() - started, 4),
        }
        if delivered.attempts > 1 or "lookup" in "".join(delivered.path):
            fields["path"] = list(delivered.path)  # only when it took more than one step
        _log.info("payment outcome", extra=fields)


@dataclass(frozen=True)
class _Taken:
    """``prepare`` marked the id as in flight here, and claimed it if it could."""

    claimed: Claimed | None


def _payment(body: dict[str, Any]) -> Payment:
    return Payment(body["id"], Decimal(body["amount"]), float(body["t"]))


def _log_repeat(correlation_id: str) -> None:
    _log.info(
        "payment outcome",
        extra={"correlation_id": correlation_id, "outcome": "repeat_in_flight"},
    )
