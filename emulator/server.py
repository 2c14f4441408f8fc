"""A stand-in for the contest's payment processor, faithful to its API, rules and quirks.

``python -m emulator --port 8001 --name default --fee 0.05`` runs one processor; the stack,
the tests and the benchmark start one process per processor (default and fallback).

What it mirrors, from the real service's source (an ASP.NET minimal API over PostgreSQL):

* ``POST /payments`` binds the JSON body first (bad JSON, a non-UUID ``correlationId``, a null
  or non-numeric ``amount``, an unparsable ``requestedAt``: 400; not JSON at all: 415; a field
  left out takes its default: the zero UUID, 0, ``0001-01-01T00:00:00``), then sleeps the delay
  configured at that moment, then answers 500 when failure is configured *by then*, then inserts:
  an id already stored answers 422. The sleep is never cancelled by a client going away, so a
  payment whose caller timed out is stored anyway. A limiter of 800 in flight plus 500 queued
  answers 429 beyond.
* Amounts are exact decimals kept at the scale they were sent with (the table's column is an
  unscaled ``DECIMAL``); ``requestedAt`` is an instant stored to the microsecond, compared as
  UTC, and read back in .NET's format (no zone suffix, trailing zeros of the fraction dropped).
* ``GET /payments/service-health``: a fixed window limiter, 1 permit per window, 2 callers
  queued oldest first (each queued caller takes the permit of a later window), 429 beyond.
* ``/admin/*`` needs ``X-Rinha-Token``; the token is checked after the request is bound, so a
  malformed admin request answers 400 before any 401.

``--journal FILE`` keeps the stored payments in a file as well, so a processor killed and
started again (the fault suite does) still holds them, as the real one does in its PostgreSQL.

Standard library only: one asyncio event loop, a small HTTP/1.1 parser on ``asyncio.Protocol``
(keep-alive, pipelining, ``Connection: close``) and timer callbacks for the delays, so hundreds
of sleeping payments cost a heap entry each rather than a task or a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import decimal
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, unquote_plus

_DEFAULT_TOKEN = "123"
_HEALTH_WINDOW_S = 5.0
_HEALTH_QUEUE_LIMIT = 2
_PAYMENTS_IN_FLIGHT_LIMIT = 800
_PAYMENTS_QUEUE_LIMIT = 500
_MAX_HEAD_BYTES = 16 * 1024
_MAX_BODY_BYTES = 1024 * 1024
_READ_PAUSE_BYTES = 4 * 1024 * 1024
"""Stop reading from a client whose unanswered pipelined requests pile up beyond this."""
_SHUTDOWN_SETTLE_S = 0.05
"""On a stop, time for requests already in socket buffers to be read and started."""
_SHUTDOWN_GRACE_S = 3.0
"""How long a stop waits for delayed payments still in flight before closing connections."""
_US_PER_S = 1_000_000
_US_PER_DAY = 86_400 * _US_PER_S
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_DECIMAL_LIMIT = Decimal(2**96)
""".NET's ``decimal`` holds magnitudes below 2**96; larger amounts fail to bind (400)."""
_EXACT = decimal.Context(prec=120, traps=[decimal.Overflow, decimal.InvalidOperation])
"""Sums and fees are computed with enough digits never to round."""
_ZERO_UUID = "00000000-0000-0000-0000-000000000000"

_UUID_D_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
_UUID_ROUTE_RE = re.compile(
    r"\{?([0-9a-fA-F]{8})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?([0-9a-fA-F]{4})-?"
    r"([0-9a-fA-F]{12})\}?\Z|\(([0-9a-fA-F]{8})-([0-9a-fA-F]{4})-([0-9a-fA-F]{4})-"
    r"([0-9a-fA-F]{4})-([0-9a-fA-F]{12})\)\Z"
)
# The ISO 8601 profile System.Text.Json reads: date, optional time (minutes at least), optional
# fraction, optional zone. The query-string reader is laxer (DateTime.TryParse): ' ' or 'T'.
_JSON_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,16}))?)?(Z|[+-]\d{2}(?::\d{2})?)?)?\Z"
)
_QUERY_TIME_RE = re.compile(
    r"\s*(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[Tt ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,16}))?)?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
    r"\s*\Z"
)

_NUMBER_TEXT_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_INTEGER_TEXT_RE = re.compile(r"-?\d+")

_REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
_JSON_TYPE = "application/json; charset=utf-8"
_TEXT_TYPE = "text/plain; charset=utf-8"
_REJECTED_BODY = b"Too many requests. Try again later."


class _BadRequest(Exception):
    """The request cannot be bound to the endpoint's parameters: the real service answers 400."""


def _log(event: str, **fields: Any) -> None:
    """Write one JSON line to stderr; used for start, stop and admin changes, never per payment."""
    now = time.time()
    entry = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
        "level": "info",
        "process": "emulator",
        "pid": os.getpid(),
        "msg": event,
        **fields,
    }
    sys.stderr.write(json.dumps(entry, default=str) + "\n")
    sys.stderr.flush()


# --- values: timestamps, decimals, ids ---------------------------------------------------------


def _instant_us(match: re.Match[str]) -> int:
    """Microseconds since 0001-01-01 (UTC) of a matched timestamp; PostgreSQL keeps microseconds.

    A zone designator shifts the instant to UTC; no designator means the value is taken as UTC,
    like the real service whose database and container run in UTC.
    """
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        days = date(int(year), int(month), int(day)).toordinal() - 1
    except ValueError as exc:
        raise _BadRequest(f"not a date: {match.string!r}") from exc
    hours, minutes, seconds = int(hour or 0), int(minute or 0), int(second or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise _BadRequest(f"not a time of day: {match.string!r}")
    micros = int((fraction or "")[:6].ljust(6, "0"))
    instant = days * _US_PER_DAY + ((hours * 60 + minutes) * 60 + seconds) * _US_PER_S + micros
    if zone and zone not in "Zz":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset_minutes = int(digits[:2]) * 60 + int(digits[2:4] or 0)
        if offset_minutes > 14 * 60:
            raise _BadRequest(f"zone offset out of range: {match.string!r}")
        instant -= sign * offset_minutes * 60 * _US_PER_S
    if not 0 <= instant < date.max.toordinal() * _US_PER_DAY:
        raise _BadRequest(f"instant out of range: {match.string!r}")
    return instant


def parse_json_time(text: str) -> int:
    """Read ``requestedAt`` as System.Text.Json does; the instant in microseconds, or 400."""
    match = _JSON_TIME_RE.match(text)
    if match is None:
        raise _BadRequest(f"requestedAt is not an ISO 8601 timestamp: {text!r}")
    return _instant_us(match)


def parse_query_time(text: str) -> int:
    """Read a ``from``/``to`` query value (the real one uses DateTime.TryParse, a bit laxer)."""
    match = _QUERY_TIME_RE.match(text)
    if match is None:
        raise _BadRequest(f"not a timestamp: {text!r}")
    return _instant_us(match)


def format_instant(instant_us: int) -> str:
    """Render as .NET renders a ``timestamp`` column read back: no zone, fraction trimmed."""
    days, day_us = divmod(instant_us, _US_PER_DAY)
    day = date.fromordinal(days + 1)
    seconds, micros = divmod(day_us, _US_PER_S)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    text = f"{day.year:04d}-{day.month:02d}-{day.day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if micros:
        text += "." + f"{micros:06d}".rstrip("0")
    return text


def _scale(value: Decimal) -> int:
    """Digits after the point, as PostgreSQL's numeric and .NET's decimal keep them."""
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _decimal_text(value: Decimal) -> str:
    """A JSON number with the decimal's own scale (as .NET writes ``decimal``), never 1E+1."""
    return format(value, "f")


def _route_uuid(text: str) -> str | None:
    """Guid.TryParse's common forms (D, N, B, P) to the canonical lowercase D form."""
    match = _UUID_ROUTE_RE.match(text)
    if match is None:
        return None
    parts = [group for group in match.groups() if group is not None]
    return "-".join(parts).lower()


def _no_constants(name: str) -> Any:
    """NaN and Infinity are not JSON numbers; the real binder refuses them."""
    raise _BadRequest(f"{name} is not JSON")


_JSON_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constants)


def _json_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON object, keys folded to lower case (the real binder ignores key case)."""
    if not body.strip():
        raise _BadRequest("the body is empty")
    try:
        value = _JSON_DECODER.decode(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise _BadRequest("the body is not a JSON object")
    return {key.lower(): item for key, item in value.items()}


def _as_decimal(value: Any, name: str) -> Decimal:
    """A JSON number (or a numeric string: the real binder allows reading numbers from strings)."""
    if isinstance(value, bool) or value is None:
        raise _BadRequest(f"{name} is not a number")
    if isinstance(value, int):
        value = Decimal(value)
    elif isinstance(value, str):
        value = Decimal(value) if _NUMBER_TEXT_RE.fullmatch(value) else None
    if not isinstance(value, Decimal) or not value.is_finite() or abs(value) >= _DECIMAL_LIMIT:
        raise _BadRequest(f"{name} is not a decimal")
    return value


def _as_int32(value: Any, name: str) -> int:
    """A JSON integer in .NET's ``int`` range, or a string holding one."""
    if isinstance(value, str) and _INTEGER_TEXT_RE.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadRequest(f"{name} is not an integer")
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise _BadRequest(f"{name} is out of range")
    return value


def parse_payment(fields: dict[str, Any]) -> tuple[str, Decimal, int]:
    """Bind the body's ``{"correlationId","amount","requestedAt"}`` as the real service does.

    Missing fields take .NET's defaults (a positional record struct without ``required``), a
    present but null or ill-typed one fails the binding.
    """
    correlation_id = _ZERO_UUID
    if "correlationid" in fields:
        raw = fields["correlationid"]
        if not isinstance(raw, str) or _UUID_D_RE.match(raw) is None:
            raise _BadRequest("correlationId is not a UUID")
        correlation_id = raw.lower()
    amount = _as_decimal(fields["amount"], "amount") if "amount" in fields else Decimal(0)
    requested_at = 0
    if "requestedat" in fields:
        raw = fields["requestedat"]
        if not isinstance(raw, str):
            raise _BadRequest("requestedAt is not a string")
        requested_at = parse_json_time(raw)
    return correlation_id, amount, requested_at


# --- storage -----------------------------------------------------------------------------------


class PaymentStore:
    """Payments by id, plus an index ordered by ``requestedAt`` for range summaries.

    ``_instants`` and ``_amounts`` are parallel lists sorted by instant; ``_prefix[i]`` is the
    exact sum of ``_amounts[:i]``, valid up to its own length. Payments arrive in nearly
    ascending order, so an insert mostly appends (extending the prefix sums) and an out-of-order
    one only drops the few sums after it. A range summary is then two bisections and one
    subtraction, however many payments are stored (when all amounts share one scale, as the
    contest's do; otherwise the range is summed, to keep SUM's scale exact).
    """

    def __init__(self, journal: str | None = None) -> None:
        self._by_id: dict[str, tuple[Decimal, int]] = {}
        self._instants: list[int] = []
        self._amounts: list[Decimal] = []
        self._prefix: list[Decimal] = [Decimal(0)]
        self._scales: collections.Counter[int] = collections.Counter()
        self._journal_fd = -1
        if journal is not None:
            self._replay(journal)
            self._journal_fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _replay(self, journal: str) -> None:
        """Load what an earlier run of this processor stored (the real one keeps its payments
        in PostgreSQL, so they outlive a restart); a torn last line is dropped."""
        with contextlib.suppress(FileNotFoundError), open(journal, "rb") as lines:
            for line in lines:
                if not line.endswith(b"\n"):
                    break
                correlation_id, amount, instant = line.decode().split()
                self._insert(correlation_id, Decimal(amount), int(instant))

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, correlation_id: str) -> bool:
        return correlation_id in self._by_id

    def add(self, correlation_id: str, amount: Decimal, instant_us: int) -> None:
        """Store a payment whose id is not stored yet (in the journal first, if there is one)."""
        if self._journal_fd >= 0:
            os.write(self._journal_fd, f"{correlation_id} {amount} {instant_us}\n".encode())
        self._insert(correlation_id, amount, instant_us)

    def _insert(self, correlation_id: str, amount: Decimal, instant_us: int) -> None:
        self._by_id[correlation_id] = (amount, instant_us)
        self._scales[_scale(amount)] += 1
        instants = self._instants
        if not instants or instant_us >= instants[-1]:
            instants.append(instant_us)
            self._amounts.append(amount)
            if len(self._prefix) == len(instants):
                self._prefix.append(_EXACT.add(self._prefix[-1], amount))
            return
        position = bisect.bisect_right(instants, instant_us)
        instants.insert(position, instant_us)
        self._amounts.insert(position, amount)
        del self._prefix[position + 1 :]

    def get(self, correlation_id: str) -> tuple[Decimal, int] | None:
        """The stored amount and instant, or ``None``."""
        return self._by_id.get(correlation_id)

    def summary(self, first_us: int | None, last_us: int | None) -> tuple[int, Decimal]:
        """Count and sum of payments with first <= requestedAt <= last; all when a bound is None.

        An empty set sums to ``0`` (scale 0), like ``COALESCE(SUM(amount), 0)``.
        """
        count = len(self._instants)
        if first_us is None or last_us is None:
            low, high = 0, count
        elif first_us > last_us:
            return 0, Decimal(0)
        else:
            low = bisect.bisect_left(self._instants, first_us)
            high = bisect.bisect_right(self._instants, last_us)
        if low >= high:
            return 0, Decimal(0)
        prefix = self._prefix
        add = _EXACT.add
        for amount in self._amounts[len(prefix) - 1 : high]:
            prefix.append(add(prefix[-1], amount))
        if low == 0:
            return high, prefix[high]
        if len(self._scales) == 1:
            return high - low, _EXACT.subtract(prefix[high], prefix[low])
        # Mixed scales: a difference of prefix sums could carry a scale found outside the range,
        # where SUM over the range would not; sum the slice itself.
        total = Decimal(0)
        for amount in self._amounts[low:high]:
            total = add(total, amount)
        return high - low, total

    def purge(self) -> int:
        """Forget every payment; the number forgotten."""
        if self._journal_fd >= 0:
            os.ftruncate(self._journal_fd, 0)
        count = len(self._by_id)
        self._by_id.clear()
        self._instants.clear()
        self._amounts.clear()
        self._prefix[1:] = []
        self._scales.clear()
        return count


# --- HTTP/1.1 ----------------------------------------------------------------------------------


class Request:
    """One parsed request; ``keep_alive`` already folds in the version and ``Connection``."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def json_body(self) -> dict[str, Any]:
        """The body as a JSON object; the real service answers 415 to a non-JSON content type."""
        media_type = self.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise _UnsupportedMediaType(media_type)
        return _json_object(self.body)


class _UnsupportedMediaType(Exception):
    """The body parameter needs a JSON content type: 415."""


class Connection(asyncio.Protocol):
    """One client connection: parses requests one at a time and answers them in order.

    While a request is being handled (a delayed payment, a queued health check) further
    pipelined bytes are only buffered; the next request is parsed once the answer is written.
    A client that goes away does not cancel anything in progress: the answer is dropped.
    """

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._head: tuple[str, str, str, dict[str, str], bool, int] | None = None
        self._continue_sent = False
        self._busy = False
        self._draining = False
        self._paused = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._emulator.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._emulator.connections.discard(self)
        self._emulator.forget_waiter(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._drain()
        elif len(self._buffer) > _READ_PAUSE_BYTES and not self._paused and self._transport:
            self._transport.pause_reading()
            self._paused = True

    def close(self) -> None:
        """Close after whatever is already written."""
        if not self.closed and self._transport is not None:
            self.closed = True
            self._transport.close()

    def respond(
        self,
        request: Request,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = _JSON_TYPE,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write the answer to ``request`` and go on with the next buffered request, if any."""
        self._busy = False
        if self.closed or self._transport is None:
            return
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        if body or status not in (204, 304):
            if body:
                lines.append(f"Content-Type: {content_type}")
            lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        if not request.keep_alive:
            lines.append("Connection: close")
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if not request.keep_alive:
            self._flush()
            self.close()
            return
        if self._paused and len(self._buffer) <= _READ_PAUSE_BYTES:
            self._transport.resume_reading()
            self._paused = False
        if not self._draining:
            self._drain()

    def _send(self, data: bytes) -> None:
        """Write now, or, while draining pipelined requests, gather for one write at the end."""
        if self._draining:
            self._out.append(data)
        elif self._transport is not None:
            self._transport.write(data)

    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            if self._transport is not None and not self.closed:
                self._transport.write(data)

    def _fail(self, status: int) -> None:
        """Answer a request that could not even be parsed, then hang up."""
        self._busy = True
        self.respond(
            Request("", "", "", {}, b"", keep_alive=False), status, content_type=_TEXT_TYPE
        )

    def _drain(self) -> None:
        """Parse and dispatch buffered requests until one is left in progress or bytes run out."""
        self._draining = True
        try:
            while not self._busy and not self.closed:
                request = self._parse_one()
                if request is None:
                    return
                self._busy = True
                self._emulator.dispatch(self, request)
        finally:
            self._draining = False
            self._flush()

    def _parse_one(self) -> Request | None:
        """The next complete request in the buffer, or ``None`` (incomplete, or answered 4xx)."""
        buffer = self._buffer
        if self._head is None:
            while buffer[:2] == b"\r\n":  # RFC 9112 2.2: ignore empty lines before a request
                del buffer[:2]
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD_BYTES:
                    self._fail(431)
                return None
            if end > _MAX_HEAD_BYTES:
                self._fail(431)
                return None
            head = self._parse_head(bytes(buffer[:end]).decode("latin-1"))
            if head is None:
                return None
            del buffer[: end + 4]
            self._head = head
            self._continue_sent = False
        method, path, query, headers, keep_alive, length = self._head
        if len(buffer) < length:
            if (
                not self._continue_sent
                and headers.get("expect", "").lower() == "100-continue"
                and self._transport is not None
            ):
                self._send(b"HTTP/1.1 100 Continue\r\n\r\n")
                self._continue_sent = True
            return None
        body = bytes(buffer[:length])
        del buffer[:length]
        self._head = None
        return Request(method, path, query, headers, body, keep_alive)

    def _parse_head(self, head: str) -> tuple[str, str, str, dict[str, str], bool, int] | None:
        """Request line and headers; answers 400/411/413/501/505 itself and returns ``None``."""
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
            self._fail(400)
            return None
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self._fail(505 if version.startswith("HTTP/") else 400)
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                self._fail(400)
                return None
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        if "transfer-encoding" in headers:
            self._fail(501)  # every client of ours sends Content-Length
            return None
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            self._fail(400)
            return None
        length = int(length_text)
        if length > _MAX_BODY_BYTES:
            self._fail(413)
            return None
        tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        keep_alive = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        path, _, query = target.partition("?")
        return method, unquote(path), query, headers, keep_alive, length


# --- the processor -----------------------------------------------------------------------------


class _HealthLimiter:
    """.NET's FixedWindowRateLimiter with PermitLimit 1, QueueLimit 2, oldest first.

    Windows start when the first call arrives and follow each other every ``window_s``. A call
    finding the window's permit taken waits in the queue, if there is room, for the permit of a
    later window: the first queued caller is answered when the next window opens, the second one
    window after that. A queued caller that hangs up leaves the queue.
    """

    def __init__(self, window_s: float, queue_limit: int, serve: Callable[[Connection], None]):
        self.window_s = window_s
        self._queue_limit = queue_limit
        self._serve = serve
        self._window_start: float | None = None
        self._permits = 0
        self._queue: collections.deque[Connection] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def acquire(self, connection: Connection, now: float) -> bool | None:
        """True: serve now; None: queued, served later; False: reject."""
        self._advance(now)
        if self._permits > 0:
            self._permits -= 1
            return True
        if len(self._queue) < self._queue_limit:
            self._queue.append(connection)
            self._arm()
            return None
        return False

    def forget(self, connection: Connection) -> None:
        """Drop a queued caller that went away."""
        with contextlib.suppress(ValueError):
            self._queue.remove(connection)

    def _advance(self, now: float) -> None:
        if self._window_start is None:
            self._window_start, self._permits = now, 1
            return
        while now >= self._window_start + self.window_s:
            if not self._queue:
                elapsed = math.floor((now - self._window_start) / self.window_s)
                self._window_start += max(elapsed, 1) * self.window_s
                self._permits = 1
                return
            self._window_start += self.window_s
            self._permits = 1
            while self._queue and self._permits:
                waiter = self._queue.popleft()
                if not waiter.closed:
                    self._permits -= 1
                    self._serve(waiter)

    def _arm(self) -> None:
        if self._timer is None and self._queue and self._window_start is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(self._window_start + self.window_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._advance(asyncio.get_running_loop().time())
        self._arm()

    def cancel(self) -> None:
        """Stop the timer (shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Emulator:
    """The processor's state and endpoints; one instance per process."""

    def __init__(
        self,
        *,
        name: str,
        fee: Decimal,
        token: str,
        health_window_s: float = _HEALTH_WINDOW_S,
        max_in_flight: int = _PAYMENTS_IN_FLIGHT_LIMIT,
        max_queued: int = _PAYMENTS_QUEUE_LIMIT,
        journal: str | None = None,
    ) -> None:
        self.name = name
        self.fee = fee
        self.token: str | None = token
        self.delay_ms = 0
        self.failure = False
        self.store = PaymentStore(journal)
        self.connections: set[Connection] = set()
        self._max_in_flight = max_in_flight
        self._max_queued = max_queued
        self.in_flight = 0
        self._payment_queue: collections.deque[tuple[Connection, Request]] = collections.deque()
        self._pumping = False
        self._health_waiters: dict[Connection, Request] = {}
        self.health = _HealthLimiter(health_window_s, _HEALTH_QUEUE_LIMIT, self._serve_health)
        self._retry_after = str(max(1, math.ceil(health_window_s)))

    # routing ------------------------------------------------------------------------------------

    def dispatch(self, connection: Connection, request: Request) -> None:
        """Route like ASP.NET: case-insensitive paths, a trailing slash ignored, 405 vs 404."""
        path = request.path
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        lowered = path.lower()
        method = request.method
        route: Callable[[Connection, Request], None] | None = None
        allowed = ""
        if lowered == "/payments":
            allowed, route = "POST", self._post_payment
        elif lowered == "/payments/service-health":
            allowed, route = "GET", self._get_health
        elif lowered.startswith("/payments/") and "/" not in lowered[len("/payments/") :]:
            allowed, route = "GET", self._get_payment
        elif lowered == "/admin/payments-summary":
            allowed, route = "GET", self._get_summary
        elif lowered == "/admin/configurations/token":
            allowed, route = "PUT", self._put_token
        elif lowered == "/admin/configurations/delay":
            allowed, route = "PUT", self._put_delay
        elif lowered == "/admin/configurations/failure":
            allowed, route = "PUT", self._put_failure
        elif lowered == "/admin/purge-payments":
            allowed, route = "POST", self._purge
        if route is None:
            connection.respond(request, 404)
        elif method != allowed:
            connection.respond(request, 405, headers=[("Allow", allowed)])
        else:
            request.path = path
            try:
                route(connection, request)
            except _BadRequest:
                connection.respond(request, 400)
            except _UnsupportedMediaType:
                connection.respond(request, 415)

    def _authorized(self, request: Request) -> bool:
        """``X-Rinha-Token`` equals the token; a null token (set to null) matches no header."""
        sent = request.headers.get("x-rinha-token")
        return sent == self.token

    # payments -----------------------------------------------------------------------------------

    def _post_payment(self, connection: Connection, request: Request) -> None:
        """The concurrency limiter first (middleware), then binding, delay, failure, insert."""
        if self.in_flight < self._max_in_flight:
            self.in_flight += 1
            self._run_payment(connection, request)
        elif len(self._payment_queue) < self._max_queued:
            self._payment_queue.append((connection, request))
        else:
            connection.respond(
                request,
                429,
                _REJECTED_BODY,
                content_type=_TEXT_TYPE,
                headers=[("Retry-After", self._retry_after)],
            )

    def _run_payment(self, connection: Connection, request: Request) -> None:
        try:
            payment = parse_payment(request.json_body())
        except (_BadRequest, _UnsupportedMediaType) as exc:
            connection.respond(request, 415 if isinstance(exc, _UnsupportedMediaType) else 400)
            self._release()
            return
        delay_ms = self.delay_ms
        if delay_ms > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(delay_ms / 1000, self._finish_payment, connection, request, payment)
        else:
            self._finish_payment(connection, request, payment)

    def _finish_payment(
        self, connection: Connection, request: Request, payment: tuple[str, Decimal, int]
    ) -> None:
        """After the delay: failure is read now, then the insert (which may find a duplicate).

        Runs whether or not the client is still there: a timed-out payment is stored anyway.
        """
        correlation_id, amount, instant_us = payment
        try:
            if self.failure:
                connection.respond(request, 500)
            elif correlation_id in self.store:
                message = (
                    "Payment could not be processed. "
                    f"CorrelationId already exists: {correlation_id}."
                )
                connection.respond(request, 422, _dumps({"message": message}))
            else:
                self.store.add(correlation_id, amount, instant_us)
                connection.respond(request, 200, b'{"message":"payment processed successfully"}')
        finally:
            self._release()

    def _release(self) -> None:
        """Free an in-flight slot and start queued payments, iteratively (no deep recursion)."""
        self.in_flight -= 1
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._payment_queue and self.in_flight < self._max_in_flight:
                connection, request = self._payment_queue.popleft()
                if connection.closed:
                    continue  # the real limiter drops a queued request whose client aborted
                self.in_flight += 1
                self._run_payment(connection, request)
        finally:
            self._pumping = False

    def _get_payment(self, connection: Connection, request: Request) -> None:
        correlation_id = _route_uuid(request.path[len("/payments/") :])
        if correlation_id is None:
            raise _BadRequest("the id is not a UUID")
        stored = self.store.get(correlation_id)
        if stored is None:
            connection.respond(request, 404)
            return
        amount, instant_us = stored
        body = (
            f'{{"correlationId":"{correlation_id}","amount":{_decimal_text(amount)},'
            f'"requestedAt":"{format_instant(instant_us)}"}}'
        )
        connection.respond(request, 200, body.encode())

    # health -------------------------------------------------------------------------------------

    def _get_health(self, connection: Connection, request: Request) -> None:
        granted = self.health.acquire(connection, asyncio.get_running_loop().time())
        if granted:
            self._answer_health(connection, request)
        elif granted is None:
            self._health_waiters[connection] = request
        else:
            connection.respond(
                request,
                429,
                _REJECTED_BODY,
                content_type=_TEXT_TYPE,
                headers=[("Retry-After", self._retry_after)],
            )

    def _serve_health(self, connection: Connection) -> None:
        request = self._health_waiters.pop(connection, None)
        if request is not None:
            self._answer_health(connection, request)

    def _answer_health(self, connection: Connection, request: Request) -> None:
        body = _dumps({"failing": self.failure, "minResponseTime": self.delay_ms})
        connection.respond(request, 200, body)

    def forget_waiter(self, connection: Connection) -> None:
        """A connection closed: its queued calls leave the queues, as aborted requests do."""
        if self._health_waiters.pop(connection, None) is not None:
            self.health.forget(connection)
        if self._payment_queue and any(queued is connection for queued, _ in self._payment_queue):
            kept = [entry for entry in self._payment_queue if entry[0] is not connection]
            self._payment_queue = collections.deque(kept)

    # admin --------------------------------------------------------------------------------------

    def _get_summary(self, connection: Connection, request: Request) -> None:
        bounds: dict[str, int | None] = {"from": None, "to": None}
        for pair in request.query.split("&"):
            key, _, value = pair.partition("=")
            key = unquote_plus(key).lower()
            if key in bounds and bounds[key] is None:
                text = unquote_plus(value)
                bounds[key] = parse_query_time(text) if text else None
        if not self._authorized(request):
            connection.respond(request, 401)
            return
        count, total = self.store.summary(bounds["from"], bounds["to"])
        fee_total = _EXACT.multiply(total, self.fee)
        body = (
            f'{{"totalAmount":{_decimal_text(total)},"totalRequests":{count},'
            f'"totalFee":{_decimal_text(fee_total)},"feePerTransaction":{_decimal_text(self.fee)}}}'
        )
        connection.respond(request, 200, body.encode())

    def _put_token(self, connection: Connection, request: Request) -> None:
        fields = request.json_body()
        token = fields.get("token")
        if token is not None and not isinstance(token, str):
            raise _BadRequest("token is not a string")
        if not self._authorized(request):
            connection.respond(request, 401)
            return
        self.token = token
        _log("token changed", processor=self.name, token_set=token is not None)
        connection.respond(request, 204)

    def _put_delay(self, connection: Connection, request: Request) -> None:
        fields = request.json_body()
        delay_ms = _as_int32(fields["delay"], "delay") if "delay" in fields else 0
        if not self._authorized(request):
            connection.respond(request, 401)
            return
        was, self.delay_ms = self.delay_ms, delay_ms
        _log("delay changed", processor=self.name, was_ms=was, is_ms=delay_ms)
        connection.respond(request, 200, _dumps({"config": "delay", "was": was, "is": delay_ms}))

    def _put_failure(self, connection: Connection, request: Request) -> None:
        fields = request.json_body()
        failure = fields.get("failure", False)
        if not isinstance(failure, bool):
            raise _BadRequest("failure is not a boolean")
        if not self._authorized(request):
            connection.respond(request, 401)
            return
        was, self.failure = self.failure, failure
        _log("failure changed", processor=self.name, was=was, now=failure)
        connection.respond(request, 200, _dumps({"config": "failure", "was": was, "is": failure}))

    def _purge(self, connection: Connection, request: Request) -> None:
        if not self._authorized(request):
            connection.respond(request, 401)
            return
        purged = self.store.purge()
        _log("payments purged", processor=self.name, purged=purged)
        connection.respond(request, 200, b'{"message":"All payments purged."}')


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# --- process -----------------------------------------------------------------------------------


async def serve(emulator: Emulator, host: str, port: int) -> None:
    """Listen until SIGTERM or SIGINT, then let delayed payments finish (bounded) and close."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(emulator), host, port, reuse_address=True, backlog=4096
    )
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    _log(
        "started",
        processor=emulator.name,
        host=host,
        port=port,
        fee=str(emulator.fee),
        health_window_s=emulator.health.window_s,
    )
    try:
        await stopping.wait()
    finally:
        server.close()
        await asyncio.sleep(_SHUTDOWN_SETTLE_S)
        deadline = loop.time() + _SHUTDOWN_GRACE_S
        while emulator.in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        emulator.health.cancel()
        for connection in list(emulator.connections):
            connection.close()
        await server.wait_closed()
        _log("stopped", processor=emulator.name, payments=len(emulator.store))


def _fee(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except decimal.InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not a decimal: {text!r}") from exc
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"not a fee: {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emulator``: run one processor until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="default", help="label for the logs: default, fallback")
    parser.add_argument("--fee", type=_fee, required=True, help="fee per transaction, e.g. 0.05")
    parser.add_argument("--token", default=_DEFAULT_TOKEN, help="initial X-Rinha-Token")
    parser.add_argument(
        "--health-window-s",
        type=_positive_float,
        default=_HEALTH_WINDOW_S,
        help="service-health rate-limit window, seconds",
    )
    parser.add_argument(
        "--max-in-flight",
        type=_positive_int,
        default=_PAYMENTS_IN_FLIGHT_LIMIT,
        help="payments handled at once (tests lower it)",
    )
    parser.add_argument(
        "--max-queued",
        type=int,
        default=_PAYMENTS_QUEUE_LIMIT,
        help="payments waiting for a slot before 429 (tests lower it)",
    )
    parser.add_argument(
        "--journal",
        default=None,
        help="keep stored payments in this file, so they outlive a restart as the real "
        "processor's do (its PostgreSQL); default: in memory only",
    )
    args = parser.parse_args(argv)
    emulator = Emulator(
        name=args.name,
        fee=args.fee,
        token=args.token,
        health_window_s=args.health_window_s,
        max_in_flight=args.max_in_flight,
        max_queued=max(0, args.max_queued),
        journal=args.journal,
    )
    try:
        asyncio.run(serve(emulator, args.host, args.port))
    except OSError as exc:
        _log("failed", processor=args.name, error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
