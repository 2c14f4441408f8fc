"""``python -m runtime new``: a function, its entry and a test, in a copy of this project.

Each kind is written into a fresh copy, then checked the way a user would: ``runtime check``
passes, the written test passes, ruff finds nothing, the manifest keeps every line it had.
Each refusal names what is wrong and writes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.project import copy_project

_RUN_TIMEOUT_S = 120.0


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's bundle and runtime, with a tests/ package of its own."""
    copy = copy_project(tmp_path / "project")
    (copy / "tests").mkdir()
    (copy / "tests" / "__init__.py").write_text("")
    return copy


def run(project: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` in the copy, with none of this process's APP__ variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "PAYMENT_"))}
    env.pop("PYTHONPATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the refusals compare the folder before and after
    return subprocess.run(
        [sys.executable, *argv],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_S,
    )


def new(project: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return run(project, "-m", "runtime", "new", *argv)


@pytest.mark.parametrize(
    ("argv", "written"),
    [
        (
            ["version", "--kind", "http", "--route", "/version", "--methods", "GET"],
            ["functions/version.py", "tests/functions/test_version.py"],
        ),
        (
            ["item", "--kind", "http", "--route", "/items/{id}", "--methods", "GET,DELETE"],
            ["functions/item.py", "tests/functions/test_item.py"],
        ),
        (
            ["mailer", "--kind", "background", "--queue", "mails", "--route", "/mails"],
            ["functions/mailer.py", "functions/mailer_submit.py", "tests/functions/test_mailer.py"],
        ),
        (
            ["cleanup", "--kind", "schedule", "--every-s", "60"],
            ["functions/cleanup.py", "tests/functions/test_cleanup.py"],
        ),
    ],
    ids=["http", "http-with-parameter", "background-with-its-producer", "schedule"],
)
def test_new_writes_a_function_that_checks_and_a_test_that_passes(
    project: Path, argv: list[str], written: list[str]
) -> None:
    manifest_before = (project / "functions.yaml").read_text()

    created = new(project, *argv)

    assert created.returncode == 0, created.stderr
    for path in written:
        assert (project / path).is_file(), path
        assert f"created {path}" in created.stdout
    checked = run(project, "-m", "runtime", "check")
    assert checked.returncode == 0, checked.stderr
    tested = run(project, "-m", "pytest", "-q", "-p", "no:cacheprovider", written[-1])
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert " passed" in tested.stdout and "failed" not in tested.stdout
    linted = run(project, "-m", "ruff", "check", *written)
    assert linted.returncode == 0, linted.stdout
    formatted = run(project, "-m", "ruff", "format", "--check", *written)
    assert formatted.returncode == 0, formatted.stdout
    manifest_after = (project / "functions.yaml").read_text()
    # Every line (comments too) is still there, in order; only the new entries are added.
    kept = iter(manifest_after.splitlines())
    assert all(line in kept for line in manifest_before.splitlines())
    assert f"  - name: {argv[0]}\n" in manifest_after


def test_a_new_http_function_is_served_by_the_bundle(project: Path) -> None:
    assert new(project, "version", "--kind", "http", "--route", "/version").returncode == 0

    invoked = run(project, "-m", "runtime", "invoke", "version", "--offline")

    assert invoked.returncode == 0, invoked.stderr
    assert invoked.stdout.startswith("HTTP/1.1 200 OK\n")
    assert '{"function": "version", "greeting": "hello"}' in invoked.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["intake", "--kind", "http", "--route", "/x"], "a function named 'intake' exists already"),
        (["Version", "--kind", "http", "--route", "/x"], "must be a Python identifier"),
        (["import", "--kind", "http", "--route", "/x"], "must be a Python identifier"),
        (["my-fn", "--kind", "http", "--route", "/x"], "must be a Python identifier"),
        (["x", "--kind", "http", "--route", "/payments"], "served by 'intake' already"),
        (["x", "--kind", "http"], "--kind http needs --route"),
        (["x", "--kind", "http", "--route", "/x", "--methods", "FETCH"], "'FETCH' is not one of"),
        (["x", "--kind", "background", "--queue", "payments"], "consumed by 'forwarder'"),
        (["x", "--kind", "background", "--queue", "jobs"], "add --route /PATH"),
        (["x", "--kind", "http", "--route", "/x", "--queue", "jobs"], "does not exist"),
        (["x", "--kind", "schedule"], "needs --every-s"),
        (["x", "--kind", "schedule", "--every-s", "1", "--route", "/x"], "--every-s only"),
    ],
)
def test_new_refuses_and_writes_nothing(project: Path, argv: list[str], message: str) -> None:
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    manifest = (project / "functions.yaml").read_text()

    refused = new(project, *argv)

    assert refused.returncode == 2
    assert message in refused.stderr
    assert refused.stderr.startswith("error: ")
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
    assert (project / "functions.yaml").read_text() == manifest


def test_new_refuses_a_file_that_exists(project: Path) -> None:
    (project / "functions" / "version.py").write_text("# mine\n")

    refused = new(project, "version", "--kind", "http", "--route", "/version")

    assert refused.returncode == 2
    assert "functions/version.py: exists already" in refused.stderr
    assert (project / "functions" / "version.py").read_text() == "# mine\n"
