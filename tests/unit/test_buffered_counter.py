"""runtime.metrics.BufferedCounter: counts reach the Prometheus child in bulk, never lost."""

from __future__ import annotations

import threading

from runtime import metrics
from runtime.metrics import BufferedCounter, flush_buffered
from tests.support.procs import wait_until


class Child:
    """Stands for a Prometheus counter child: records each ``inc``."""

    def __init__(self) -> None:
        self.incs: list[float] = []

    def inc(self, amount: float = 1) -> None:
        self.incs.append(amount)


def test_flush_buffered_writes_what_was_counted_in_one_update() -> None:
    child = Child()
    counter = BufferedCounter(child)
    for _ in range(5):
        counter.inc()

    flush_buffered()
    flush_buffered()  # nothing new the second time: no empty update
    assert child.incs == [5]


def test_counts_reach_the_child_without_anyone_flushing_once_the_flusher_runs() -> None:
    child = Child()
    counter = BufferedCounter(child)
    counter.inc()
    counter.inc()
    metrics.start_flusher()  # what a serving process does

    wait_until(lambda: sum(child.incs) == 2, timeout_s=metrics.FLUSH_INTERVAL_S * 5, what="flush")


def test_no_count_is_lost_while_another_thread_flushes() -> None:
    child = Child()
    counter = BufferedCounter(child)
    stop = threading.Event()

    def flush_often() -> None:
        while not stop.is_set():
            counter.flush()

    flusher = threading.Thread(target=flush_often)
    flusher.start()
    for _ in range(100_000):
        counter.inc()
    stop.set()
    flusher.join()
    counter.flush()
    assert sum(child.incs) == 100_000
