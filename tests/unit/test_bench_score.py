"""The contest's scoring rules as bench.score computes them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bench.score import (
    REFERENCE_P99_MS,
    ProcessorTotals,
    RunTotals,
    bonus_rate,
    ceiling,
    compute_score,
    fine_rate,
    round_p99_ms,
    totals_from_k6_summary,
)

FINAL_AMOUNT = Decimal("20.05")


def _totals(
    *,
    success: int,
    default: int,
    fallback: int,
    p99_ms: float | None = 2.55,
    inconsistencies: float = 0,
    amount: Decimal = FINAL_AMOUNT,
    fees: tuple[str, str] = ("0.07", "0.10"),
) -> RunTotals:
    return RunTotals(
        success=success,
        failure=0,
        default=ProcessorTotals(default, default * amount, Decimal(fees[0])),
        fallback=ProcessorTotals(fallback, fallback * amount, Decimal(fees[1])),
        p99_ms=p99_ms,
        inconsistencies=inconsistencies,
    )


@pytest.mark.parametrize(
    ("p99_ms", "expected"),
    [
        (2.55, "0.17"),  # 0.169: rounded to a whole percent
        (1.25, "0.20"),  # 0.195 rounds half up
        (0.0, "0.22"),
        (10.75, "0.01"),  # 0.005 rounds half up
        (10.76, "0.00"),
        (11.0, "0.00"),
        (14.15, "0.00"),  # negative: no bonus, never a malus
        (41.7, "0.00"),
    ],
)
def test_bonus_is_two_percent_per_ms_under_11_rounded_to_a_whole_percent(
    p99_ms: float, expected: str
) -> None:
    assert bonus_rate(p99_ms) == Decimal(expected)


def test_bonus_is_zero_without_any_expected_response() -> None:
    assert bonus_rate(None) == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(2.554999, "2.55"), (2.555, "2.56"), (1.0, "1.00"), (3.52704591999999, "3.53")],
)
def test_p99_is_rounded_half_up_to_a_hundredth_of_a_ms(raw: float, expected: str) -> None:
    assert round_p99_ms(raw) == Decimal(expected)


def test_bonus_uses_the_rounded_p99() -> None:
    # 10.7549 ms alone would earn 0.49% (rounds to 0%); rounded to 10.75 ms it earns 1%.
    assert bonus_rate(round_p99_ms(10.7549)) == Decimal("0.01")


def test_the_contest_winners_final_score_is_reproduced() -> None:
    score = compute_score(_totals(success=90_591, default=52_945, fallback=37_646))

    assert score.gross == Decimal("1816349.55")
    assert score.bonus_rate == Decimal("0.17")
    assert score.lag == 0
    assert score.score.quantize(Decimal("1")) == Decimal("1949876")


def test_any_inconsistency_costs_35_percent_of_net() -> None:
    clean = compute_score(_totals(success=100, default=100, fallback=0, p99_ms=11.0))
    one_off = compute_score(
        _totals(success=100, default=100, fallback=0, p99_ms=11.0, inconsistencies=1)
    )

    assert fine_rate(0) == 0
    assert fine_rate(1) == Decimal("0.35")
    assert one_off.fine == clean.net * Decimal("0.35")
    assert one_off.score == clean.net * Decimal("0.65")


def test_bonus_and_fine_both_apply_to_net() -> None:
    score = compute_score(
        _totals(success=10, default=10, fallback=0, p99_ms=1.0, inconsistencies=3)
    )

    assert score.net == Decimal("186.4650")  # 200.50 - 7%
    assert score.score == score.net * (1 + Decimal("0.20") - Decimal("0.35"))


def test_lag_counts_accepted_payments_the_processors_do_not_hold() -> None:
    score = compute_score(_totals(success=1000, default=900, fallback=95))

    assert score.lag == 5
    assert not score.disqualified


def test_a_negative_lag_disqualifies() -> None:
    score = compute_score(_totals(success=1000, default=900, fallback=101))

    assert score.lag == -1
    assert score.disqualified


def test_fees_are_each_processors_rate_times_its_amount() -> None:
    score = compute_score(_totals(success=2, default=1, fallback=1))

    assert score.fees == Decimal("20.05") * Decimal("0.07") + Decimal("20.05") * Decimal("0.10")


def test_ceiling_puts_every_accepted_payment_on_default_with_the_given_p99s_bonus() -> None:
    # 100 payments of 20.05 at 7%, bonus 20% at 1.25 ms.
    assert ceiling(100, FINAL_AMOUNT, Decimal("0.07"), 1.25) == Decimal("2237.5800")


def test_ceiling_of_the_final_run_at_the_contests_best_p99_is_about_2_03_million() -> None:
    top = ceiling(90_600, FINAL_AMOUNT, Decimal("0.07"), REFERENCE_P99_MS)

    assert Decimal("2020000") < top < Decimal("2040000")


def test_ceiling_without_a_p99_has_no_bonus() -> None:
    assert ceiling(10, Decimal("19.90"), Decimal("0.05"), None) == Decimal("189.0500")


def _summary(metrics: dict) -> dict:
    return {"metrics": metrics, "root_group": {}}


def test_totals_are_read_from_a_k6_summary_export() -> None:
    summary = _summary(
        {
            "transactions_success": {"count": 10, "rate": 1.0},
            "transactions_failure": {"count": 2, "rate": 0.2},
            "default_total_requests": {"count": 7, "rate": 0.1},
            "default_total_amount": {"count": 140.35, "rate": 0.1},
            "default_fee_per_transaction": {"count": 0.07, "rate": 0.1},
            "fallback_total_requests": {"count": 3, "rate": 0.1},
            "fallback_total_amount": {"count": 60.15, "rate": 0.1},
            "fallback_fee_per_transaction": {"count": 0.1, "rate": 0.1},
            "payments_inconsistency": {"count": 0, "rate": 0},
            "http_req_duration{expected_response:true}": {"p(99)": 2.554, "count": 12},
        }
    )

    totals = totals_from_k6_summary(summary)

    assert totals.success == 10
    assert totals.failure == 2
    assert totals.default == ProcessorTotals(7, Decimal("140.35"), Decimal("0.07"))
    assert totals.fallback == ProcessorTotals(3, Decimal("60.15"), Decimal("0.1"))
    assert totals.p99_ms == 2.554
    assert compute_score(totals).p99_ms == Decimal("2.55")


def test_counters_never_added_to_read_as_zero_and_a_missing_p99_as_none() -> None:
    totals = totals_from_k6_summary(_summary({"transactions_success": {"count": 3}}))

    assert totals.success == 3
    assert totals.default == ProcessorTotals(0, Decimal(0), Decimal(0))
    assert totals.p99_ms is None
    assert compute_score(totals).lag == 3


def test_score_json_has_plain_numbers_and_the_disqualified_flag() -> None:
    data = compute_score(_totals(success=1, default=1, fallback=0)).to_json()

    assert data["gross"] == 20.05
    assert data["bonus_rate"] == 0.17
    assert data["disqualified"] is False
