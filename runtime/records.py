"""What a queue carries: records of the type its manifest entry names, or JSON values.

A record type owns both directions, ``encode(self) -> bytes`` and the classmethod
``decode(data) -> record``, so that the function that puts and the function that consumes
never disagree about the bytes in between. Without one, a queue carries JSON values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from runtime.manifest import QueueSpec
from runtime.queue import QueueProducer

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]


def _json_encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encoder(spec: QueueSpec) -> Encoder:
    """How records of ``spec``'s queue become bytes."""
    return spec.record.encode if spec.record is not None else _json_encode  # type: ignore[attr-defined]


def decoder(spec: QueueSpec) -> Decoder:
    """How bytes of ``spec``'s queue become records again."""
    return spec.record.decode if spec.record is not None else json.loads  # type: ignore[attr-defined]


class QueueWriter:
    """Puts records on one queue: encoded by the queue's record type, appended to the journal."""

    __slots__ = ("_encode", "_producer", "queue")

    def __init__(self, queue: str, producer: QueueProducer, encode: Encoder) -> None:
        self.queue = queue
        self._producer = producer
        self._encode = encode

    def put(self, record: Any) -> None:
        """Append one record; returns once it is durable against SIGKILL.

        Raises:
            runtime.queue.QueueFull: the journal could not take it; nothing was written.
        """
        self._producer.put(self._encode(record))

    def close(self) -> None:
        """Close the journal's current segment."""
        self._producer.close()
