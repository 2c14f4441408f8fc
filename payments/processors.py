"""Talk to one payment processor.

``AsyncProcessorClient`` is the forwarder's: hundreds of payments in flight on one event loop,
over ``payments.http_client`` (urllib3 would cost more CPU per payment than the rest of the
forwarder together; that module says how much). ``HealthClient`` is the health poller's: one
blocking read of ``service-health`` now and then, over urllib3.

Each answer to a payment is turned into what it tells us about the processor's store, which
is all the delivery state machine needs:

- ``STORED``: 200, the processor holds it now;
- ``ALREADY_STORED``: 422, it holds a payment with this id (confirm with ``GET``);
- ``NOT_STORED``: 5xx, 429 or the connection could not be opened: nothing was stored;
- ``UNCERTAIN``: the request may have reached it (a timeout, a dropped connection): it may
  store it later, after its delay, so only this processor may be asked again.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError

from payments.http_client import ConnectionPool, NoResponse, RequestNotSent, http_origin

_JSON_HEADER_LINE = "Content-Type: application/json\r\n"


class Outcome(enum.Enum):
    """What a payment attempt tells us about the processor's store."""

    STORED = "stored"
    ALREADY_STORED = "already_stored"
    NOT_STORED = "not_stored"
    UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class AttemptResult:
    """The outcome of one ``POST /payments``, its HTTP status (0 if none) and duration."""

    outcome: Outcome
    status: int
    duration_s: float


@dataclass(frozen=True)
class StoredPayment:
    """What ``GET /payments/{id}`` says the processor holds."""

    amount: Decimal
    requested_at: str


class ProcessorError(Exception):
    """The processor could not answer a read (health, lookup); try again later."""


@dataclass(frozen=True)
class ServiceHealth:
    """``GET /payments/service-health``."""

    failing: bool
    min_response_ms: float


class HealthClient:
    """One processor's ``service-health``, read over urllib3; thread-safe."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        connect_timeout_s: float,
        request_timeout_s: float,
        max_connections: int,
    ) -> None:
        del request_timeout_s  # a health read waits twice the connect timeout at most
        self.name = name
        self.url = url.rstrip("/")
        self._timeout = urllib3.Timeout(connect=connect_timeout_s, read=connect_timeout_s * 2)
        self._pool = urllib3.connection_from_url(
            self.url, maxsize=max_connections, block=False, retries=False, timeout=self._timeout
        )

    def service_health(self) -> ServiceHealth:
        """The processor's own word on its state (limited by it to one call per 5 s).

        Raises:
            ProcessorError: no answer, a 429, or an unexpected body.
        """
        path = "/payments/service-health"
        try:
            response = self._pool.urlopen("GET", path, retries=False)
        except (HTTPError, OSError) as exc:
            raise ProcessorError(f"{self.name}: GET {path} failed: {type(exc).__name__}") from None
        data = _json_answer(self.name, path, response.status, response.data, allow_404=False)
        try:
            return ServiceHealth(bool(data["failing"]), float(data["minResponseTime"]))
        except (KeyError, TypeError, ValueError):
            raise ProcessorError(f"{self.name}: unexpected service-health answer") from None

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.close()


class AsyncProcessorClient:
    """One processor's payment API for an event loop, on kept-alive connections.

    Hundreds of payments wait on the network at once in one thread, at the cost of a future
    and a timer each (``payments.http_client``). Not thread-safe: every call must come from the
    one loop that runs it.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        connect_timeout_s: float,
        request_timeout_s: float,
        max_connections: int,
    ) -> None:
        host, port = http_origin(url)
        self.name = name
        self.url = url.rstrip("/")
        self._request_timeout_s = request_timeout_s
        self._lookup_timeout_s = connect_timeout_s * 2
        self._pool = ConnectionPool(
            host,
            port,
            connect_timeout_s=connect_timeout_s,
            max_connections=max_connections,
        )

    async def post_payment(
        self, correlation_id: str, amount: Decimal, requested_at: str
    ) -> AttemptResult:
        """Send one payment; never raises for what the network or the processor does."""
        body = _payment_body(correlation_id, amount, requested_at)
        started = time.monotonic()
        try:
            response = await self._pool.request(
                "POST",
                "/payments",
                body=body,
                headers=_JSON_HEADER_LINE,
                timeout_s=self._request_timeout_s,
            )
        except RequestNotSent:
            return AttemptResult(Outcome.NOT_STORED, 0, time.monotonic() - started)
        except NoResponse:
            return AttemptResult(Outcome.UNCERTAIN, 0, time.monotonic() - started)
        return _answered(response.status, time.monotonic() - started)

    async def get_payment(self, correlation_id: str) -> StoredPayment | None:
        """What the processor holds for this id, or ``None`` if it holds nothing.

        Raises:
            ProcessorError: no definite answer (network trouble, 5xx).
        """
        path = f"/payments/{correlation_id}"
        try:
            response = await self._pool.request("GET", path, timeout_s=self._lookup_timeout_s)
        except (RequestNotSent, NoResponse) as exc:
            raise ProcessorError(f"{self.name}: GET {path} failed: {exc}") from None
        found = _json_answer(self.name, path, response.status, response.body, allow_404=True)
        return None if found is None else _stored_payment(self.name, found)

    def close(self) -> None:
        """Close the idle connections."""
        self._pool.close()


def _payment_body(correlation_id: str, amount: Decimal, requested_at: str) -> bytes:
    return (
        f'{{"correlationId":"{correlation_id}","amount":{amount},"requestedAt":"{requested_at}"}}'
    ).encode()


def _answered(status: int, duration_s: float) -> AttemptResult:
    """What an HTTP answer to ``POST /payments`` says about the processor's store."""
    if 200 <= status < 300:
        return AttemptResult(Outcome.STORED, status, duration_s)
    if status == 422:
        return AttemptResult(Outcome.ALREADY_STORED, status, duration_s)
    # 5xx and 429 store nothing; nor does any other 4xx (the processor refused what we sent).
    # Each is retried.
    return AttemptResult(Outcome.NOT_STORED, status, duration_s)


def _json_answer(name: str, path: str, status: int, data: bytes, allow_404: bool) -> Any:
    if status == 404 and allow_404:
        return None
    if status != 200:
        raise ProcessorError(f"{name}: GET {path} answered {status}")
    try:
        return json.loads(data)
    except ValueError:
        raise ProcessorError(f"{name}: GET {path} answered invalid JSON") from None


def _stored_payment(name: str, data: Any) -> StoredPayment:
    try:
        return StoredPayment(Decimal(str(data["amount"])), str(data["requestedAt"]))
    except (KeyError, TypeError, ArithmeticError):
        raise ProcessorError(f"{name}: unexpected payment lookup answer") from None
