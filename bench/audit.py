"""Check our backend against the processors, as the contest's auditor does and more strictly.

- ``Auditor``: every ``interval_s``, compares our ``/payments-summary`` with both processors'
  admin summaries over a window ending ``margin_s`` ago (the contest: every 10 s, from now-15 s
  to now-2 s), counts and amounts.
- ``check_each``: asks both processors for every accepted id: each must be held by exactly
  one of them (none lost, none twice).
- ``totals_equal``: our whole summary against the processors' totals.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from emulator.processors import Processors

_TIMEOUT_S = 5.0
_LOOKUP_THREADS = 32


def iso(epoch_s: float) -> str:
    """The contest's timestamp format, UTC with milliseconds."""
    millis = int(epoch_s * 1000)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + f".{millis % 1000:03d}Z"
    )


def our_summary(base_url: str, start: str | None = None, end: str | None = None) -> dict[str, Any]:
    """Our backend's summary, optionally over a window."""
    query = f"?from={start}&to={end}" if start and end else ""
    with urllib.request.urlopen(f"{base_url}/payments-summary{query}", timeout=_TIMEOUT_S) as r:
        return json.loads(r.read())


@dataclass(frozen=True)
class Comparison:
    """One audit: the window, what we said and what the processors said."""

    start: str
    end: str
    ours: dict[str, tuple[int, Decimal]]
    theirs: dict[str, tuple[int, Decimal]]

    @property
    def equal(self) -> bool:
        """Counts and amounts agree for both processors."""
        return self.ours == self.theirs


def compare_window(base_url: str, processors: Processors, start: str, end: str) -> Comparison:
    """Our summary and the processors' over one window."""
    ours_raw = our_summary(base_url, start, end)
    theirs = {}
    for processor in processors:
        answer = processor.summary(start, end)
        theirs[processor.name] = (
            int(answer["totalRequests"]),
            Decimal(str(answer["totalAmount"])).quantize(Decimal("0.01")),
        )
    ours = {
        name: (
            int(part["totalRequests"]),
            Decimal(str(part["totalAmount"])).quantize(Decimal("0.01")),
        )
        for name, part in ours_raw.items()
    }
    return Comparison(start, end, ours, theirs)


@dataclass
class Auditor:
    """A thread comparing windows every ``interval_s`` until stopped."""

    base_url: str
    processors: Processors
    interval_s: float = 10.0
    window_s: float = 15.0
    margin_s: float = 2.0
    comparisons: list[Comparison] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Auditor:
        """Begin auditing in the background."""
        self._thread = threading.Thread(target=self._loop, name="auditor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the comparison in progress."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = time.time()
            start, end = iso(now - self.window_s), iso(now - self.margin_s)
            try:
                self.comparisons.append(compare_window(self.base_url, self.processors, start, end))
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                self.errors.append(f"{end}: {type(exc).__name__}: {exc}")

    @property
    def mismatches(self) -> list[Comparison]:
        """Every comparison that did not agree."""
        return [c for c in self.comparisons if not c.equal]


@dataclass(frozen=True)
class Holdings:
    """Where each accepted payment ended up."""

    default: int
    fallback: int
    lost: list[str]
    duplicated: list[str]


def check_each(ids: Iterable[str], processors: Processors) -> Holdings:
    """Ask both processors for every id; every one must be held by exactly one."""
    id_list = list(ids)

    def holders(correlation_id: str) -> list[str]:
        held = []
        for processor in processors:
            status, _ = processor.request("GET", f"/payments/{correlation_id}")
            if status == 200:
                held.append(processor.name)
            elif status != 404:
                raise RuntimeError(f"{processor.name}: GET /payments/{correlation_id}: {status}")
        return held

    with ThreadPoolExecutor(_LOOKUP_THREADS) as pool:
        results = list(pool.map(holders, id_list))
    lost = [cid for cid, held in zip(id_list, results, strict=True) if not held]
    duplicated = [cid for cid, held in zip(id_list, results, strict=True) if len(held) > 1]
    return Holdings(
        default=sum(1 for held in results if held == ["default"]),
        fallback=sum(1 for held in results if held == ["fallback"]),
        lost=lost,
        duplicated=duplicated,
    )


def totals_equal(base_url: str, processors: Processors) -> tuple[bool, dict[str, Any]]:
    """Whether our whole summary equals the processors' totals; returns both sides."""
    ours = our_summary(base_url)
    theirs = {p.name: p.summary() for p in processors}
    equal = all(
        int(ours[name]["totalRequests"]) == int(theirs[name]["totalRequests"])
        and Decimal(str(ours[name]["totalAmount"])) == Decimal(str(theirs[name]["totalAmount"]))
        for name in theirs
    )
    return equal, {"ours": ours, "theirs": theirs}
