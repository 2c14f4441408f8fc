"""``GET /payments-summary?from=&to=``: what each processor holds from us, by ``requestedAt``.

Counts only payments recorded ``processed``, which happens after the processor has stored
them, with the ``requestedAt`` it stored: the same window gives the same totals as the
processors' admin summaries. Both bounds are optional and inclusive.
"""

from __future__ import annotations

import falcon

from payments.isotime import BadTimestamp, parse
from payments.store import summarize
from runtime.db import DatabaseUnavailable
from runtime.deps import FunctionContext


class Summary:
    """One grouped query on the partial index of processed payments."""

    def __init__(self, context: FunctionContext) -> None:
        self._db = context.deps.database
        self._processors = list(context.config.processors)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        start = _bound(req, "from")
        end = _bound(req, "to")
        if start and end and start > end:
            raise falcon.HTTPBadRequest(title="invalid_range", description="'from' is after 'to'")
        try:
            totals = summarize(self._db, start, end)
        except DatabaseUnavailable:
            raise falcon.HTTPServiceUnavailable(
                title="store_unavailable", description="the payment store is not answering"
            ) from None
        parts = []
        for name in self._processors:
            part = totals.get(name)
            count, amount = (part.count, part.amount) if part else (0, 0)
            parts.append(f'"{name}":{{"totalRequests":{count},"totalAmount":{amount:.2f}}}')
        resp.content_type = falcon.MEDIA_JSON
        resp.text = "{" + ",".join(parts) + "}"


def _bound(req: falcon.Request, name: str):
    text = req.get_param(name)
    if text is None or text == "":
        return None
    try:
        return parse(text)
    except BadTimestamp:
        raise falcon.HTTPBadRequest(
            title="invalid_date",
            description=f"'{name}' must be an ISO-8601 timestamp such as 2025-07-10T12:34:56.000Z",
        ) from None
