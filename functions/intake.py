"""``POST /payments``: validate, append to the durable queue, answer 202. Nothing slow here.

A repeated correlationId is accepted again (202) and never charged twice: the forwarder's
claim in PostgreSQL lets only the first one through.
"""

from __future__ import annotations

import falcon

from payments.validation import PaymentRejected, parse_payment
from runtime.deps import FunctionContext
from runtime.queue import QueueFull


class Intake:
    """The only thing between a client and the queue: one parse, one ``write``."""

    def __init__(self, context: FunctionContext) -> None:
        self._put = context.producer().put
        self._clock = context.deps.clock
        self._max_amount = context.config.limits.max_amount
        self._max_body_bytes = context.runtime.server.max_body_bytes
        self._metrics = context.deps.metrics
        self._accepted = self._metrics.accepted

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        media_type = (req.content_type or "").partition(";")[0].strip().lower()
        if media_type != falcon.MEDIA_JSON:
            self._metrics.rejected.labels("content_type").inc()
            raise falcon.HTTPUnsupportedMediaType(
                title="unsupported_media_type", description="send the body as application/json"
            )
        try:
            body = req.bounded_stream.read(self._max_body_bytes + 1)
            if len(body) > self._max_body_bytes:  # a chunked body carries no Content-Length
                raise falcon.HTTPContentTooLarge(
                    title="body_too_large",
                    description=f"the body may be at most {self._max_body_bytes} bytes",
                )
            payment = parse_payment(body, self._max_amount, self._clock.now())
        except PaymentRejected as exc:
            self._metrics.rejected.labels(exc.code).inc()
            status = falcon.HTTP_400 if exc.code == "invalid_json" else falcon.HTTP_422
            raise falcon.HTTPError(status, title=exc.code, description=exc.detail) from None
        try:
            self._put(payment)
        except QueueFull:
            self._metrics.rejected.labels("queue_full").inc()
            raise falcon.HTTPServiceUnavailable(
                title="queue_unavailable",
                description="the payment could not be stored; nothing was accepted, retry later",
            ) from None
        self._accepted.inc()
        resp.status = falcon.HTTP_202
