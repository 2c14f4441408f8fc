"""Functions whose answers show what ``runtime invoke`` passed them and what it reports."""

from dataclasses import dataclass

import falcon

from runtime.db import DatabaseUnavailable


class Echo:
    @dataclass(frozen=True)
    class Settings:
        prefix: str = "said"
        loud: bool = False

    def __init__(self, context):
        self._settings = context.settings

    def on_get(self, req, resp, word):
        resp.media = {
            "said": f"{self._settings.prefix} {word}",
            "query": dict(req.params),
            "header": req.get_header("X-Test"),
        }

    def on_post(self, req, resp, word):
        resp.status = falcon.HTTP_201
        resp.media = {"word": word, "body": req.get_media()}


class Submit:
    def __init__(self, context):
        self._queue = context.producer()

    def on_post(self, req, resp):
        self._queue.put(req.get_media())
        resp.status = falcon.HTTP_202


class Count:
    """Reads PostgreSQL: 503 when it does not answer."""

    def __init__(self, context):
        self._database = context.deps.database

    def on_get(self, req, resp):
        try:
            rows = self._database.run("SELECT 1")
        except DatabaseUnavailable as exc:
            raise falcon.HTTPServiceUnavailable(
                title="store_unavailable", description=str(exc)
            ) from exc
        resp.media = {"rows": len(rows)}


class Worker:
    def __init__(self, context):
        self.context = context

    def handle(self, message):
        if message.body.get("fail"):
            raise RuntimeError("refused on purpose")


class Tick:
    @dataclass(frozen=True)
    class Settings:
        fail: bool = False

    def __init__(self, context):
        self._fail = context.settings.fail

    def run(self):
        if self._fail:
            raise ValueError("failing on purpose")
        return {"ticked": True}
