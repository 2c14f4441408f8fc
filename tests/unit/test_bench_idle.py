"""bench.idle refuses, saying why, when no stack under limits is running."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import idle


def test_without_a_limited_stack_it_says_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STACK_DIR", str(tmp_path / "no-stack"))

    assert idle.main(["--seconds", "0"]) == 1
    assert "no stack under cgroup limits is running (make up)" in capsys.readouterr().err
