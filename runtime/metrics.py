"""Prometheus metrics in multiprocess mode, so every process of every instance adds up.

The runtime owns the plumbing; a bundle owns its metrics. A bundle names a class in
``functions.yaml`` (``metrics:``) that takes a :class:`Registry` and makes its counters, gauges
and histograms through it; each process builds it once (``context.deps.metrics``).

``prometheus_client`` keeps one file per process in a folder shared by every instance, which
``render`` adds up. ``enable_multiprocess`` points it there; it must run in a process before
that process makes any metric. Files are named by instance and pid, because two containers
can hand out the same pid. Without it (``runtime check``), metrics live in memory only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_log = logging.getLogger("runtime.metrics")
ENV_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
ENV_PROCESS_ID = "RUNTIME_METRICS_PREFIX"
FLUSH_INTERVAL_S = 0.5
_DEFAULT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


def enable_multiprocess(metrics_dir: Path, instance: str) -> None:
    """Point ``prometheus_client`` at the shared folder; call at process start."""
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


def render(metrics_dir: Path) -> bytes:
    """Every process's metrics added up, in Prometheus text format (this one's buffers first)."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    flush_buffered()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))
    return generate_latest(registry)


class Registry:
    """Makes metrics for one process; nothing is registered globally, so nothing collides.

    Counters and histograms add up across processes; a gauge is summed over the live
    processes (``livesum``) unless told otherwise.
    """

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Any:
        """A ``prometheus_client.Counter``; ``name`` should end in ``_total``."""
        from prometheus_client import Counter

        return Counter(name, documentation, list(labels), registry=None)

    def gauge(
        self, name: str, documentation: str, labels: Sequence[str] = (), mode: str = "livesum"
    ) -> Any:
        """A ``prometheus_client.Gauge``, combined across processes by ``mode``."""
        from prometheus_client import Gauge

        return Gauge(name, documentation, list(labels), multiprocess_mode=mode, registry=None)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = _DEFAULT_BUCKETS_S,
    ) -> Any:
        """A ``prometheus_client.Histogram``."""
        from prometheus_client import Histogram

        return Histogram(name, documentation, list(labels), buckets=buckets, registry=None)

    def buffered_counter(self, name: str, documentation: str) -> BufferedCounter:
        """A counter cheap enough to bump once a request: see :class:`BufferedCounter`."""
        return BufferedCounter(self.counter(name, documentation))

    def every_flush(self, flush: Callable[[], None]) -> None:
        """Have this process's flusher call ``flush`` every ``FLUSH_INTERVAL_S``, and before a
        scrape: for figures a function gathers in memory and writes in bulk."""
        with _FLUSH_LOCK:
            _FLUSHES.append(flush)


class BufferedCounter:
    """A counter bumped in this process and written to the shared files in bulk.

    A multiprocess update takes a lock and writes an mmap: tens of microseconds, on an HTTP
    server's one thread, for every request. Here ``inc`` only adds to an integer, and the
    process's flusher writes the difference every ``FLUSH_INTERVAL_S`` (a wake-up the server
    does not notice). The count in the files lags by at most that interval; a scrape in this
    process writes the rest first.
    """

    def __init__(self, child: Any) -> None:
        self._child = child
        self._count = 0  # written by inc() alone
        self._written = 0  # written by flush() alone, under _FLUSH_LOCK
        with _FLUSH_LOCK:
            _FLUSHES.append(self.flush)

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


_FLUSHES: list[Callable[[], None]] = []
_FLUSH_LOCK = threading.RLock()
_flusher_pid: int | None = None


def flush_buffered() -> None:
    """Write every buffered figure of this process."""
    with _FLUSH_LOCK:
        flushes = list(_FLUSHES)
    for flush in flushes:
        flush()


def start_flusher() -> None:
    """Start this process's flusher thread (once per process); the runtime calls it when a
    process begins to serve, so that building a function starts no thread."""
    global _flusher_pid
    with _FLUSH_LOCK:
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


class QueueGauges:
    """The runtime's own figures: what each queue holds and what its consumer has in hand."""

    def __init__(self, registry: Registry) -> None:
        self.backlog = registry.gauge(
            "queue_backlog_bytes",
            "Bytes queued for background functions and not read yet.",
            ["queue"],
        )
        self.in_flight = registry.gauge(
            "queue_in_flight",
            "Items a background function has taken and not settled yet.",
            ["queue"],
        )
