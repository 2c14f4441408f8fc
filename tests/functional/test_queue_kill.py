"""The journal queue across processes: durable against SIGKILL, exactly once between consumers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from runtime.queue import QueueConsumer, QueueProducer

ROOT = Path(__file__).resolve().parents[2]
_PROCESS_TIMEOUT_S = 60.0
_SEGMENT_BYTES = 4096

# Puts records forever and reports each put only after it has returned.
_PRODUCER = """
import sys
from pathlib import Path
from runtime.queue import QueueProducer

producer = QueueProducer(Path(sys.argv[1]), "doomed", int(sys.argv[2]))
n = 0
while True:
    producer.put(b'{"n":%d}' % n)
    sys.stdout.write(f"{n}\\n")
    sys.stdout.flush()
    n += 1
"""

# Claims, reads a few items, prints them, settles them and lets go, over and over, so that
# the producers' locks pass back and forth between the racing consumers. It exits once the
# producers are done and it has found nothing left while holding every one of them.
_CONSUMER = """
import sys, time
from pathlib import Path
from runtime.queue import QueueConsumer

queue_dir, go, finished_flag = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
producers = set(sys.argv[4].split(","))
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
deadline = time.monotonic() + 50
while time.monotonic() < deadline:
    finished = finished_flag.exists()
    consumer = QueueConsumer(queue_dir)
    held = set(consumer.claim())
    items = consumer.read(25)
    for item in items:
        sys.stdout.write(item.body.decode() + "\\n")
    sys.stdout.flush()
    for item in items:
        consumer.done(item)
    consumer.close()
    if finished and not items and held == producers:
        sys.exit(0)
    if not items:
        time.sleep(0.001)
sys.exit(3)
"""


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _kill_after(proc: subprocess.Popen[str], timeout_s: float) -> threading.Timer:
    """A guard so that a stuck child fails the test instead of hanging it."""
    timer = threading.Timer(timeout_s, proc.kill)
    timer.daemon = True
    timer.start()
    return timer


def test_every_reported_put_survives_a_sigkill_of_the_producer(tmp_path: Path) -> None:
    queue_dir = tmp_path / "payments"
    producer = _python(_PRODUCER, str(queue_dir), str(_SEGMENT_BYTES))
    guard = _kill_after(producer, _PROCESS_TIMEOUT_S)
    try:
        assert producer.stdout is not None
        reported = []
        while len(reported) < 2000:
            line = producer.stdout.readline()
            assert line, f"producer stopped early: {producer.communicate()[1]}"
            reported.append(int(line))
        os.kill(producer.pid, signal.SIGKILL)
        # Lines already printed stay in the pipe (and in stdout's buffer): read them to EOF.
        reported += [int(line) for line in producer.stdout.read().splitlines()]
        producer.wait(timeout=_PROCESS_TIMEOUT_S)
    finally:
        guard.cancel()
        if producer.poll() is None:
            producer.kill()
            producer.wait()
    assert producer.returncode == -signal.SIGKILL

    consumer = QueueConsumer(queue_dir)
    try:
        assert consumer.claim() == ["doomed"]
        delivered = [json.loads(item.body)["n"] for item in consumer.read(1_000_000)]
    finally:
        consumer.close()

    assert reported == list(range(len(reported)))
    assert len(list(queue_dir.glob("doomed.*.seg"))) > 1  # it rolled segments on the way
    # Everything reported is there, in order, once; at most the one put that returned but
    # was killed before it could be reported comes on top.
    assert delivered[: len(reported)] == reported
    assert len(delivered) - len(reported) in (0, 1)
    assert delivered == list(range(len(delivered)))


def test_two_racing_consumer_processes_deliver_each_item_exactly_once(tmp_path: Path) -> None:
    queue_dir = tmp_path / "payments"
    go, finished = tmp_path / "go", tmp_path / "finished"
    names = ["app1", "app2", "app3"]
    producers = [QueueProducer(queue_dir, name, _SEGMENT_BYTES) for name in names]
    for producer in producers:
        producer.open()
    consumers = [
        _python(_CONSUMER, str(queue_dir), str(go), str(finished), ",".join(names))
        for _ in range(2)
    ]
    guards = [_kill_after(proc, _PROCESS_TIMEOUT_S) for proc in consumers]
    try:
        for proc in consumers:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n", proc.communicate()[1]
        go.touch()
        # Written while the consumers race, so they also meet lines still being appended.
        for n in range(1000):
            for index, producer in enumerate(producers):
                producer.put(json.dumps({"p": index, "n": n}).encode())
        for producer in producers:
            producer.close()
        finished.touch()
        outputs = [proc.communicate(timeout=_PROCESS_TIMEOUT_S) for proc in consumers]
    finally:
        for guard in guards:
            guard.cancel()
        for proc in consumers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    for proc, (_, err) in zip(consumers, outputs, strict=True):
        assert proc.returncode == 0, err
    delivered = Counter(line for out, _ in outputs for line in out.splitlines())
    expected = {json.dumps({"p": p, "n": n}) for p in range(3) for n in range(1000)}
    assert set(delivered) == expected
    assert [line for line, times in delivered.items() if times != 1] == []


# The deployment's one active consumer: takes the queue, says so, then holds it (reading
# nothing) until it is killed.
_ACTIVE = """
import sys, time
from pathlib import Path
from runtime.queue import QueueConsumer

consumer = QueueConsumer(Path(sys.argv[1]), owner="app1", one=True)
print(",".join(consumer.claim()), flush=True)
time.sleep(60)
"""


def test_a_standby_takes_the_queue_over_once_the_active_consumer_is_killed(
    tmp_path: Path,
) -> None:
    queue_dir = tmp_path / "payments"
    producers = [QueueProducer(queue_dir, name, _SEGMENT_BYTES) for name in ("app1", "app2")]
    for n, producer in enumerate(producers):
        producer.put(b'{"n":%d}' % n)
    active = _python(_ACTIVE, str(queue_dir))
    guard = _kill_after(active, _PROCESS_TIMEOUT_S)
    standby = QueueConsumer(queue_dir, owner="app2", one=True)
    try:
        assert active.stdout is not None
        assert active.stdout.readline() == "app1,app2\n", active.communicate()[1]
        assert standby.claim() == []
        assert not standby.is_active()

        os.kill(active.pid, signal.SIGKILL)
        active.wait(timeout=_PROCESS_TIMEOUT_S)

        assert standby.claim() == ["app1", "app2"]  # the kernel released the dead one's locks
        assert sorted(item.body for item in standby.read(10)) == [b'{"n":0}', b'{"n":1}']
    finally:
        guard.cancel()
        if active.poll() is None:
            active.kill()
            active.wait()
        standby.close()
        for producer in producers:
            producer.close()
