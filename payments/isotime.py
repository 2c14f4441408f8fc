"""ISO-8601 UTC timestamps as the processors write and read them."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class BadTimestamp(ValueError):
    """Text that is not an ISO-8601 timestamp."""


def format_epoch_ms(epoch_ms: int) -> str:
    """``2025-07-10T12:34:56.789Z`` (UTC, as the processors store it) for a whole number of
    milliseconds since the epoch, with no float in between."""
    second, millis = divmod(epoch_ms, 1000)
    return f"{_second_text(second)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4)
def _second_text(epoch_second: int) -> str:
    """The forwarder stamps hundreds of payments a second: one strftime a second does."""
    return datetime.fromtimestamp(epoch_second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def epoch_us(moment: datetime) -> int:
    """Whole microseconds since the epoch of an aware datetime (no float rounding)."""
    return (moment - _EPOCH) // _MICROSECOND


def parse(text: str) -> datetime:
    """An aware UTC datetime from ISO-8601 text; a time without offset is taken as UTC.

    Raises:
        BadTimestamp: ``text`` is not ISO-8601.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise BadTimestamp(f"{text!r} is not an ISO-8601 timestamp") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
