"""``python -m runtime dev``: a change to a function is served without a restart by hand; a
change that breaks the bundle is printed and the last good one keeps serving."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.processors import Processors
from stack.memcached import MemcachedServer
from stack.postgres import PostgresServer
from tests.support.procs import free_port, wait_until
from tests.support.project import copy_project

pytestmark = pytest.mark.integration
_CHANGE_TIMEOUT_S = 60.0


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


@pytest.fixture
def dev(
    project: Path,
    postgres: PostgresServer,
    memcached: MemcachedServer,
    emulators: Processors,
) -> Iterator[tuple[int, Path]]:
    """``runtime dev`` in the copy, with a ``version`` function written by ``runtime new``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "PAYMENT_"))}
    env.pop("PYTHONPATH", None)
    env.update(postgres.env(), **memcached.env(), **emulators.env())
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime",
            "new",
            "version",
            "--kind",
            "http",
            "--route",
            "/version",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    port = free_port()
    log = project / "dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime", "dev", "--port", str(port)],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: get(port, "/version")[0] == 200, timeout_s=60, what="dev serving")
        yield port, log
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_dev_serves_a_change_then_keeps_the_last_good_bundle_through_a_broken_one(
    dev: tuple[int, Path], project: Path
) -> None:
    port, log = dev
    source = project / "functions" / "version.py"
    assert '"greeting": "hello"' in get(port, "/version")[1]
    assert "PostgreSQL: " in log.read_text() and "answers" in log.read_text()

    source.write_text(source.read_text().replace('greeting: str = "hello"', 'greeting: str = "oi"'))
    wait_until(
        lambda: '"greeting": "oi"' in get(port, "/version")[1],
        timeout_s=_CHANGE_TIMEOUT_S,
        what="the change served",
    )

    good = source.read_text()
    source.write_text(good + "\nthis is not python\n")
    wait_until(
        lambda: "not reloaded" in log.read_text(), timeout_s=_CHANGE_TIMEOUT_S, what="refusal"
    )
    assert "version.py" in log.read_text().split("not reloaded")[-1]
    assert '"greeting": "oi"' in get(port, "/version")[1]

    source.write_text(good.replace('greeting: str = "oi"', 'greeting: str = "ola"'))
    wait_until(
        lambda: '"greeting": "ola"' in get(port, "/version")[1],
        timeout_s=_CHANGE_TIMEOUT_S,
        what="the fix served",
    )


def test_dev_picks_up_a_new_endpoint_and_a_config_change(
    dev: tuple[int, Path], project: Path
) -> None:
    port, _ = dev
    config = project / "config" / "app.yaml"

    created = subprocess.run(
        [sys.executable, "-m", "runtime", "new", "ping", "--kind", "http", "--route", "/ping"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    wait_until(lambda: get(port, "/ping")[0] == 200, timeout_s=_CHANGE_TIMEOUT_S, what="/ping")

    config.write_text(config.read_text() + "functions:\n  ping: {greeting: configured}\n")
    wait_until(
        lambda: '"greeting": "configured"' in get(port, "/ping")[1],
        timeout_s=_CHANGE_TIMEOUT_S,
        what="the config change served",
    )
