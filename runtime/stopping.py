"""The stop signal a function gets: a ``threading.Event`` that an event loop can sleep on too.

Thread-based functions wait on it as on any event (``stopping.wait(delay)`` returns early when
the process stops). A coroutine function awaits ``stopping.sleep(delay)`` instead, which never
blocks its loop: each sleeper is a future with a timer, and ``set`` (from any thread) resolves
them all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Stopping(threading.Event):
    """Set once, when the function's process is asked to stop."""

    def __init__(self) -> None:
        super().__init__()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sleepers: set[asyncio.Future[bool]] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the event loop whose coroutines ``sleep`` on this signal."""
        self._loop = loop

    def set(self) -> None:
        """Stop: wake every waiting thread and every sleeping coroutine."""
        super().set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # RuntimeError: the loop closed meanwhile, so nobody sleeps on it any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_sleepers)

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopping; ``True`` if the process is stopping."""
        if self.is_set():
            return True
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_later(seconds, _resolve, woken, False)
        self._sleepers.add(woken)
        try:
            return await woken
        finally:
            timer.cancel()
            self._sleepers.discard(woken)

    def _wake_sleepers(self) -> None:
        for woken in list(self._sleepers):
            _resolve(woken, True)


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)
