"""Prometheus metrics in multiprocess mode, so every process of every instance adds up.

``prometheus_client`` picks its value storage when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``: ``enable_multiprocess`` must run before anything imports it.
Files are named by instance and pid, because two containers can hand out the same pid.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

_log = logging.getLogger("runtime.metrics")
ENV_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
ENV_PROCESS_ID = "RUNTIME_METRICS_PREFIX"


def enable_multiprocess(metrics_dir: Path, instance: str) -> None:
    """Point ``prometheus_client`` at the shared folder; call at process start, before import."""
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ[ENV_MULTIPROC_DIR] = str(metrics_dir)
    os.environ[ENV_PROCESS_ID] = instance
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)


def _process_identifier() -> str:
    # prometheus_client asks on every update (to notice a fork): cached per pid.
    return _identifier_of(os.getpid())


@functools.lru_cache(maxsize=4)
def _identifier_of(pid: int) -> str:
    return f"{os.environ.get(ENV_PROCESS_ID, 'x')}-{pid}"


def forget_process(metrics_dir: Path, instance: str, pid: int) -> None:
    """Drop a dead process's live gauges (their value means nothing once it is gone)."""
    for path in metrics_dir.glob(f"gauge_live*_{instance}-{pid}.db"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def forget_instance(metrics_dir: Path, instance: str) -> None:
    """Drop an instance's live gauges left by an earlier run; counters are kept."""
    for path in metrics_dir.glob(f"gauge_live*_{instance}-*.db"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class Metrics:
    """The metrics every function may feed; created once per process, never registered globally."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.payment_requests = Counter(
            "payment_requests_total",
            "Payments sent to a processor, by processor and outcome.",
            ["processor", "status"],
            registry=None,
        )
        self.payment_duration = Histogram(
            "payment_duration_seconds",
            "Time a processor took to answer a payment.",
            ["processor"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=None,
        )
        self.active_connections = Gauge(
            "active_connections",
            "Requests to processors in flight.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.health_check_failures = Counter(
            "health_check_failures_total",
            "Reads of a processor's service-health that failed.",
            ["processor"],
            registry=None,
        )
        self.queue_depth = Gauge(
            "queue_backlog_bytes",
            "Bytes queued for background functions and not read yet.",
            ["queue"],
            multiprocess_mode="livesum",
            registry=None,
        )
        self.in_flight = Gauge(
            "queue_in_flight",
            "Items a background function has taken and not settled yet.",
            ["queue"],
            multiprocess_mode="livesum",
            registry=None,
        )
        self.accepted = Counter(
            "payments_accepted_total", "Payments accepted by intake.", registry=None
        )
        self.rejected = Counter(
            "payments_rejected_total",
            "Requests refused by intake, by reason.",
            ["reason"],
            registry=None,
        )


class BufferedCounter:
    """A counter bumped in this process and written to the shared files in bulk.

    A multiprocess update takes a lock and writes an mmap: tens of microseconds, on the HTTP
    server's one thread, for every payment. Here ``inc`` only adds to an integer, and the
    process's flusher thread writes the difference every ``FLUSH_INTERVAL_S`` (a wake-up the
    server does not notice). The count in the files lags by at most that interval;
    ``flush_buffered`` (which ``GET /metrics`` calls for its own process) writes the rest at
    once.
    """

    def __init__(self, child: Any) -> None:
        self._child = child
        self._count = 0  # written by inc() alone
        self._written = 0  # written by flush() alone, under _FLUSH_LOCK
        _buffer(self)

    def inc(self) -> None:
        """Count one."""
        self._count += 1

    def flush(self) -> None:
        """Write what was counted since the last flush."""
        with _FLUSH_LOCK:
            count = self._count
            if count != self._written:
                self._child.inc(count - self._written)
                self._written = count


class _Buffered(Protocol):
    def flush(self) -> None: ...


FLUSH_INTERVAL_S = 0.5
_BUFFERED: list[_Buffered] = []
_FLUSH_LOCK = threading.Lock()
_flusher_pid: int | None = None


def flush_buffered() -> None:
    """Write every buffered figure of this process."""
    with _FLUSH_LOCK:
        buffered = list(_BUFFERED)
    for figures in buffered:
        figures.flush()


def _buffer(figures: _Buffered) -> None:
    """Have this process's flusher thread write ``figures`` every ``FLUSH_INTERVAL_S``.

    One thread per process (a forked child starts its own) serves every buffer in it.
    """
    global _flusher_pid
    with _FLUSH_LOCK:
        _BUFFERED.append(figures)
        if _flusher_pid == os.getpid():
            return
        _flusher_pid = os.getpid()

    def loop() -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            try:
                flush_buffered()
            except Exception:  # a metrics file gone: report it, keep counting
                _log.exception("buffered metrics could not be written")

    threading.Thread(target=loop, name="metrics-flush", daemon=True).start()


class AttemptRecorder:
    """Buffers per-attempt figures in the process and applies them every ``FLUSH_INTERVAL_S``.

    Each multiprocess metric update takes one process-wide lock and writes an mmap; with
    hundreds of worker threads, four of them per payment attempt cost more than the attempt's
    own bookkeeping. Here a thread only appends to a deque (atomic under the GIL); one thread
    applies the sums. Figures lag by at most the flush interval.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._done: collections.deque[tuple[str, str, float]] = collections.deque()
        self._in_flight = 0
        self._lock = threading.Lock()
        _buffer(self)

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


def render(metrics_dir: Path) -> bytes:
    """Every process's metrics added up, in Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))
    return generate_latest(registry)
