"""A background function fed by runtime.workers.BackgroundRunner from a real queue in tmp_path.

The handler is defined here and hands each item to a spec'd fake, the way Chalice's test client
delivers a queue message to a handler in-process; each test wires its fakes into a subclass
(``extras``). Every test runs twice: with a plain handler (called from threads) and with a
coroutine handler (tasks on an event loop).
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

import pytest

import runtime.workers
from runtime import testing
from runtime.config import RuntimeConfig
from runtime.deps import Deps, FunctionContext
from runtime.manifest import FunctionSpec, Manifest, QueueSpec
from runtime.queue import QueueConsumer
from runtime.workers import BackgroundRunner, Message
from tests.support.procs import wait_until

_WAIT_S = 10.0
_JOIN_TIMEOUT_S = 15.0


class Ledger:
    """What the handler under test talks to; only its spec is used."""

    def record(self, item: dict[str, Any]) -> None:
        """Take one item."""


class Recorder:
    """A background function: hands each item to the ledger in its extras."""

    extras: dict[str, Any] = {}

    def __init__(self, context: FunctionContext) -> None:
        self._ledger: Ledger = self.extras["ledger"]
        self.extras.get("contexts", []).append(context)

    def handle(self, message: Message) -> None:
        self._ledger.record(message.body)


class BatchRecorder(Recorder):
    """Also prepares each batch: notes its size, and leaves out the ids starting with "skip"."""

    def __init__(self, context: FunctionContext) -> None:
        super().__init__(context)
        self._batches: list[list[str]] = self.extras["batches"]
        self._fail_prepare: threading.Event = self.extras["fail_prepare"]

    def prepare(self, messages: list[Message]) -> list[Message]:
        if self._fail_prepare.is_set():
            raise ConnectionError("database away")
        self._batches.append([message.body["id"] for message in messages])
        for message in messages:
            message.note = len(messages)
        return [m for m in messages if not m.body["id"].startswith("skip")]

    def handle(self, message: Message) -> None:
        self._ledger.record({**message.body, "note": message.note})


class DeferringRecorder(Recorder):
    """Takes each acknowledgement over and hands it to the test instead of calling it."""

    def __init__(self, context: FunctionContext) -> None:
        super().__init__(context)
        self._acks: queue.SimpleQueue[tuple[str, Callable[[], None]]] = self.extras["acks"]

    def handle(self, message: Message) -> None:
        self._ledger.record(message.body)
        self._acks.put((message.body["id"], message.defer()))


class AsyncRecorder(Recorder):
    """``Recorder`` as a coroutine function; the ledger (which may block) runs in a thread."""

    async def handle(self, message: Message) -> None:  # type: ignore[override]
        await asyncio.to_thread(self._ledger.record, message.body)


class AsyncBatchRecorder(BatchRecorder):
    """``BatchRecorder`` as coroutines."""

    async def prepare(self, messages: list[Message]) -> list[Message]:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().prepare(messages)

    async def handle(self, message: Message) -> None:  # type: ignore[override]
        await asyncio.to_thread(self._ledger.record, {**message.body, "note": message.note})


class AsyncDeferringRecorder(DeferringRecorder):
    """``DeferringRecorder`` as a coroutine function."""

    async def handle(self, message: Message) -> None:  # type: ignore[override]
        await asyncio.to_thread(self._ledger.record, message.body)
        self._acks.put((message.body["id"], message.defer()))


class StartingRecorder(Recorder):
    """Notes when it is started, and which instance handled each item."""

    def start(self) -> None:
        self.extras["started"].append(id(self))

    def handle(self, message: Message) -> None:
        self._ledger.record({**message.body, "by": id(self)})


class AsyncStartingRecorder(StartingRecorder):
    """``StartingRecorder`` as coroutines."""

    async def start(self) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        super().start()

    async def handle(self, message: Message) -> None:  # type: ignore[override]
        await asyncio.to_thread(self._ledger.record, {**message.body, "by": id(self)})


_ASYNC_TWIN = {
    StartingRecorder: AsyncStartingRecorder,
    Recorder: AsyncRecorder,
    BatchRecorder: AsyncBatchRecorder,
    DeferringRecorder: AsyncDeferringRecorder,
}
_STYLE = "threads"


@pytest.fixture(params=["threads", "asyncio"], autouse=True)
def style(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which way the handlers under test are written."""
    monkeypatch.setattr(sys.modules[__name__], "_STYLE", request.param)
    return request.param


def spec(
    ledger: Ledger,
    concurrency: int = 4,
    handler: type = Recorder,
    consumers: str = "each",
    **extras: Any,
) -> FunctionSpec:
    if _STYLE == "asyncio":
        handler = _ASYNC_TWIN[handler]
    wired = type(handler.__name__, (handler,), {"extras": {"ledger": ledger, **extras}})
    return FunctionSpec(
        name="recorder",
        kind="background",
        handler_ref=f"tests/functional/test_background_runner.py:{handler.__name__}",
        handler=wired,
        queue="jobs",
        concurrency=concurrency,
        consumers=consumers,
    )


@pytest.fixture
def deps(config: RuntimeConfig, multiprocess_metrics: object) -> Iterator[Deps]:
    deps = Deps(config)
    yield deps
    deps.close()


@pytest.fixture
def ledger() -> Any:
    return create_autospec(Ledger, instance=True)


def put(deps: Deps, *names: str) -> None:
    for name in names:
        deps.producer("jobs").put({"id": name})


def handled(ledger: Any) -> list[str]:
    """Every item the handler was given, failed attempts included, in call order."""
    return [call.args[0]["id"] for call in ledger.record.call_args_list]


def unacknowledged(deps: Deps) -> list[str]:
    """What a fresh consumer would be handed now (only meaningful once the runner stopped)."""
    consumer = QueueConsumer(deps.queue_dir("jobs"))
    try:
        consumer.claim()
        return [json.loads(item.body)["id"] for item in consumer.read(1000)]
    finally:
        consumer.close()


@contextmanager
def running(function: FunctionSpec, deps: Deps) -> Iterator[threading.Event]:
    """Run the function until the block ends, then stop it and wait for the runner to return."""
    stop = threading.Event()
    manifest = Manifest(Path("test.yaml"), (function,), queues={"jobs": QueueSpec("jobs")})
    bundle = testing.bundle_from(manifest)
    runner = BackgroundRunner(bundle, function, deps, stop)
    thread = threading.Thread(target=runner.run, name="runner", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(_JOIN_TIMEOUT_S)
        assert not thread.is_alive(), "the runner did not stop"


def test_every_item_put_is_handled_exactly_once_and_acknowledged(deps: Deps, ledger: Any) -> None:
    names = [f"item-{n}" for n in range(50)]
    put(deps, *names[:25])
    with running(spec(ledger), deps):
        put(deps, *names[25:])  # some arrive while the runner is already reading
        wait_until(
            lambda: len(handled(ledger)) >= len(names), timeout_s=_WAIT_S, what="all handled"
        )

    assert Counter(handled(ledger)) == Counter(names)
    assert unacknowledged(deps) == []


def test_a_failing_item_is_retried_and_acknowledged_once_it_succeeds(
    deps: Deps, ledger: Any
) -> None:
    failures = {"flaky": 2}

    def record(item: dict[str, Any]) -> None:
        if failures.get(item["id"], 0) > 0:
            failures[item["id"]] -= 1
            raise ConnectionError("processor unreachable")

    ledger.record.side_effect = record
    put(deps, "before", "flaky", "after")
    with running(spec(ledger), deps):
        wait_until(
            lambda: handled(ledger).count("flaky") >= 3, timeout_s=_WAIT_S, what="flaky retried"
        )

    assert Counter(handled(ledger)) == {"before": 1, "flaky": 3, "after": 1}
    assert unacknowledged(deps) == []


def test_a_failing_item_does_not_hold_back_the_items_after_it(deps: Deps, ledger: Any) -> None:
    def record(item: dict[str, Any]) -> None:
        if item["id"] == "poison":
            raise ValueError("cannot handle this one")

    ledger.record.side_effect = record
    put(deps, "poison", *[f"item-{n}" for n in range(10)])
    with running(spec(ledger, concurrency=2), deps):
        wait_until(
            lambda: {f"item-{n}" for n in range(10)} <= set(handled(ledger)),
            timeout_s=_WAIT_S,
            what="the items after the failing one",
        )

    assert unacknowledged(deps)[0] == "poison"


def test_stopping_leaves_unacknowledged_items_for_the_next_run(deps: Deps, ledger: Any) -> None:
    entered, release = threading.Event(), threading.Event()

    def record(item: dict[str, Any]) -> None:
        if item["id"] == "slow":
            entered.set()
            release.wait(_WAIT_S)

    ledger.record.side_effect = record
    put(deps, "slow", "waiting-1", "waiting-2")
    with running(spec(ledger, concurrency=1), deps) as stop:
        assert entered.wait(_WAIT_S)
        stop.set()  # asked to stop while "slow" is in progress; it may finish, no more start
        release.set()
    first_run = handled(ledger)

    assert first_run[0] == "slow"
    left = unacknowledged(deps)
    assert "slow" not in left
    assert "waiting-2" in left
    assert sorted(first_run + left) == ["slow", "waiting-1", "waiting-2"]

    again = create_autospec(Ledger, instance=True)
    with running(spec(again), deps):
        wait_until(lambda: len(handled(again)) >= len(left), timeout_s=_WAIT_S, what="next run")

    assert handled(again) == left
    assert unacknowledged(deps) == []


def test_the_functions_stopping_event_is_set_when_its_runner_is_stopped(
    deps: Deps, ledger: Any
) -> None:
    # Long waits inside a background function (the forwarder's back-off) end on this event.
    contexts: list[FunctionContext] = []
    with running(spec(ledger, contexts=contexts), deps) as stop:
        [context] = contexts
        assert not context.stopping.is_set()
        stop.set()

    assert context.stopping.is_set()


def test_stopping_with_an_item_failing_does_not_wait_out_the_drain_timeout(
    deps: Deps, ledger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An abandoned item must not be waited for: were it, stopping would take this long.
    monkeypatch.setattr(runtime.workers, "_DRAIN_TIMEOUT_S", 3.0)
    ledger.record.side_effect = ConnectionError("processor unreachable")
    put(deps, "poison")
    with running(spec(ledger), deps) as stop:
        wait_until(lambda: handled(ledger) != [], timeout_s=_WAIT_S, what="first attempt")
        stop.set()
        stopped_at = time.monotonic()
    stop_s = time.monotonic() - stopped_at

    assert unacknowledged(deps) == ["poison"]
    assert stop_s < 1.5


def test_prepare_sees_whole_batches_and_its_notes_reach_handle(deps: Deps, ledger: Any) -> None:
    names = [f"item-{n}" for n in range(30)]
    put(deps, *names)  # all there before the runner starts: read in batches of free threads
    batches: list[list[str]] = []
    function = spec(ledger, 8, BatchRecorder, batches=batches, fail_prepare=threading.Event())
    with running(function, deps):
        wait_until(lambda: len(handled(ledger)) >= 30, timeout_s=_WAIT_S, what="all handled")

    assert sorted(n for batch in batches for n in batch) == sorted(names)
    assert batches[0] == names[:8]
    notes = {call.args[0]["id"]: call.args[0]["note"] for call in ledger.record.call_args_list}
    sizes = {name: len(batch) for batch in batches for name in batch}
    assert notes == sizes
    assert unacknowledged(deps) == []


def test_items_prepare_leaves_out_are_acknowledged_without_handling(
    deps: Deps, ledger: Any
) -> None:
    put(deps, "keep-1", "skip-1", "keep-2", "skip-2")
    function = spec(ledger, 8, BatchRecorder, batches=[], fail_prepare=threading.Event())
    with running(function, deps):
        wait_until(lambda: len(handled(ledger)) >= 2, timeout_s=_WAIT_S, what="kept handled")

    assert sorted(handled(ledger)) == ["keep-1", "keep-2"]
    assert unacknowledged(deps) == []


def test_when_prepare_fails_each_item_is_handled_without_a_note(deps: Deps, ledger: Any) -> None:
    put(deps, "a", "b", "skip-c")
    fail_prepare = threading.Event()
    fail_prepare.set()
    function = spec(ledger, 8, BatchRecorder, batches=[], fail_prepare=fail_prepare)
    with running(function, deps):
        wait_until(lambda: len(handled(ledger)) >= 3, timeout_s=_WAIT_S, what="all handled")

    notes = {call.args[0]["id"]: call.args[0]["note"] for call in ledger.record.call_args_list}
    assert notes == {"a": None, "b": None, "skip-c": None}
    assert unacknowledged(deps) == []


def test_a_deferred_item_is_settled_by_its_ack_not_by_handle_returning(
    deps: Deps, ledger: Any
) -> None:
    acks: queue.SimpleQueue[tuple[str, Callable[[], None]]] = queue.SimpleQueue()
    put(deps, "acked", "never-acked")
    with running(spec(ledger, 4, DeferringRecorder, acks=acks), deps):
        wait_until(lambda: acks.qsize() >= 2, timeout_s=_WAIT_S, what="both handled")
        for name, ack in (acks.get(), acks.get()):
            if name == "acked":
                ack()  # from the test's thread, as a database writer thread would

    assert unacknowledged(deps) == ["never-acked"]


def test_with_one_consumer_a_standby_starts_and_reads_only_once_the_active_one_stops(
    deps: Deps, ledger: Any
) -> None:
    started: list[int] = []
    function = spec(ledger, handler=StartingRecorder, consumers="one", started=started)

    def handled_by() -> dict[str, int]:
        return {call.args[0]["id"]: call.args[0]["by"] for call in ledger.record.call_args_list}

    put(deps, "first")
    with ExitStack() as first_runner:
        first_runner.enter_context(running(function, deps))
        wait_until(lambda: handled(ledger) == ["first"], timeout_s=_WAIT_S, what="first item")
        [active] = started
        with running(function, deps):  # a standby beside it
            put(deps, "second")
            wait_until(lambda: len(handled(ledger)) == 2, timeout_s=_WAIT_S, what="second item")
            assert started == [active]  # the standby has not started
            assert handled_by() == {"first": active, "second": active}

            first_runner.close()  # the active one stops
            put(deps, "third")
            wait_until(lambda: len(handled(ledger)) == 3, timeout_s=_WAIT_S, what="takeover")
            [_, standby] = started
            assert handled_by() == {"first": active, "second": active, "third": standby}
    assert unacknowledged(deps) == []
