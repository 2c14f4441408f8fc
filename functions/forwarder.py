"""Forwarder (background): takes payments off the queue and delivers each exactly once.

``payments/delivery.py`` holds the state machine; this file wires it and logs one line per
payment outcome.
"""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from typing import Any

from payments.delivery import Delivery
from payments.router import LatencyTracker, Router
from payments.store import BatchWriter
from payments.wiring import processor_clients, shared_state
from runtime.deps import FunctionContext
from runtime.metrics import AttemptRecorder

_log = logging.getLogger("functions.forwarder")


class Forwarder:
    """Called by the runtime from ``concurrency`` threads, one payment per call."""

    def __init__(self, context: FunctionContext) -> None:
        deps = context.deps
        config = deps.config
        concurrency = int(context.settings.get("pool_size", 256))
        self._clients = processor_clients(deps, concurrency)
        self._writer = BatchWriter(
            deps.database, config.postgres.batch_max, config.postgres.batch_linger_ms
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

    def handle(self, item: dict[str, Any]) -> None:
        """Deliver one payment; returns once it is recorded (or known to be a repeat)."""
        correlation_id = item["id"]
        with self._active_lock:
            if correlation_id in self._active:
                _log.info(
                    "payment outcome",
                    extra={"correlation_id": correlation_id, "outcome": "repeat_in_flight"},
                )
                return
            self._active.add(correlation_id)
        started = self._clock.monotonic()
        try:
            delivered = self._delivery.deliver(
                correlation_id, Decimal(item["amount"]), float(item["t"])
            )
        finally:
            with self._active_lock:
                self._active.discard(correlation_id)
        fields = {
            "correlation_id": correlation_id,
            "outcome": delivered.outcome,
            "amount": item["amount"],
            "attempts": delivered.attempts,
            "seconds": round(self._clock.monotonic() - started, 4),
        }
        if delivered.attempts > 1 or "lookup" in "".join(delivered.path):
            fields["path"] = list(delivered.path)  # only when it took more than one step
        _log.info("payment outcome", extra=fields)
