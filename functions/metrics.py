"""``GET /metrics``: every process's metrics, all instances added up, in Prometheus text."""

from __future__ import annotations

from pathlib import Path

import falcon

from runtime.deps import FunctionContext
from runtime.metrics import render

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Reads the shared multiprocess folder on each scrape."""

    def __init__(self, context: FunctionContext) -> None:
        self._metrics_dir = Path(context.runtime.metrics_dir)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = _CONTENT_TYPE
        resp.data = render(self._metrics_dir)  # another process's counts lag by a second at most
