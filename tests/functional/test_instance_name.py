"""One instance name, one producer: a second writer under a name in use is refused at start.

Two writers under one name lost accepted items: producers A and B both named ``app1`` put a0,
b0, a1 (each put returned, so intake had answered 202), and the consumer delivered only a0 and
b0, then deleted the segment holding a1: it moves on to the newest segment, and deletes older
ones, while the other writer still appends to its old one. The first test replays that with
the guard taken away; the others show the guard refuses the second writer instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runtime.queue
from runtime.errors import InstanceInUse
from runtime.queue import QueueConsumer, QueueProducer, hold_producer, release_producer

ROOT = Path(__file__).resolve().parents[2]
_RUN_TIMEOUT_S = 60.0
SEGMENT_BYTES = 1 << 20


def delivered(consumer: QueueConsumer) -> list[bytes]:
    consumer.claim()
    items = consumer.read(100)
    for item in items:
        consumer.done(item)
    consumer.commit()
    return [item.body for item in items]


def test_without_the_guard_two_writers_under_one_name_lose_an_accepted_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loss the guard prevents, replayed with the guard taken away: why it must exist.
    monkeypatch.setattr(runtime.queue, "hold_producer", lambda queue_dir, producer: None)
    queue_dir = tmp_path / "payments"
    a = QueueProducer(queue_dir, "app1", SEGMENT_BYTES)
    a.put(b"a0")
    runtime.queue._WRITING.clear()  # as if b were another process
    b = QueueProducer(queue_dir, "app1", SEGMENT_BYTES)
    b.put(b"b0")
    consumer = QueueConsumer(queue_dir)

    first = delivered(consumer)
    a.put(b"a1")  # put returned: accepted
    later = delivered(consumer)
    consumer.close()
    a.close()
    b.close()

    assert first == [b"a0", b"b0"]
    assert later == []  # a1 was never delivered...
    assert not (queue_dir / "app1.0000000001.seg").exists()  # ...and its segment is gone


def test_a_second_producer_under_a_name_in_use_in_this_process_is_refused(
    tmp_path: Path,
) -> None:
    queue_dir = tmp_path / "payments"
    a = QueueProducer(queue_dir, "app1", SEGMENT_BYTES)
    a.put(b"a0")
    b = QueueProducer(queue_dir, "app1", SEGMENT_BYTES)

    with pytest.raises(InstanceInUse) as refused:
        b.put(b"b0")

    assert str(refused.value) == (
        f"{queue_dir}: this process already writes as 'app1'; use one producer per queue and name"
    )
    a.put(b"a1")
    consumer = QueueConsumer(queue_dir)
    assert delivered(consumer) == [b"a0", b"a1"]  # nothing accepted is lost
    consumer.close()
    a.close()


def test_a_producer_in_another_process_under_a_name_in_use_is_refused_saying_who_holds_it(
    tmp_path: Path,
) -> None:
    queue_dir = tmp_path / "payments"
    a = QueueProducer(queue_dir, "app1", SEGMENT_BYTES)
    a.put(b"a0")
    other = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from runtime.errors import InstanceInUse
        from runtime.queue import QueueProducer
        try:
            QueueProducer(Path(sys.argv[1]), "app1", 1 << 20).put(b"b0")
        except InstanceInUse as exc:
            print(exc)
            sys.exit(3)
        """
    )

    result = subprocess.run(
        [sys.executable, "-c", other, str(queue_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=_RUN_TIMEOUT_S,
    )

    assert result.returncode == 3, result.stderr
    assert result.stdout == (
        f"{queue_dir}: instance name 'app1' is in use by pid {os.getpid()} on host "
        f"{socket.gethostname()}, which writes this queue's journal as 'app1'; give each "
        "instance its own name (--instance or APP__INSTANCE)\n"
    )
    a.put(b"a1")
    consumer = QueueConsumer(queue_dir)
    assert delivered(consumer) == [b"a0", b"a1"]
    consumer.close()
    a.close()


def test_a_name_given_back_can_be_taken_by_the_next_process(tmp_path: Path) -> None:
    queue_dir = tmp_path / "payments"
    hold_producer(queue_dir, "app9")
    release_producer(queue_dir, "app9")
    taker = (
        "import sys; from pathlib import Path; from runtime.queue import hold_producer; "
        "hold_producer(Path(sys.argv[1]), 'app9')"
    )

    result = subprocess.run(
        [sys.executable, "-c", taker, str(queue_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=_RUN_TIMEOUT_S,
    )

    assert result.returncode == 0, result.stderr


def test_runtime_serve_with_an_instance_name_in_use_exits_2_before_it_starts_anything(
    tmp_path: Path,
) -> None:
    queue = tmp_path / "queue"
    hold_producer(queue / "payments", "app1")  # this test's process stands for the first app1
    config = tmp_path / "app.yaml"
    config.write_text(f"instance: app1\nqueue:\n  dir: {queue}\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("APP__", "APP_CONFIG"))}
    environ.update(
        PYTHONPATH=str(ROOT),
        APP_CONFIG=str(config),
        APP__MANIFEST=str(ROOT / "functions.yaml"),
        APP__POSTGRES__PORT="1",  # nothing listens: it must stop before migrating
    )

    result = subprocess.run(
        [sys.executable, "-m", "runtime", "serve", "--role", "http"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environ,
        timeout=_RUN_TIMEOUT_S,
    )

    assert result.returncode == 2
    assert result.stderr == (
        f"error: {queue / 'payments'}: instance name 'app1' is in use by pid {os.getpid()} on "
        f"host {socket.gethostname()}, which writes this queue's journal as 'app1'; give each "
        "instance its own name (--instance or APP__INSTANCE)\n"
    )
    release_producer(queue / "payments", "app1")
