"""Each service's CPU and throttling, and the whole machine's, sampled every 10 s of a test.

The test's totals say what a payment costs; they cannot say why one period's p99 went bad and
the next did not. ``bench.timeline`` prints these samples beside each dashboard period's p99
(same 10 s cadence, from k6's start), so a slow period shows which service was busy or
throttled then, and how busy the machine's cores were with everything else (k6, the
processors).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack.cgroups import Usage

PERIOD_S = 10.0
FILE_NAME = "usage-timeline.json"


def machine_cpu_s(proc_stat: Path = Path("/proc/stat")) -> tuple[float, float]:
    """CPU seconds since boot, from one read of ``/proc/stat``: every core's time doing
    anything but idling (steal included), and the steal alone, time the hypervisor ran other
    guests while ours wanted a core: a stall nothing on this machine caused."""
    fields = proc_stat.read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(value) for value in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    steal = ticks[7] if len(ticks) > 7 else 0
    per_s = os.sysconf("SC_CLK_TCK")
    # guest time is already counted in user time
    return (sum(ticks[:8]) - idle) / per_s, steal / per_s


@dataclass(frozen=True)
class Sample:
    """Where each counter stood at ``at_s`` seconds after the test started."""

    at_s: float
    machine_busy_s: float
    services: Mapping[str, Usage]
    machine_steal_s: float = 0.0


@dataclass
class UsageSampler:
    """Samples ``read()`` every ``period_s`` in a thread, from ``start`` to ``stop``."""

    read: Callable[[], Mapping[str, Usage]]
    period_s: float = PERIOD_S
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        started = time.monotonic()
        self._take(started)
        self._thread = threading.Thread(
            target=self._loop, args=(started,), name="usage-sampler", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.period_s)

    def _loop(self, started: float) -> None:
        deadline = started
        while True:
            deadline += self.period_s
            if self._stop.wait(max(0.0, deadline - time.monotonic())):
                return
            self._take(started)

    def _take(self, started: float) -> None:
        try:
            services = self.read()
            busy, steal = machine_cpu_s()
        except OSError:  # a cgroup gone as the stack stops: that period stays unsampled
            return
        self.samples.append(Sample(time.monotonic() - started, busy, services, steal))

    @contextlib.contextmanager
    def running(self, out_dir: Path) -> Iterator[None]:
        """Sample while the block runs, then write the samples to ``out_dir``."""
        self.start()
        try:
            yield
        finally:
            self.stop()
            self.write(out_dir)

    def write(self, out_dir: Path) -> None:
        """The samples as ``usage-timeline.json``, for ``bench.timeline``."""
        (out_dir / FILE_NAME).write_text(json.dumps(periods(self.samples), indent=1) + "\n")


def periods(samples: list[Sample]) -> list[dict[str, Any]]:
    """What happened between consecutive samples: CPU used (in cores) and throttled periods."""
    out = []
    for before, after in itertools.pairwise(samples):
        span = after.at_s - before.at_s
        services = {}
        for name, used in after.services.items():
            earlier = before.services.get(name)
            between = used.since(earlier) if earlier is not None else None
            if between is None or between.cpu_s is None:
                continue
            services[name] = {
                "cpus": round(between.cpu_s / span, 4),
                "throttled": between.throttled_periods or 0,
            }
        out.append(
            {
                "until_s": round(after.at_s, 1),
                "machine_cpus": round((after.machine_busy_s - before.machine_busy_s) / span, 3),
                "steal_cpus": round((after.machine_steal_s - before.machine_steal_s) / span, 3),
                "services": services,
            }
        )
    return out
