"""``GET /health``: 200 when PostgreSQL and Memcached answer, 503 naming what is down."""

from __future__ import annotations

import json

import falcon

from runtime.deps import FunctionContext

_DEFAULT_CACHE_S = 0.5


class Health:
    """Cheap enough to poll: the checks' result is reused for ``cache_s`` seconds."""

    def __init__(self, context: FunctionContext) -> None:
        self._deps = context.deps
        self._cache_s = float(context.settings.get("cache_s", _DEFAULT_CACHE_S))
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
                "instance": self._deps.config.instance,
                "down": self._down,
            }
        )

    def _checks(self):
        return [
            ("postgres", lambda: self._deps.database.run("SELECT 1")),
            ("memcached", lambda: self._deps.memcache.version()),
        ]


def _passes(check) -> bool:
    try:
        check()
    except Exception:
        return False
    return True
