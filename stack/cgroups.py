"""cgroup v1 limits for the local stack, so it runs within the budget the contest gives.

Each service gets one cgroup per controller (``cpu``, ``cpuacct``, ``memory``) under a parent
named after the stack's folder, created inside the cgroup this process already lives in (so a
stack started inside a container or a sandbox stays inside it). A service joins its cgroups
before it execs (see :mod:`stack.cgexec`), so everything it forks is limited too.

The limits come from ``docker-compose.yml`` (:mod:`stack.compose`); this module only turns
compose's strings into numbers and numbers into cgroup files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

_Number = TypeVar("_Number", int, float)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CPU_PERIOD_US = 100_000
"""The CFS period Docker uses; ``cpus: 0.45`` becomes a quota of 45000 µs per period."""

CONTROLLERS = ("cpu", "cpuacct", "memory")
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b)?\s*$", re.IGNORECASE)
_MEMORY_UNIT_BYTES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_RECORD_FILE = "cgroups.json"


class CgroupsUnavailable(Exception):
    """This machine cannot give the stack cgroup v1 limits; the message says why."""


@dataclass(frozen=True)
class Limits:
    """One service's share of the machine, as docker-compose.yml states it."""

    cpus: float
    memory_bytes: int

    @property
    def cpu_quota_us(self) -> int:
        """CFS quota per :data:`CPU_PERIOD_US`."""
        return round(self.cpus * CPU_PERIOD_US)


@dataclass(frozen=True)
class Usage:
    """What a service consumed so far; ``None`` where this kernel does not say."""

    cpu_s: float | None
    throttled_periods: int | None
    throttled_s: float | None
    memory_peak_bytes: int | None
    memory_bytes: int | None

    def since(self, earlier: Usage) -> Usage:
        """CPU and throttling between ``earlier`` and now; memory as now (the peak is all-time).

        Start-up runs under the same quota and is throttled too; a load test's figures must
        not carry it.
        """
        return Usage(
            cpu_s=_minus(self.cpu_s, earlier.cpu_s),
            throttled_periods=_minus(self.throttled_periods, earlier.throttled_periods),
            throttled_s=_minus(self.throttled_s, earlier.throttled_s),
            memory_peak_bytes=self.memory_peak_bytes,
            memory_bytes=self.memory_bytes,
        )


def _minus(now: _Number | None, earlier: _Number | None) -> _Number | None:
    return None if now is None or earlier is None else now - earlier


def parse_cpus(value: str | float | int) -> float:
    """Compose's ``cpus`` (``"0.45"``) as a number of CPUs; rejects zero and negatives."""
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"cpus: expected a number such as '0.45', found {value!r}") from None
    if not cpus > 0:
        raise ValueError(f"cpus: expected more than 0, found {value!r}")
    return cpus


def parse_memory(value: str | int) -> int:
    """Compose's ``memory`` (``"100MB"``, ``"1g"``, ``1048576``) in bytes.

    Docker reads these units as powers of 1024, so ``100MB`` is 104,857,600 bytes.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _MEMORY_RE.match(str(value))
    if not match:
        raise ValueError(f"memory: expected a size such as '100MB', found {value!r}")
    number, unit = float(match[1]), match[2].lower()
    return int(number * _MEMORY_UNIT_BYTES[unit])


@dataclass(frozen=True)
class StackCgroups:
    """The cgroups of one stack: for each controller, the stack's parent folder."""

    parents: dict[str, Path]

    @classmethod
    def locate(
        cls, stack_dir: Path, *, root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP
    ) -> StackCgroups:
        """Find where this stack's cgroups go, or say why there are none.

        Raises:
            CgroupsUnavailable: not root, cgroup v2 only, a controller missing or read-only.
        """
        if os.geteuid() != 0:
            raise CgroupsUnavailable("not running as root")
        own = _own_cgroups(proc_cgroup)
        name = "rinha-stack-" + hashlib.sha1(str(stack_dir).encode()).hexdigest()[:10]
        parents = {}
        for controller in CONTROLLERS:
            mount = root / controller
            if not (mount / "cgroup.procs").exists():
                raise CgroupsUnavailable(
                    f"no cgroup v1 '{controller}' hierarchy at {mount} (cgroup v2 is not supported)"
                )
            base = mount / own.get(controller, "/").lstrip("/")
            if not base.is_dir():
                base = mount
            if not os.access(base, os.W_OK):
                raise CgroupsUnavailable(f"{base} is not writable")
            parents[controller] = base / name
        return cls(parents)

    def service_dirs(self, service: str) -> dict[str, Path]:
        """The service's folder for each controller."""
        return {controller: parent / service for controller, parent in self.parents.items()}

    def create(self, service: str, limits: Limits) -> list[Path]:
        """Make the service's cgroups with its limits; returns the folders a process joins.

        Controllers mounted together (``cpu,cpuacct``) share one folder, returned once.
        """
        dirs = self.service_dirs(service)
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        _write(dirs["cpu"] / "cpu.cfs_period_us", CPU_PERIOD_US)
        _write(dirs["cpu"] / "cpu.cfs_quota_us", limits.cpu_quota_us)
        _write(dirs["memory"] / "memory.limit_in_bytes", limits.memory_bytes)
        return _unique(dirs.values())

    def pids(self, service: str) -> list[int]:
        """Processes still in the service's cgroups (what ``down`` must not leave behind)."""
        found: set[int] = set()
        for path in self.service_dirs(service).values():
            with contextlib.suppress(OSError):
                found.update(int(line) for line in (path / "cgroup.procs").read_text().split())
        return sorted(found)

    def usage(self, service: str) -> Usage:
        """CPU time, throttling and memory of the service so far."""
        dirs = self.service_dirs(service)
        cpu_ns = _read_int(dirs["cpuacct"] / "cpuacct.usage")
        stat = _read_stat(dirs["cpu"] / "cpu.stat")
        throttled_ns = stat.get("throttled_time")
        return Usage(
            cpu_s=None if cpu_ns is None else cpu_ns / 1e9,
            throttled_periods=stat.get("nr_throttled"),
            throttled_s=None if throttled_ns is None else throttled_ns / 1e9,
            memory_peak_bytes=_read_int(dirs["memory"] / "memory.max_usage_in_bytes"),
            memory_bytes=_read_int(dirs["memory"] / "memory.usage_in_bytes"),
        )

    def remove(self, services: list[str]) -> list[str]:
        """Remove the services' cgroups and the stack's parents; returns what could not go."""
        problems = []
        for service in services:
            for path in _unique(self.service_dirs(service).values()):
                problems.extend(_rmdir(path))
        for path in _unique(self.parents.values()):
            problems.extend(_rmdir(path))
        return problems

    def save(self, record_dir: Path, services: list[str]) -> None:
        """Remember where the cgroups are, so ``down`` and ``status`` find them from any shell."""
        record = {"parents": {k: str(v) for k, v in self.parents.items()}, "services": services}
        (record_dir / _RECORD_FILE).write_text(json.dumps(record))

    @classmethod
    def load(cls, record_dir: Path) -> tuple[StackCgroups, list[str]] | None:
        """The cgroups ``save`` recorded, with their services, or ``None``."""
        try:
            record = json.loads((record_dir / _RECORD_FILE).read_text())
        except (OSError, ValueError):
            return None
        parents = {k: Path(v) for k, v in record["parents"].items()}
        return cls(parents), list(record["services"])

    @staticmethod
    def forget(record_dir: Path) -> None:
        """Drop the record once the cgroups are gone."""
        with contextlib.suppress(FileNotFoundError):
            (record_dir / _RECORD_FILE).unlink()


def stack_usage(record_dir: Path) -> dict[str, Usage]:
    """Each limited service's usage for the stack whose pid folder is ``record_dir``.

    Empty when that stack runs without limits. The benchmark prints this.
    """
    loaded = StackCgroups.load(record_dir)
    if loaded is None:
        return {}
    cgroups, services = loaded
    return {service: cgroups.usage(service) for service in services}


def _own_cgroups(proc_cgroup: Path) -> dict[str, str]:
    """This process's cgroup path per v1 controller, from ``/proc/self/cgroup``."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                if controller:
                    own[controller] = path
    return own


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: dict[str, Path] = {}
    for path in paths:
        seen.setdefault(os.path.realpath(path), path)
    return list(seen.values())


def _write(path: Path, value: int) -> None:
    try:
        path.write_text(str(value))
    except OSError as exc:
        raise CgroupsUnavailable(f"cannot write {value} to {path}: {exc.strerror}") from None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_stat(path: Path) -> dict[str, int]:
    stat = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                stat[key] = int(value)
    return stat


def _rmdir(path: Path) -> list[str]:
    try:
        path.rmdir()
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [f"{path}: {exc.strerror}"]
    return []
