"""Build the Falcon app from the manifest: one place wires every HTTP function.

Errors follow one JSON contract, ``{"error": code, "detail": text}``: a function raises
``falcon.HTTPError(status, title=code, description=detail)``; Falcon's own errors (404, 405 with
``Allow``, 413) are rendered the same way; anything unexpected is logged with its traceback and
answered with a generic 500 that leaks nothing.
"""

from __future__ import annotations

import json
import logging
import re

import falcon

from runtime.bundle import Bundle
from runtime.deps import Deps

_log = logging.getLogger("runtime.app")
_STATUS_LINE = re.compile(r"^\d{3} ")


def create_app(bundle: Bundle, deps: Deps) -> falcon.App:
    """A Falcon app serving every ``http`` function of ``bundle`` with ``deps``."""
    app = falcon.App(middleware=[_BodyLimit(bundle.runtime.server.max_body_bytes)])
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.default_media_type = falcon.MEDIA_JSON
    app.set_error_serializer(_serialize_error)
    app.add_error_handler(Exception, _unexpected_error)
    for spec in bundle.manifest.of_kind("http"):
        app.add_route(spec.route, bundle.construct(spec, deps))
    return app


class _BodyLimit:
    """Refuse a body larger than the configured limit before any function reads it."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length
        if length is not None and length > self._max_bytes:
            raise falcon.HTTPContentTooLarge(
                title="body_too_large",
                description=f"the body may be at most {self._max_bytes} bytes",
            )


def _serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    title = error.title or ""
    code = error_code(error.status) if _STATUS_LINE.match(title) else title
    detail = error.description or title.partition(" ")[2] or code
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps({"error": code, "detail": detail})


def error_code(status: str | int) -> str:
    """``"404 Not Found"`` becomes ``not_found``: a stable code for Falcon's own errors."""
    text = falcon.code_to_http_status(status)
    return text.partition(" ")[2].lower().replace(" ", "_").replace("-", "_")


def _unexpected_error(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict
) -> None:
    if isinstance(ex, falcon.HTTPError):
        raise ex
    _log.error("unhandled error", exc_info=ex, extra={"method": req.method, "path": req.path})
    raise falcon.HTTPInternalServerError(
        title="internal_error", description="the server could not handle this request"
    )
