"""payments.delivery's state machine, transition by transition, with scripted processors.

Nothing here touches a network or a database: the processors answer from a script, the writer
records what would be written, and a back-off advances a fake clock instead of sleeping, so a
payment pinned for a minute is settled in microseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from payments.config import ForwarderConfig, RouterConfig
from payments.delivery import Claimed, Delivery, Stopping
from payments.isotime import epoch_us, parse
from payments.payment import Payment
from payments.processors import AttemptResult, Outcome, ProcessorError, StoredPayment
from payments.router import LatencyTracker, Route, Router
from payments.shared_state import ProcessorView
from payments.store import Claim, ClaimState

FEES = {"default": 0.05, "fallback": 0.15}
AMOUNT = Decimal("19.90")


class Clock:
    def __init__(self) -> None:
        self.wall = 1_752_150_896.0

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.wall


Answer = Outcome | int | Callable[[], Outcome]


class ScriptedProcessor:
    """Answers each POST with the next outcome of its script; a STORED one stores it."""

    def __init__(self, name: str, clock: Clock, *answers: Answer) -> None:
        self.name = name
        self._clock = clock
        self._answers = list(answers)
        self.posts: list[str] = []  # requestedAt of each POST
        self.held: dict[str, StoredPayment] = {}
        self.lookups = 0
        self.lookup_errors = 0

    async def post_payment(
        self, correlation_id: str, amount: Decimal, requested_at: str
    ) -> AttemptResult:
        self.posts.append(requested_at)
        answer = self._answers.pop(0) if self._answers else Outcome.STORED
        if callable(answer):
            answer = answer()
        if answer is Outcome.UNCERTAIN:  # it stores the payment later, after its delay
            self.held[correlation_id] = StoredPayment(amount, requested_at)
            return AttemptResult(Outcome.UNCERTAIN, 0, 8.0)
        if answer is Outcome.STORED:
            if correlation_id in self.held:
                return AttemptResult(Outcome.ALREADY_STORED, 422, 0.01)
            self.held[correlation_id] = StoredPayment(amount, requested_at)
            return AttemptResult(Outcome.STORED, 200, 0.01)
        if answer is Outcome.NOT_STORED:
            return AttemptResult(Outcome.NOT_STORED, 500, 0.01)
        assert isinstance(answer, int)
        return AttemptResult(Outcome.NOT_STORED, answer, 0.01)

    async def get_payment(self, correlation_id: str) -> StoredPayment | None:
        self.lookups += 1
        if self.lookup_errors:
            self.lookup_errors -= 1
            raise ProcessorError(f"{self.name}: lookup failed")
        return self.held.get(correlation_id)


@dataclass
class Shared:
    views: dict[str, ProcessorView] = field(
        default_factory=lambda: {"default": ProcessorView(), "fallback": ProcessorView()}
    )
    probe_wins: dict[str, bool] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)

    def snapshot(self) -> dict[str, ProcessorView]:
        return self.views

    def record_failure(self, name: str, view: ProcessorView | None = None) -> None:
        self.failures.append(name)

    def record_success(self, name: str, view: ProcessorView) -> None:
        pass

    async def try_probe(self, name: str, hold_s: float) -> bool:
        self.probes.append(name)
        return self.probe_wins.get(name, True)


@dataclass
class Writer:
    """Records writes in order; claims find what ``existing`` says (new by default)."""

    existing: dict[str, Claim] = field(default_factory=dict)
    log: list[tuple[Any, ...]] = field(default_factory=list)

    async def claim(self, rows: list[tuple[str, Decimal, str, int, int]]) -> list[Claim]:
        self.log += [("claim", row[0], row[2], row[3]) for row in rows]
        return [self.existing.get(row[0], Claim(ClaimState.CLAIMED)) for row in rows]

    async def record_attempt(self, correlation_id: str, processor: str, requested_us: int) -> None:
        self.log.append(("attempt", correlation_id, processor, requested_us))

    def record_processed(
        self,
        correlation_id: str,
        amount: Decimal,
        processor: str,
        requested_us: int,
        then: Callable[[], None],
    ) -> None:
        self.log.append(("processed", correlation_id, processor, requested_us, amount))
        then()

    def processed(self) -> list[tuple[Any, ...]]:
        return [entry for entry in self.log if entry[0] == "processed"]


class Attempts:
    def started(self) -> None:
        pass

    def finished(self, processor: str, status: str, duration_s: float) -> None:
        pass


@dataclass
class Rig:
    clock: Clock
    default: ScriptedProcessor
    fallback: ScriptedProcessor
    shared: Shared
    writer: Writer
    delivery: Delivery
    stop_after_pauses: int | None = None
    pauses: list[float] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)

    def deliver(self, correlation_id: str = "p1", claimed: Claimed | None = None) -> str:
        payment = Payment(correlation_id, AMOUNT, self.clock.now())
        delivered = asyncio.run(
            self.delivery.deliver(
                payment, claimed, settled=lambda: self.settled.append(correlation_id)
            )
        )
        return delivered.outcome

    def claim_many(self, *ids: str) -> list[Claimed | None]:
        payments = [Payment(i, AMOUNT, self.clock.now()) for i in ids]
        return asyncio.run(self.delivery.claim_many(payments))


def rig(
    default: tuple[Answer, ...] = (),
    fallback: tuple[Answer, ...] = (),
    *,
    shared: Shared | None = None,
    existing: dict[str, Claim] | None = None,
    stop_after_pauses: int | None = None,
) -> Rig:
    clock = Clock()
    processors = {
        "default": ScriptedProcessor("default", clock, *default),
        "fallback": ScriptedProcessor("fallback", clock, *fallback),
    }
    shared = shared or Shared()
    writer = Writer(existing or {})
    pauses: list[float] = []

    async def sleep(seconds: float) -> bool:
        pauses.append(seconds)
        clock.wall += seconds
        return stop_after_pauses is not None and len(pauses) >= stop_after_pauses

    latency = LatencyTracker(clock.monotonic)
    delivery = Delivery(
        processors=processors,  # type: ignore[arg-type]
        router=Router(RouterConfig(), FEES, latency),
        latency=latency,
        shared=shared,
        writer=writer,
        clock=clock,
        config=ForwarderConfig(unpin_after_s=60.0),
        attempts=Attempts(),  # type: ignore[arg-type]
        sleep=sleep,
    )
    built = Rig(clock, processors["default"], processors["fallback"], shared, writer, delivery)
    built.pauses = pauses
    return built


def test_a_payment_the_default_stores_is_claimed_before_the_post_and_recorded_after() -> None:
    r = rig()
    assert r.deliver() == "processed:default"

    kinds = [entry[0] for entry in r.writer.log]
    assert kinds == ["claim", "processed"]
    [(_, _, processor, requested_at, amount)] = r.writer.processed()
    assert (processor, amount) == ("default", AMOUNT)
    assert r.default.posts == [r.default.held["p1"].requested_at]
    assert requested_at == epoch_us(parse(r.default.posts[0]))  # what the processor holds
    assert r.settled == ["p1"]


def test_a_refused_payment_is_routed_again_and_the_new_attempt_noted_before_it_is_sent() -> None:
    r = rig(default=(Outcome.NOT_STORED,), fallback=())
    r.shared.views["default"] = ProcessorView()  # still usable: the retry may go there again

    assert r.deliver().startswith("processed:")
    kinds = [entry[0] for entry in r.writer.log]
    assert kinds == ["claim", "attempt", "processed"]
    assert r.shared.failures == ["default"]


def test_while_the_default_fails_a_payment_goes_to_the_fallback() -> None:
    r = rig(fallback=())
    r.shared.views["default"] = ProcessorView(failing=True)

    assert r.deliver() == "processed:fallback"
    assert r.default.posts == []
    [claim] = [entry for entry in r.writer.log if entry[0] == "claim"]
    assert claim[2] == "fallback"  # claimed for where it went


def test_an_uncertain_attempt_pins_the_payment_and_a_lookup_settles_it_there() -> None:
    r = rig(default=(Outcome.UNCERTAIN,))
    r.shared.views["default"] = ProcessorView()

    assert r.deliver() == "processed:default:confirmed"
    assert r.fallback.posts == []  # never sent elsewhere: the default may store it late
    [(_, _, processor, requested_at, _)] = r.writer.processed()
    assert processor == "default"
    assert requested_at == epoch_us(parse(r.default.held["p1"].requested_at))


def test_a_pinned_payment_absent_at_its_processor_is_sent_there_again_not_elsewhere() -> None:
    r = rig(default=(Outcome.UNCERTAIN,))
    r.default.held.clear()  # pretend the uncertain attempt never landed...
    original_post = r.default.post_payment
    posts = 0

    async def forgetting_first(correlation_id: str, amount: Decimal, at: str) -> AttemptResult:
        nonlocal posts
        posts += 1
        result = await original_post(correlation_id, amount, at)
        if posts == 1:
            r.default.held.clear()  # ...and it is absent when looked up
        return result

    r.default.post_payment = forgetting_first  # type: ignore[method-assign]
    assert r.deliver() == "processed:default"
    assert r.fallback.posts == []
    kinds = [entry[0] for entry in r.writer.log]
    assert kinds == ["claim", "attempt", "processed"]
    assert [entry[2] for entry in r.writer.log if entry[0] == "attempt"] == ["default"]


def test_a_pinned_payment_is_unpinned_only_after_unpin_after_s_of_absence() -> None:
    r = rig(default=(Outcome.NOT_STORED,) * 10_000)  # the pinned processor went down for good
    r.shared.views["default"] = ProcessorView(failing=True)
    since = r.clock.now()
    pending = Claim(ClaimState.PENDING, "default", AMOUNT, since, since)  # redelivered mid-attempt
    r.writer.existing["p1"] = pending

    assert r.deliver() == "processed:fallback"
    assert r.clock.now() - since >= 60.0  # looked up, absent, until the pin ran out
    assert r.default.lookups >= 2


def test_a_422_is_confirmed_by_a_lookup_and_recorded_with_what_the_processor_holds() -> None:
    r = rig()
    r.default.held["p1"] = StoredPayment(AMOUNT, "2025-07-10T12:34:56.789Z")

    assert r.deliver() == "processed:default:confirmed"
    [(_, _, _, requested_at, _)] = r.writer.processed()
    assert requested_at == epoch_us(parse("2025-07-10T12:34:56.789Z"))


def test_lookup_errors_are_retried_with_back_off() -> None:
    r = rig(default=(Outcome.UNCERTAIN,))
    r.default.lookup_errors = 3

    assert r.deliver() == "processed:default:confirmed"
    assert len(r.pauses) >= 4
    assert r.pauses == sorted(r.pauses)  # each wait at least as long as the one before


def test_a_payment_already_processed_is_settled_without_any_write_or_post() -> None:
    r = rig(existing={"p1": Claim(ClaimState.PROCESSED, "default", AMOUNT, 0.0, 0.0)})

    assert r.deliver() == "repeat"
    assert r.default.posts == r.fallback.posts == []
    assert r.writer.processed() == []
    assert r.settled == ["p1"]


def test_a_payment_accepted_before_the_last_purge_is_dropped() -> None:
    r = rig(existing={"p1": Claim(ClaimState.PURGED)})

    assert r.deliver() == "purged"
    assert r.default.posts == []
    assert r.settled == ["p1"]


def test_stopping_during_a_back_off_leaves_the_payment_unsettled() -> None:
    r = rig(stop_after_pauses=1)
    r.shared.views = {
        "default": ProcessorView(failing=True),
        "fallback": ProcessorView(failing=True),
    }

    with pytest.raises(Stopping):
        r.deliver()
    assert r.settled == []


def test_while_both_fail_the_payment_waits_then_goes_out_once_one_recovers() -> None:
    r = rig()
    r.shared.views = {
        "default": ProcessorView(failing=True),
        "fallback": ProcessorView(failing=True),
    }
    waited = 0
    original = r.shared.snapshot

    def recovering() -> dict[str, ProcessorView]:
        nonlocal waited
        waited += 1
        if waited > 3:
            r.shared.views = {"default": ProcessorView(), "fallback": ProcessorView()}
        return original()

    r.shared.snapshot = recovering  # type: ignore[method-assign]
    assert r.deliver() == "processed:default"
    assert len(r.pauses) >= 3


def test_a_batch_is_claimed_in_one_statement_with_one_requested_at() -> None:
    r = rig()
    claimed = r.claim_many("a", "b", "c")

    assert [c.route for c in claimed if c] == [Route("default")] * 3
    claims = [entry for entry in r.writer.log if entry[0] == "claim"]
    assert [entry[1] for entry in claims] == ["a", "b", "c"]
    assert len({entry[3] for entry in claims}) == 1
    assert claims[0][3] == claimed[0].requested_ms * 1000  # type: ignore[union-attr]


def test_a_half_open_processor_gets_one_probe_from_a_batch_and_the_rest_go_where_they_would() -> (
    None
):
    shared = Shared(
        views={"default": ProcessorView(half_open=True, failures=5), "fallback": ProcessorView()}
    )
    r = rig(shared=shared)
    claimed = r.claim_many("a", "b")

    assert [c.route for c in claimed if c] == [Route("default", probe=True), Route("fallback")]
    assert shared.probes == ["default"]


def test_a_probe_won_elsewhere_is_not_taken_here() -> None:
    shared = Shared(
        views={
            "default": ProcessorView(half_open=True, failures=5),
            "fallback": ProcessorView(failing=True),
        },
        probe_wins={"default": False},
    )
    r = rig(shared=shared)
    assert r.claim_many("a") == [None]  # nothing may take it now: it routes on its own later
    assert shared.probes == ["default"]
