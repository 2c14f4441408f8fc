"""The JSON error contract of runtime.app, with tiny functions defined here."""

from __future__ import annotations

import logging
from pathlib import Path

import falcon
import falcon.testing
import pytest

from runtime import testing
from runtime.app import error_code
from runtime.config import RuntimeConfig
from runtime.deps import FunctionContext
from runtime.manifest import FunctionSpec, Manifest

SECRET = "password=hunter2 at db.internal:5432"


class Echo:
    """Answers with the size of what it was sent; counts its calls."""

    calls = 0

    def __init__(self, context: FunctionContext) -> None:
        self._context = context

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        type(self).calls += 1
        resp.media = {"size": len(req.bounded_stream.read())}


class Boom:
    """Fails the way a bug would, with sensitive text in the exception."""

    def __init__(self, context: FunctionContext) -> None:
        del context

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError(SECRET)


class Refuses:
    """Refuses with a domain error, the way functions are meant to."""

    def __init__(self, context: FunctionContext) -> None:
        del context

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPError(falcon.HTTP_409, title="already_done", description="it was done")


def http(name: str, handler: type, route: str, *methods: str) -> FunctionSpec:
    return FunctionSpec(
        name=name,
        kind="http",
        handler_ref=f"test:{name}",
        handler=handler,
        route=route,
        methods=methods,
    )


@pytest.fixture
def client(config_data: dict[str, object]) -> falcon.testing.TestClient:
    Echo.calls = 0
    manifest = Manifest(
        path=Path("test-manifest.yaml"),
        functions=(
            http("echo", Echo, "/echo", "POST"),
            http("boom", Boom, "/boom", "GET"),
            http("refuses", Refuses, "/refuses", "GET"),
        ),
    )
    bundle = testing.bundle_from(manifest, config=config_data)
    return falcon.testing.TestClient(testing.create_app(bundle))


def test_unknown_route_answers_404_in_json(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/nowhere")

    assert result.status_code == 404
    assert result.headers["content-type"] == "application/json"
    assert result.json == {"error": "not_found", "detail": "Not Found"}


def test_wrong_method_answers_405_in_json_with_an_allow_header(
    client: falcon.testing.TestClient,
) -> None:
    result = client.simulate_get("/echo")

    assert result.status_code == 405
    assert result.json == {"error": "method_not_allowed", "detail": "Method Not Allowed"}
    allowed = {method.strip() for method in result.headers["allow"].split(",")}
    assert "POST" in allowed
    assert "GET" not in allowed
    assert Echo.calls == 0


def test_a_body_over_max_body_bytes_answers_413_before_the_function_runs(
    client: falcon.testing.TestClient, config: RuntimeConfig
) -> None:
    limit = config.server.max_body_bytes

    result = client.simulate_post("/echo", body=b"x" * (limit + 1))

    assert result.status_code == 413
    assert result.json == {
        "error": "body_too_large",
        "detail": f"the body may be at most {limit} bytes",
    }
    assert Echo.calls == 0


def test_a_body_of_exactly_max_body_bytes_is_let_through(
    client: falcon.testing.TestClient, config: RuntimeConfig
) -> None:
    limit = config.server.max_body_bytes

    result = client.simulate_post("/echo", body=b"x" * limit)

    assert result.status_code == 200
    assert result.json == {"size": limit}


def test_an_unexpected_exception_answers_a_generic_500_that_leaks_nothing(
    client: falcon.testing.TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="runtime.app"):
        result = client.simulate_get("/boom")

    assert result.status_code == 500
    assert result.json == {
        "error": "internal_error",
        "detail": "the server could not handle this request",
    }
    assert "hunter2" not in result.text
    assert "RuntimeError" not in result.text


def test_an_unexpected_exception_is_logged_with_its_traceback(
    client: falcon.testing.TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="runtime.app"):
        client.simulate_get("/boom")

    [record] = [r for r in caplog.records if r.name == "runtime.app"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert str(record.exc_info[1]) == SECRET
    assert (record.method, record.path) == ("GET", "/boom")
    assert "in on_get" in caplog.text  # the traceback itself, not only the message


def test_a_domain_error_keeps_its_status_code_and_detail(
    client: falcon.testing.TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    result = client.simulate_get("/refuses")

    assert result.status_code == 409
    assert result.json == {"error": "already_done", "detail": "it was done"}
    assert not [r for r in caplog.records if r.name == "runtime.app"]  # not an unexpected error


def test_a_trailing_slash_reaches_the_same_function(client: falcon.testing.TestClient) -> None:
    result = client.simulate_post("/echo/", body=b"abc")

    assert result.status_code == 200
    assert result.json == {"size": 3}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("404 Not Found", "not_found"),
        (405, "method_not_allowed"),
        (413, "content_too_large"),
        ("415 Unsupported Media Type", "unsupported_media_type"),
        (503, "service_unavailable"),
    ],
)
def test_error_code_turns_a_status_into_a_stable_snake_case_code(
    status: str | int, code: str
) -> None:
    assert error_code(status) == code
