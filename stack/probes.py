"""Readiness probes: does a port accept, does a URL or a unix socket answer HTTP."""

from __future__ import annotations

import contextlib
import http.client
import socket
from collections.abc import Callable

_TIMEOUT_S = 1.0


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket, the way Nginx reaches the runtime instances."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def unix_http_get(path: str, target: str, *, timeout_s: float = _TIMEOUT_S) -> tuple[int, bytes]:
    """``GET target`` on the unix socket at ``path``; returns the status and the body."""
    conn = _UnixConnection(path, timeout_s)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_get(port: int, target: str, *, timeout_s: float = _TIMEOUT_S) -> tuple[int, bytes]:
    """``GET target`` on 127.0.0.1:``port``; returns the status and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def answers_200(get: Callable[[], tuple[int, bytes]]) -> bool:
    """Whether calling ``get()`` returns status 200; connection errors count as no."""
    try:
        status, _ = get()
    except (OSError, http.client.HTTPException):
        return False
    return status == 200
