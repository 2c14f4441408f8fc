"""A lean HTTP/1.1 client for an event loop: kept-alive connections, one request at a time each.

Why not urllib3 here: urllib3 is a blocking client built on ``http.client``, which parses
headers through the ``email`` package and sends headers and body in two segments. On this
project's 2-core machine one ``POST /payments`` through urllib3 cost 384 us of CPU, this
client 95 us (docs/performance.md), in a process that must forward hundreds of payments a
second within a third of a CPU. urllib3 stays the blocking client everywhere else.

What it speaks: HTTP/1.1 requests with a ``Content-Length`` body (headers and body in one
write, so one segment on the wire), and answers framed by ``Content-Length``, by chunked
transfer coding, or by the connection closing; interim 1xx answers are skipped; keep-alive as
HTTP/1.1 and ``Connection`` say. No TLS, no redirects, no compression: it talks to services
it knows, at an ``http://`` URL (``http_origin``).

Failure is reported by what it means for the request, which is what a payment needs:
``RequestNotSent`` (the peer cannot have seen it: no connection could be made) or
``NoResponse`` (it may have reached the peer, but no whole answer came back in time).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

_MAX_HEAD_BYTES = 64 * 1024
_MAX_BODY_BYTES = 16 * 1024 * 1024


def http_origin(url: str) -> tuple[str, int]:
    """The host and port of an ``http://host[:port]`` URL, the only kind this client speaks.

    Raises:
        ValueError: another scheme, no host, a bad port, or a path, query or credentials.
    """
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"{url!r} is not an http:// URL")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"{url!r} has a bad port") from None
    if not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{url!r} needs a host and no credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r} must name a server only, with no path or query")
    return parts.hostname, port


class RequestNotSent(Exception):
    """The request never left: the peer cannot have acted on it."""


class NoResponse(Exception):
    """The request may have reached the peer, but no whole answer came back."""


@dataclass(frozen=True)
class Response:
    """A whole answer: status, headers (names in lower case) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


class ConnectionPool:
    """Kept-alive connections to one ``host:port``, at most ``max_connections`` at once.

    The most recently used idle connection is taken first (it is the one least likely to have
    been closed by the peer); a connection the peer closes while idle leaves the pool at once.
    Callers beyond ``max_connections`` wait for one to come free. Not thread-safe: use it from
    the one loop that runs it.
    """

    def __init__(
        self, host: str, port: int, *, connect_timeout_s: float, max_connections: int
    ) -> None:
        self._host = host
        self._port = port
        name = f"[{host}]" if ":" in host else host
        self._host_header = name if port == 80 else f"{name}:{port}"
        self._connect_timeout_s = connect_timeout_s
        self._max_connections = max_connections
        self._idle: list[_Channel] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[_Channel | None]] = deque()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: str = "",
        timeout_s: float,
    ) -> Response:
        """Send one request and return its answer.

        ``headers`` are extra header lines, each ending in ``\\r\\n``; ``Host`` and
        ``Content-Length`` are added here.

        Raises:
            RequestNotSent: no connection could be made.
            NoResponse: no whole answer within ``timeout_s``, or the connection broke.
        """
        channel = await self._acquire()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\n{headers}"
        if body or method in ("POST", "PUT", "PATCH"):
            head += f"Content-Length: {len(body)}\r\n"
        try:
            response = await channel.exchange(
                (head + "\r\n").encode("latin-1") + body, method, timeout_s
            )
        except BaseException:
            self._discard(channel)  # cancelled too: a late answer must not meet the next request
            raise
        if channel.reusable:
            self._release(channel)
        else:
            self._discard(channel)
        return response

    def close(self) -> None:
        """Close the idle connections; those in use close once their exchange ends."""
        while self._idle:
            self._discard(self._idle.pop())

    async def _acquire(self) -> _Channel:
        while self._idle:
            channel = self._idle.pop()
            if channel.reusable:
                return channel
            self._discard(channel)
        while self._open >= self._max_connections:
            waiter: asyncio.Future[_Channel | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            handed = await waiter
            if handed is not None:
                return handed
        self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._hand_over(None)
            raise

    async def _connect(self) -> _Channel:
        loop = asyncio.get_running_loop()
        try:
            _, channel = await asyncio.wait_for(
                loop.create_connection(_Channel, self._host, self._port),
                self._connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            raise RequestNotSent(
                f"cannot connect to {self._host_header}: {type(exc).__name__}"
            ) from None
        channel.pool = self
        return channel

    def _release(self, channel: _Channel) -> None:
        if not self._hand_over(channel):
            self._idle.append(channel)

    def _discard(self, channel: _Channel) -> None:
        if channel.pool is None:
            return  # counted out already
        channel.pool = None
        channel.abort()
        self._open -= 1
        self._hand_over(None)

    def _forget_idle(self, channel: _Channel) -> None:
        """The peer closed an idle connection."""
        if channel in self._idle:
            self._idle.remove(channel)
            self._discard(channel)

    def _hand_over(self, channel: _Channel | None) -> bool:
        """Give ``channel`` (or, with ``None``, the right to open one) to a waiting caller."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(channel)
                return True
        return False


class _Channel(asyncio.Protocol):
    """One connection: writes a request, parses its answer as the bytes arrive."""

    def __init__(self) -> None:
        self.pool: ConnectionPool | None = None
        self.reusable = True
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[Response] | None = None
        self._parser: _ResponseParser | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def exchange(self, request: bytes, method: str, timeout_s: float) -> Response:
        transport = self._transport
        if transport is None or transport.is_closing() or not self.reusable:
            self.reusable = False
            raise RequestNotSent("the connection closed before the request was written")
        loop = asyncio.get_running_loop()
        self._answer = loop.create_future()
        self._parser = _ResponseParser(method)
        self._timer = loop.call_later(timeout_s, self._expire, timeout_s)
        transport.write(request)
        try:
            return await self._answer
        finally:
            self._timer.cancel()
            self._answer = self._parser = self._timer = None

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: the stream can no longer be trusted
            self.reusable = False
            self.abort()
            return
        try:
            done = parser.feed(data)
        except _Malformed as exc:
            self._fail(NoResponse(f"malformed answer: {exc}"))
            return
        if done:
            self.reusable = parser.keep_alive and not parser.extra
            self._succeed(parser.response())

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        parser = self._parser
        if parser is not None and parser.until_close:
            self._succeed(parser.response())  # a body framed by the connection closing
        else:
            self._fail(NoResponse("the connection closed before the whole answer"))
        if self._answer is None and self.pool is not None:
            self.pool._forget_idle(self)

    def eof_received(self) -> bool:
        return False  # close our side too

    def abort(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.abort()

    def _expire(self, timeout_s: float) -> None:
        self.reusable = False
        self._fail(NoResponse(f"no answer within {timeout_s} s"))
        self.abort()

    def _succeed(self, response: Response) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(response)

    def _fail(self, error: NoResponse) -> None:
        self.reusable = False
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)


class _Malformed(Exception):
    """The peer's bytes are not an HTTP/1.x answer."""


class _ResponseParser:
    """Incremental parser for one answer (after any interim 1xx ones)."""

    __slots__ = (
        "_body",
        "_buffer",
        "_chunk_left",
        "_head_only",
        "_length",
        "_state",
        "extra",
        "headers",
        "keep_alive",
        "status",
        "until_close",
    )

    def __init__(self, method: str) -> None:
        self._buffer = bytearray()
        self._body = bytearray()
        self._head_only = method == "HEAD"
        self._state = "head"
        self._length = 0
        self._chunk_left = 0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.until_close = False
        self.extra = False

    def response(self) -> Response:
        return Response(self.status, self.headers, bytes(self._body))

    def feed(self, data: bytes) -> bool:
        """Take more bytes; whether the answer is whole."""
        self._buffer += data
        while True:
            if self._state == "head":
                if not self._parse_head():
                    return False
            elif self._state == "length":
                take = min(self._length - len(self._body), len(self._buffer))
                self._body += self._buffer[:take]
                del self._buffer[:take]
                if len(self._body) < self._length:
                    return False
                return self._done()
            elif self._state == "close":
                self._body += self._buffer
                self._buffer.clear()
                if len(self._body) > _MAX_BODY_BYTES:
                    raise _Malformed("body too large")
                return False
            elif not self._parse_chunks():
                return False
            else:
                return self._done()

    def _done(self) -> bool:
        self.extra = bool(self._buffer)  # pipelined bytes we never asked for
        return True

    def _parse_head(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD_BYTES:
                raise _Malformed("head too large")
            return False
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise _Malformed(f"bad status line {lines[0][:80]!r}")
        status = int(code)
        if 100 <= status < 200:
            return True  # an interim answer: the real one follows
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise _Malformed(f"bad header line {line[:80]!r}")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.status, self.headers = status, headers
        connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        if version == "HTTP/1.0":
            self.keep_alive = "keep-alive" in connection
        else:
            self.keep_alive = "close" not in connection
        coding = headers.get("transfer-encoding", "").split(",")[-1].strip().lower()
        if self._head_only or status in (204, 304):
            self._state, self._length = "length", 0
        elif coding == "chunked":
            self._state = "chunk-size"
        elif coding:
            raise _Malformed(f"unsupported transfer coding {coding!r}")
        elif "content-length" in headers:
            length = headers["content-length"].split(",")[0].strip()
            if not length.isdigit() or int(length) > _MAX_BODY_BYTES:
                raise _Malformed(f"bad Content-Length {length!r}")
            self._state, self._length = "length", int(length)
        else:
            self._state, self.until_close, self.keep_alive = "close", True, False
        return True

    def _parse_chunks(self) -> bool:
        """Consume chunks; whether the last one and the trailers are in."""
        buffer = self._buffer
        while True:
            if self._state == "chunk-size":
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                size_text = bytes(buffer[:end]).split(b";")[0].strip()
                del buffer[: end + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise _Malformed(f"bad chunk size {size_text[:20]!r}") from None
                if size == 0:
                    self._state = "trailers"
                    continue
                if len(self._body) + size > _MAX_BODY_BYTES:
                    raise _Malformed("body too large")
                self._chunk_left, self._state = size, "chunk-data"
            elif self._state == "chunk-data":
                take = min(self._chunk_left, len(buffer))
                self._body += buffer[:take]
                del buffer[:take]
                self._chunk_left -= take
                if self._chunk_left:
                    return False
                self._state = "chunk-end"
            elif self._state == "chunk-end":
                if len(buffer) < 2:
                    return False
                if buffer[:2] != b"\r\n":
                    raise _Malformed("chunk not followed by CRLF")
                del buffer[:2]
                self._state = "chunk-size"
            else:  # trailers: lines until an empty one
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                del buffer[: end + 2]
                if end == 0:
                    return True
