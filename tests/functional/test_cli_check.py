"""``python -m runtime check``: what ``serve`` would fail on, refused before anything runs.

Each refusal exits 2 with one line naming the file or dotted key and what to do; ``serve``
refuses the same bundles with the same line before it forks, opens or writes anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.errors import ManifestError
from runtime.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "tests" / "bundles"
_RUN_TIMEOUT_S = 60.0


def runtime(tmp_path: Path, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m runtime COMMAND`` from tmp_path with a config file there and ``env``."""
    config = tmp_path / "app.yaml"
    config.write_text("instance: checker\n")
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("APP__")
        and key not in ("APP_CONFIG", "PROMETHEUS_MULTIPROC_DIR")
        and not key.startswith("PAYMENT_PROCESSOR_URL")
    }
    environ.update(PYTHONPATH=str(ROOT), APP_CONFIG=str(config), **env)
    return subprocess.run(
        [sys.executable, "-m", "runtime", command],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environ,
        timeout=_RUN_TIMEOUT_S,
    )


def check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return runtime(tmp_path, "check", **env)


@pytest.mark.parametrize(
    "bundle",
    [
        "syntax_error",
        "import_error",
        "duplicate_route",
        "queue_typo",
        "no_consumer",
        "bad_setting_type",
        "unknown_setting",
    ],
)
def test_check_with_a_broken_bundle_exits_2_with_the_message_on_stderr(
    tmp_path: Path, bundle: str
) -> None:
    manifest = BUNDLES / bundle / "functions.yaml"
    with pytest.raises(ManifestError) as expected:
        load_manifest(manifest)

    result = check(tmp_path, APP__MANIFEST=str(manifest))

    assert result.returncode == 2
    assert result.stderr == f"error: {expected.value}\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        (
            "constructor_error",
            "function 'report': building Report failed: TypeError: 'NoneType' object is not "
            "subscriptable",
        ),
        (
            "constructor_connects",
            "function 'report': building Report failed: UnopenedDependency: the constructor "
            "used the database (run); open connections on first use, not while the function "
            "is built",
        ),
    ],
)
def test_check_builds_every_function_and_refuses_a_constructor_that_fails_or_connects(
    tmp_path: Path, bundle: str, message: str
) -> None:
    manifest = BUNDLES / bundle / "functions.yaml"
    load_manifest(manifest)  # the bundle itself loads: only building a function shows it

    result = check(tmp_path, APP__MANIFEST=str(manifest))

    assert result.returncode == 2
    assert result.stderr == f"error: {manifest}: {message}\n"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"APP__QUEUE__SEGMENT_MAX_BYTES": "1024"},
            "queue.segment_max_bytes: expected at least 4096, found 1024",
        ),
        (
            {"APP__PROCESSORS__DEFAULT__URL": "https://processor.example:443"},
            "processors.default.url: expected an http:// URL such as "
            "http://payment-processor-default:8080 (the forwarder's client speaks plain "
            "HTTP/1.1), found 'https://processor.example:443'",
        ),
        (
            {"PAYMENT_PROCESSOR_URL_FALLBACK": "https://processor.example"},
            "processors.fallback.url: expected an http:// URL such as "
            "http://payment-processor-default:8080 (the forwarder's client speaks plain "
            "HTTP/1.1), found 'https://processor.example'",
        ),
        (
            {"APP__FUNCTIONS__HEALTH__CACHE_S": "soon"},
            "functions.health.cache_s: expected a number, found str 'soon'",
        ),
        (
            {"APP__FUNCTIONS__FORWARDER__MAX_CONECTIONS": "8"},
            "functions.forwarder.max_conections: unknown key; expected one of batch_linger_ms, "
            "batch_max, max_connections",
        ),
    ],
)
def test_check_refuses_a_bad_config_value_naming_its_dotted_key(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = check(tmp_path, APP__MANIFEST=str(ROOT / "functions.yaml"), **env)

    assert result.returncode == 2
    assert result.stderr == f"error: {message}\n"


def test_check_with_the_projects_own_bundle_exits_0(tmp_path: Path) -> None:
    manifest = ROOT / "functions.yaml"

    result = check(tmp_path, APP__MANIFEST=str(manifest))

    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"ok: 7 functions (5 http, 1 background, 1 schedule) and 1 queue in {manifest}; "
        "config valid\n"
    )


def test_check_writes_nothing_in_the_folder_it_runs_from_nor_in_the_bundle(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLES / "valid", bundle)
    work = tmp_path / "work"
    work.mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    result = check(work, APP__MANIFEST=str(bundle / "functions.yaml"))

    assert result.returncode == 0, result.stderr
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert [str(p) for p in after if p not in before] == ["work/app.yaml"]  # the test's own


@pytest.mark.parametrize("bundle", ["constructor_error", "no_consumer"])
def test_serve_refuses_what_check_refuses_with_the_same_line_before_it_starts_anything(
    tmp_path: Path, bundle: str
) -> None:
    env = {
        "APP__MANIFEST": str(BUNDLES / bundle / "functions.yaml"),
        "APP__POSTGRES__PORT": "1",  # nothing listens: serve must not get as far as migrating
    }
    checked = check(tmp_path, **env)

    served = runtime(tmp_path, "serve", **env)

    assert served.returncode == checked.returncode == 2
    assert served.stderr == checked.stderr
    assert not (tmp_path / "var").exists()
