"""What a valid payment is: checked at intake, before anything is stored."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation

from payments.payment import Payment

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_FIELDS = frozenset({"correlationId", "amount"})
_MAX_DECIMALS = 2


class PaymentRejected(Exception):
    """A request that is not a valid payment; ``code`` is stable, ``detail`` is for people."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _no_constants(name: str) -> None:
    raise PaymentRejected("invalid_amount", f"{name} is not a number a payment can have")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constants)
"""Built once: ``json.loads`` with hooks builds a decoder per call."""


def parse_payment(body: bytes, max_amount: Decimal, accepted_at: float) -> Payment:
    """Parse and check a ``POST /payments`` body (UTF-8 JSON), without floats anywhere;
    ``accepted_at`` is now, in seconds since the epoch.

    Raises:
        PaymentRejected: the body is not JSON, not an object, misses or adds a field, or a
            field has the wrong type or value.
    """
    try:
        data = _DECODER.decode(body.decode("utf-8"))
    except PaymentRejected:
        raise
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise PaymentRejected("invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise PaymentRejected("invalid_body", "the body must be a JSON object")
    if data.keys() != _FIELDS:
        missing = sorted(_FIELDS - set(data))
        if missing:
            raise PaymentRejected("missing_field", f"'{missing[0]}' is required")
        extra = sorted(set(data) - _FIELDS)
        raise PaymentRejected("unknown_field", f"'{extra[0]}' is not a field of a payment")
    correlation_id = data["correlationId"]
    if not isinstance(correlation_id, str) or not _UUID.fullmatch(correlation_id):
        raise PaymentRejected("invalid_correlation_id", "'correlationId' must be a UUID string")
    amount = data["amount"]
    if not isinstance(amount, Decimal):
        raise PaymentRejected("invalid_amount", "'amount' must be a JSON number")
    try:
        exponent = amount.as_tuple().exponent
        if not amount.is_finite() or not isinstance(exponent, int):
            raise InvalidOperation
    except InvalidOperation:
        raise PaymentRejected("invalid_amount", "'amount' must be a finite number") from None
    if amount <= 0:
        raise PaymentRejected("invalid_amount", "'amount' must be greater than 0")
    if amount > max_amount:
        raise PaymentRejected("invalid_amount", f"'amount' may be at most {max_amount}")
    if exponent < -_MAX_DECIMALS and amount != amount.quantize(Decimal("0.01")):
        raise PaymentRejected("invalid_amount", "'amount' may have at most 2 decimal places")
    return Payment(correlation_id.lower(), amount.quantize(Decimal("0.01")), accepted_at)
