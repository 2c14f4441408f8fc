"""Security through Nginx: the purge guard, and secrets that never leak.

The backend here logs in to PostgreSQL over TCP with a real, distinctive password (the
session's role gets it for this module and its own back afterwards): the fixture's default
password is ``rinha``, the same text as the role and database names, so searching logs for it
would prove nothing. A leak check can then search for the password and the purge token
literally in the logs, ``/metrics`` and every error body.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from emulator.processors import Processors
from stack.memcached import MemcachedServer
from stack.postgres import PostgresServer, ensure_role_and_database
from tests.support.backend import Backend, running_backend, settle
from tests.support.services import reachable_tmp_dir

pytestmark = pytest.mark.integration

_PURGE_TOKEN = f"purge-token-{uuid.uuid4().hex}"
_PG_PASSWORD = f"pg-secret-{uuid.uuid4().hex}"
_ERROR_KEYS = {"error", "detail"}


@pytest.fixture(autouse=True)
def clean_processors(emulators: Processors) -> Iterator[None]:
    """Leave the session's processors empty: other modules expect to start from nothing."""
    yield
    emulators.reset()


@pytest.fixture(scope="module")
def secret_postgres(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """The session's PostgreSQL with the role's password set to a distinctive secret."""
    secret = dataclasses.replace(postgres, password=_PG_PASSWORD)
    ensure_role_and_database(secret)
    try:
        yield secret
    finally:
        ensure_role_and_database(postgres)  # the other modules' password again


@pytest.fixture(scope="module")
def guarded(
    secret_postgres: PostgresServer, memcached: MemcachedServer, emulators: Processors
) -> Iterator[Backend]:
    """A backend whose purge needs ``X-Purge-Token`` and whose database needs the password."""
    env = {
        **secret_postgres.env(tcp=True),
        "APP__PURGE__TOKEN": _PURGE_TOKEN,
        "APP__MEMCACHED__KEY_PREFIX": f"s{uuid.uuid4().hex[:8]}:",
    }
    with _backend("rinha-guarded-", secret_postgres, memcached, emulators, env) as backend:
        yield backend


@pytest.fixture
def disabled(
    postgres: PostgresServer, memcached: MemcachedServer, emulators: Processors
) -> Iterator[Backend]:
    """A backend with purge switched off (and a token set, which must not matter)."""
    env = {
        "APP__PURGE__ENABLED": "false",
        "APP__PURGE__TOKEN": _PURGE_TOKEN,
        "APP__MEMCACHED__KEY_PREFIX": f"d{uuid.uuid4().hex[:8]}:",
    }
    with _backend("rinha-disabled-", postgres, memcached, emulators, env) as backend:
        yield backend


class _backend:
    """``running_backend`` in a reachable folder that is removed afterwards."""

    def __init__(
        self,
        prefix: str,
        postgres: PostgresServer,
        memcached: MemcachedServer,
        emulators: Processors,
        env: dict[str, str],
    ) -> None:
        self._dir = reachable_tmp_dir(prefix)
        self._running = running_backend(self._dir, postgres, memcached, emulators, env=env)

    def __enter__(self) -> Backend:
        return self._running.__enter__()

    def __exit__(self, *exc: object) -> None:
        try:
            self._running.__exit__(*exc)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)


def _assert_error(status: int, body: Any, expected: int) -> None:
    assert status == expected, (status, body)
    assert isinstance(body, dict) and set(body) == _ERROR_KEYS, body


def _recorded(backend: Backend) -> int:
    return sum(part["totalRequests"] for part in backend.summary().values())


def _one_recorded_payment(backend: Backend, emulators: Processors) -> None:
    """Purge with the token, then store one payment: something a purge would remove."""
    emulators.reset()
    status, body, _ = backend.request(
        "POST", "/purge-payments", headers={"X-Purge-Token": _PURGE_TOKEN}
    )
    assert status == 200, (status, body)
    backend.pay()
    settle(lambda: _recorded(backend) == 1, timeout_s=20, what="the payment recorded")


def test_purge_without_a_token_is_refused_with_401_json_and_purges_nothing(
    guarded: Backend, emulators: Processors
) -> None:
    """Purge wipes the store: without the token it must be refused and change nothing."""
    _one_recorded_payment(guarded, emulators)
    status, body, _ = guarded.request("POST", "/purge-payments")
    _assert_error(status, body, 401)
    assert _recorded(guarded) == 1


@pytest.mark.parametrize(
    "token",
    ["", "wrong", _PURGE_TOKEN[:-1], _PURGE_TOKEN + "x", _PURGE_TOKEN.upper(), _PURGE_TOKEN + " x"],
    ids=["empty", "wrong", "prefix", "longer", "upper", "with-suffix"],
)
def test_purge_with_a_wrong_token_is_refused_with_401_json_and_purges_nothing(
    guarded: Backend, emulators: Processors, token: str
) -> None:
    """Near misses (prefix, longer, other case) are the tokens a sloppy compare would take."""
    _one_recorded_payment(guarded, emulators)
    status, body, _ = guarded.request("POST", "/purge-payments", headers={"X-Purge-Token": token})
    _assert_error(status, body, 401)
    assert _recorded(guarded) == 1


def test_purge_with_the_right_token_answers_200_and_empties_the_store(
    guarded: Backend, emulators: Processors
) -> None:
    """The guard must not lock out the harness: the right token purges."""
    _one_recorded_payment(guarded, emulators)
    status, body, _ = guarded.request(
        "POST", "/purge-payments", headers={"X-Purge-Token": _PURGE_TOKEN}
    )
    assert status == 200, (status, body)
    assert _recorded(guarded) == 0


def test_purge_switched_off_answers_404_json_as_if_the_route_did_not_exist(
    disabled: Backend, emulators: Processors
) -> None:
    """Switched off means off, token or not; the harness tolerates the 404."""
    emulators.reset()
    disabled.pay()
    settle(lambda: _recorded(disabled) == 1, timeout_s=20, what="the payment recorded")
    for headers in ({}, {"X-Purge-Token": _PURGE_TOKEN}):
        status, body, _ = disabled.request("POST", "/purge-payments", headers=headers)
        _assert_error(status, body, 404)
    assert _recorded(disabled) == 1
    emulators.reset()


def test_neither_logs_nor_metrics_nor_error_bodies_contain_the_password_or_the_token(
    guarded: Backend, emulators: Processors
) -> None:
    """Secrets go in through the environment and must come out nowhere an operator looks."""
    _one_recorded_payment(guarded, emulators)  # the database really took the password
    bodies: list[str] = []
    bad_requests: list[tuple[str, str, bytes | None, dict[str, str]]] = [
        ("POST", "/purge-payments", None, {}),
        ("POST", "/purge-payments", None, {"X-Purge-Token": _PURGE_TOKEN + "x"}),
        ("POST", "/payments", b"{", {}),
        ("POST", "/payments", b'{"correlationId":"x","amount":1}', {}),
        ("POST", "/payments", b"{}", {"Content-Type": "text/plain"}),
        ("GET", "/payments-summary?from=" + _PURGE_TOKEN, None, {}),
        ("GET", "/payments-summary?from=" + _PG_PASSWORD, None, {}),
        ("GET", "/" + _PG_PASSWORD, None, {}),
        ("DELETE", "/purge-payments", None, {"X-Purge-Token": _PURGE_TOKEN}),
    ]
    for method, path, body, headers in bad_requests:
        status, answer, _ = guarded.request(method, path, body, headers)
        assert 400 <= status < 500, (method, path, status, answer)
        bodies.append(json.dumps(answer))
    status, metrics, _ = guarded.request("GET", "/metrics")
    assert status == 200 and isinstance(metrics, str) and "# TYPE" in metrics
    time.sleep(0.2)  # let the instances flush what they logged about these requests
    places = {
        "app1 log": guarded.log_text("app1"),
        "app2 log": guarded.log_text("app2"),
        "/metrics": metrics,
        "error bodies": "\n".join(bodies),
    }
    assert places["app1 log"] and places["app2 log"], "the instances logged nothing to search"
    for secret in (_PG_PASSWORD, _PURGE_TOKEN):
        leaked = [where for where, text in places.items() if secret in text]
        assert leaked == [], f"a secret appears in {leaked}"
