"""stack.cgexec joins the cgroups before it execs, so the service itself is in them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_runs_with_the_pid_written_to_each_cgroup(tmp_path: Path) -> None:
    joins = [tmp_path / "cpu", tmp_path / "memory"]
    for folder in joins:
        folder.mkdir()
    argv = [sys.executable, "-m", "stack.cgexec"]
    for folder in joins:
        argv += ["--join", str(folder)]
    result = subprocess.run(
        [*argv, "--", "sh", "-c", "echo $$"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pid = result.stdout.strip()
    for folder in joins:
        assert (folder / "cgroup.procs").read_text() == pid


def test_a_missing_command_exits_126_with_its_name(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stack.cgexec", "--", "/no/such/binary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 126
    assert "/no/such/binary" in result.stderr
