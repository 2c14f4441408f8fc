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
3. A half-open breaker's processor cheaper than the fast one we would take gets one probe
   (one at a time, deployment-wide): a breaker only closes after a probe succeeds, so one
   never probed would keep payments on a dearer processor for good. If no processor is fast,
   any half-open one is probed before settling for a slow one; otherwise the cheapest usable
   one wins.
4. A dearer processor is taken only once the payment has waited ``router.max_wait_s`` for the
   cheaper one (0: at once), which lets a deployment trade latency for fees.
5. If none is usable, the payment waits (``None``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

from payments.config import RouterConfig
from payments.shared_state import ProcessorView

_EWMA_WEIGHT = 0.2
_LATENCY_MEMORY_S = 6.0  # longer than the 5.1 s between health reads: slow stays slow
_SUSPECT_MARGIN_MS = 200.0


@dataclass(frozen=True)
class Route:
    """The chosen processor, and whether this attempt is a half-open breaker's probe."""

    processor: str
    probe: bool = False


class LatencyTracker:
    """How long each processor takes: answers observed, and attempts still waiting.

    The average of observed answer times (EWMA) comes too late when a processor turns slow:
    the first slow answers arrive only after the slow delay. So the age of the oldest attempt
    still in flight counts too, as soon as it exceeds what the processor has been taking
    (``2 x average + _SUSPECT_MARGIN_MS``): a processor that suddenly stops answering is
    treated as slow within a few hundred milliseconds, not seconds.

    An average is only as good as its last observation: one older than ``memory_s`` counts for
    nothing, so a processor avoided for being slow is judged again by its health alone (the
    router would otherwise never send it anything again, and never learn it recovered).
    """

    def __init__(self, clock: Callable[[], float], memory_s: float = _LATENCY_MEMORY_S) -> None:
        self._clock = clock
        self._memory_s = memory_s
        self._ms: dict[str, tuple[float, float]] = {}
        self._started: dict[str, dict[int, float]] = {}
        self._next_token = 0
        self._lock = threading.Lock()

    def begin(self, processor: str) -> int:
        """An attempt leaves for ``processor``; returns the token that ``observe`` takes."""
        with self._lock:
            self._next_token += 1
            self._started.setdefault(processor, {})[self._next_token] = self._clock()
            return self._next_token

    def observe(self, processor: str, duration_s: float, token: int | None = None) -> None:
        """Fold one observed answer time in (and end the attempt ``token``)."""
        ms = duration_s * 1000
        now = self._clock()
        with self._lock:
            if token is not None:
                self._started.get(processor, {}).pop(token, None)
            old = self._ms.get(processor)
            fresh = old is not None and now - old[1] < self._memory_s
            self._ms[processor] = (old[0] + _EWMA_WEIGHT * (ms - old[0]) if fresh else ms, now)

    def expected_ms(self, processor: str) -> float:
        """What an attempt sent now is likely to take; ``inf`` while the processor is suspect
        (its attempts wait far longer than it has been answering); 0 if nothing is known."""
        now = self._clock()
        with self._lock:
            value = self._ms.get(processor)
            started = self._started.get(processor)
            oldest = min(started.values()) if started else None
        average = 0.0 if value is None or now - value[1] >= self._memory_s else value[0]
        if oldest is not None and (now - oldest) * 1000 > 2 * average + _SUSPECT_MARGIN_MS:
            return math.inf
        return average


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
        taken = fast[0] if fast and (fast[0] == cheapest or not patient) else None
        if taken == cheapest:
            return Route(taken)
        # Test a half-open processor cheaper than the fast one we would take, or, with none
        # fast, any before settling for a slow one (rule 3).
        for name in self._by_fee:
            if name == taken:
                break  # the rest are dearer than a fast one: not worth a probe
            if name != cheapest and patient:
                break  # a dearer processor is not even probed before max_wait_s (rule 4)
            view = views.get(name)
            if view is not None and view.half_open and not view.failing and may_probe(name):
                return Route(name, probe=True)
        if taken is not None:
            return Route(taken)
        if usable and (usable[0] == cheapest or not patient):
            return Route(usable[0])
        return None

    def _expected_ms(self, name: str, view: ProcessorView) -> float:
        return max(view.min_response_ms, self._latency.expected_ms(name))


def _usable(view: ProcessorView | None) -> bool:
    if view is None:
        return False
    return not view.failing and not view.breaker_open and not view.half_open
