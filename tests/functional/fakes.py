"""Hand-made stand-ins shared by the functional tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from runtime.config import Config, validate_config

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1752150896.0, monotonic: float = 1000.0) -> None:
        self.wall = now
        self.mono = monotonic

    def now(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def with_changes(config: Config, **sections: object) -> Config:
    """``config`` with whole sections replaced, validated again."""
    changed = dataclasses.replace(config, **sections)
    validate_config(changed)
    return changed
