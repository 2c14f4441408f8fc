"""Measure the cost of a queue put, the only I/O on the intake's hot path.

    python -m bench.queue_put [--puts 200000] [--dir DIR]

Prints p50/p99/p99.9/max in microseconds for ``QueueProducer.put`` of a record shaped like an
intake record, written to DIR (default: a temp dir under /tmp; pass the queue's real folder to
measure its file system).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from runtime.queue import QueueProducer

_RECORD = b'{"id":"4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3","amount":"19.90","t":1764000000.123456}'
_SEGMENT_MAX_BYTES = 16 * 1024 * 1024


def measure(folder: Path, puts: int) -> list[float]:
    """Put ``puts`` records and return each put's duration in microseconds, sorted."""
    producer = QueueProducer(folder, "bench", _SEGMENT_MAX_BYTES)
    producer.open()
    timings = []
    clock = time.perf_counter_ns
    for _ in range(puts):
        started = clock()
        producer.put(_RECORD)
        timings.append((clock() - started) / 1000)
    producer.close()
    timings.sort()
    return timings


def main() -> None:
    """Run the measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="queue-bench-"))
    try:
        timings = measure(folder, args.puts)
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)

    def pick(q: float) -> float:
        return timings[min(len(timings) - 1, int(q * len(timings)))]

    print(
        f"queue put, {args.puts} records of {len(_RECORD) + 1} bytes: "
        f"p50 {pick(0.5):.2f} us, p99 {pick(0.99):.2f} us, p99.9 {pick(0.999):.2f} us, "
        f"max {timings[-1]:.1f} us"
    )


if __name__ == "__main__":
    main()
