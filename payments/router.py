"""Choose a processor for a payment: the cheapest one that will take it soon enough.

The inputs are only what the processors show: their service-health (failing flag and minimum
response time, shared by the poller), the shared breakers, and the latency this process has
observed. The rule, in order:

1. A processor is *usable* when its breaker lets requests through and its health does not
   say failing; it is *fast* when usable and its expected latency (the larger of what its health
   reports and what we observe) is under ``router.slow_ms``.
2. The cheapest fast processor wins. Waiting on a slow cheap one costs more than the fee
   difference: it holds a worker for the whole delay, and a payment that takes longer than the
   auditor's margin (2 s) would show on the processor before it shows in our summary.
3. If no processor is fast, the cheapest usable one wins.
4. A dearer processor is taken only once the payment has waited ``router.max_wait_s`` for the
   cheaper one (0: at once), which lets a deployment trade latency for fees.
5. If none is usable, the payment waits (``None``), and a half-open breaker lets one probe
   through so that recovery is noticed without waiting for the next health read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from payments.shared_state import ProcessorView
from runtime.config import RouterConfig

_EWMA_WEIGHT = 0.2


@dataclass(frozen=True)
class Route:
    """The chosen processor, and whether this attempt is a half-open breaker's probe."""

    processor: str
    probe: bool = False


class LatencyTracker:
    """An exponentially weighted moving average of each processor's answer time, in ms."""

    def __init__(self) -> None:
        self._ms: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, processor: str, duration_s: float) -> None:
        """Fold one observed answer time in."""
        ms = duration_s * 1000
        with self._lock:
            old = self._ms.get(processor)
            self._ms[processor] = ms if old is None else old + _EWMA_WEIGHT * (ms - old)

    def expected_ms(self, processor: str) -> float:
        """The current average, 0 if never observed."""
        with self._lock:
            return self._ms.get(processor, 0.0)


class Router:
    """Applies the module's rule; processors are ranked by fee, cheapest first."""

    def __init__(
        self, config: RouterConfig, fees: dict[str, float], latency: LatencyTracker
    ) -> None:
        self._config = config
        self._by_fee = sorted(fees, key=lambda name: (fees[name], name))
        self._latency = latency

    def choose(
        self, views: dict[str, ProcessorView], waited_s: float, may_probe: Callable[[str], bool]
    ) -> Route | None:
        """The processor for a payment that has waited ``waited_s``, or ``None`` to wait."""
        cheapest = self._by_fee[0]
        patient = waited_s < self._config.max_wait_s
        usable = [name for name in self._by_fee if _usable(views.get(name))]
        fast = [
            name for name in usable if self._expected_ms(name, views[name]) < self._config.slow_ms
        ]
        for candidates in (fast, usable):
            if candidates and (candidates[0] == cheapest or not patient):
                return Route(candidates[0])
        for name in self._by_fee:
            view = views.get(name)
            if name != cheapest and patient:
                break  # a dearer processor is not even probed before max_wait_s (rule 4)
            if view is not None and view.half_open and not view.failing and may_probe(name):
                return Route(name, probe=True)
        return None

    def _expected_ms(self, name: str, view: ProcessorView) -> float:
        return max(view.min_response_ms, self._latency.expected_ms(name))


def _usable(view: ProcessorView | None) -> bool:
    if view is None:
        return False
    return not view.failing and not view.breaker_open and not view.half_open
