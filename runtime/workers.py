"""Run background (queue) and scheduled functions, each in its own process.

A background function's ``handle(message)`` is called with up to ``concurrency`` items in
flight, in one of two ways, chosen by how it is written:

- a plain method is called from a pool of ``concurrency`` threads: simple, and right for work
  that blocks (each thread waits on its own I/O);
- a coroutine (``async def handle``) runs as one task per item on an asyncio event loop in the
  process's main thread: hundreds of items waiting on the network cost a future each, not a
  thread each, and no two of them fight for the GIL.

Either way the runner reads the queue only as fast as slots free up, which leaves the backlog
in the durable journal rather than in memory.

Each item reaches ``handle`` as a ``Message`` whose ``body`` is the record, decoded by the
queue's record type (``runtime.records``). An item is acknowledged when ``handle`` returns,
or, if the function took the acknowledgement over with ``message.defer()``, when it calls what
``defer`` returned (once its own effect is durable, a database commit say). If
``handle`` raises, the item is handed to it again after a backoff, so a bug or an outage never
drops an item; unacknowledged items are redelivered after a restart.

A function may also define ``prepare(messages)``: the runner calls it with each batch it read,
before dispatch, so per-item work that batches well (a database write, say) costs one round
trip per batch instead of one per item. It returns the messages to dispatch, and may
attach a ``note`` to each for ``handle``; those it leaves out are acknowledged. If it raises,
the batch is dispatched without notes, as if there were no ``prepare``. A coroutine function's
``prepare``, ``start`` and ``stop`` may be coroutines too.

With ``consumers: one`` in the manifest, one process in the whole deployment consumes the
queue (``runtime.queue`` explains the lock); the function's ``start`` is called in the process
that holds it, and in a standby only once it takes the queue over, so a standby spends nothing
on connections or threads of its own. ``stop`` is called either way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue as queue_module
import threading
import time
from collections.abc import Callable
from typing import Any

from runtime.bundle import Bundle
from runtime.deps import Deps
from runtime.heap import freeze_startup_objects
from runtime.manifest import FunctionSpec
from runtime.metrics import start_flusher
from runtime.queue import Item, QueueConsumer
from runtime.records import decoder
from runtime.stopping import Stopping

_log = logging.getLogger("runtime.workers")
_CLAIM_INTERVAL_S = 1.0
_GAUGE_INTERVAL_S = 1.0
_THREAD_STACK_BYTES = 256 * 1024
_RETRY_INITIAL_S = 0.05
_RETRY_MAX_S = 5.0
_DRAIN_TIMEOUT_S = 10.0
_IDLE_POLL_MAX_S = 0.02
_STANDBY_POLL_S = _CLAIM_INTERVAL_S  # a standby only waits for its claim to succeed


class Message:
    """One queue item on its way through a background function.

    ``body`` is the record, decoded; ``note`` is what ``prepare`` attached, if anything;
    ``failures`` counts the earlier calls of ``handle`` that raised.
    """

    __slots__ = ("_ack", "_deferred", "body", "failures", "item", "note")

    def __init__(self, item: Item, body: Any, ack: Callable[[Item], None]) -> None:
        self.item = item
        self.body = body
        self.note: Any = None
        self.failures = 0
        self._ack = ack
        self._deferred = False

    def defer(self) -> Callable[[], None]:
        """Take the acknowledgement over: the item is settled when the returned callable is
        called, from any thread, and not when ``handle`` returns. Call it once the item's
        effect is durable; never calling it leaves the item for redelivery after a restart."""
        self._deferred = True
        return self.ack

    def ack(self) -> None:
        """Settle the item: it is never handed out again."""
        self._ack(self.item)


class BackgroundRunner:
    """Hands one background function the items of its queue, up to ``concurrency`` in flight.

    ``stop`` is the process's signal; the function gets its own ``Stopping`` (its context's
    ``stopping``), set as soon as the runner sees ``stop``. With ``until_idle`` the runner
    also stops once its queue holds nothing unread and nothing unsettled, and ``on_settled``
    hears of each item acknowledged (``runtime.testing`` delivers records this way).
    """

    def __init__(
        self,
        bundle: Bundle,
        spec: FunctionSpec,
        deps: Deps,
        stop: threading.Event,
        *,
        until_idle: bool = False,
        on_settled: Callable[[Item], None] | None = None,
    ) -> None:
        assert spec.queue is not None
        self._spec = spec
        self._deps = deps
        self._stop = stop
        self._until_idle = until_idle
        self._stopping = Stopping()
        self._queue_name = spec.queue
        self._decode = decoder(deps.queue_spec(spec.queue))
        self._handler = bundle.construct(spec, deps, self._stopping)
        prepare = getattr(self._handler, "prepare", None)
        self._prepare: Callable[[list[Message]], Any] | None = (
            prepare if callable(prepare) else None
        )
        self._consumer: QueueConsumer = deps.consumer(spec.queue, one=spec.consumers == "one")
        self._settle: Callable[[Item], None] = self._consumer.done
        if on_settled is not None:
            done = self._consumer.done

            def settle(item: Item) -> None:
                done(item)
                on_settled(item)

            self._settle = settle
        self._is_async = inspect.iscoroutinefunction(self._handler.handle)
        # Threads only. SimpleQueue is C: a hand-off costs one wake-up, not a Condition's several.
        self._work: queue_module.SimpleQueue[Message | None] = queue_module.SimpleQueue()
        self._free = spec.concurrency  # slots without an item; guarded by _busy_lock
        self._threads: list[threading.Thread] = []
        self._busy = 0  # items inside handle() now; abandoned ones stay unacknowledged
        self._busy_lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()  # asyncio only: one per item in flight
        queue_cfg = deps.config.queue
        self._poll_s = queue_cfg.poll_interval_ms / 1000
        self._commit_s = queue_cfg.commit_interval_ms / 1000
        self._next_claim = self._next_commit = self._next_gauge = 0.0
        # ``start`` is called once this process's consumer reads the queue: at once, or, for a
        # standby of a ``consumers: one`` function, when it takes the queue over.
        self._started = False

    def run(self) -> None:
        """Consume until ``stop`` is set, then let in-flight items finish (bounded) and commit."""
        start_flusher()
        if self._is_async:
            asyncio.run(self._run_loop())
        else:
            self._run_threads()

    # --- shared by both ways ------------------------------------------------------------------

    def _stop_seen(self) -> bool:
        if self._stop.is_set():
            self._stopping.set()
        return self._stopping.is_set()

    def _became_active(self) -> None:
        """The function has started: its consumer reads the queue from now on."""
        self._started = True
        freeze_startup_objects()

    def _idle(self, got: int) -> bool:
        """With ``until_idle``: whether everything read is settled and nothing waits unread."""
        if not self._until_idle or got:
            return False
        self._consumer.claim()
        return not self._consumer.in_flight() and not self._consumer.backlog_bytes()

    def _housekeeping(self) -> None:
        """Take over orphaned journals, save consumed positions, publish gauges, each on its
        own cadence."""
        now = time.monotonic()
        if now >= self._next_claim:
            self._consumer.claim(now)
            self._next_claim = now + _CLAIM_INTERVAL_S
        if now >= self._next_commit:
            self._consumer.commit()
            self._next_commit = now + self._commit_s
        if now >= self._next_gauge:
            self._publish_gauges()
            self._next_gauge = now + _GAUGE_INTERVAL_S

    def _next_idle(self, got: int, idle_s: float) -> float:
        """How long to wait before reading again: the poll interval after a read that found
        items, doubling up to ``_IDLE_POLL_MAX_S`` while the queue stays empty."""
        if got:
            return self._poll_s
        return min(idle_s * 2, max(self._poll_s, _IDLE_POLL_MAX_S))

    def _read(self, free: int) -> list[Message]:
        if not free:
            return []
        items = self._consumer.read(free)
        return [message for item in items if (message := self._message(item)) is not None]

    def _message(self, item: Item) -> Message | None:
        try:
            body = self._decode(item.body)
        except Exception as exc:
            # A record its own type cannot read will not read better later: retrying cannot
            # mend it, and leaving it would hold the queue's committed position for good.
            _log.error(
                "unreadable queue record acknowledged",
                extra={
                    "function": self._spec.name,
                    "record": item.body[:200],
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
            self._settle(item)
            return None
        return Message(item, body, self._settle)

    def _kept(self, messages: list[Message], kept: list[Message]) -> list[Message]:
        """Acknowledge the messages ``prepare`` left out; the kept ones go on."""
        kept_ids = {id(message) for message in kept}
        for message in messages:
            if id(message) not in kept_ids:
                message.ack()
        return kept

    def _prepare_failed(self, messages: list[Message]) -> list[Message]:
        _log.exception(
            "prepare failed; the batch is handled item by item",
            extra={"function": self._spec.name, "items": len(messages)},
        )
        for message in messages:
            message.note = None
        return messages

    def _retry_delay(self, message: Message) -> float:
        """Count a failure of ``handle`` and log it; the back-off before the next try."""
        message.failures += 1
        message.note = None  # what prepare found may be stale by the retry
        delay_s = min(_RETRY_INITIAL_S * 2**message.failures, _RETRY_MAX_S)
        _log.exception(
            "background function failed; the item will be retried",
            extra={
                "function": self._spec.name,
                "failures": message.failures,
                "retry_in_s": delay_s,
            },
        )
        return delay_s

    def _publish_gauges(self) -> None:
        gauges = self._deps.queue_gauges
        gauges.backlog.labels(self._queue_name).set(self._consumer.backlog_bytes())
        gauges.in_flight.labels(self._queue_name).set(self._consumer.in_flight())

    # --- threads --------------------------------------------------------------------------------

    def _run_threads(self) -> None:
        threading.stack_size(_THREAD_STACK_BYTES)
        for index in range(self._spec.concurrency):
            thread = threading.Thread(
                target=self._work_loop, name=f"{self._spec.name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        idle_s = self._poll_s
        try:
            while not self._stop_seen():
                self._housekeeping()
                if not self._started:
                    if not self._consumer.is_active():
                        self._stop.wait(_STANDBY_POLL_S)
                        continue
                    _maybe_call(getattr(self._handler, "start", None))
                    self._became_active()
                got = self._dispatch_batch()
                if self._idle(got):
                    break
                idle_s = self._next_idle(got, idle_s)
                if not got:
                    self._stop.wait(idle_s)
        finally:
            self._drain()

    def _dispatch_batch(self) -> int:
        """Read as many items as there are free threads, prepare them and hand them over."""
        with self._busy_lock:
            free = self._free
        messages = self._read(free)
        if not messages:
            return 0
        dispatch = self._prepared(messages)
        if self._stop_seen():
            return len(messages)  # not handed out: left unacknowledged for the next run
        with self._busy_lock:
            self._free -= len(dispatch)
        for message in dispatch:
            self._work.put(message)
        return len(messages)

    def _prepared(self, messages: list[Message]) -> list[Message]:
        """The messages to dispatch after ``prepare``; those it leaves out are acknowledged."""
        if self._prepare is None:
            return messages
        try:
            kept = self._prepare(messages)
        except Exception:
            return self._prepare_failed(messages)
        return self._kept(messages, kept)

    def _release_slot(self) -> None:
        with self._busy_lock:
            self._free += 1

    def _work_loop(self) -> None:
        while True:
            message = self._work.get()
            if message is None:
                return
            with self._busy_lock:
                self._busy += 1
            message._deferred = False
            try:
                self._handler.handle(message)
            except Exception:
                self._leave()
                if self._stopping.is_set():  # shutting down: leave the item for the next run
                    self._release_slot()
                    continue
                if self._stopping.wait(self._retry_delay(message)):
                    self._release_slot()  # not acknowledged: redelivered after a restart
                    continue
                self._work.put(message)
                continue
            self._leave()
            if not message._deferred:
                message.ack()
            self._release_slot()

    def _leave(self) -> None:
        with self._busy_lock:
            self._busy -= 1

    def _handling(self) -> int:
        with self._busy_lock:
            return self._busy

    def _drain(self) -> None:
        self._stopping.set()
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        # Wait for the items being handled; an unacknowledged one waiting for its retry is left
        # in the journal (uncommitted) for the next run.
        while self._handling() and time.monotonic() < deadline:
            time.sleep(0.05)
        stop = getattr(self._handler, "stop", None)
        if callable(stop):
            stop()  # deferred acknowledgements arrive as the function flushes its work
        for _ in self._threads:
            self._work.put(None)
        self._consumer.close()  # commits what is settled

    # --- asyncio ------------------------------------------------------------------------------

    async def _run_loop(self) -> None:
        self._stopping.bind(asyncio.get_running_loop())
        idle_s = self._poll_s
        try:
            while not self._stop_seen():
                self._housekeeping()
                if not self._started:
                    if not self._consumer.is_active():
                        await self._stopping.sleep(_STANDBY_POLL_S)
                        continue
                    await _maybe_await(getattr(self._handler, "start", None))
                    self._became_active()
                got = await self._dispatch_tasks()
                if self._idle(got):
                    break
                idle_s = self._next_idle(got, idle_s)
                await self._stopping.sleep(idle_s)
        finally:
            await self._drain_tasks()

    async def _dispatch_tasks(self) -> int:
        """Read as many items as there are free slots, prepare them, start a task for each."""
        messages = self._read(self._spec.concurrency - len(self._tasks))
        if not messages:
            return 0
        dispatch = messages
        if self._prepare is not None:
            try:
                dispatch = self._kept(messages, await _maybe_await(self._prepare, messages))
            except Exception:
                dispatch = self._prepare_failed(messages)
        if self._stop_seen():
            return len(messages)  # not started: left unacknowledged for the next run
        for message in dispatch:
            task = asyncio.create_task(self._handle_task(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(messages)

    async def _handle_task(self, message: Message) -> None:
        while True:
            message._deferred = False
            try:
                await self._handler.handle(message)
            except Exception:
                if self._stopping.is_set():  # shutting down: leave the item for the next run
                    return
                if await self._stopping.sleep(self._retry_delay(message)):
                    return  # not acknowledged: redelivered after a restart
                continue
            if not message._deferred:
                message.ack()
            return

    async def _drain_tasks(self) -> None:
        self._stopping.set()  # wakes every task sleeping in a back-off
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=_DRAIN_TIMEOUT_S)
            for task in pending:
                task.cancel()  # left unacknowledged: redelivered after a restart
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        await _maybe_await(getattr(self._handler, "stop", None))
        self._consumer.close()  # commits what is settled


def _maybe_call(method: Any) -> None:
    if callable(method):
        method()


async def _maybe_await(method: Any, *args: Any) -> Any:
    """Call an optional hook, awaiting it if it is a coroutine function."""
    if not callable(method):
        return None
    result = method(*args)
    if inspect.isawaitable(result):
        return await result
    return result


def run_schedule(bundle: Bundle, spec: FunctionSpec, deps: Deps, stop: Stopping) -> None:
    """Call the function's ``run`` every ``every_s`` seconds until ``stop`` is set."""
    handler = bundle.construct(spec, deps, stop)
    start_flusher()
    _every(spec.every_s, stop, handler.run, spec.name)


def _every(period_s: float, stop: threading.Event, action: Callable[[], Any], name: str) -> None:
    next_run = time.monotonic()
    while not stop.is_set():
        try:
            action()
        except Exception:
            _log.exception("scheduled function failed", extra={"function": name})
        next_run += period_s
        delay = next_run - time.monotonic()
        if delay < 0:  # fell behind (a slow run): skip the missed ticks instead of bursting
            next_run = time.monotonic()
            delay = 0
        stop.wait(delay)
