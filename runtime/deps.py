"""What functions get from the runtime: built once per process from config, opened lazily.

Nothing here opens a socket or a file when constructed; each dependency is created on first
use, in the process that uses it (after the supervisor forked it), and shared from then on.
``runtime check`` builds every function with ``Deps(..., offline=True)``, whose connections
refuse to be used: a constructor that talks to a service would do it in every process, at
every restart, before the first request.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runtime.config import RuntimeConfig
from runtime.db import Database
from runtime.manifest import Manifest, QueueSpec
from runtime.metrics import QueueGauges, Registry
from runtime.queue import QueueConsumer, QueueProducer
from runtime.records import QueueWriter, encoder
from runtime.stopping import Stopping


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


class UnopenedDependency(RuntimeError):
    """A connection was used while ``runtime check`` built the functions."""


class _Unopened:
    """Stands for a connection in ``runtime check``: calling any of its methods is the
    constructor's mistake (keeping a bound method for later is fine)."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        what = self._what

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise UnopenedDependency(
                f"the constructor used {what} ({name}); open connections on first use, "
                "not while the function is built"
            )

        return refuse


class Deps:
    """Pools and clients shared by the functions of one process.

    Args:
        config: the runtime's config.
        manifest: the bundle, for its queues' record types and its metrics class.
        clock: the clock functions read (the system's by default).
        offline: connections refuse to be used (``runtime check``).
        database, memcache: stand-ins for the real ones (tests).
    """

    def __init__(
        self,
        config: RuntimeConfig,
        manifest: Manifest | None = None,
        *,
        clock: Clock | None = None,
        offline: bool = False,
        database: Any = None,
        memcache: Any = None,
    ) -> None:
        self.config = config
        self.manifest = manifest
        self.clock: Clock = clock or SystemClock()
        self.offline = offline
        self._writers: dict[str, QueueWriter] = {}
        if offline:
            database = database or _Unopened("the database")
            memcache = memcache or _Unopened("memcached")
        if database is not None:
            self.__dict__["database"] = database
        if memcache is not None:
            self.__dict__["memcache"] = memcache

    @functools.cached_property
    def registry(self) -> Registry:
        """Where this process's metrics are made."""
        return Registry()

    @functools.cached_property
    def metrics(self) -> Any:
        """The bundle's metrics (its manifest's ``metrics`` class), one per process."""
        if self.manifest is None or self.manifest.metrics is None:
            raise AttributeError(
                "the bundle declares no metrics class ('metrics:' in the manifest)"
            )
        return self.manifest.metrics(self.registry)

    @functools.cached_property
    def queue_gauges(self) -> QueueGauges:
        """The runtime's own queue figures."""
        return QueueGauges(self.registry)

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

    def producer(self, queue: str) -> QueueWriter:
        """This process's writer for ``queue``; the journal opens on the first put."""
        if self.offline:
            return _Unopened(f"queue '{queue}'")  # type: ignore[return-value]
        if queue not in self._writers:
            producer = QueueProducer(
                self.queue_dir(queue), self.config.instance, self.config.queue.segment_max_bytes
            )
            self._writers[queue] = QueueWriter(queue, producer, encoder(self.queue_spec(queue)))
        return self._writers[queue]

    def consumer(self, queue: str, *, one: bool = False) -> QueueConsumer:
        """A consumer of ``queue``'s journals; each producer is read by one consumer only.
        With ``one``, a single consumer in the deployment reads them all at a time."""
        return QueueConsumer(self.queue_dir(queue), owner=self.config.instance, one=one)

    def queue_spec(self, queue: str) -> QueueSpec:
        """What the manifest says of ``queue`` (JSON records when there is no manifest)."""
        if self.manifest is not None and queue in self.manifest.queues:
            return self.manifest.queues[queue]
        return QueueSpec(queue)

    def queue_dir(self, queue: str) -> Path:
        """Where ``queue``'s journals live."""
        return Path(self.config.queue.dir) / queue

    def close(self) -> None:
        """Release what was opened."""
        for writer in self._writers.values():
            writer.close()
        for name in ("database", "memcache"):
            opened = self.__dict__.get(name)
            if opened is not None and not isinstance(opened, _Unopened):
                opened.close()


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


@dataclass(frozen=True)
class FunctionContext:
    """What a function's constructor receives.

    ``settings`` is an instance of the handler's ``Settings`` dataclass (``None`` if it
    declares none); ``config`` is the bundle's own config (the manifest's ``config.schema``);
    ``queue`` is the queue its manifest entry names.
    """

    name: str
    deps: Deps
    settings: Any = None
    config: Any = None
    queue: str | None = None
    stopping: Stopping = field(default_factory=Stopping)
    """Set when the runtime stops the function's process: long waits should end early."""

    @property
    def runtime(self) -> RuntimeConfig:
        """The runtime's own config (instance, server, queue, connections)."""
        return self.deps.config

    @property
    def instance(self) -> str:
        """The name of the instance this function runs in."""
        return self.deps.config.instance

    def producer(self) -> QueueWriter:
        """The writer for the queue this function's entry names.

        Raises:
            ValueError: the entry names no queue.
        """
        if self.queue is None:
            raise ValueError(f"function '{self.name}' needs 'queue' in functions.yaml")
        return self.deps.producer(self.queue)
