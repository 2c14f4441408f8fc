"""What a valid payment is: every rule of payments.validation, with the stable code it answers."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payments.payment import Payment
from payments.validation import PaymentRejected, parse_payment

MAX_AMOUNT = Decimal("1000000.00")
ACCEPTED_AT = 1752150896.25
UUID = "4A7901B8-7D26-4D9D-AA19-4DC1C7CF60B3"


def body(amount: str, correlation_id: str = UUID) -> bytes:
    """A body with ``amount`` spliced in as raw JSON text, so tokens like NaN can be sent."""
    return f'{{"correlationId": {json.dumps(correlation_id)}, "amount": {amount}}}'.encode()


def rejection(raw: bytes) -> tuple[str, str]:
    with pytest.raises(PaymentRejected) as caught:
        parse_payment(raw, MAX_AMOUNT, ACCEPTED_AT)
    assert str(caught.value) == caught.value.detail
    return caught.value.code, caught.value.detail


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("19.90", "19.90"),
        ("19.9", "19.90"),
        ("20", "20.00"),
        ("0.01", "0.01"),
        ("1E2", "100.00"),
        ("1e-2", "0.01"),
        ("10.500", "10.50"),  # trailing zeros are not extra precision
        ("1000000", "1000000.00"),
        ("1000000.00", "1000000.00"),
    ],
)
def test_valid_amount_is_kept_exactly_with_two_decimals(amount: str, expected: str) -> None:
    payment = parse_payment(body(amount), MAX_AMOUNT, ACCEPTED_AT)

    assert payment == Payment(UUID.lower(), Decimal(expected), ACCEPTED_AT)
    assert str(payment.amount) == expected


def test_correlation_id_is_lower_cased() -> None:
    assert parse_payment(body("1"), MAX_AMOUNT, ACCEPTED_AT).correlation_id == UUID.lower()


@pytest.mark.parametrize(
    ("amount", "detail"),
    [
        ("10.501", "'amount' may have at most 2 decimal places"),
        ("0.001", "'amount' may have at most 2 decimal places"),
        ("1e-999999999", "'amount' may have at most 2 decimal places"),
        ("0", "'amount' must be greater than 0"),
        ("0.00", "'amount' must be greater than 0"),
        ("-0", "'amount' must be greater than 0"),
        ("-10.00", "'amount' must be greater than 0"),
        ("1000000.01", "'amount' may be at most 1000000.00"),
        ("1e400", "'amount' may be at most 1000000.00"),
        ("9" * 5000, "'amount' may be at most 1000000.00"),
        ("NaN", "NaN is not a number a payment can have"),
        ("Infinity", "Infinity is not a number a payment can have"),
        ("-Infinity", "-Infinity is not a number a payment can have"),
        ('"10.00"', "'amount' must be a JSON number"),
        ("true", "'amount' must be a JSON number"),
        ("false", "'amount' must be a JSON number"),
        ("null", "'amount' must be a JSON number"),
        ("[10]", "'amount' must be a JSON number"),
        ('{"value": 10}', "'amount' must be a JSON number"),
    ],
)
def test_bad_amount_is_rejected_as_invalid_amount(amount: str, detail: str) -> None:
    assert rejection(body(amount)) == ("invalid_amount", detail)


@pytest.mark.parametrize(
    "correlation_id",
    [
        "not-a-uuid",
        "",
        "4a7901b87d264d9daa194dc1c7cf60b3",  # no dashes
        "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b",  # one digit short
        "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3a",
        "g a7901b8-7d26-4d9d-aa19-4dc1c7cf60b",
        "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3\n",  # would split the queue's record in two
        " 4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3",
    ],
)
def test_correlation_id_that_is_not_a_uuid_is_rejected(correlation_id: str) -> None:
    assert rejection(body("1", correlation_id)) == (
        "invalid_correlation_id",
        "'correlationId' must be a UUID string",
    )


@pytest.mark.parametrize("value", ["1", "null", "true", f'["{UUID}"]', f'{{"id": "{UUID}"}}'])
def test_correlation_id_that_is_not_a_string_is_rejected(value: str) -> None:
    raw = f'{{"correlationId": {value}, "amount": 1}}'.encode()

    assert rejection(raw)[0] == "invalid_correlation_id"


@pytest.mark.parametrize(
    ("raw", "code", "detail"),
    [
        (b"", "invalid_json", "the body is not valid JSON"),
        (b"{", "invalid_json", "the body is not valid JSON"),
        (b"{'amount': 1}", "invalid_json", "the body is not valid JSON"),
        (b"\xff\xfe\xff", "invalid_json", "the body is not valid JSON"),
        (b"[" * 100_000, "invalid_json", "the body is not valid JSON"),
        (b"[]", "invalid_body", "the body must be a JSON object"),
        (
            f'[{{"correlationId": "{UUID}", "amount": 1}}]'.encode(),
            "invalid_body",
            "the body must be a JSON object",
        ),
        (b'"payment"', "invalid_body", "the body must be a JSON object"),
        (b"10", "invalid_body", "the body must be a JSON object"),
        (b"{}", "missing_field", "'amount' is required"),
        (b'{"amount": 1}', "missing_field", "'correlationId' is required"),
        (f'{{"correlationId": "{UUID}"}}'.encode(), "missing_field", "'amount' is required"),
        (
            f'{{"correlationId": "{UUID}", "amount": 1, "currency": "BRL"}}'.encode(),
            "unknown_field",
            "'currency' is not a field of a payment",
        ),
    ],
)
def test_malformed_body_is_rejected_with_a_stable_code(raw: bytes, code: str, detail: str) -> None:
    assert rejection(raw) == (code, detail)


def test_a_lower_max_amount_is_enforced() -> None:
    with pytest.raises(PaymentRejected, match="at most 50"):
        parse_payment(body("50.01"), Decimal("50"), ACCEPTED_AT)
    assert parse_payment(body("50"), Decimal("50"), ACCEPTED_AT).amount == Decimal("50.00")


# Every amount a payment may have: 0.01 to MAX_AMOUNT in whole cents.
cents = st.integers(min_value=1, max_value=int(MAX_AMOUNT * 100))


@settings(database=None)  # keep no example database in the work tree
@given(cents=cents, style=st.sampled_from(["{:.2f}", "{:.3f}", "{}E-2", "{:f}"]))
def test_any_accepted_amount_round_trips_exactly(cents: int, style: str) -> None:
    exact = Decimal(cents) / 100
    text = style.format(cents) if style == "{}E-2" else style.format(exact)

    payment = parse_payment(body(text), MAX_AMOUNT, ACCEPTED_AT)

    assert payment.amount == exact
    assert payment.amount == Decimal(text)
    assert str(payment.amount) == f"{exact:.2f}"  # always two decimals, never an exponent


@settings(database=None)  # keep no example database in the work tree
@given(
    cents=st.integers(min_value=0, max_value=int(MAX_AMOUNT * 100) - 1),
    extra=st.integers(min_value=1, max_value=9),
)
def test_any_amount_with_a_third_significant_decimal_is_rejected(cents: int, extra: int) -> None:
    text = f"{Decimal(cents) / 100:.2f}{extra}"

    assert rejection(body(text)) == (
        "invalid_amount",
        "'amount' may have at most 2 decimal places",
    )


@settings(database=None)  # keep no example database in the work tree
@given(
    amount=st.decimals(allow_nan=False, allow_infinity=False, places=None),
)
def test_whatever_number_is_sent_the_result_is_a_rejection_or_an_exact_payment(
    amount: Decimal,
) -> None:
    text = f"{amount:f}" if amount.is_finite() else str(amount)
    try:
        payment = parse_payment(body(text), MAX_AMOUNT, ACCEPTED_AT)
    except PaymentRejected as exc:
        assert exc.code == "invalid_amount"
        return
    assert payment.amount == amount
    assert Decimal("0.01") <= payment.amount <= MAX_AMOUNT


@settings(database=None)
@given(amount=st.decimals(min_value=Decimal("0.01"), max_value=MAX_AMOUNT, places=2))
def test_an_accepted_payment_survives_its_queue_record_unchanged(amount: Decimal) -> None:
    # Intake writes the record with Payment.encode and the forwarder reads it with
    # Payment.decode: one type owns both directions.
    payment = parse_payment(body(str(amount)), MAX_AMOUNT, ACCEPTED_AT)

    assert Payment.decode(payment.encode()) == payment


@pytest.mark.parametrize(
    "record",
    [b"", b"{}", b'{"id":"x","amount":"ten","t":1}', b'{"id":"x","amount":"1.00"}', b"[]"],
)
def test_a_record_encode_did_not_write_is_refused_by_decode(record: bytes) -> None:
    with pytest.raises(ValueError):
        Payment.decode(record)
