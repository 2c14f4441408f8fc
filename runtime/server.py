"""Serve a WSGI app with bjoern on a unix socket or a TCP port."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.heap import freeze_startup_objects
from runtime.metrics import start_flusher


def serve(
    app: Callable[..., Any],
    bind: str,
    socket_mode: int,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Listen on ``bind`` (``unix:PATH`` or ``HOST:PORT``) and serve until SIGINT.

    bjoern handles SIGINT by leaving its loop after the request in hand, which is how the
    supervisor stops it without cutting a response short. ``on_listening`` is called once
    connections reach this server.
    """
    import bjoern

    if bind.startswith("unix:"):
        path = Path(bind[len("unix:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a socket left by a killed server; it would make bind fail
        bjoern.listen(app, f"unix:{path}")
        os.chmod(path, socket_mode)
    else:
        host, _, port = bind.rpartition(":")
        bjoern.listen(app, host, int(port))
    if on_listening is not None:
        on_listening()
    start_flusher()
    freeze_startup_objects()
    bjoern.run()
