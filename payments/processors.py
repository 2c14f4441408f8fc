"""Talk to one payment processor over a pooled urllib3 connection.

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
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

_JSON_HEADERS = {"Content-Type": "application/json"}


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


class ProcessorClient:
    """One processor's HTTP API; thread-safe, one connection pool shared by all threads."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        connect_timeout_s: float,
        request_timeout_s: float,
        pool_size: int,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self._timeout = urllib3.Timeout(connect=connect_timeout_s, read=request_timeout_s)
        self._read_timeout = urllib3.Timeout(connect=connect_timeout_s, read=connect_timeout_s * 2)
        self._pool = urllib3.connection_from_url(
            self.url, maxsize=pool_size, block=False, retries=False, timeout=self._timeout
        )

    def post_payment(
        self, correlation_id: str, amount: Decimal, requested_at: str
    ) -> AttemptResult:
        """Send one payment; never raises for what the network or the processor does."""
        body = (
            f'{{"correlationId":"{correlation_id}","amount":{amount},'
            f'"requestedAt":"{requested_at}"}}'
        ).encode()
        started = time.monotonic()
        try:
            response = self._pool.urlopen(
                "POST",
                "/payments",
                body=body,
                headers=_JSON_HEADERS,
                retries=False,
                preload_content=True,
            )
        except (NewConnectionError, ConnectTimeoutError):
            return AttemptResult(Outcome.NOT_STORED, 0, time.monotonic() - started)
        except MaxRetryError as exc:
            not_sent = isinstance(exc.reason, NewConnectionError | ConnectTimeoutError)
            outcome = Outcome.NOT_STORED if not_sent else Outcome.UNCERTAIN
            return AttemptResult(outcome, 0, time.monotonic() - started)
        except (ReadTimeoutError, ProtocolError, HTTPError, OSError):
            return AttemptResult(Outcome.UNCERTAIN, 0, time.monotonic() - started)
        duration = time.monotonic() - started
        status = response.status
        if 200 <= status < 300:
            return AttemptResult(Outcome.STORED, status, duration)
        if status == 422:
            return AttemptResult(Outcome.ALREADY_STORED, status, duration)
        if status >= 500 or status == 429:
            return AttemptResult(Outcome.NOT_STORED, status, duration)
        # Any other 4xx: the processor refused what we sent and stored nothing; it is retried.
        return AttemptResult(Outcome.NOT_STORED, status, duration)

    def get_payment(self, correlation_id: str) -> StoredPayment | None:
        """What the processor holds for this id, or ``None`` if it holds nothing.

        Raises:
            ProcessorError: no definite answer (network trouble, 5xx).
        """
        data = self._get_json(f"/payments/{correlation_id}", allow_404=True)
        if data is None:
            return None
        try:
            return StoredPayment(Decimal(str(data["amount"])), str(data["requestedAt"]))
        except (KeyError, TypeError, ArithmeticError):
            raise ProcessorError(f"{self.name}: unexpected payment lookup answer") from None

    def service_health(self) -> ServiceHealth:
        """The processor's own word on its state (limited by it to one call per 5 s).

        Raises:
            ProcessorError: no answer, a 429, or an unexpected body.
        """
        data = self._get_json("/payments/service-health", allow_404=False)
        try:
            return ServiceHealth(bool(data["failing"]), float(data["minResponseTime"]))
        except (KeyError, TypeError, ValueError):
            raise ProcessorError(f"{self.name}: unexpected service-health answer") from None

    def _get_json(self, path: str, *, allow_404: bool) -> Any:
        try:
            response = self._pool.urlopen("GET", path, retries=False, timeout=self._read_timeout)
        except (HTTPError, OSError) as exc:
            raise ProcessorError(f"{self.name}: GET {path} failed: {type(exc).__name__}") from None
        if response.status == 404 and allow_404:
            return None
        if response.status != 200:
            raise ProcessorError(f"{self.name}: GET {path} answered {response.status}")
        try:
            return json.loads(response.data)
        except ValueError:
            raise ProcessorError(f"{self.name}: GET {path} answered invalid JSON") from None

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.close()
