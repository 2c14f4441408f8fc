"""``python -m runtime invoke`` and ``routes``: one function called in-process, the bundle as a
table; what they print, and the exit status a script can rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "tests" / "bundles" / "invokable" / "functions.yaml"
_RUN_TIMEOUT_S = 60.0


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config whose PostgreSQL does not answer (a closed port) and whose folders are tmp's."""
    path = tmp_path / "app.yaml"
    path.write_text(
        f"manifest: {BUNDLE}\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"metrics_dir: {tmp_path / 'metrics'}\n"
        f"queue: {{dir: {tmp_path / 'queue'}, poll_interval_ms: 1, commit_interval_ms: 5}}\n"
        f"postgres: {{host: 127.0.0.1, port: {free_port()}, connect_timeout_s: 1}}\n"
        "functions:\n  echo: {loud: true}\n"
    )
    path.chmod(0o600)
    return path


def runtime(
    config_file: Path, *argv: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "PAYMENT_"))}
    environ.update(PYTHONPATH=str(ROOT), APP_CONFIG=str(config_file), **env)
    return subprocess.run(
        [sys.executable, "-m", "runtime", *argv],
        cwd=config_file.parent,
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_S,
    )


def body_of(output: str) -> object:
    """The JSON body after the status line and headers."""
    return json.loads(output.split("\n\n", 1)[1])


def test_an_http_function_answers_through_the_bundles_app(config_file: Path) -> None:
    done = runtime(
        config_file,
        "invoke",
        "echo",
        "--path",
        "/echo/hi",
        "--query",
        "a=1",
        "--header",
        "X-Test: yes",
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("HTTP/1.1 200 OK\ncontent-type: application/json\n")
    assert body_of(done.stdout) == {"said": "you said hi", "query": {"a": "1"}, "header": "yes"}


@pytest.mark.parametrize("how", ["json", "file", "stdin"])
def test_a_body_comes_as_json_from_a_file_or_from_standard_input(
    config_file: Path, tmp_path: Path, how: str
) -> None:
    text = '{"n": 7}'
    (tmp_path / "body.json").write_text(text)
    argument = {"json": text, "file": f"@{tmp_path / 'body.json'}", "stdin": "-"}[how]

    done = runtime(
        config_file,
        "invoke",
        "echo",
        "--method",
        "POST",
        "--path",
        "/echo/x",
        "--body",
        argument,
        stdin=text if how == "stdin" else None,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("HTTP/1.1 201 Created\n")
    assert body_of(done.stdout) == {"word": "x", "body": {"n": 7}}


def test_a_put_reaches_the_queue_as_a_record(config_file: Path, tmp_path: Path) -> None:
    done = runtime(config_file, "invoke", "submit", "--body", '{"job": 1}')

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("HTTP/1.1 202 Accepted\n")
    segments = list((tmp_path / "queue" / "jobs").glob("invoke*"))
    assert any(b'{"job":1}' in segment.read_bytes() for segment in segments if segment.is_file())


def test_an_unreachable_database_is_named_in_one_line_and_exits_1(config_file: Path) -> None:
    done = runtime(config_file, "invoke", "count")

    assert done.returncode == 1
    assert done.stdout.startswith("HTTP/1.1 503 Service Unavailable\n")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert errors[0].startswith("error: PostgreSQL at 127.0.0.1:")
    assert "did not answer" in errors[0]


def test_offline_connections_refuse_instead(config_file: Path) -> None:
    done = runtime(config_file, "invoke", "count", "--offline")

    assert done.returncode == 1
    assert "HTTP/1.1 500 Internal Server Error" in done.stdout


def test_a_background_function_gets_the_record_through_prepare_and_handle(
    config_file: Path,
) -> None:
    done = runtime(config_file, "invoke", "worker", "--message", '{"fail": false}')

    assert done.returncode == 0, done.stderr
    assert "worker: 1 record handled and acknowledged" in done.stdout


def test_a_record_that_keeps_failing_exits_1(config_file: Path) -> None:
    done = runtime(
        config_file, "invoke", "worker", "--message", '{"fail": true}', "--timeout-s", "1"
    )

    assert done.returncode == 1
    assert "not acknowledged within 1 s" in done.stdout
    assert "refused on purpose" in done.stderr


def test_a_scheduled_function_runs_once(config_file: Path) -> None:
    done = runtime(config_file, "invoke", "tick")

    assert done.returncode == 0, done.stderr
    assert "tick: ran once in" in done.stdout
    assert 'returned {"ticked": true}' in done.stdout


def test_a_scheduled_function_that_raises_exits_1(config_file: Path) -> None:
    done = runtime(config_file, "invoke", "tick", APP__FUNCTIONS__TICK__FAIL="true")

    assert done.returncode == 1
    assert "tick: run() raised ValueError: failing on purpose" in done.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "no function 'nope' in"),
        (["echo"], "give --path with a value for each parameter"),
        (["echo", "--path", "/jobs"], "--path /jobs is served by 'submit', not 'echo'"),
        (["echo", "--path", "/echo/x", "--method", "DELETE"], "answers GET, POST only"),
        (["echo", "--path", "/echo/x", "--header", "broken"], "expected NAME:VALUE"),
        (["echo", "--path", "/echo/x", "--body", "@/no/such/file"], "cannot read it"),
        (["worker"], "give --message"),
        (["tick", "--message", "{}"], "--message is for background functions"),
    ],
)
def test_a_wrong_invocation_exits_2_saying_what_to_change(
    config_file: Path, argv: list[str], message: str
) -> None:
    done = runtime(config_file, "invoke", *argv)

    assert done.returncode == 2
    assert message in done.stderr


def test_routes_lists_every_function_with_its_settings_and_their_origin(
    config_file: Path,
) -> None:
    done = runtime(config_file, "routes", APP__FUNCTIONS__TICK__FAIL="false")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = {line.split()[0]: line for line in lines if line and not line.startswith(" ")}
    assert "GET,POST /echo/{word}" in rows["echo"]
    assert "POST /jobs -> jobs" in rows["submit"]
    assert "queue jobs, 4 in flight" in rows["worker"]
    assert "every 5 s" in rows["tick"]
    source = (BUNDLE.parent / "invokable_fn.py").read_text().splitlines()
    assert rows["echo"].endswith(f"invokable_fn.py:{source.index('class Echo:') + 1}")
    settings = [line.strip() for line in lines if line.startswith(" ")]
    assert "prefix = 'you said'  (functions.yaml)" in settings
    assert any(s.startswith("loud = True") and s.endswith(f"({config_file})") for s in settings)
    assert any(
        s.startswith("fail = False") and "env APP__FUNCTIONS__TICK__FAIL" in s for s in settings
    )


def test_routes_shows_a_default_as_such(config_file: Path) -> None:
    config_file.write_text(config_file.read_text().replace("  echo: {loud: true}\n", "  {}\n"))
    config_file.write_text(config_file.read_text().replace("functions:\n  {}\n", ""))

    done = runtime(config_file, "routes")

    assert done.returncode == 0, done.stderr
    assert any(
        line.split()[:3] == ["loud", "=", "False"] and "(default)" in line
        for line in done.stdout.splitlines()
    )
