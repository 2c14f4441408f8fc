"""The worker processes' batched log writer: every record written, also after it slept."""

from __future__ import annotations

import io
import json
import logging

import pytest

from runtime.logs import JsonFormatter, _BatchedWriter
from tests.support.procs import wait_until


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("test", logging.INFO, __file__, 1, message, None, None)


def test_records_are_written_in_one_batch_and_again_after_the_writer_slept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    writer = _BatchedWriter(JsonFormatter("test/worker"))
    writer.start()

    def written() -> list[str]:
        return [json.loads(line)["msg"] for line in stderr.getvalue().splitlines()]

    for n in range(3):
        writer.emit(_record(f"burst {n}"))
    wait_until(lambda: len(written()) == 3, timeout_s=5, what="the burst written")
    # Asleep on its pipe now, with nothing pending: the next record must wake it.
    wait_until(lambda: writer._asleep, timeout_s=5, what="the writer asleep")
    writer.emit(_record("later"))
    wait_until(lambda: len(written()) == 4, timeout_s=5, what="the later record written")

    assert written() == ["burst 0", "burst 1", "burst 2", "later"]
