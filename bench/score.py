"""The contest's score, computed from a k6 run's totals; pure, no IO.

The contest's k6 ``handleSummary`` computes the score in JavaScript with big.js. These
functions follow it step for step so a local run prints the number the contest would have
printed: the p99 is rounded half-up to 0.01 ms, the bonus ``(11 - p99) * 0.02`` is computed
in binary floating point (as JavaScript does) and then rounded half-up to a whole percent,
and the money is exact decimal arithmetic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

_CENT = Decimal("0.01")
_BONUS_ZERO_AT_MS = 11.0
_BONUS_PER_MS = 0.02
_FINE_RATE = Decimal("0.35")
# The best p99 seen in the contest; the ceiling falls back to it when no floor was measured.
REFERENCE_P99_MS = 1.25


def _decimal(value: float | int | str | Decimal) -> Decimal:
    """Convert without binary noise: ``repr`` of a float is its shortest round-trip form.

    big.js builds a ``Big`` from a JavaScript number through the same shortest form, so
    ``Decimal(repr(x))`` matches what the contest computed.
    """
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def round_p99_ms(p99_ms: float | None) -> Decimal | None:
    """Round the raw p99 half-up to 0.01 ms, as ``Big(p99).round(2)`` does."""
    if p99_ms is None:
        return None
    return _decimal(p99_ms).quantize(_CENT, rounding=ROUND_HALF_UP)


def bonus_rate(p99_ms: float | Decimal | None) -> Decimal:
    """Return the p99 bonus as a fraction, rounded to a whole percent, never negative.

    The contest computes ``(11 - p99) * 0.02`` as a JavaScript number, so the product is
    taken in float here too before the half-up rounding to two decimals. Without an
    expected response there is no p99 and no bonus.
    """
    if p99_ms is None:
        return Decimal(0)
    raw = (_BONUS_ZERO_AT_MS - float(p99_ms)) * _BONUS_PER_MS
    return max(_decimal(raw).quantize(_CENT, rounding=ROUND_HALF_UP), Decimal(0))


def fine_rate(inconsistencies: float) -> Decimal:
    """Return 35% when the consistency checks found any difference at all, else 0."""
    return _FINE_RATE if inconsistencies > 0 else Decimal(0)


@dataclass(frozen=True)
class ProcessorTotals:
    """What one processor was credited with, as the teardown read it."""

    requests: int
    amount: Decimal
    fee_rate: Decimal

    @property
    def fee(self) -> Decimal:
        """Fee charged: the processor's ``feePerTransaction`` times the amount."""
        return self.fee_rate * self.amount


@dataclass(frozen=True)
class RunTotals:
    """The figures a k6 run produces, which are all the score depends on."""

    success: int
    failure: int
    default: ProcessorTotals
    fallback: ProcessorTotals
    p99_ms: float | None
    inconsistencies: float


@dataclass(frozen=True)
class Score:
    """The contest's result for one run, plus the bonus and fine rates behind it."""

    success: int
    failure: int
    gross: Decimal
    fees: Decimal
    net: Decimal
    p99_ms: Decimal | None
    bonus_rate: Decimal
    inconsistencies: float
    fine_rate: Decimal
    fine: Decimal
    lag: int
    score: Decimal
    default_requests: int
    fallback_requests: int

    @property
    def disqualified(self) -> bool:
        """A negative lag means a payment was charged that no client saw accepted."""
        return self.lag < 0

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict: decimals as numbers with cents, rates as fractions."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Decimal):
                data[key] = float(value)
        data["disqualified"] = self.disqualified
        return data


def compute_score(totals: RunTotals) -> Score:
    """Compute the contest's score: ``net + net * bonus - net * fine``."""
    gross = totals.default.amount + totals.fallback.amount
    fees = totals.default.fee + totals.fallback.fee
    net = gross - fees
    p99 = round_p99_ms(totals.p99_ms)
    bonus = bonus_rate(p99)
    fine = fine_rate(totals.inconsistencies)
    return Score(
        success=totals.success,
        failure=totals.failure,
        gross=gross,
        fees=fees,
        net=net,
        p99_ms=p99,
        bonus_rate=bonus,
        inconsistencies=totals.inconsistencies,
        fine_rate=fine,
        fine=net * fine,
        lag=totals.success - (totals.default.requests + totals.fallback.requests),
        score=net + net * bonus - net * fine,
        default_requests=totals.default.requests,
        fallback_requests=totals.fallback.requests,
    )


def ceiling(
    success: int, amount: Decimal, default_fee_rate: Decimal, p99_ms: float | None
) -> Decimal:
    """Return the best score this run allowed: every accepted payment on default.

    The bonus is the one the given p99 earns (the floor's, measured on the same machine),
    so the ceiling says what was left on the table by routing, lag, fines and latency.
    """
    net = success * amount * (1 - default_fee_rate)
    return net * (1 + bonus_rate(round_p99_ms(p99_ms)))


def totals_from_k6_summary(
    summary: dict[str, Any], *, p99_metric: str = "http_req_duration{expected_response:true}"
) -> RunTotals:
    """Read the totals from k6's ``--summary-export`` JSON written by our scripts.

    Counters that were never added to are absent from the export, so they read as 0.
    """
    metrics: dict[str, dict[str, Any]] = summary.get("metrics", {})

    def count(name: str) -> float:
        return metrics.get(name, {}).get("count", 0)

    def processor(name: str) -> ProcessorTotals:
        amount = _decimal(count(f"{name}_total_amount"))
        rate = _decimal(count(f"{name}_fee_per_transaction"))
        if not rate and amount and count(f"{name}_total_fee"):
            # The contest's own scripts export the fee charged, not the rate.
            rate = (_decimal(count(f"{name}_total_fee")) / amount).quantize(Decimal("0.0001"))
        return ProcessorTotals(
            requests=int(count(f"{name}_total_requests")), amount=amount, fee_rate=rate
        )

    p99 = metrics.get(p99_metric, {}).get("p(99)")
    return RunTotals(
        success=int(count("transactions_success")),
        failure=int(count("transactions_failure")),
        default=processor("default"),
        fallback=processor("fallback"),
        p99_ms=None if p99 is None else float(p99),
        inconsistencies=count("payments_inconsistency"),
    )
