"""Structured logs: one JSON object a line on stderr, from every process."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import os
import queue
import sys
import time
from typing import Any

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line; extra fields given with ``extra=`` come along."""

    def __init__(self, process_name: str) -> None:
        super().__init__()
        self._process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "process": self._process_name,
            "pid": os.getpid(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str, process_name: str, *, threaded: bool = False) -> None:
    """Send every logger's records to stderr as JSON; call once per process.

    With ``threaded``, records go through a queue to one writer thread: hundreds of worker
    threads would otherwise queue up on the stream handler's lock and a write per line. The
    HTTP server stays unthreaded: a writer thread would take the GIL from requests.
    """
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter(process_name))
    root = logging.getLogger()
    root.setLevel(_LEVELS.get(level, logging.INFO))
    if not threaded:
        root.handlers[:] = [stream]
        return
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, stream)
    listener.start()
    atexit.register(listener.stop)
    root.handlers[:] = [_FastQueueHandler(records)]


class _FastQueueHandler(logging.handlers.QueueHandler):
    """Hands the record over as it is; the writer thread formats it."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record
