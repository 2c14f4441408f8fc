"""Payments end to end through Nginx, two runtime instances and the processor emulators.

Each test ends with the strict audit: every accepted id is held by exactly one processor, and
our summary equals the processors' totals.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.audit import Auditor, check_each, totals_equal
from emulator.processors import Processors
from stack.memcached import MemcachedServer
from stack.postgres import PostgresServer
from tests.support.backend import (
    Backend,
    kill_child,
    running_backend,
    settle,
    wait_restarted,
)

pytestmark = pytest.mark.integration

BackendFactory = Callable[..., AbstractContextManager[Backend]]


@pytest.fixture
def make_backend(
    reachable_tmp_path: Path,
    postgres: PostgresServer,
    memcached: MemcachedServer,
    emulators: Processors,
) -> Iterator[BackendFactory]:
    """Start a backend with extra env; a fresh Memcached prefix keeps tests' breakers apart."""
    emulators.reset()

    def factory(**env: str) -> AbstractContextManager[Backend]:
        merged = {"APP__MEMCACHED__KEY_PREFIX": f"t{uuid.uuid4().hex[:8]}:", **env}
        return running_backend(reachable_tmp_path, postgres, memcached, emulators, env=merged)

    yield factory
    emulators.reset()


def _purged(backend: Backend) -> Backend:
    status, _, _ = backend.request("POST", "/purge-payments")
    assert status == 200
    return backend


def _recorded(backend: Backend) -> int:
    summary = backend.summary()
    return summary["default"]["totalRequests"] + summary["fallback"]["totalRequests"]


def _assert_exactly_once(backend: Backend, ids: list[str], emulators: Processors):
    settle(lambda: _recorded(backend) >= len(ids), what=f"{len(ids)} payments recorded")
    holdings = check_each(ids, emulators)
    assert holdings.lost == []
    assert holdings.duplicated == []
    equal, sides = totals_equal(backend.url, emulators)
    assert equal, sides
    assert _recorded(backend) == len(ids)
    return holdings


def test_payments_go_to_the_default_processor_once_each_while_it_is_healthy(
    make_backend: BackendFactory, emulators: Processors
) -> None:
    with make_backend() as backend:
        ids = [_purged(backend).pay() for _ in range(1)] + [backend.pay() for _ in range(199)]
        holdings = _assert_exactly_once(backend, ids, emulators)
    assert (holdings.default, holdings.fallback) == (200, 0)


def test_payments_go_to_the_fallback_while_the_default_fails(
    make_backend: BackendFactory, emulators: Processors
) -> None:
    emulators.default.set_failure(True)
    with make_backend() as backend:
        _purged(backend)
        ids = [backend.pay() for _ in range(100)]
        holdings = _assert_exactly_once(backend, ids, emulators)
    assert (holdings.default, holdings.fallback) == (0, 100)


def test_payments_wait_while_both_fail_and_go_out_when_one_recovers(
    make_backend: BackendFactory, emulators: Processors
) -> None:
    emulators.default.set_failure(True)
    emulators.fallback.set_failure(True)
    with make_backend() as backend:
        _purged(backend)
        ids = [backend.pay() for _ in range(50)]
        # While both fail, the payments must wait rather than be dropped or recorded.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert _recorded(backend) == 0
            assert emulators.default.summary()["totalRequests"] == 0
            time.sleep(0.2)
        emulators.default.set_failure(False)
        holdings = _assert_exactly_once(backend, ids, emulators)
    assert holdings.default == 50


def test_an_attempt_that_timed_out_and_was_stored_late_is_charged_once(
    make_backend: BackendFactory, emulators: Processors
) -> None:
    # Our client gives up after 0.3 s; the default stores each payment after 1 s anyway.
    # Unpinning is allowed after 3 s of absence, longer than the processor's delay, as the
    # config requires (an unpin shorter than the delay would charge twice, by definition).
    emulators.default.set_delay(1000)
    env = {
        "APP__FORWARDER__REQUEST_TIMEOUT_S": "0.3",
        "APP__FORWARDER__UNPIN_AFTER_S": "3",
        "APP__ROUTER__SLOW_MS": "5000",
    }
    with make_backend(**env) as backend:
        _purged(backend)
        ids = [backend.pay() for _ in range(40)]
        _assert_exactly_once(backend, ids, emulators)
        _, metrics, _ = backend.request("GET", "/metrics")
    uncertain = _sample(metrics, "payment_requests_total", status="uncertain")
    assert uncertain >= 40, "the scenario must really have timed attempts out"


def test_a_forwarder_killed_mid_flight_loses_nothing_and_charges_nothing_twice(
    make_backend: BackendFactory, emulators: Processors
) -> None:
    emulators.default.set_delay(300)
    with make_backend() as backend:
        _purged(backend)
        ids = [backend.pay() for _ in range(150)]
        old = {name: kill_child(backend, name, "forwarder-0") for name in ("app1", "app2")}
        for name, pid in old.items():
            wait_restarted(backend, name, "forwarder-0", pid)
        ids += [backend.pay() for _ in range(50)]
        _assert_exactly_once(backend, ids, emulators)


def test_an_http_instance_killed_with_sigkill_comes_back_while_nginx_keeps_serving(
    make_backend: BackendFactory, emulators: Processors
) -> None:
    with make_backend() as backend:
        _purged(backend)
        old_pid = kill_child(backend, "app1", "http")
        ids = [backend.pay() for _ in range(100)]  # every one must be accepted meanwhile
        wait_restarted(backend, "app1", "http", old_pid)
        seen = set()
        settle(
            lambda: seen.add(backend.request("GET", "/health")[1]["instance"]) or len(seen) == 2,
            what="both instances answering /health",
        )
        _assert_exactly_once(backend, ids, emulators)


def test_window_summaries_agree_with_the_processors_while_they_change_state(
    make_backend: BackendFactory, emulators: Processors
) -> None:
    stages = [  # (seconds, default delay ms, default failing, fallback delay ms, fallback failing)
        (3, 0, False, 0, False),
        (3, 200, False, 0, False),
        (3, 500, True, 100, False),
        (3, 0, False, 5, True),
        (3, 50, False, 0, False),
    ]
    with make_backend() as backend:
        _purged(backend)
        auditor = Auditor(backend.url, emulators, interval_s=1.0, window_s=6.0, margin_s=2.0)
        ids: list[str] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                ids.append(backend.pay())
                time.sleep(0.01)

        sender = threading.Thread(target=load, daemon=True)
        sender.start()
        auditor.start()
        try:
            for seconds, d_delay, d_fail, f_delay, f_fail in stages:
                emulators.default.set_delay(d_delay)
                emulators.default.set_failure(d_fail)
                emulators.fallback.set_delay(f_delay)
                emulators.fallback.set_failure(f_fail)
                time.sleep(seconds)
        finally:
            stop.set()
            sender.join(timeout=10)
            for processor in emulators:
                processor.set_delay(0)
                processor.set_failure(False)
        _assert_exactly_once(backend, ids, emulators)
        time.sleep(3.0)  # let the last windows close, then audit them too
        auditor.stop()
    assert auditor.errors == []
    assert len(auditor.comparisons) >= 10
    assert auditor.mismatches == []


def test_bad_input_is_refused_with_json_and_nothing_reaches_a_processor(
    make_backend: BackendFactory, emulators: Processors
) -> None:
    good_id = str(uuid.uuid4())
    bad_bodies = [
        b"not json",
        b"[]",
        b'{"amount": 10}',
        f'{{"correlationId": "{good_id}"}}'.encode(),
        f'{{"correlationId": "{good_id}", "amount": "10"}}'.encode(),
        f'{{"correlationId": "{good_id}", "amount": -1}}'.encode(),
        f'{{"correlationId": "{good_id}", "amount": 0}}'.encode(),
        f'{{"correlationId": "{good_id}", "amount": 1.001}}'.encode(),
        f'{{"correlationId": "{good_id}", "amount": NaN}}'.encode(),
        f'{{"correlationId": "{good_id}", "amount": 1, "extra": 1}}'.encode(),
        b'{"correlationId": "not-a-uuid", "amount": 1}',
        b"x" * 10_000,
    ]
    with make_backend() as backend:
        _purged(backend)
        for body in bad_bodies:
            status, answer, _ = backend.request("POST", "/payments", body)
            assert 400 <= status < 500, (body[:60], status)
            if status != 413:  # Nginx refuses oversized bodies itself, with its own page
                assert set(answer) == {"error", "detail"}, answer
        status, answer, _ = backend.request("GET", "/payments-summary?from=yesterday")
        assert status == 400 and answer["error"] == "invalid_date"
        status, _, headers = backend.request("DELETE", "/payments")
        assert status == 405 and "POST" in headers.get("Allow", headers.get("allow", ""))
        time.sleep(0.5)  # anything wrongly queued would be forwarded within this time
        assert _recorded(backend) == 0
    assert emulators.default.summary()["totalRequests"] == 0
    assert emulators.fallback.summary()["totalRequests"] == 0


def test_metrics_parse_and_add_up_both_instances(
    make_backend: BackendFactory, emulators: Processors
) -> None:
    with make_backend() as backend:
        _purged(backend)
        ids = [backend.pay() for _ in range(60)]
        _assert_exactly_once(backend, ids, emulators)

        def stored_attempts() -> float:  # attempt figures are flushed every 0.5 s
            return _sample(
                backend.request("GET", "/metrics")[1], "payment_requests_total", status="stored"
            )

        def accepted() -> float:  # intake's count is written about once a second
            return _sample(backend.request("GET", "/metrics")[1], "payments_accepted_total")

        settle(lambda: stored_attempts() >= 60, timeout_s=10, what="attempt metrics flushed")
        settle(lambda: accepted() >= 60, timeout_s=10, what="intake's count flushed")
        _, text, _ = backend.request("GET", "/metrics")
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "payment_requests",
        "payment_duration_seconds",
        "active_connections",
        "health_check_failures",
    } <= families
    assert _sample(text, "payments_accepted_total") == 60
    assert _sample(text, "payment_requests_total", status="stored") == 60


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
