"""The queue on a real, tiny tmpfs: filling it refuses puts, and draining it makes room again.

Mounting needs root (CI runs as root); elsewhere these tests are skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.queue import QueueConsumer, QueueFull, QueueProducer

_TMPFS_BYTES = 64 * 1024
_RECORD = b'{"id":"%08d","amount":"19.90","t":1764072000.000000}'
_MAX_PUTS = 10_000  # far more than 64 KiB holds: the loop ends on QueueFull


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "queue"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={_TMPFS_BYTES}", "tmpfs", str(mount_point)],
        check=True,
        timeout=10,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, timeout=10)


def fill(producer: QueueProducer) -> list[bytes]:
    """Put records until the disk refuses one; returns those accepted."""
    accepted = []
    for n in range(_MAX_PUTS):
        record = _RECORD % n
        try:
            producer.put(record)
        except QueueFull:
            return accepted
        accepted.append(record)
    raise AssertionError(f"{_MAX_PUTS} records fitted in {_TMPFS_BYTES} bytes")


def drain(consumer: QueueConsumer) -> list[bytes]:
    items = consumer.read(_MAX_PUTS)
    for item in items:
        consumer.done(item)
    consumer.commit()
    return [item.body for item in items]


def test_a_full_disk_refuses_puts_and_a_drained_queue_accepts_them_again(
    tiny_disk: Path,
) -> None:
    producer = QueueProducer(tiny_disk, "app1", segment_max_bytes=16 * 1024 * 1024)
    consumer = QueueConsumer(tiny_disk, owner="app1")
    try:
        first = fill(producer)
        assert first, "not even one record fitted"
        consumer.claim()
        drained = drain(consumer)
        drained += drain(consumer)  # past the full segment, onto the fresh one

        assert drained == first  # nothing accepted was lost, nothing refused was kept
        second = fill(producer)  # the consumed segment was deleted: room again
        assert len(second) >= len(first) // 2
        assert drain(consumer) + drain(consumer) == second
    finally:
        consumer.close()
        producer.close()
