"""Deliver one payment to exactly one processor, exactly once.

The danger: a processor sleeps its delay *before* it stores a payment, and our timeout does not
cancel that. An attempt that timed out may still be stored seconds later; sending the payment
elsewhere meanwhile would charge it twice. So an attempt whose fate is unknown *pins* the
payment to that processor, where a repeat is harmless (the processor answers 422 for an id it
holds).

States and transitions (``Outcome`` is what an attempt says about the processor's store)::

    NEW ── claim row in PostgreSQL (pending, processor P, requestedAt r) ──► SENDING(P)
           (a whole batch in one statement, all routed alike; a payment no
           processor can take at once routes on its own, waiting, then claims)
        ├─ row already processed ─────────────────────────────────────────► DONE (repeat)
        ├─ row accepted before the last purge ────────────────────────────► DONE (dropped)
        └─ row pending at P (we crashed mid-attempt, or a repeat is live) ► PINNED(P)

    SENDING(P) ── POST ── STORED (200) ────────── record processed(P, r) ─► DONE
                      ├── ALREADY_STORED (422) ── GET P ── found ─ record ─► DONE
                      │                                 └─ absent ────────► PINNED(P)
                      ├── NOT_STORED (5xx, 429, refused), not pinned ─────► ROUTING
                      ├── NOT_STORED, pinned ─────────────────────────────► PINNED(P)
                      └── UNCERTAIN (timeout, connection lost) ───────────► PINNED(P)

    PINNED(P) ── backoff, GET P ── found ── record what P holds ──────────► DONE
                               ├── absent, last uncertain attempt older
                               │   than forwarder.unpin_after_s ──────────► ROUTING
                               ├── absent ── note attempt, new r ─────────► SENDING(P)
                               └── no answer ─────────────────────────────► PINNED(P)

    ROUTING ── router picks P' (waits while none is usable) ── note attempt
               (P', new r) in PostgreSQL before sending ──────────────────► SENDING(P')

The attempt is written to PostgreSQL *before* each POST, so a forwarder killed mid-attempt
comes back (the queue redelivers the item) pinned to the right processor. A payment is recorded
``processed`` only after its processor holds it, with the ``requestedAt`` the processor holds,
so our summary never counts what the processors do not.

Every step is a coroutine: hundreds of payments run through this machine at once on one event
loop, each waiting on its processor, its lookup or its back-off without holding a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from payments.config import ForwarderConfig
from payments.isotime import epoch_us, format_epoch_ms, parse
from payments.metrics import AttemptRecorder
from payments.payment import Payment
from payments.processors import AttemptResult, Outcome, ProcessorError, StoredPayment
from payments.router import LatencyTracker, Route, Router
from payments.shared_state import ProcessorView
from payments.store import Claim, ClaimRow, ClaimState
from runtime.deps import Clock

_log = logging.getLogger("payments.delivery")


class Stopping(Exception):
    """The worker is shutting down; the item stays in the queue and is delivered later."""


class Processor(Protocol):
    """What the machine needs of a processor (``AsyncProcessorClient`` is one)."""

    async def post_payment(
        self, correlation_id: str, amount: Decimal, requested_at: str
    ) -> AttemptResult: ...

    async def get_payment(self, correlation_id: str) -> StoredPayment | None: ...


class Shared(Protocol):
    """The shared health and breakers (``SharedStateClient`` is this)."""

    def snapshot(self) -> dict[str, ProcessorView]: ...

    def record_failure(self, name: str, view: ProcessorView | None = None) -> None: ...

    def record_success(self, name: str, view: ProcessorView) -> None: ...

    async def try_probe(self, name: str, hold_s: float) -> bool: ...


class Writer(Protocol):
    """Where payments are recorded (``BatchWriter`` is this)."""

    async def claim(self, rows: list[ClaimRow]) -> list[Claim]: ...

    async def record_attempt(
        self, correlation_id: str, processor: str, requested_us: int
    ) -> None: ...

    def record_processed(
        self,
        correlation_id: str,
        amount: Decimal,
        processor: str,
        requested_us: int,
        then: Callable[[], None],
    ) -> None: ...


@dataclass(frozen=True)
class Claimed:
    """What a batch claim found for one payment, and the attempt it was claimed for."""

    claim: Claim
    route: Route
    requested_ms: int


@dataclass
class _Attempts:
    """One payment's delivery so far."""

    correlation_id: str
    amount: Decimal
    accepted_at: float
    settled: Callable[[], None]
    pinned_to: str | None = None
    last_uncertain_s: float = 0.0
    attempts: int = 0
    waits: int = 0
    history: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Delivered:
    """How a payment ended (``processed:default``, ``repeat``...) and the way there."""

    outcome: str
    attempts: int
    path: tuple[str, ...]
    """Each attempt's processor and answer, and each lookup, in order."""


class Delivery:
    """Runs the state machine above, one coroutine per payment.

    ``sleep(seconds)`` is how a payment backs off: it returns ``True`` once the process is
    stopping (``runtime.stopping.Stopping.sleep``), which ends the payment's delivery with
    ``Stopping`` and leaves it in the queue.
    """

    def __init__(
        self,
        *,
        processors: dict[str, Processor],
        router: Router,
        latency: LatencyTracker,
        shared: Shared,
        writer: Writer,
        clock: Clock,
        config: ForwarderConfig,
        attempts: AttemptRecorder,
        sleep: Callable[[float], Awaitable[bool]],
    ) -> None:
        self._processors = processors
        self._router = router
        self._latency = latency
        self._shared = shared
        self._writer = writer
        self._clock = clock
        self._config = config
        self._attempts = attempts
        self._sleep = sleep

    async def claim_many(self, payments: list[Payment]) -> list[Claimed | None]:
        """Claim a batch in one statement, each for the processor the router names now
        (one of them may be a half-open breaker's probe). ``None`` for a payment that no
        processor can take at once: ``deliver`` routes and claims it on its own, waiting."""
        if not payments:
            return []
        views = self._shared.snapshot()
        waited_s = self._clock.now() - max(payment.accepted_at for payment in payments)
        first = await self._choose(views, waited_s)
        rest = first
        if first is not None and first.probe:  # one probe; the rest go where they would
            rest = self._router.choose(views, waited_s, _no_probe)
        routes = [first, *[rest] * (len(payments) - 1)]
        requested_ms = self._stamp()
        requested_us = requested_ms * 1000
        taken = [(p, route) for p, route in zip(payments, routes, strict=True) if route]
        if not taken:
            return [None] * len(payments)
        claims = iter(
            await self._writer.claim(
                [
                    (
                        p.correlation_id,
                        p.amount,
                        route.processor,
                        requested_us,
                        _whole_us(p.accepted_at),
                    )
                    for p, route in taken
                ]
            )
        )
        return [Claimed(next(claims), route, requested_ms) if route else None for route in routes]

    async def deliver(
        self, payment: Payment, claimed: Claimed | None, settled: Callable[[], None]
    ) -> Delivered:
        """Take the payment to its end state, from its batch claim if it has one; returns how
        it ended and how it got there.

        May return before the end state is committed: ``settled`` is called exactly once, when
        it is (from the writer's thread), or not at all if this raises.
        """
        state = _Attempts(payment.correlation_id, payment.amount, payment.accepted_at, settled)
        outcome = await self._deliver(state, claimed)
        return Delivered(outcome, state.attempts, tuple(state.history))

    async def _deliver(self, state: _Attempts, claimed: Claimed | None) -> str:
        if claimed is None:
            route = await self._route(state)
            requested_ms = self._stamp()
            [claim] = await self._writer.claim(
                [
                    (
                        state.correlation_id,
                        state.amount,
                        route.processor,
                        requested_ms * 1000,
                        _whole_us(state.accepted_at),
                    )
                ]
            )
            claimed = Claimed(claim, route, requested_ms)
        claim = claimed.claim
        if claim.state in (ClaimState.PROCESSED, ClaimState.PURGED):
            state.settled()  # nothing to write: settled already
            return "repeat" if claim.state is ClaimState.PROCESSED else "purged"
        if claim.state is ClaimState.PENDING:
            # Its last attempt may still land at that processor: only it may be asked.
            assert claim.processor is not None
            if claim.amount is not None:
                state.amount = Decimal(claim.amount)
            state.pinned_to = claim.processor
            state.last_uncertain_s = claim.attempted_at or self._clock.now()
            return await self._run(state, None, 0)
        return await self._run(state, claimed.route, claimed.requested_ms)

    async def _run(self, state: _Attempts, route: Route | None, requested_ms: int) -> str:
        """The loop of SENDING, PINNED and ROUTING until the payment is DONE."""
        while True:
            if route is None:
                route = await self._next_route(state)
                if isinstance(route, str):
                    return route
                requested_ms = self._stamp()
                await self._writer.record_attempt(
                    state.correlation_id, route.processor, requested_ms * 1000
                )
            processor = route.processor
            result = await self._attempt(state, route, requested_ms)
            route = None
            if result.outcome is Outcome.STORED:
                self._writer.record_processed(
                    state.correlation_id,
                    state.amount,
                    processor,
                    requested_ms * 1000,
                    then=state.settled,
                )
                return f"processed:{processor}"
            if result.outcome is Outcome.ALREADY_STORED:
                held = await self._lookup(state, processor)
                if held is not None:
                    return held
                state.pinned_to, state.last_uncertain_s = processor, self._clock.now()
            elif result.outcome is Outcome.UNCERTAIN:
                state.pinned_to, state.last_uncertain_s = processor, requested_ms / 1000
            # NOT_STORED: a pinned payment stays pinned; a free one is routed again.

    async def _next_route(self, state: _Attempts) -> Route | str:
        """PINNED or ROUTING: where the next attempt goes, or how the payment ended."""
        await self._pause(state)
        processor = state.pinned_to
        if processor is None:
            return await self._route(state)
        held = await self._lookup(state, processor)
        if held is not None:
            return held
        if self._clock.now() - state.last_uncertain_s < self._config.unpin_after_s:
            return Route(processor)
        _log.info(
            "unpinned", extra={"correlation_id": state.correlation_id, "processor": processor}
        )
        state.pinned_to = None
        return await self._route(state)

    async def _lookup(self, state: _Attempts, processor: str) -> str | None:
        """GET the payment on ``processor`` until it answers; record it if found."""
        while True:
            try:
                held = await self._processors[processor].get_payment(state.correlation_id)
            except ProcessorError as exc:
                state.history.append(f"lookup:{processor}:error")
                _log.debug("lookup failed", extra={"error": str(exc)})
                await self._pause(state)
                continue
            if held is None:
                state.history.append(f"lookup:{processor}:absent")
                return None
            requested_us = epoch_us(parse(held.requested_at))
            self._writer.record_processed(
                state.correlation_id, held.amount, processor, requested_us, then=state.settled
            )
            return f"processed:{processor}:confirmed"

    async def _attempt(self, state: _Attempts, route: Route, requested_ms: int) -> AttemptResult:
        processor = route.processor
        client = self._processors[processor]
        state.attempts += 1
        self._attempts.started()
        token = self._latency.begin(processor)
        result = await client.post_payment(
            state.correlation_id, state.amount, format_epoch_ms(requested_ms)
        )
        self._latency.observe(processor, result.duration_s, token)
        self._attempts.finished(processor, result.outcome.value, result.duration_s)
        state.history.append(f"{processor}:{result.status or result.outcome.value}")
        view = self._shared.snapshot().get(processor)
        if result.outcome in (Outcome.STORED, Outcome.ALREADY_STORED):
            if view is not None:
                self._shared.record_success(processor, view)
        elif result.status != 429:
            self._shared.record_failure(processor, view if route.probe else None)
        return result

    async def _route(self, state: _Attempts) -> Route:
        """ROUTING: wait until the router names a processor."""
        while True:
            waited_s = self._clock.now() - state.accepted_at
            route = await self._choose(self._shared.snapshot(), waited_s)
            if route is not None:
                return route
            await self._pause(state)

    async def _choose(self, views: dict[str, ProcessorView], waited_s: float) -> Route | None:
        """The router's choice, with a probe only where this caller won the shared probe.

        The router asks ``may_probe`` of each half-open processor in turn and takes the first
        that says yes. Winning a probe is a Memcached round trip, which must not block the
        loop: so each round lets the router pick its candidate, awaits the probe for it, and
        if another worker holds that probe, asks again without it.
        """
        refused: set[str] = set()
        while True:
            route = self._router.choose(views, waited_s, lambda name: name not in refused)
            if route is None or not route.probe:
                return route
            if await self._shared.try_probe(route.processor, self._config.request_timeout_s):
                return route
            refused.add(route.processor)

    async def _pause(self, state: _Attempts) -> None:
        """Back off, longer each time this payment has to wait; wake at once when stopping."""
        state.waits += 1
        delay_ms = min(
            self._config.retry_initial_ms * 2 ** min(state.waits - 1, 10),
            self._config.retry_max_ms,
        )
        if await self._sleep(delay_ms / 1000):
            raise Stopping(state.correlation_id)

    def _stamp(self) -> int:
        """Now, in whole milliseconds: the ``requestedAt`` of the attempt about to be sent."""
        return int(self._clock.now() * 1000)


def _no_probe(processor: str) -> bool:
    return False


def _whole_us(epoch_s: float) -> int:
    return round(epoch_s * 1_000_000)
