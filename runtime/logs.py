"""Structured logs: one JSON object a line on stderr, from every process."""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import sys
import threading
import time
from typing import Any

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_FLUSH_INTERVAL_S = 0.05
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

    With ``threaded``, records are collected and written in batches by one thread: hundreds of
    worker threads would otherwise queue up on the stream handler's lock and a write per line.
    The HTTP server stays unthreaded: a writer thread would take the GIL from requests.
    """
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter(process_name))
    root = logging.getLogger()
    root.setLevel(_LEVELS.get(level, logging.INFO))
    if not threaded:
        root.handlers[:] = [stream]
        return
    writer = _BatchedWriter(JsonFormatter(process_name))
    writer.start()
    atexit.register(writer.flush)
    root.handlers[:] = [writer]


class _BatchedWriter(logging.Handler):
    """Collects records and writes them every ``_FLUSH_INTERVAL_S`` in one ``write``.

    ``emit`` is a list append: no lock held across I/O, no thread woken per record.
    """

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self._pending: collections.deque[logging.LogRecord] = collections.deque()
        self._thread = threading.Thread(target=self._loop, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        self._pending.append(record)  # atomic under the GIL

    def handle(self, record: logging.LogRecord) -> bool:
        # Skip Handler.handle's lock: emit is already thread-safe.
        if self.filter(record):
            self.emit(record)
        return True

    def _loop(self) -> None:
        while True:
            time.sleep(_FLUSH_INTERVAL_S)
            self.flush()

    def flush(self) -> None:
        lines = []
        while True:
            try:
                record = self._pending.popleft()  # atomic: an append meanwhile is kept
            except IndexError:
                break
            try:
                lines.append(self.format(record))
            except Exception:
                self.handleError(record)
        if not lines:
            return
        try:
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr closed: nothing to report the failure to
