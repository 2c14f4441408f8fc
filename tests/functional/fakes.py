"""Hand-made stand-ins shared by the functional tests."""

from __future__ import annotations

from pathlib import Path

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
