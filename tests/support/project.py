"""A copy of this project's bundle and runtime in a folder of its own, for tests that write
functions into it or watch it change."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("runtime", "functions", "payments", "config", "migrations", "functions.yaml")


def copy_project(folder: Path) -> Path:
    """Copy the bundle, the runtime and pyproject.toml (ruff's settings) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, folder / name)
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    return folder
