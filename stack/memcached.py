"""Memcached for the local stack and the tests: small, one thread, TCP on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from dataclasses import dataclass

# Shared with docker-compose.yml's command (a unit test compares them): 4 MB of items inside
# the container's 10 MB (it holds a handful of keys); one worker thread; no UDP; and no LRU
# maintainer or crawler threads. Those wake every few milliseconds once items are being read,
# which cost ten times the requests themselves: 336 µs of CPU per get_many at 20 a second
# against 34 µs without them (measured side by side, 15 s each). A handful of keys needs no
# background LRU upkeep; expired items are still dropped when read.
FLAGS: tuple[str, ...] = (
    "-m", "4", "-c", "1024", "-t", "1", "-U", "0", "-o", "no_lru_crawler,no_lru_maintainer",
)  # fmt: skip


@dataclass(frozen=True)
class MemcachedServer:
    """Where one running Memcached listens."""

    port: int
    host: str = "127.0.0.1"

    @property
    def server(self) -> str:
        """``HOST:PORT``, the form ``memcached.server`` takes."""
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The runtime's ``APP__MEMCACHED__SERVER``."""
        return {"APP__MEMCACHED__SERVER": self.server}


def argv(port: int) -> list[str]:
    """The ``memcached`` command line on 127.0.0.1:``port`` with :data:`FLAGS`.

    Memcached refuses to run as root unless told which user to become.
    """
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    return [binary, "-l", "127.0.0.1", "-p", str(port), *FLAGS, *user]


def is_ready(server: MemcachedServer) -> bool:
    """Whether it answers the ``version`` command."""
    with (
        contextlib.suppress(OSError),
        socket.create_connection((server.host, server.port), timeout=0.5) as sock,
    ):
        sock.sendall(b"version\r\n")
        return sock.recv(64).startswith(b"VERSION")
    return False
