"""The fault suite's /health watcher: when the stack turned green again, if it went red."""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.faults import _HEALTH_POLL_S, _HealthWatcher


def _answers(*states: bool) -> Callable[[], bool]:
    """A /health that answers ``states`` in turn, then the last one for ever."""
    remaining = list(states)

    def healthy() -> bool:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return healthy


def test_green_again_is_the_first_green_answer_after_red() -> None:
    watcher = _HealthWatcher(_answers(True, False, False, True))
    started = time.monotonic()
    watcher.start(started)

    green_at = watcher.green_again_at()

    assert green_at is not None
    assert started < green_at < time.monotonic()


def test_a_stale_green_answer_between_red_ones_is_not_recovery() -> None:
    # One instance's cached "ok" right after the fault, then red until the real recovery.
    watcher = _HealthWatcher(_answers(False, True, False, False, False, True))
    started = time.monotonic()
    watcher.start(started)

    green_at = watcher.green_again_at()

    assert green_at is not None
    assert green_at - started >= 5 * _HEALTH_POLL_S


def test_a_stack_that_never_went_red_has_no_green_again_time() -> None:
    watcher = _HealthWatcher(_answers(True))
    watcher.start(time.monotonic())

    assert watcher.green_again_at() is None
