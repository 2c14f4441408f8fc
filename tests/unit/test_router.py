"""The router's rule, as payments/router.py's docstring states it, one rule at a time."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from payments.config import RouterConfig
from payments.router import LatencyTracker, Route, Router
from payments.shared_state import ProcessorView


def _frozen_clock() -> float:
    return 0.0


FEES = {"default": 0.05, "fallback": 0.15}
HEALTHY = ProcessorView()
FAILING = ProcessorView(failing=True)
OPEN = ProcessorView(breaker_open=True, failures=5)
HALF_OPEN = ProcessorView(half_open=True, failures=5)
SLOW = ProcessorView(min_response_ms=2000)


def router(
    slow_ms: float = 1500, max_wait_s: float = 0, latency: LatencyTracker | None = None
) -> Router:
    return Router(
        RouterConfig(slow_ms=slow_ms, max_wait_s=max_wait_s),
        FEES,
        latency or LatencyTracker(_frozen_clock),
    )


def no_probe(name: str) -> bool:
    raise AssertionError(f"may_probe({name!r}) called although a processor is usable")


def probes_allowed(log: list[str], allowed: bool = True) -> Callable[[str], bool]:
    def may_probe(name: str) -> bool:
        log.append(name)
        return allowed

    return may_probe


# Rule 1 and 2: the cheapest fast processor wins.


def test_the_cheapest_processor_wins_when_both_are_fast() -> None:
    views = {"default": HEALTHY, "fallback": HEALTHY}

    assert router().choose(views, 0.0, no_probe) == Route("default")


def test_processors_are_ranked_by_fee_not_by_name() -> None:
    cheap_fallback = Router(
        RouterConfig(), {"default": 0.15, "fallback": 0.05}, LatencyTracker(_frozen_clock)
    )

    assert cheap_fallback.choose({"default": HEALTHY, "fallback": HEALTHY}, 0, no_probe) == Route(
        "fallback"
    )


@pytest.mark.parametrize("view", [FAILING, OPEN], ids=["failing", "breaker_open"])
def test_an_unusable_cheap_processor_is_passed_over_for_a_usable_one(view: ProcessorView) -> None:
    assert router().choose({"default": view, "fallback": HEALTHY}, 0, no_probe) == Route("fallback")


def test_a_processor_without_a_view_is_not_usable() -> None:
    assert router().choose({"fallback": HEALTHY}, 0, no_probe) == Route("fallback")


def test_a_slow_cheap_processor_loses_to_a_fast_dearer_one() -> None:
    views = {"default": SLOW, "fallback": HEALTHY}

    assert router().choose(views, 0, no_probe) == Route("fallback")


def test_slow_means_at_or_above_slow_ms() -> None:
    at_limit = {"default": ProcessorView(min_response_ms=1500), "fallback": HEALTHY}
    under = {"default": ProcessorView(min_response_ms=1499), "fallback": HEALTHY}

    assert router(slow_ms=1500).choose(at_limit, 0, no_probe) == Route("fallback")
    assert router(slow_ms=1500).choose(under, 0, no_probe) == Route("default")


def test_observed_latency_makes_a_processor_slow_even_when_its_health_says_fast() -> None:
    latency = LatencyTracker(_frozen_clock)
    latency.observe("default", 3.0)

    views = {"default": HEALTHY, "fallback": HEALTHY}

    assert router(latency=latency).choose(views, 0, no_probe) == Route("fallback")


def test_reported_latency_counts_even_when_observed_latency_is_low() -> None:
    latency = LatencyTracker(_frozen_clock)
    latency.observe("default", 0.010)

    views = {"default": SLOW, "fallback": HEALTHY}

    assert router(latency=latency).choose(views, 0, no_probe) == Route("fallback")


# Rule 3: if no processor is fast, the cheapest usable one wins.


def test_when_both_are_slow_the_cheapest_usable_wins() -> None:
    views = {"default": SLOW, "fallback": SLOW}

    assert router().choose(views, 0, no_probe) == Route("default")


def test_when_none_is_fast_a_slow_dearer_one_wins_over_an_unusable_cheap_one() -> None:
    views = {"default": FAILING, "fallback": SLOW}

    assert router().choose(views, 0, no_probe) == Route("fallback")


# Rule 4: the dearer processor only after max_wait_s.


def test_with_max_wait_a_patient_payment_waits_for_the_cheap_processor() -> None:
    views = {"default": OPEN, "fallback": HEALTHY}

    assert router(max_wait_s=2).choose(views, 1.9, probes_allowed([])) is None


def test_with_max_wait_the_dearer_processor_is_taken_once_the_wait_is_over() -> None:
    views = {"default": OPEN, "fallback": HEALTHY}

    assert router(max_wait_s=2).choose(views, 2.0, no_probe) == Route("fallback")


def test_with_max_wait_a_patient_payment_takes_the_cheap_one_even_if_slow() -> None:
    views = {"default": SLOW, "fallback": HEALTHY}

    assert router(max_wait_s=2).choose(views, 0.5, no_probe) == Route("default")
    assert router(max_wait_s=2).choose(views, 2.5, no_probe) == Route("fallback")


def test_max_wait_zero_takes_the_dearer_processor_at_once() -> None:
    views = {"default": FAILING, "fallback": HEALTHY}

    assert router(max_wait_s=0).choose(views, 0.0, no_probe) == Route("fallback")


def test_the_cheapest_processor_is_taken_at_once_whatever_max_wait_is() -> None:
    views = {"default": HEALTHY, "fallback": HEALTHY}

    assert router(max_wait_s=60).choose(views, 0.0, no_probe) == Route("default")


# Rule 5: none usable: wait, except for one probe through a half-open breaker.


@pytest.mark.parametrize(
    "views",
    [
        {"default": FAILING, "fallback": FAILING},
        {"default": OPEN, "fallback": OPEN},
        {"default": FAILING, "fallback": OPEN},
        {},
    ],
)
def test_when_none_is_usable_and_none_is_half_open_the_payment_waits(
    views: dict[str, ProcessorView],
) -> None:
    asked: list[str] = []

    assert router().choose(views, 100, probes_allowed(asked)) is None
    assert asked == []


def test_a_half_open_processor_gets_a_probe_when_none_is_usable() -> None:
    asked: list[str] = []
    views = {"default": OPEN, "fallback": HALF_OPEN}

    assert router().choose(views, 0, probes_allowed(asked)) == Route("fallback", probe=True)
    assert asked == ["fallback"]


def test_the_cheapest_half_open_processor_is_probed_first() -> None:
    asked: list[str] = []
    views = {"default": HALF_OPEN, "fallback": HALF_OPEN}

    assert router().choose(views, 0, probes_allowed(asked)) == Route("default", probe=True)
    assert asked == ["default"]


def test_when_the_probe_is_taken_elsewhere_the_next_half_open_one_is_asked() -> None:
    asked: list[str] = []

    def only_fallback(name: str) -> bool:
        asked.append(name)
        return name == "fallback"

    views = {"default": HALF_OPEN, "fallback": HALF_OPEN}

    assert router().choose(views, 0, only_fallback) == Route("fallback", probe=True)
    assert asked == ["default", "fallback"]


def test_when_the_probe_gate_refuses_the_payment_waits() -> None:
    asked: list[str] = []
    views = {"default": HALF_OPEN, "fallback": OPEN}

    assert router().choose(views, 0, probes_allowed(asked, allowed=False)) is None
    assert asked == ["default"]


def test_a_half_open_processor_that_reports_failing_is_not_probed() -> None:
    asked: list[str] = []
    views = {"default": ProcessorView(half_open=True, failing=True), "fallback": OPEN}

    assert router().choose(views, 0, probes_allowed(asked)) is None
    assert asked == []


def test_a_cheaper_half_open_processor_is_probed_although_a_dearer_one_is_fast() -> None:
    # Never probed, its breaker would never close: every payment would stay on the fallback.
    asked: list[str] = []
    views = {"default": HALF_OPEN, "fallback": HEALTHY}

    assert router().choose(views, 0, probes_allowed(asked)) == Route("default", probe=True)
    assert asked == ["default"]


def test_when_the_cheaper_ones_probe_is_taken_elsewhere_the_fast_dearer_one_is_used() -> None:
    asked: list[str] = []
    views = {"default": HALF_OPEN, "fallback": HEALTHY}

    assert router().choose(views, 0, probes_allowed(asked, allowed=False)) == Route("fallback")
    assert asked == ["default"]


def test_a_dearer_half_open_processor_is_not_probed_while_the_cheapest_is_fast() -> None:
    views = {"default": HEALTHY, "fallback": HALF_OPEN}

    assert router().choose(views, 0, no_probe) == Route("default")


def test_a_patient_payment_probes_the_cheap_half_open_processor_instead_of_going_dearer() -> None:
    asked: list[str] = []
    views = {"default": HALF_OPEN, "fallback": HEALTHY}

    assert router(max_wait_s=5).choose(views, 0, probes_allowed(asked)) == Route(
        "default", probe=True
    )


# The latency tracker.


def test_latency_tracker_starts_at_zero_and_takes_the_first_observation_whole() -> None:
    latency = LatencyTracker(_frozen_clock)

    assert latency.expected_ms("default") == 0.0
    latency.observe("default", 0.100)
    assert latency.expected_ms("default") == pytest.approx(100.0)


def test_latency_tracker_moves_a_fifth_of_the_way_towards_each_new_observation() -> None:
    latency = LatencyTracker(_frozen_clock)
    latency.observe("default", 0.100)
    latency.observe("default", 0.600)

    assert latency.expected_ms("default") == pytest.approx(200.0)
    assert latency.expected_ms("fallback") == 0.0


def test_a_latency_observed_longer_ago_than_its_memory_no_longer_counts() -> None:
    now = [100.0]
    latency = LatencyTracker(lambda: now[0], memory_s=3.0)
    latency.observe("default", 2.0)
    assert latency.expected_ms("default") == 2000.0
    now[0] = 103.0
    assert latency.expected_ms("default") == 0.0


def test_a_processor_avoided_for_slowness_is_chosen_again_once_its_health_says_it_is_fast() -> None:
    now = [100.0]
    latency = LatencyTracker(lambda: now[0], memory_s=3.0)
    router = Router(RouterConfig(slow_ms=1500), FEES, latency)
    latency.observe("default", 2.0)
    healthy = {"default": ProcessorView(), "fallback": ProcessorView()}
    assert router.choose(healthy, 0.0, lambda name: False) == Route("fallback")
    now[0] = 104.0
    assert router.choose(healthy, 0.0, lambda name: False) == Route("default")


def test_a_processor_whose_attempts_suddenly_wait_much_longer_than_usual_counts_as_slow() -> None:
    now = [100.0]
    latency = LatencyTracker(lambda: now[0])
    for _ in range(5):
        latency.observe("default", 0.010)  # it has been answering in 10 ms
    latency.begin("default")
    now[0] += 0.1
    assert latency.expected_ms("default") == pytest.approx(10.0)  # 100 ms: not yet suspect
    now[0] += 0.2
    assert latency.expected_ms("default") == math.inf  # 300 ms in flight: slow at once


def test_an_attempt_that_answered_no_longer_counts_as_waiting() -> None:
    now = [100.0]
    latency = LatencyTracker(lambda: now[0])
    token = latency.begin("default")
    now[0] += 1.0
    latency.observe("default", 1.0, token)
    now[0] += 0.5
    assert latency.expected_ms("default") == pytest.approx(1000.0)


def test_a_half_open_processor_is_probed_rather_than_settling_for_a_slow_one() -> None:
    router = Router(RouterConfig(slow_ms=1500), FEES, LatencyTracker(_frozen_clock))
    views = {
        "default": ProcessorView(min_response_ms=2000),
        "fallback": ProcessorView(breaker_open=False, half_open=True),
    }
    assert router.choose(views, 0.0, lambda name: True) == Route("fallback", probe=True)
    assert router.choose(views, 0.0, lambda name: False) == Route("default")
