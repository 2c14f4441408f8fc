"""The payments bundle's own config: the processors, how payments reach them, and the limits.

``functions.yaml`` names ``PaymentsConfig`` as the bundle's schema, so these sections sit in
``config/app.yaml`` beside the runtime's and are set from the environment the same way
(``APP__PROCESSORS__DEFAULT__FEE=0.07``); the contest's ``PAYMENT_PROCESSOR_URL_DEFAULT`` and
``_FALLBACK`` set the URLs (``config.env`` in ``functions.yaml``). ``runtime.schema`` checks
every value at start and names the dotted key of any mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated

from payments.http_client import http_origin
from runtime.schema import Above, AtLeast, Check, Invalid, Range, Secret

MAX_STORABLE_AMOUNT = Decimal("1000000000000")
"""Below the payments table's numeric(14, 2)."""
REQUIRED_PROCESSORS = ("default", "fallback")


def _is_http_url(url: str) -> bool:
    try:
        http_origin(url)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ProcessorConfig:
    """One payment processor: where it is and what it charges (a fraction, 0.05 = 5%)."""

    url: Annotated[
        str,
        Check(
            _is_http_url,
            "an http:// URL such as http://payment-processor-default:8080 (the forwarder's "
            "client speaks plain HTTP/1.1)",
        ),
    ]
    fee: Annotated[float, Range(0, 0.99, why="a fraction: 0.05 is 5%")]


def _default_processors() -> dict[str, ProcessorConfig]:
    return {
        "default": ProcessorConfig(url="http://127.0.0.1:8001", fee=0.05),
        "fallback": ProcessorConfig(url="http://127.0.0.1:8002", fee=0.15),
    }


@dataclass(frozen=True)
class ForwarderConfig:
    """How payments are sent to the processors."""

    connect_timeout_s: Annotated[float, Above(0)] = 1.0
    request_timeout_s: Annotated[float, Above(0)] = 8.0
    """Past this an attempt is uncertain and is settled with ``GET /payments/{id}``."""
    retry_initial_ms: Annotated[int, Above(0)] = 20
    retry_max_ms: Annotated[int, Above(0)] = 1000
    unpin_after_s: Annotated[float, Above(0)] = 60.0
    """An uncertain attempt may only go elsewhere once the processor has answered 404 for it
    this long after the attempt was sent. Processors store a timed-out payment after their
    delay, so this must exceed the longest delay a processor may apply (the contest's is 5 s):
    shorter, and a payment can be charged twice."""

    def validate(self) -> None:
        if self.retry_initial_ms > self.retry_max_ms:
            raise Invalid("retry_initial_ms", "at most forwarder.retry_max_ms")
        if self.unpin_after_s < 2 * self.request_timeout_s:
            raise Invalid("unpin_after_s", "at least twice forwarder.request_timeout_s")


@dataclass(frozen=True)
class BreakerConfig:
    """The circuit breaker per processor, shared through Memcached."""

    failure_threshold: Annotated[int, AtLeast(1)] = 5
    open_s: Annotated[float, Above(0)] = 30.0
    failure_window_s: Annotated[float, Above(0)] = 10.0


@dataclass(frozen=True)
class RouterConfig:
    """How a payment's processor is chosen."""

    slow_ms: Annotated[float, Above(0)] = 1500.0
    """A processor answering slower than this is avoided while the other one is usable."""
    max_wait_s: Annotated[float, AtLeast(0)] = 0.0
    """How long a payment may wait for the cheaper processor before it may take the dearer one."""
    health_min_interval_s: Annotated[
        float, AtLeast(5, why="the processors allow one call per 5 s")
    ] = 5.1
    """Spacing between two reads of one processor's service-health (its limit is 1 per 5 s)."""
    state_cache_ms: Annotated[float, AtLeast(0)] = 100.0
    """How long a worker reuses health and breaker state read from Memcached."""


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on what a payment may be."""

    max_amount: Annotated[
        Decimal, Above(0, below=MAX_STORABLE_AMOUNT, why="the payments table's numeric(14, 2)")
    ] = Decimal("1000000.00")


@dataclass(frozen=True)
class PurgeConfig:
    """``POST /purge-payments``: off, open, or guarded by a token in ``X-Purge-Token``."""

    enabled: bool = True
    token: Annotated[str, Secret()] = ""


@dataclass(frozen=True)
class PaymentsConfig:
    """Every section the payment functions share."""

    processors: dict[str, ProcessorConfig] = field(default_factory=_default_processors)
    forwarder: ForwarderConfig = field(default_factory=ForwarderConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    purge: PurgeConfig = field(default_factory=PurgeConfig)

    def validate(self) -> None:
        for name in REQUIRED_PROCESSORS:
            if name not in self.processors:
                raise Invalid(f"processors.{name}", "a processor here (url and fee)")

    @property
    def fees(self) -> dict[str, float]:
        """Processor name -> its fee."""
        return {name: processor.fee for name, processor in self.processors.items()}
