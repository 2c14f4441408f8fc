"""The payment domain the functions share: validation, routing, delivery, storage."""
