"""stack/bootstrap.sh asks apt for exactly the Debian packages that are missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_EVERYTHING = ["postgresql", "memcached", "nginx-light", "libev-dev", "gcc", "libc6-dev"]


def _check(tmp_path: Path, installed: set[str]) -> subprocess.CompletedProcess[str]:
    """Run ``bootstrap.sh --check`` with a dpkg-query that knows only ``installed``."""
    stub = tmp_path / "bin"
    stub.mkdir()
    dpkg_query = stub / "dpkg-query"
    cases = "\n".join(f'  {name}) echo -n "install ok installed" ;;' for name in installed)
    dpkg_query.write_text(f'#!/bin/sh\ncase "$3" in\n{cases}\n  *) exit 1 ;;\nesac\n')
    dpkg_query.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(ROOT / "stack" / "bootstrap.sh"), "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_fresh_machine_needs_every_package(tmp_path: Path) -> None:
    result = _check(tmp_path, set())
    assert result.returncode == 1
    assert result.stdout.split()[1:] == _EVERYTHING


def test_nothing_missing_says_nothing(tmp_path: Path) -> None:
    result = _check(tmp_path, set(_EVERYTHING))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(
    ("alternative", "instead_of"),
    [("nginx", "nginx-light"), ("nginx-full", "nginx-light"), ("postgresql-15", "postgresql")],
)
def test_an_equivalent_package_counts_as_installed(
    tmp_path: Path, alternative: str, instead_of: str
) -> None:
    result = _check(tmp_path, (set(_EVERYTHING) - {instead_of}) | {alternative})
    assert (result.returncode, result.stdout) == (0, "")


def test_only_the_missing_packages_are_named(tmp_path: Path) -> None:
    result = _check(tmp_path, set(_EVERYTHING) - {"libev-dev", "memcached"})
    assert result.stdout.split() == ["missing:", "memcached", "libev-dev"]
