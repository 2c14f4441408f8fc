"""``POST /purge-payments``: forget every payment and everything queued (contest setup).

Guarded by config: ``purge.enabled: false`` answers 404 as if the route did not exist, and a
``purge.token`` must then come in the ``X-Purge-Token`` header.
"""

from __future__ import annotations

import hmac
import logging

import falcon

from payments.store import purge
from runtime.db import DatabaseUnavailable
from runtime.deps import FunctionContext

_log = logging.getLogger("functions.purge")


class Purge:
    """Deletes the rows and moves the purge mark, so queued older items are dropped too."""

    def __init__(self, context: FunctionContext) -> None:
        self._db = context.deps.database
        self._enabled = context.config.purge.enabled
        self._token = context.config.purge.token

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self._enabled:
            raise falcon.HTTPNotFound(title="not_found", description="purge is disabled")
        if self._token and not hmac.compare_digest(
            (req.get_header("X-Purge-Token") or "").encode(), self._token.encode()
        ):
            raise falcon.HTTPUnauthorized(
                title="unauthorized", description="a valid X-Purge-Token header is required"
            )
        try:
            purge(self._db)
        except DatabaseUnavailable:
            raise falcon.HTTPServiceUnavailable(
                title="store_unavailable", description="the payment store is not answering"
            ) from None
        _log.info("payments purged")
        resp.content_type = falcon.MEDIA_JSON
        resp.text = '{"message":"All payments purged."}'
