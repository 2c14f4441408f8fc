"""Measure the CPU one ``POST /payments`` costs inside the app: Falcon, validation, the put.

    python -m stack.intake_bench [--requests 20000] [--profile]

Builds the bundle's real WSGI app (``runtime.app.create_app`` over ``functions.yaml``, the
default config, the journal and metrics files in a temp dir) and calls it directly with WSGI
environments built beforehand (bjoern builds them in C), so the figure is the Python side of a
request alone: what the server, the sockets and Nginx add comes on top. ``--profile`` prints where
the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import falcon.testing

from runtime.app import create_app
from runtime.config import Config, QueueConfig, validate_config
from runtime.deps import Deps, SystemClock
from runtime.manifest import load_manifest
from runtime.metrics import enable_multiprocess
from stack.settings import PROJECT_ROOT

_WARM_UP = 1000
_PROFILED = 5000

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def build_app(folder: Path) -> WsgiApp:
    """The bundle's app with every file it writes under ``folder``."""
    config = Config(
        instance="bench1",
        state_dir=str(folder / "var"),
        metrics_dir=str(folder / "metrics"),
        queue=QueueConfig(dir=str(folder / "queue")),
    )
    validate_config(config)
    enable_multiprocess(Path(config.metrics_dir), config.instance)
    manifest = load_manifest(PROJECT_ROOT / "functions.yaml")
    return create_app(manifest, Deps(config, SystemClock()))


def payment_environs(count: int) -> list[dict[str, Any]]:
    """What bjoern hands the app for ``count`` POST /payments, built before any is timed."""
    return [
        falcon.testing.create_environ(
            "/payments",
            method="POST",
            body=f'{{"correlationId":"{uuid.uuid4()}","amount":19.90}}',
            headers={"Content-Type": "application/json"},
        )
        for _ in range(count)
    ]


def send(app: WsgiApp, environs: list[dict[str, Any]]) -> None:
    """Call the app once per environ; stops at the first answer that is not 202."""

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        if not status.startswith("202"):
            raise RuntimeError(f"POST /payments answered {status}")

    for environ in environs:
        for _ in app(environ, start_response):
            pass


def main() -> None:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="measured requests")
    parser.add_argument("--profile", action="store_true", help="also print a profile")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="intake-bench-"))
    try:
        app = build_app(folder)
        send(app, payment_environs(_WARM_UP))
        measured = payment_environs(args.requests)
        started = time.process_time()
        send(app, measured)
        cpu_us = (time.process_time() - started) / args.requests * 1e6
        print(f"POST /payments in-process: {cpu_us:.1f} µs of CPU a request ({args.requests:,})")
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(send, app, payment_environs(_PROFILED))
            pstats.Stats(profile).sort_stats("tottime").print_stats(20)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
