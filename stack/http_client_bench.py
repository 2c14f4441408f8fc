"""Measure the client's CPU per ``POST /payments``: urllib3 against runtime.http_client.

    python -m stack.http_client_bench [--payments 5000] [--concurrency 64]

Starts a processor emulator on a free loopback port, then sends the same payments through
``ProcessorClient`` (urllib3's pool, one at a time) and through ``AsyncProcessorClient``
(``runtime.http_client`` on an event loop, ``--concurrency`` at a time), and prints each one's
CPU time per payment in this process (the emulator's CPU is not counted) and the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from decimal import Decimal

from payments.processors import AsyncProcessorClient, Outcome, ProcessorClient
from stack.processors import emulator_argv

_AMOUNT = Decimal("19.90")
_REQUESTED_AT = "2026-12-01T00:00:00.000Z"
_WARM_UP = 200
_READY_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/payments/{uuid.uuid4()}", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # a 404: it answers
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _blocking(url: str, payments: int) -> tuple[float, float]:
    client = ProcessorClient(
        "bench", url, connect_timeout_s=1.0, request_timeout_s=8.0, max_connections=1
    )
    ids = [str(uuid.uuid4()) for _ in range(payments + _WARM_UP)]
    for correlation_id in ids[:_WARM_UP]:
        client.post_payment(correlation_id, _AMOUNT, _REQUESTED_AT)
    cpu, wall = time.process_time(), time.perf_counter()
    for correlation_id in ids[_WARM_UP:]:
        result = client.post_payment(correlation_id, _AMOUNT, _REQUESTED_AT)
        assert result.outcome is Outcome.STORED, result
    return time.process_time() - cpu, time.perf_counter() - wall


async def _on_a_loop(url: str, payments: int, concurrency: int) -> tuple[float, float]:
    client = AsyncProcessorClient(
        "bench", url, connect_timeout_s=1.0, request_timeout_s=8.0, max_connections=concurrency
    )
    ids = [str(uuid.uuid4()) for _ in range(payments + _WARM_UP)]

    async def send(chunk: list[str]) -> None:
        for correlation_id in chunk:
            result = await client.post_payment(correlation_id, _AMOUNT, _REQUESTED_AT)
            assert result.outcome is Outcome.STORED, result

    def lanes(chosen: list[str]) -> list[list[str]]:
        return [chosen[lane::concurrency] for lane in range(concurrency)]

    await asyncio.gather(*[send(lane) for lane in lanes(ids[:_WARM_UP])])
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*[send(lane) for lane in lanes(ids[_WARM_UP:])])
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    """Run both clients against one emulator and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    emulator = subprocess.Popen(
        emulator_argv("bench", port, 0.05), stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        _wait_ready(url)
        for name, (cpu_s, wall_s) in (
            ("urllib3 (blocking pool)", _blocking(url, args.payments)),
            (
                f"runtime.http_client ({args.concurrency} in flight)",
                asyncio.run(_on_a_loop(url, args.payments, args.concurrency)),
            ),
        ):
            print(
                f"{name:<36} {cpu_s / args.payments * 1e6:7.1f} us CPU per payment, "
                f"{wall_s / args.payments * 1e6:7.1f} us wall per payment"
            )
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
