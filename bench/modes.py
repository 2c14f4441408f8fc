"""The load tests the benchmark can run, as the contest defined them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

K6_DIR = Path(__file__).resolve().parent / "k6"
FLOOR_PREFIX = "floor-"


@dataclass(frozen=True)
class Mode:
    """One load test: its k6 script, the VU target, the amount and the processors' fees."""

    name: str
    script: str
    """File under ``bench/k6/``."""
    max_requests: int
    amount: Decimal
    default_fee: Decimal
    fallback_fee: Decimal
    duration_s: int

    @property
    def script_path(self) -> Path:
        return K6_DIR / self.script

    @property
    def stack_fees(self) -> str:
        """The ``STACK_FEES`` value that makes the emulators charge this test's fees."""
        return f"{self.default_fee},{self.fallback_fee}"


MODES: dict[str, Mode] = {
    # The run that decided the ranking: our primary target.
    "final": Mode(
        "final", "final.js", 603, Decimal("20.05"), Decimal("0.07"), Decimal("0.10"), 300
    ),
    # The shorter preview run, handy for quick checks.
    "preview": Mode(
        "preview", "preview.js", 550, Decimal("19.90"), Decimal("0.05"), Decimal("0.15"), 60
    ),
    # The final test at twice its peak rate: where does the stack break?
    "stress": Mode(
        "stress", "final.js", 1206, Decimal("20.05"), Decimal("0.07"), Decimal("0.10"), 300
    ),
    # Ours, not the contest's: one fixed rate, processors quick, for comparing two builds.
    "steady": Mode(
        "steady", "steady.js", 450, Decimal("20.05"), Decimal("0.07"), Decimal("0.10"), 60
    ),
}


class UnknownMode(ValueError):
    """The mode named on the command line is none of :data:`MODES`, floor or not."""


def parse_mode(text: str) -> tuple[Mode, bool]:
    """Return the mode named ``text`` and whether only its floor is to be measured.

    ``floor-final`` runs the final test against the floor Nginx alone.
    """
    floor_only = text.startswith(FLOOR_PREFIX)
    name = text.removeprefix(FLOOR_PREFIX)
    if name not in MODES:
        known = ", ".join([*MODES, *(FLOOR_PREFIX + m for m in MODES)])
        raise UnknownMode(f"unknown mode {text!r}; expected one of: {known}")
    return MODES[name], floor_only


def mode_names() -> list[str]:
    """Every accepted mode name, for ``--help``."""
    return [*MODES, *(FLOOR_PREFIX + name for name in MODES)]
