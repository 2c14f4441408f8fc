"""What functions get from the runtime: built once per process from config, opened lazily.

Nothing here opens a socket or a file when constructed; each dependency is created on first
use, in the process that uses it (after the supervisor forked it), and shared from then on.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runtime.config import Config
from runtime.db import Database
from runtime.queue import QueueConsumer, QueueProducer


class Clock(Protocol):
    """Wall time for timestamps and monotonic time for intervals; tests pass their own."""

    def now(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        return time.monotonic()


class Deps:
    """Pools and clients shared by the functions of one process."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._producers: dict[str, QueueProducer] = {}

    @functools.cached_property
    def metrics(self) -> Any:
        """The process's ``runtime.metrics.Metrics``."""
        from runtime.metrics import Metrics

        return Metrics()

    @functools.cached_property
    def database(self) -> Database:
        """PostgreSQL, one connection, opened on first query."""
        return Database(self.config.postgres)

    @functools.cached_property
    def memcache(self) -> Any:
        """A pooled pymemcache client (thread-safe), connecting on first call."""
        from pymemcache.client.base import PooledClient

        server = self.config.memcached.server
        address: Any = server[len("unix:") :] if server.startswith("unix:") else _host_port(server)
        return PooledClient(
            address,
            connect_timeout=self.config.memcached.timeout_s,
            timeout=self.config.memcached.timeout_s,
            no_delay=True,
            max_pool_size=64,
            key_prefix=self.config.memcached.key_prefix.encode(),
        )

    def producer(self, queue: str) -> QueueProducer:
        """This process's journal for ``queue``, opened on first put."""
        if queue not in self._producers:
            self._producers[queue] = QueueProducer(
                self.queue_dir(queue), self.config.instance, self.config.queue.segment_max_bytes
            )
        return self._producers[queue]

    def consumer(self, queue: str) -> QueueConsumer:
        """A consumer of ``queue``'s journals; each producer is read by one consumer only."""
        return QueueConsumer(self.queue_dir(queue), owner=self.config.instance)

    def queue_dir(self, queue: str) -> Path:
        """Where ``queue``'s journals live."""
        return Path(self.config.queue.dir) / queue

    def close(self) -> None:
        """Release what was opened."""
        for producer in self._producers.values():
            producer.close()
        if "database" in self.__dict__:
            self.database.close()
        if "memcache" in self.__dict__:
            self.memcache.close()


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


@dataclass(frozen=True)
class FunctionContext:
    """What a function's constructor receives: its name, its settings and the shared deps."""

    name: str
    deps: Deps
    settings: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    """Set when the runtime stops the function's process: long waits should end early."""

    @property
    def config(self) -> Config:
        """The runtime's config."""
        return self.deps.config
