"""ISO-8601 UTC timestamps as the processors write them and the summary reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.isotime import BadTimestamp, epoch_us, format_epoch_ms, parse

# 2001-09-09 to 2100-01-01 in epoch milliseconds, 2**30 s (2004) and 2**31 s (2038) included:
# just past those, ms / 1000 * 1000 lands below ms, which float seconds would truncate.
payment_ms = st.integers(min_value=1_000_000_000_000, max_value=4_102_444_800_000)


def test_format_epoch_ms_writes_utc_with_milliseconds_and_a_z() -> None:
    assert format_epoch_ms(1752150896789) == "2025-07-10T12:34:56.789Z"


def test_format_epoch_ms_pads_milliseconds_to_three_digits() -> None:
    assert format_epoch_ms(0) == "1970-01-01T00:00:00.000Z"
    assert format_epoch_ms(1752150896007) == "2025-07-10T12:34:56.007Z"


def test_epoch_us_counts_whole_microseconds_without_float_rounding() -> None:
    moment = datetime(2025, 7, 10, 12, 34, 56, 789001, tzinfo=UTC)

    assert epoch_us(moment) == 1752150896789001
    assert epoch_us(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=1)) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-07-10T12:34:56.000Z", datetime(2025, 7, 10, 12, 34, 56, tzinfo=UTC)),
        ("2025-07-10T12:34:56.789Z", datetime(2025, 7, 10, 12, 34, 56, 789000, tzinfo=UTC)),
        ("2025-07-10T12:34:56Z", datetime(2025, 7, 10, 12, 34, 56, tzinfo=UTC)),
        ("2025-07-10T09:34:56-03:00", datetime(2025, 7, 10, 12, 34, 56, tzinfo=UTC)),
        ("2025-07-10T14:34:56.5+02:00", datetime(2025, 7, 10, 12, 34, 56, 500000, tzinfo=UTC)),
        ("2025-07-10T12:34:56", datetime(2025, 7, 10, 12, 34, 56, tzinfo=UTC)),
        ("2025-07-10", datetime(2025, 7, 10, tzinfo=UTC)),
        ("  2025-07-10T12:34:56Z\n", datetime(2025, 7, 10, 12, 34, 56, tzinfo=UTC)),
    ],
)
def test_parse_returns_an_aware_utc_datetime(text: str, expected: datetime) -> None:
    moment = parse(text)

    assert moment == expected
    assert moment.tzinfo is UTC


def test_parse_reads_an_offset_as_the_same_instant() -> None:
    brasilia = timezone(timedelta(hours=-3))

    assert parse("2025-07-10T09:34:56-03:00") == datetime(2025, 7, 10, 9, 34, 56, tzinfo=brasilia)


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2025-13-01T00:00:00Z", "2025-07-10T25:00:00Z", "1752150896", "Z"]
)
def test_parse_refuses_text_that_is_not_iso_8601(text: str) -> None:
    with pytest.raises(BadTimestamp, match="is not an ISO-8601 timestamp"):
        parse(text)


def test_parse_refuses_a_non_string() -> None:
    with pytest.raises(BadTimestamp):
        parse(None)  # type: ignore[arg-type]


def test_bad_timestamp_is_a_value_error() -> None:
    assert issubclass(BadTimestamp, ValueError)


@settings(database=None)
@given(ms=payment_ms)
def test_what_is_sent_and_what_is_stored_name_the_same_millisecond(ms: int) -> None:
    # The forwarder sends format_epoch_ms(ms) and stores ms * 1000 microseconds, or, after a
    # lookup, epoch_us of what the processor holds: all must agree, or the summary and the
    # processor's own summary would disagree at a window's edge.
    assert epoch_us(parse(format_epoch_ms(ms))) == ms * 1000


def test_format_epoch_ms_keeps_the_millisecond_where_float_seconds_lose_it() -> None:
    ms = 2_153_695_546_444  # 2038: ms / 1000 * 1000 is a hair below ms

    assert format_epoch_ms(ms) == "2038-04-01T00:45:46.444Z"
    assert int(ms / 1000 * 1000) == ms - 1  # why the forwarder keeps whole milliseconds
