"""The journal queue in one process: put, read, acknowledge, commit, roll, and failed writes."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import runtime.queue
from runtime.queue import Position, QueueConsumer, QueueFull, QueueProducer

SEGMENT_BYTES = 4096


@pytest.fixture
def queue_dir(tmp_path: Path) -> Path:
    return tmp_path / "payments"


@pytest.fixture
def producer(queue_dir: Path) -> Iterator[QueueProducer]:
    producer = QueueProducer(queue_dir, "app1", SEGMENT_BYTES)
    yield producer
    producer.close()


@pytest.fixture
def consumer(queue_dir: Path) -> Iterator[QueueConsumer]:
    consumer = QueueConsumer(queue_dir)
    yield consumer
    consumer.close()


def record(n: int) -> bytes:
    return f'{{"n":{n}}}'.encode()


def segment_files(queue_dir: Path) -> list[str]:
    return sorted(p.name for p in queue_dir.glob("*.seg"))


def read_all(consumer: QueueConsumer) -> list[bytes]:
    return [item.body for item in consumer.read(10_000)]


def test_a_put_record_is_read_back_once_in_order(
    producer: QueueProducer, consumer: QueueConsumer
) -> None:
    for n in range(3):
        producer.put(record(n))

    assert consumer.claim() == ["app1"]
    items = consumer.read(10)

    assert [item.body for item in items] == [record(0), record(1), record(2)]
    assert {item.producer for item in items} == {"app1"}
    assert consumer.read(10) == []


def test_read_returns_at_most_max_items_and_continues_where_it_stopped(
    producer: QueueProducer, consumer: QueueConsumer
) -> None:
    for n in range(5):
        producer.put(record(n))
    consumer.claim()

    assert [item.body for item in consumer.read(2)] == [record(0), record(1)]
    assert [item.body for item in consumer.read(2)] == [record(2), record(3)]
    assert [item.body for item in consumer.read(2)] == [record(4)]


def test_records_put_after_a_read_are_picked_up_by_the_next_read(
    producer: QueueProducer, consumer: QueueConsumer
) -> None:
    producer.put(record(1))
    consumer.claim()
    assert read_all(consumer) == [record(1)]

    producer.put(record(2))

    assert read_all(consumer) == [record(2)]


def test_commit_stores_the_position_after_the_last_settled_item(
    producer: QueueProducer, consumer: QueueConsumer, queue_dir: Path
) -> None:
    producer.put(record(1))
    producer.put(record(2))
    consumer.claim()
    items = consumer.read(10)
    assert consumer.in_flight() == 2

    for item in items:
        consumer.done(item)
    consumer.commit()

    assert consumer.in_flight() == 0
    end = len(record(1)) + 1 + len(record(2)) + 1
    assert (queue_dir / "app1.offset").read_text() == f"1 {end}\n"


def test_commit_stops_at_the_oldest_unsettled_item(
    producer: QueueProducer, consumer: QueueConsumer, queue_dir: Path
) -> None:
    for n in range(3):
        producer.put(record(n))
    consumer.claim()
    first, second, third = consumer.read(10)

    consumer.done(first)
    consumer.done(third)  # settled out of order: the commit must not skip the second
    consumer.commit()

    assert (queue_dir / "app1.offset").read_text() == f"{second.start.seq} {second.start.offset}\n"


def test_items_not_settled_are_delivered_again_after_the_consumer_closes(
    producer: QueueProducer, queue_dir: Path
) -> None:
    for n in range(4):
        producer.put(record(n))
    first = QueueConsumer(queue_dir)
    first.claim()
    items = first.read(10)
    first.done(items[0])
    first.done(items[2])
    first.close()

    second = QueueConsumer(queue_dir)
    try:
        assert second.claim() == ["app1"]
        # From the committed offset (before item 1); item 2 comes again: handlers are idempotent.
        assert read_all(second) == [record(1), record(2), record(3)]
    finally:
        second.close()


def test_nothing_is_delivered_again_once_everything_was_settled(
    producer: QueueProducer, queue_dir: Path
) -> None:
    producer.put(record(1))
    first = QueueConsumer(queue_dir)
    first.claim()
    for item in first.read(10):
        first.done(item)
    first.close()

    second = QueueConsumer(queue_dir)
    try:
        second.claim()
        assert read_all(second) == []
    finally:
        second.close()


def test_a_second_consumer_cannot_claim_a_held_producer(
    producer: QueueProducer, queue_dir: Path
) -> None:
    producer.put(record(1))
    holder = QueueConsumer(queue_dir)
    other = QueueConsumer(queue_dir)
    try:
        assert holder.claim() == ["app1"]
        assert other.claim() == []
        assert other.read(10) == []

        holder.close()

        assert other.claim() == ["app1"]
        assert read_all(other) == [record(1)]
    finally:
        holder.close()
        other.close()


def test_each_consumer_claims_only_producers_no_one_else_holds(queue_dir: Path) -> None:
    first_producer = QueueProducer(queue_dir, "app1", SEGMENT_BYTES)
    first_producer.put(record(1))
    holder = QueueConsumer(queue_dir)
    holder.claim()
    second_producer = QueueProducer(queue_dir, "app2", SEGMENT_BYTES)
    second_producer.put(record(2))
    other = QueueConsumer(queue_dir)
    try:
        assert other.claim() == ["app2"]
        assert holder.claim() == ["app1"]
        assert read_all(other) == [record(2)]
    finally:
        first_producer.close()
        second_producer.close()
        holder.close()
        other.close()


def test_one_consumer_for_the_deployment_reads_every_journal_while_the_other_stands_by(
    queue_dir: Path,
) -> None:
    producers = [QueueProducer(queue_dir, name, SEGMENT_BYTES) for name in ("app1", "app2")]
    for n, producer in enumerate(producers):
        producer.put(record(n))
    active = QueueConsumer(queue_dir, owner="app1", one=True)
    standby = QueueConsumer(queue_dir, owner="app2", one=True)
    try:
        assert active.claim() == ["app1", "app2"]  # its own and the other instance's
        assert active.is_active()
        assert standby.claim() == []
        assert not standby.is_active()
        assert standby.read(10) == []
        items = active.read(10)
        assert sorted(item.body for item in items) == [record(0), record(1)]
        active.done(items[0])
        producers[1].put(record(2))

        active.close()

        # Everything from the committed offsets: the unsettled item again, and the new one.
        assert standby.claim() == ["app1", "app2"]
        assert standby.is_active()
        assert sorted(read_all(standby)) == sorted([items[1].body, record(2)])
    finally:
        for producer in producers:
            producer.close()
        active.close()
        standby.close()


def test_the_standby_takes_over_only_once_the_active_consumer_has_let_go(queue_dir: Path) -> None:
    producer = QueueProducer(queue_dir, "app1", SEGMENT_BYTES)
    producer.put(record(1))
    active = QueueConsumer(queue_dir, owner="app1", one=True)
    standby = QueueConsumer(queue_dir, owner="app2", one=True)
    try:
        active.claim()
        for _ in range(3):  # however often it asks
            assert standby.claim() == []
        active.close()
        assert standby.claim() == ["app1"]
        assert read_all(standby) == [record(1)]
    finally:
        producer.close()
        active.close()
        standby.close()


def test_a_producer_starts_a_new_segment_each_time_it_opens(queue_dir: Path) -> None:
    for _ in range(2):
        producer = QueueProducer(queue_dir, "app1", SEGMENT_BYTES)
        producer.put(record(1))
        producer.close()

    assert segment_files(queue_dir) == ["app1.0000000001.seg", "app1.0000000002.seg"]


def test_segments_roll_at_segment_max_bytes_and_consumed_ones_are_deleted(
    queue_dir: Path, consumer: QueueConsumer
) -> None:
    line_bytes = len(record(100)) + 1
    producer = QueueProducer(queue_dir, "app1", segment_max_bytes=3 * line_bytes)
    for n in range(100, 107):
        producer.put(record(n))

    # 3 records fill a segment; the 7th record starts the third, which then stays current.
    assert segment_files(queue_dir) == [
        "app1.0000000001.seg",
        "app1.0000000002.seg",
        "app1.0000000003.seg",
    ]
    assert (queue_dir / "app1.0000000001.seg").stat().st_size == 3 * line_bytes

    consumer.claim()
    items = consumer.read(100)
    assert [item.body for item in items] == [record(n) for n in range(100, 107)]
    for item in items[:4]:
        consumer.done(item)
    consumer.commit()

    # Committed up to item 5 (in segment 2): segment 1 is fully consumed, segment 2 is not.
    assert segment_files(queue_dir) == ["app1.0000000002.seg", "app1.0000000003.seg"]

    for item in items[4:]:
        consumer.done(item)
    consumer.commit()

    assert segment_files(queue_dir) == ["app1.0000000003.seg"]
    producer.put(record(107))
    assert read_all(consumer) == [record(107)]
    producer.close()


def test_a_consumer_resumes_in_a_later_segment_after_a_restart(queue_dir: Path) -> None:
    line_bytes = len(record(10)) + 1
    producer = QueueProducer(queue_dir, "app1", segment_max_bytes=2 * line_bytes)
    for n in range(10, 13):
        producer.put(record(n))
    first = QueueConsumer(queue_dir)
    first.claim()
    items = first.read(100)
    for item in items[:2]:
        first.done(item)
    first.close()

    second = QueueConsumer(queue_dir)
    try:
        second.claim()
        assert read_all(second) == [record(12)]
        assert segment_files(queue_dir) == ["app1.0000000002.seg"]
    finally:
        second.close()
        producer.close()


def test_a_partial_line_is_not_delivered_until_it_is_complete(
    producer: QueueProducer, consumer: QueueConsumer, queue_dir: Path
) -> None:
    producer.put(record(1))
    consumer.claim()
    assert read_all(consumer) == [record(1)]
    segment = queue_dir / "app1.0000000001.seg"
    # A writer caught between two writes, as a reader racing a slower writer would see it.
    fd = os.open(segment, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b'{"n":2,"pa')

        assert consumer.read(10) == []
        assert consumer.read(10) == []

        os.write(fd, b'rt":true}\n')

        assert read_all(consumer) == [b'{"n":2,"pa' + b'rt":true}']
    finally:
        os.close(fd)


def test_backlog_counts_the_bytes_written_and_not_read_yet(
    producer: QueueProducer, consumer: QueueConsumer
) -> None:
    producer.put(record(1))
    consumer.claim()
    assert consumer.backlog_bytes() == len(record(1)) + 1

    read_all(consumer)

    assert consumer.backlog_bytes() == 0


class _ShortWrites:
    """Stands in for ``os`` inside runtime.queue: ``write`` writes only part of its bytes."""

    def __init__(self, keep_bytes: int) -> None:
        self._keep_bytes = keep_bytes

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data[: self._keep_bytes])


class _FullDisk:
    """Stands in for ``os`` inside runtime.queue: ``write`` fails with ENOSPC."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_short_write_raises_queue_full_and_leaves_the_journal_unchanged(
    producer: QueueProducer, queue_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer.put(record(1))
    segment = queue_dir / "app1.0000000001.seg"
    before = segment.read_bytes()

    with monkeypatch.context() as patch:
        patch.setattr(runtime.queue, "os", _ShortWrites(keep_bytes=3))
        with pytest.raises(QueueFull, match="short"):
            producer.put(record(2))

    assert segment.read_bytes() == before
    # The next record is not glued to a torn one.
    producer.put(record(3))
    consumer = QueueConsumer(queue_dir)
    try:
        consumer.claim()
        assert read_all(consumer) == [record(1), record(3)]
    finally:
        consumer.close()


def test_a_failed_write_raises_queue_full_naming_the_reason(
    producer: QueueProducer, queue_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer.put(record(1))
    before = (queue_dir / "app1.0000000001.seg").read_bytes()

    with monkeypatch.context() as patch:
        patch.setattr(runtime.queue, "os", _FullDisk())
        with pytest.raises(QueueFull, match="No space left on device"):
            producer.put(record(2))

    assert (queue_dir / "app1.0000000001.seg").read_bytes() == before


def test_positions_order_by_segment_then_offset() -> None:
    assert Position(1, 900) < Position(2, 0) < Position(2, 1)


def test_a_consumer_reads_its_own_instances_journal_and_leaves_the_others_at_first(
    tmp_path: Path,
) -> None:
    for name in ("app1", "app2"):
        producer = QueueProducer(tmp_path, name, 1 << 20)
        producer.put(b'{"from":"%s"}' % name.encode())
        producer.close()
    consumer = QueueConsumer(tmp_path, owner="app1", takeover_s=5.0)
    assert consumer.claim(now=100.0) == ["app1"]
    assert consumer.claim(now=104.0) == ["app1"]


def test_an_orphaned_journal_is_taken_over_after_takeover_s_and_handed_back_once_drained(
    tmp_path: Path,
) -> None:
    producer = QueueProducer(tmp_path, "app2", 1 << 20)
    producer.put(b'{"n":1}')
    consumer = QueueConsumer(tmp_path, owner="app1", takeover_s=5.0)
    assert consumer.claim(now=100.0) == []
    assert consumer.claim(now=105.0) == ["app2"]
    items = consumer.read(10)
    assert [item.body for item in items] == [b'{"n":1}']
    assert consumer.claim(now=106.0) == ["app2"]  # still in flight: kept
    consumer.done(items[0])
    assert consumer.claim(now=107.0) == []  # drained: handed back to its owner
    owner = QueueConsumer(tmp_path, owner="app2")
    assert owner.claim() == ["app2"]
    assert owner.read(10) == []  # the taken-over item is not delivered again


def test_a_journal_held_by_its_owner_is_never_taken_over(tmp_path: Path) -> None:
    producer = QueueProducer(tmp_path, "app2", 1 << 20)
    producer.put(b'{"n":1}')
    owner = QueueConsumer(tmp_path, owner="app2")
    assert owner.claim() == ["app2"]
    other = QueueConsumer(tmp_path, owner="app1", takeover_s=5.0)
    assert other.claim(now=100.0) == []
    assert other.claim(now=200.0) == []
