"""``GET /health``: 200 when PostgreSQL and Memcached answer, 503 naming what is down."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import falcon

from runtime.deps import FunctionContext
from runtime.schema import Range


class Health:
    """Cheap enough to poll: the checks' result is reused for ``cache_s`` seconds."""

    @dataclass(frozen=True)
    class Settings:
        cache_s: Annotated[float, Range(0, 60)] = 0.5
        """How long one round of checks answers for (0: check on every request)."""

    def __init__(self, context: FunctionContext) -> None:
        self._deps = context.deps
        self._instance = context.instance
        self._cache_s = context.settings.cache_s
        self._checked_at = float("-inf")
        self._down: list[str] = []

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        now = self._deps.clock.monotonic()
        if now - self._checked_at >= self._cache_s:
            self._down = [name for name, check in self._checks() if not _passes(check)]
            self._checked_at = now
        resp.status = falcon.HTTP_503 if self._down else falcon.HTTP_200
        resp.content_type = falcon.MEDIA_JSON
        resp.text = json.dumps(
            {
                "status": "down" if self._down else "ok",
                "instance": self._instance,
                "down": self._down,
            }
        )

    def _checks(self) -> list[tuple[str, Callable[[], Any]]]:
        return [
            ("postgres", lambda: self._deps.database.run("SELECT 1")),
            ("memcached", lambda: self._deps.memcache.version()),
        ]


def _passes(check: Callable[[], Any]) -> bool:
    try:
        check()
    except Exception:
        return False
    return True
