"""The payments bundle's metrics, made through the runtime's registry (``metrics:`` in
``functions.yaml``): each process builds one ``PaymentMetrics``, shared by its functions."""

from __future__ import annotations

import collections
import threading

from runtime.metrics import Registry


class PaymentMetrics:
    """What intake, the forwarder and the health poller count."""

    def __init__(self, registry: Registry) -> None:
        self.payment_requests = registry.counter(
            "payment_requests_total",
            "Payments sent to a processor, by processor and outcome.",
            ["processor", "status"],
        )
        self.payment_duration = registry.histogram(
            "payment_duration_seconds", "Time a processor took to answer a payment.", ["processor"]
        )
        self.active_connections = registry.gauge(
            "active_connections", "Requests to processors in flight."
        )
        self.health_check_failures = registry.counter(
            "health_check_failures_total",
            "Reads of a processor's service-health that failed.",
            ["processor"],
        )
        self.accepted = registry.buffered_counter(
            "payments_accepted_total", "Payments accepted by intake."
        )
        self.rejected = registry.counter(
            "payments_rejected_total", "Requests refused by intake, by reason.", ["reason"]
        )
        self.attempts = AttemptRecorder(self, registry)


class AttemptRecorder:
    """Per-attempt figures gathered in memory and applied in bulk by the process's flusher.

    Each multiprocess metric update takes one process-wide lock and writes an mmap: four of
    them per attempt would cost more than the attempt's own bookkeeping. Here an attempt only
    appends to a deque (atomic under the GIL); the flusher applies the sums. Figures lag by at
    most the flush interval.
    """

    def __init__(self, metrics: PaymentMetrics, registry: Registry) -> None:
        self._metrics = metrics
        self._done: collections.deque[tuple[str, str, float]] = collections.deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        registry.every_flush(self.flush)

    def started(self) -> None:
        """An attempt is about to be sent."""
        with self._lock:
            self._in_flight += 1

    def finished(self, processor: str, status: str, duration_s: float) -> None:
        """An attempt ended with ``status`` after ``duration_s``."""
        with self._lock:
            self._in_flight -= 1
        self._done.append((processor, status, duration_s))

    def flush(self) -> None:
        """Apply what was recorded since the last flush."""
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        metrics = self._metrics
        while True:
            try:
                processor, status, duration_s = self._done.popleft()
            except IndexError:
                break
            counts[(processor, status)] += 1
            metrics.payment_duration.labels(processor).observe(duration_s)
        for (processor, status), count in counts.items():
            metrics.payment_requests.labels(processor, status).inc(count)
        with self._lock:
            in_flight = self._in_flight
        metrics.active_connections.set(in_flight)
