"""Turn a run's score, floor and cgroup usage into the lines the benchmark prints; pure."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from bench.modes import Mode
from bench.score import Score

_MIB = 1024 * 1024


def money(value: Decimal) -> str:
    """Thousands separators and cents: ``1,949,876.35``."""
    return f"{value:,.2f}"


def percent(rate: Decimal | float) -> str:
    """A fraction as a percent without noise: ``0.17`` → ``17%``."""
    return f"{float(rate) * 100:.4g}%"


def ms(value: Decimal | float | None) -> str:
    return "n/a" if value is None else f"{float(value):.2f} ms"


def title(mode: Mode, max_requests: int, duration_scale: float) -> str:
    """What was run: the mode, its VU target, amount, fees and any time compression."""
    scaled = "" if duration_scale == 1 else f", timeline x{duration_scale:g}"
    return (
        f"{mode.name}: MAX_REQUESTS={max_requests}, amount {mode.amount}, "
        f"fees {percent(mode.default_fee)} / {percent(mode.fallback_fee)}{scaled}"
    )


def score_lines(
    score: Score,
    *,
    payments_p99_ms: float | None,
    floor_p99_ms: float | None,
    ceiling_value: Decimal,
    ceiling_p99_ms: float,
) -> list[str]:
    """The contest's figures for our run, then the ceiling and the floor ratio."""
    lines = [
        f"  payments        ok {score.success:,}   failed {score.failure:,}",
        f"  processed       default {score.default_requests:,}   "
        f"fallback {score.fallback_requests:,}   lag {score.lag:,}"
        + ("   DISQUALIFIED (lag < 0)" if score.disqualified else ""),
        f"  gross           {money(score.gross)}",
        f"  fees            {money(score.fees)}",
        f"  net             {money(score.net)}",
        f"  p99             {ms(score.p99_ms)}   bonus {percent(score.bonus_rate)}"
        f"   (POST /payments alone: {ms(payments_p99_ms)})",
        f"  inconsistencies {score.inconsistencies:g}   fine {percent(score.fine_rate)}"
        f" = {money(score.fine)}",
        f"  SCORE           {money(score.score)}",
    ]
    share = score.score / ceiling_value if ceiling_value else Decimal(0)
    source = "the floor's" if floor_p99_ms is not None else "the contest's best"
    lines.append(
        f"  ceiling         {money(ceiling_value)}   (all {score.success:,} accepted payments on "
        f"default, bonus at {source} p99 {ms(ceiling_p99_ms)})   ours: {percent(share)}"
    )
    if floor_p99_ms is not None and score.p99_ms is not None and floor_p99_ms > 0:
        ratio = float(score.p99_ms) / floor_p99_ms
        lines.append(f"  p99 vs floor    {ms(score.p99_ms)} / {ms(floor_p99_ms)} = {ratio:.2f}x")
    return lines


def usage_lines(
    usage: Mapping[str, Any], limits: Mapping[str, Any], payments: int | None = None
) -> list[str]:
    """One row per service: CPU seconds, throttled periods, peak memory, next to its limits.

    ``usage`` maps a service to an object with ``cpu_s``, ``throttled_periods``,
    ``throttled_s`` and ``memory_peak_bytes`` (``stack.cgroups.Usage``); ``limits`` maps it
    to one with ``cpus`` and ``memory_bytes`` (``stack.cgroups.Limits``). With the number of
    ``payments`` accepted, a last column gives each service's CPU per payment: the figure a
    change to the hot path moves, whatever the test's length.
    """
    if not usage:
        return ["  (no cgroup usage: the services ran without limits)"]
    header = (
        f"  {'service':<14}{'cpu s':>9}{'throttled':>11}{'thr. s':>8}"
        f"{'peak MiB':>10}{'limit cpus':>12}{'limit MiB':>11}"
    )
    if payments:
        header += f"{'µs/payment':>12}"
    rows = [header]
    for service, used in usage.items():
        limit = limits.get(service)
        row = (
            f"  {service:<14}{_num(used.cpu_s, '.1f'):>9}{_num(used.throttled_periods, 'd'):>11}"
            f"{_num(used.throttled_s, '.1f'):>8}{_mib(used.memory_peak_bytes):>10}"
            f"{_num(getattr(limit, 'cpus', None), 'g'):>12}"
            f"{_mib(getattr(limit, 'memory_bytes', None)):>11}"
        )
        if payments:
            per_payment = None if used.cpu_s is None else used.cpu_s * 1e6 / payments
            row += f"{_num(per_payment, '.0f'):>12}"
        rows.append(row)
    return rows


def _num(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / _MIB:.1f}"
