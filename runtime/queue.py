"""The durable hand-off from HTTP functions to background functions: append-only journals.

Why a journal: bjoern serves one request at a time, so a put must cost microseconds and never
wait on the network. One ``os.write`` of a whole record to a file opened ``O_APPEND`` costs a
few microseconds (``python -m bench.queue_put`` measures it) and, once it returns, the record
is in the kernel's page cache: a SIGKILL of any of our processes right after cannot lose it.

Layout, one folder per queue::

    <dir>/<queue>/<producer>.<seq>.seg     records, one a line, appended by one producer
    <dir>/<queue>/<producer>.producer      flock held by the one process that writes them
    <dir>/<queue>/<producer>.offset        the consumer's committed position: "<seq> <offset>"
    <dir>/<queue>/<producer>.lock          flock held by the one consumer of this producer

A producer is an instance name, and only one process tree may write as it: the flock on
``<producer>.producer`` is taken when the instance starts (``hold_producer``), and a second
process starting with the same name is refused. Two writers under one name would lose items:
the consumer moves on to a newer segment, and deletes older ones, while the other writer still
appends to its old one.

A consumer takes an exclusive ``flock`` on a producer's lock file before reading its segments,
so each item goes to exactly one consumer, whatever number of instances and worker processes
run. Each instance's consumer reads its own instance's journal; one that dies releases the
lock with its file descriptors, and after ``takeover_s`` another instance's consumer takes
over from the committed offset, handing the journal back once it has drained it. Items past
the committed offset are delivered again after such a take-over: background functions must
be idempotent.

With one consumer for the deployment (``one=True``, a background function's ``consumers:
one``), each consumer first takes the queue's ``.active-consumer`` flock: the one holding it
reads every journal, the others read nothing and try again at each ``claim``. When the active
consumer's process ends, the kernel releases its locks, and the next ``claim`` of a standby
takes the queue over from the committed offsets. Per-read costs (a database round trip per
batch, a shared-state refresh, a poll) are then paid once for the deployment, on batches
twice the size.

A producer starts a new segment when the current one is full, whenever it starts, and after a
write fails (a full disk), so a segment is never written again once a newer one exists; the
consumer deletes a segment once its committed offset has moved past it, which is what frees a
full disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from runtime.errors import InstanceInUse

_log = logging.getLogger("runtime.queue")
_SEGMENT_RE = re.compile(r"^(?P<producer>[A-Za-z0-9_-]+)\.(?P<seq>\d{10})\.seg$")
_READ_CHUNK_BYTES = 256 * 1024
_ACTIVE_LOCK = ".active-consumer"  # a producer's name cannot start with a dot


class QueueFull(Exception):
    """The journal could not take the record (disk full, say); nothing was written."""


_HELD: dict[Path, int] = {}
"""Producer names this process tree holds: lock file -> descriptor. A forked child inherits
both the descriptor (so the flock) and this table, and writes under the name it reserved."""
_WRITING: set[tuple[int, Path]] = set()
"""(pid, lock file) of the producers open in each process: one writer a name, in-process too."""


def hold_producer(queue_dir: Path, producer: str) -> None:
    """Reserve ``producer`` in ``queue_dir`` for this process and the children it forks.

    Raises:
        InstanceInUse: another process holds the name; it would write the same journal.
    """
    path = queue_dir / f"{producer}.producer"
    if path in _HELD:
        return
    queue_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise InstanceInUse(
            f"{queue_dir}: instance name '{producer}' is in use by {holder}, which writes "
            f"this queue's journal as '{producer}'; give each instance its own name "
            "(--instance or APP__INSTANCE)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
    _HELD[path] = fd


def release_producer(queue_dir: Path, producer: str) -> None:
    """Give a name reserved by ``hold_producer`` back."""
    fd = _HELD.pop(queue_dir / f"{producer}.producer", None)
    if fd is not None:
        os.close(fd)


def _try_lock(path: Path) -> int:
    """An exclusive ``flock`` on ``path`` (created if need be) without waiting: the open
    descriptor that holds it, or -1 if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return -1
    return fd


def _segment_name(producer: str, seq: int) -> str:
    return f"{producer}.{seq:010d}.seg"


def _segments(queue_dir: Path) -> dict[str, list[int]]:
    """Every producer's segment numbers, ascending."""
    found: dict[str, list[int]] = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(queue_dir):
            match = _SEGMENT_RE.match(entry.name)
            if match:
                found.setdefault(match["producer"], []).append(int(match["seq"]))
    for seqs in found.values():
        seqs.sort()
    return found


class QueueProducer:
    """Appends records to one producer's journal; one instance per process, not thread-safe."""

    def __init__(self, queue_dir: Path, producer: str, segment_max_bytes: int) -> None:
        self._dir = queue_dir
        self._producer = producer
        self._segment_max_bytes = segment_max_bytes
        self._fd = -1
        self._size = 0
        self._seq = 0
        self._writing: tuple[int, Path] | None = None

    def open(self) -> None:
        """Start a fresh segment after the producer's newest one.

        Raises:
            InstanceInUse: another process, or another producer here, writes as this name.
        """
        hold_producer(self._dir, self._producer)
        writing = (os.getpid(), self._dir / f"{self._producer}.producer")
        if writing in _WRITING:
            raise InstanceInUse(
                f"{self._dir}: this process already writes as '{self._producer}'; "
                "use one producer per queue and name"
            )
        _WRITING.add(writing)
        self._writing = writing
        self._dir.mkdir(parents=True, exist_ok=True)
        existing = _segments(self._dir).get(self._producer, [])
        self._roll(existing[-1] + 1 if existing else 1)

    def _roll(self, seq: int) -> None:
        path = self._dir / _segment_name(self._producer, seq)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._seq, self._size = fd, seq, 0

    def put(self, record: bytes) -> None:
        """Append one record (no newline inside); returns once it is durable against SIGKILL.

        Raises:
            QueueFull: the write failed or was short; the journal is left as it was.
        """
        if b"\n" in record:
            raise ValueError("a queue record may not hold a newline: it ends the record")
        if self._fd < 0:
            self.open()
        line = record + b"\n"
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            self._roll_when_full()
            raise QueueFull(
                f"journal write failed: {os.strerror(exc.errno or errno.EIO)}"
            ) from None
        if written != len(line):
            # A short write (disk full) would glue this torn record to the next one: undo it.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            self._roll_when_full()
            raise QueueFull("journal write was short (disk full?)")
        self._size += written
        if self._size >= self._segment_max_bytes:
            # On failure keep appending to the current segment; the next put tries again.
            with contextlib.suppress(OSError):
                self._roll(self._seq + 1)

    def _roll_when_full(self) -> None:
        """After a failed write, start a new (empty) segment if this one holds records.

        A consumer deletes a segment only once it has moved past it, which it does only when a
        newer segment exists: without this, a full disk would never be freed, since the segment
        filling it would never end. An empty file needs no data blocks, so this works on a full
        disk; at most one empty segment is made, however many writes fail.
        """
        if self._size:
            with contextlib.suppress(OSError):
                self._roll(self._seq + 1)

    def close(self) -> None:
        """Close the current segment; the name stays reserved for the process."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._writing is not None:
            _WRITING.discard(self._writing)
            self._writing = None


class Position(NamedTuple):
    """A place in a producer's journal: a segment and a byte offset in it.

    A tuple, so that ordering is C-level: the commit takes the least of every position in
    flight, hundreds of them, ten times a second (as an ordered dataclass that was a fifth of
    a busy forwarder's own time).
    """

    seq: int
    offset: int


@dataclass
class _Source:
    """One producer's journal as its consumer sees it."""

    producer: str
    lock_fd: int
    read_pos: Position
    committed: Position
    fd: int = -1
    buffer: bytes = b""
    in_flight: set[Position] = field(default_factory=set)


class Item(NamedTuple):
    """A record handed to a consumer, with what it takes to acknowledge it."""

    producer: str
    start: Position
    body: bytes


class QueueConsumer:
    """Reads the journals of every producer whose lock it holds; ``done`` marks items settled.

    Thread-safe: worker threads call ``done`` while one thread calls ``read``.
    """

    def __init__(
        self,
        queue_dir: Path,
        owner: str | None = None,
        takeover_s: float = 5.0,
        *,
        one: bool = False,
    ) -> None:
        self._dir = queue_dir
        self._owner = None if one else owner
        self._takeover_s = takeover_s
        self._one = one
        self._active_fd = -1
        self._free_since: dict[str, float] = {}
        self._sources: dict[str, _Source] = {}
        self._lock = threading.Lock()

    def claim(self, now: float | None = None) -> list[str]:
        """Take the journals this consumer should read; returns the producers held.

        Its own instance's journal (``owner``) it takes whenever free. Another instance's it
        takes only once nobody has held it for ``takeover_s`` (that instance's consumer is
        dead or stopped), and hands it back once drained, so each instance's consumer does its
        own instance's share of the work and no journal is left unread for long.
        """
        now = time.monotonic() if now is None else now
        self._dir.mkdir(parents=True, exist_ok=True)
        if self._one and not self._hold_active():
            return []
        self._release_drained_foreign()
        for producer in _segments(self._dir):
            if producer in self._sources:
                continue
            mine = self._owner is None or producer == self._owner
            if not mine:
                first_free = self._free_since.get(producer)
                if first_free is None or now - first_free < self._takeover_s:
                    if self._lock_is_free(producer):
                        self._free_since.setdefault(producer, now)
                    else:
                        self._free_since.pop(producer, None)
                    continue
            lock_fd = _try_lock(self._dir / f"{producer}.lock")
            self._free_since.pop(producer, None)
            if lock_fd < 0:
                continue
            committed = self._read_offset(producer)
            with self._lock:
                self._sources[producer] = _Source(producer, lock_fd, committed, committed)
        return sorted(self._sources)

    def is_active(self) -> bool:
        """Whether this consumer reads the queue: always, unless it is one of several
        candidates for the deployment's one consumer and another holds that lock."""
        return not self._one or self._active_fd >= 0

    def _hold_active(self) -> bool:
        if self._active_fd >= 0:
            return True
        self._active_fd = _try_lock(self._dir / _ACTIVE_LOCK)
        if self._active_fd < 0:
            return False
        _log.info("active consumer of the queue", extra={"queue": self._dir.name})
        return True

    def _lock_is_free(self, producer: str) -> bool:
        fd = _try_lock(self._dir / f"{producer}.lock")
        if fd < 0:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        return True

    def _release_drained_foreign(self) -> None:
        if self._owner is None:
            return
        for producer, source in list(self._sources.items()):
            if producer == self._owner or source.in_flight or self._unread(source):
                continue
            self._commit_source(source)
            if source.fd >= 0:
                os.close(source.fd)
            with self._lock:
                del self._sources[producer]
            os.close(source.lock_fd)

    def _unread(self, source: _Source) -> bool:
        seqs = _segments(self._dir).get(source.producer, [])
        if any(seq > source.read_pos.seq for seq in seqs):
            return True
        try:
            size = os.stat(self._dir / _segment_name(source.producer, source.read_pos.seq)).st_size
        except FileNotFoundError:
            return False
        return size > source.read_pos.offset

    def _read_offset(self, producer: str) -> Position:
        try:
            seq_text, offset_text = (self._dir / f"{producer}.offset").read_text().split()
            return Position(int(seq_text), int(offset_text))
        except (FileNotFoundError, ValueError):
            return Position(0, 0)

    def read(self, max_items: int) -> list[Item]:
        """Up to ``max_items`` new records across the held journals, oldest first per producer."""
        items: list[Item] = []
        segments = None
        for source in list(self._sources.values()):
            while len(items) < max_items:
                if source.fd < 0:
                    segments = segments if segments is not None else _segments(self._dir)
                    if not self._open_next(source, segments.get(source.producer, [])):
                        break
                got = self._read_lines(source, max_items - len(items), items)
                if got:
                    continue
                segments = _segments(self._dir)
                newer = [s for s in segments.get(source.producer, []) if s > source.read_pos.seq]
                if not newer:
                    break
                # A newer segment exists, so this one is complete: drain it once more, move on.
                if self._read_lines(source, max_items - len(items), items):
                    continue
                os.close(source.fd)
                source.fd, source.buffer = -1, b""
                source.read_pos = Position(newer[0], 0)
        return items

    def _open_next(self, source: _Source, seqs: list[int]) -> bool:
        candidates = [s for s in seqs if s >= source.read_pos.seq]
        if not candidates:
            return False
        seq = candidates[0]
        offset = source.read_pos.offset if seq == source.read_pos.seq else 0
        source.fd = os.open(self._dir / _segment_name(source.producer, seq), os.O_RDONLY)
        source.read_pos = Position(seq, offset)
        source.buffer = b""
        return True

    def _read_lines(self, source: _Source, limit: int, out: list[Item]) -> int:
        chunk = os.pread(source.fd, _READ_CHUNK_BYTES, source.read_pos.offset + len(source.buffer))
        data = source.buffer + chunk
        count = 0
        start = 0
        offset = source.read_pos.offset
        while count < limit:
            end = data.find(b"\n", start)
            if end < 0:
                break
            item_start = Position(source.read_pos.seq, offset + start)
            with self._lock:
                source.in_flight.add(item_start)
            out.append(Item(source.producer, item_start, data[start:end]))
            start = end + 1
            count += 1
        source.read_pos = Position(source.read_pos.seq, offset + start)
        source.buffer = data[start:]
        return count

    def done(self, item: Item) -> None:
        """Mark ``item`` settled; its position may be committed once all before it are."""
        with self._lock:
            source = self._sources.get(item.producer)
            if source is not None:
                source.in_flight.discard(item.start)

    def commit(self) -> None:
        """Persist, per producer, the position before which every item is settled."""
        for source in list(self._sources.values()):
            self._commit_source(source)

    def _commit_source(self, source: _Source) -> None:
        with self._lock:
            target = min(source.in_flight) if source.in_flight else source.read_pos
        if target <= source.committed:
            return
        if target.seq != source.committed.seq:
            # Settled segments go first: on a full disk that is what makes room for the offset
            # file. Should we die before writing it, the next run starts at the first segment
            # left, redelivering at most that segment's settled head (handlers are idempotent).
            self._delete_before(source.producer, target.seq)
        tmp = self._dir / f"{source.producer}.offset.tmp"
        try:
            tmp.write_text(f"{target.seq} {target.offset}\n")
            os.replace(tmp, self._dir / f"{source.producer}.offset")
        except OSError as exc:
            # Not saved: items after the old position would be redelivered after a crash, no
            # more. The next commit tries again.
            _log.warning(
                "queue position not saved", extra={"producer": source.producer, "error": str(exc)}
            )
            return
        source.committed = target

    def _delete_before(self, producer: str, seq: int) -> None:
        for old in _segments(self._dir).get(producer, []):
            if old >= seq:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._dir / _segment_name(producer, old))

    def in_flight(self) -> int:
        """Items read but not yet settled."""
        with self._lock:
            return sum(len(source.in_flight) for source in self._sources.values())

    def backlog_bytes(self) -> int:
        """Bytes written by the held producers and not read yet."""
        total = 0
        segments = _segments(self._dir)
        for source in list(self._sources.values()):
            for seq in segments.get(source.producer, []):
                if seq < source.read_pos.seq:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    size = os.stat(self._dir / _segment_name(source.producer, seq)).st_size
                    total += size - (source.read_pos.offset if seq == source.read_pos.seq else 0)
        return total

    def close(self) -> None:
        """Commit what is settled and release every lock."""
        self.commit()
        for source in self._sources.values():
            if source.fd >= 0:
                os.close(source.fd)
            os.close(source.lock_fd)
        self._sources.clear()
        if self._active_fd >= 0:  # last: a standby takes over only once the journals are free
            os.close(self._active_fd)
            self._active_fd = -1
