"""``runtime.testing``: a bundle's functions driven in-process the way the runtime drives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from runtime import testing
from runtime.deps import FunctionContext
from runtime.manifest import FunctionSpec, Manifest, QueueSpec
from runtime.workers import Message

ROOT = Path(__file__).resolve().parents[2]
VALID = ROOT / "tests" / "bundles" / "valid" / "functions.yaml"


def test_create_app_serves_the_bundles_http_functions_with_their_typed_settings(
    config_data: dict[str, Any],
) -> None:
    bundle = testing.bundle(VALID, config=config_data)
    client = falcon.testing.TestClient(testing.create_app(bundle))

    assert client.simulate_get("/hello").json == {"greeting": "hi"}


def test_the_config_files_functions_section_overrides_the_manifests_settings(
    config_data: dict[str, Any],
) -> None:
    bundle = testing.bundle(
        VALID, config={**config_data, "functions": {"hello": {"greeting": "oi"}}}
    )
    client = falcon.testing.TestClient(testing.create_app(bundle))

    assert client.simulate_get("/hello").json == {"greeting": "oi"}


class Collect:
    """Keeps each record it is handed; fails the ones marked ``fail``."""

    seen: list[Any] = []

    def __init__(self, context: FunctionContext) -> None:
        del context

    def handle(self, message: Message) -> None:
        if message.body.get("fail"):
            raise RuntimeError("refused on purpose")
        self.seen.append(message.body)


def collecting_bundle(config_data: dict[str, Any]) -> Any:
    spec = FunctionSpec(
        name="collect",
        kind="background",
        handler_ref="test:Collect",
        handler=Collect,
        queue="q",
        concurrency=2,  # a failing record holds its slot through its back-off
    )
    manifest = Manifest(Path("test.yaml"), (spec,), queues={"q": QueueSpec("q")})
    return testing.bundle_from(manifest, config=config_data)


def test_deliver_runs_each_record_through_the_runner_and_reports_what_was_settled(
    config_data: dict[str, Any],
) -> None:
    Collect.seen = []

    result = testing.deliver(collecting_bundle(config_data), "collect", {"n": 1}, {"n": 2})

    assert sorted(result.settled) == [0, 1]
    assert result.unsettled == []
    assert sorted(item["n"] for item in Collect.seen) == [1, 2]


def test_deliver_leaves_a_record_that_keeps_failing_unsettled_at_the_timeout(
    config_data: dict[str, Any],
) -> None:
    Collect.seen = []

    result = testing.deliver(
        collecting_bundle(config_data), "collect", {"n": 1, "fail": True}, {"n": 2}, timeout_s=1.0
    )

    assert result.settled == [1]
    assert result.unsettled == [0]


def test_deliver_writes_its_records_outside_the_bundles_own_queues(
    config_data: dict[str, Any],
) -> None:
    bundle = testing.bundle(VALID, config=config_data)

    result = testing.deliver(bundle, "worker", {"job": 1})

    assert result.settled == [0]
    assert not Path(config_data["queue"]["dir"]).exists()


def test_run_once_builds_the_scheduled_function_and_runs_it(config_data: dict[str, Any]) -> None:
    assert testing.run_once(testing.bundle(VALID, config=config_data), "tick") is None


@pytest.mark.parametrize(
    ("helper", "name"), [(testing.deliver, "tick"), (testing.run_once, "worker")]
)
def test_the_helpers_refuse_a_function_of_another_kind(
    config_data: dict[str, Any], helper: Any, name: str
) -> None:
    with pytest.raises(ValueError, match="not a"):
        helper(testing.bundle(VALID, config=config_data), name)
