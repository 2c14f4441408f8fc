"""Processor health and circuit breakers, shared by every instance through Memcached.

Keys (under the configured prefix), per processor ``p``:

- ``health:p``: ``{"failing", "min_ms", "at"}`` as last read from the processor's
  service-health by the one poller whose turn it was;
- ``health-turn``: when service-health was last read, claimed with compare-and-swap so that
  the whole deployment reads it at most once per ``health_min_interval_s``;
- ``breaker:p:failures``: failures within the failure window (``incr``, expiring);
- ``breaker:p:open_until``: while in the future the breaker is open; once past, or once a
  health read newer than the opening says the processor is fine, it is half-open and
  ``breaker:p:probe`` (``add``) lets exactly one attempt through to test the processor.

Memcached is an optimisation, never a requirement: when it does not answer, readers see every
processor as healthy with a closed breaker and writes are dropped, so payments keep flowing and
the delivery state machine's own retries keep them safe.

``SharedState`` blocks on Memcached; ``SharedStateClient`` puts it behind a thread of its own
for an event loop, whose reads of the state then never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymemcache.exceptions import MemcacheError

from payments.config import BreakerConfig
from payments.processors import ServiceHealth
from runtime.deps import Clock

_log = logging.getLogger("payments.shared_state")
_MEMCACHE_ERRORS = (MemcacheError, OSError, ValueError)
_TURN_KEY = "health-turn"
_PROBE_LOST_MEMORY_S = 0.1
_KEY_TTL_S = 3600


@dataclass(frozen=True)
class ProcessorView:
    """What the router knows of one processor right now."""

    failing: bool = False
    min_response_ms: float = 0.0
    health_at: float = 0.0
    breaker_open: bool = False
    half_open: bool = False
    failures: int = 0


class SharedState:
    """Reads (cached for ``cache_ms``) and writes the shared processor state."""

    def __init__(
        self,
        memcache: Any,
        clock: Clock,
        processors: list[str],
        breaker: BreakerConfig,
        cache_ms: float,
    ) -> None:
        self._mc = memcache
        self._clock = clock
        self._processors = processors
        self._breaker = breaker
        self._cache_s = cache_ms / 1000
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._cached: dict[str, ProcessorView] = {}
        self._cached_at = float("-inf")
        self._warned_at = float("-inf")

    def snapshot(self) -> dict[str, ProcessorView]:
        """Every processor's view, read from Memcached at most once per ``cache_ms``."""
        now = self._clock.monotonic()
        with self._lock:
            if now - self._cached_at < self._cache_s:
                return self._cached
        # One thread refreshes; the others keep using the last view rather than all asking.
        if not self._refreshing.acquire(blocking=False):
            with self._lock:
                if self._cached:
                    return self._cached
            self._refreshing.acquire()
        try:
            return self._refresh(now)
        finally:
            self._refreshing.release()

    def _refresh(self, now: float) -> dict[str, ProcessorView]:
        keys = []
        for name in self._processors:
            keys += [f"health:{name}", f"breaker:{name}:failures", f"breaker:{name}:open_until"]
        raw = self._call(lambda: self._mc.get_many(keys), default={}) or {}
        wall = self._clock.now()
        views = {}
        for name in self._processors:
            health = _json(raw.get(f"health:{name}"))
            open_until = _float(raw.get(f"breaker:{name}:open_until"))
            failing = bool(health.get("failing", False))
            health_at = float(health.get("at", 0.0))
            # A health read taken after the breaker opened and saying all is well is as good
            # as the open period running out: let a probe test it now.
            vouched = not failing and health_at > open_until - self._breaker.open_s
            is_open = open_until > wall
            views[name] = ProcessorView(
                failing=failing,
                min_response_ms=float(health.get("min_ms", 0.0)),
                health_at=health_at,
                breaker_open=is_open and not vouched,
                half_open=open_until > 0 and (not is_open or vouched),
                failures=int(_float(raw.get(f"breaker:{name}:failures"))),
            )
        with self._lock:
            self._cached, self._cached_at = views, now
        return views

    def invalidate(self) -> None:
        """Make the next ``snapshot`` read Memcached again."""
        with self._lock:
            self._cached_at = float("-inf")

    def record_health(self, name: str, health: ServiceHealth) -> None:
        """Publish what a processor's service-health said."""
        value = json.dumps(
            {"failing": health.failing, "min_ms": health.min_response_ms, "at": self._clock.now()}
        )
        self._call(lambda: self._mc.set(f"health:{name}", value, expire=_KEY_TTL_S))
        self.invalidate()

    def take_health_turn(self, min_interval_s: float) -> bool:
        """Whether this caller may read service-health now: one winner per interval, anywhere."""
        now = self._clock.now()

        def claim() -> bool:
            value, token = self._mc.gets(_TURN_KEY)
            if value is None:
                return bool(self._mc.add(_TURN_KEY, str(now), expire=_KEY_TTL_S, noreply=False))
            if now - _float(value) < min_interval_s:
                return False
            return bool(self._mc.cas(_TURN_KEY, str(now), token, expire=_KEY_TTL_S, noreply=False))

        return bool(self._call(claim, default=False))

    def record_failure(self, name: str, view: ProcessorView | None = None) -> None:
        """Count a failure; open the breaker at the threshold, or again after a failed probe."""
        cfg = self._breaker

        def count() -> None:
            key = f"breaker:{name}:failures"
            failures = self._mc.incr(key, 1, noreply=False)
            if failures is None:
                if not self._mc.add(
                    key, "1", expire=max(1, round(cfg.failure_window_s)), noreply=False
                ):
                    failures = self._mc.incr(key, 1, noreply=False)
                else:
                    failures = 1
            reopen = view is not None and view.half_open
            # Only the caller that crosses the threshold opens it; the others see it open.
            if reopen or int(failures or 0) == cfg.failure_threshold:
                open_until = self._clock.now() + cfg.open_s
                self._mc.set(f"breaker:{name}:open_until", str(open_until), expire=_KEY_TTL_S)
                self._mc.delete(f"breaker:{name}:probe")
                _log.warning("breaker opened", extra={"processor": name, "open_s": cfg.open_s})

        self._call(count)
        self.invalidate()

    def record_success(self, name: str, view: ProcessorView) -> None:
        """Close the breaker when the processor works again (writes only if it was not closed)."""
        if not (view.failures or view.breaker_open or view.half_open):
            return

        def reset() -> None:
            self._mc.delete_many(
                [f"breaker:{name}:failures", f"breaker:{name}:open_until", f"breaker:{name}:probe"]
            )

        self._call(reset)
        if view.half_open or view.breaker_open:
            _log.info("breaker closed", extra={"processor": name})
        self.invalidate()

    def try_probe(self, name: str, hold_s: float) -> bool:
        """In half-open state: whether this caller is the one allowed to test the processor."""
        key = f"breaker:{name}:probe"
        return bool(
            self._call(
                lambda: self._mc.add(key, "1", expire=max(1, round(hold_s)), noreply=False),
                default=False,
            )
        )

    def _call(self, action: Any, default: Any = None) -> Any:
        try:
            return action()
        except _MEMCACHE_ERRORS as exc:
            now = self._clock.monotonic()
            if now - self._warned_at > 5:
                self._warned_at = now
                _log.warning("memcached unavailable", extra={"error": type(exc).__name__})
            return default


class SharedStateClient:
    """The shared state for an event loop: reads never wait, writes never block it.

    A thread of its own keeps the latest views (refreshed every ``refresh_s``, and at once after
    a write) and runs the writes handed to it, in order; ``snapshot`` returns what it last read.
    Only a probe, whose answer decides where a payment goes, is awaited.
    """

    def __init__(self, shared: SharedState, refresh_s: float) -> None:
        self._shared = shared
        self._refresh_s = refresh_s
        self._views: dict[str, ProcessorView] = {}
        self._probe_lost_at: dict[str, float] = {}
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="shared-state", daemon=True)

    def start(self) -> None:
        """Read the state once (bounded by Memcached's timeout), then keep it fresh."""
        self._views = self._shared.snapshot()
        self._thread.start()

    def stop(self) -> None:
        """Run the writes still queued, then stop."""
        self._work.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def snapshot(self) -> dict[str, ProcessorView]:
        """Every processor's view as last read."""
        return self._views

    def record_failure(self, name: str, view: ProcessorView | None = None) -> None:
        """``SharedState.record_failure``, in the background."""
        self._work.put(lambda: self._shared.record_failure(name, view))

    def record_success(self, name: str, view: ProcessorView) -> None:
        """``SharedState.record_success``, in the background (nothing to do if all is well)."""
        if view.failures or view.breaker_open or view.half_open:
            self._work.put(lambda: self._shared.record_success(name, view))

    async def try_probe(self, name: str, hold_s: float) -> bool:
        """``SharedState.try_probe``, awaited. A probe lost moments ago is not asked for again:
        while one is in flight elsewhere, every payment routed here would otherwise cost a
        Memcached round trip."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._probe_lost_at.get(name, -math.inf) < _PROBE_LOST_MEMORY_S:
            return False
        answer: asyncio.Future[bool] = loop.create_future()

        def probe() -> None:
            won = self._shared.try_probe(name, hold_s)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, answer, won)

        self._work.put(probe)
        won = await answer
        if not won:
            self._probe_lost_at[name] = loop.time()
        return won

    def _loop(self) -> None:
        while True:
            try:
                work = self._work.get(timeout=self._refresh_s)
            except queue.Empty:
                work = _refresh_only
            if work is None:
                return
            if work is not _refresh_only:
                work()
            self._views = self._shared.snapshot()


def _refresh_only() -> None:
    """Marks a turn of ``SharedStateClient``'s thread that only refreshes the views."""


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _json(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def _float(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return 0.0
