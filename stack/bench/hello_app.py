"""``python -m stack.bench.hello_app unix:PATH``: the design floor's backend, a Falcon hello-world.

It runs on bjoern through the runtime's own ``serve``, as our instances do, and answers at
once: 202 to ``POST /payments`` like our intake, zero summaries to the backend's and the
processors' summary reads, 204 to the processors' token call and 200 to everything else, as
the floor's Nginx does. Nothing is stored, so the script's consistency checks all pass.
"""

from __future__ import annotations

import sys

import falcon

from runtime.server import serve
from stack.bench.floor import BACKEND_SUMMARY, PROCESSOR_SUMMARY

_SOCKET_MODE = 0o666  # Nginx's workers run as another user


class _Payments:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.bounded_stream.read()
        resp.status = falcon.HTTP_202


class _Everything:
    """Every other path: what the floor Nginx answers for it."""

    def __call__(self, req: falcon.Request, resp: falcon.Response, **_: str) -> None:
        req.bounded_stream.read()
        if req.path == "/admin/configurations/token":
            resp.status = falcon.HTTP_204
            return
        resp.content_type = falcon.MEDIA_JSON
        if req.path == "/payments-summary":
            resp.text = BACKEND_SUMMARY
        elif req.path == "/admin/payments-summary":
            resp.text = PROCESSOR_SUMMARY
        else:
            resp.text = "{}"


def build_app() -> falcon.App:
    """The hello-world: one route for payments, a sink for the rest."""
    app = falcon.App()
    app.add_route("/payments", _Payments())
    app.add_sink(_Everything(), prefix="/")
    return app


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].startswith("unix:"):
        print("usage: python -m stack.bench.hello_app unix:PATH", file=sys.stderr)
        return 2
    serve(build_app(), argv[0], _SOCKET_MODE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
