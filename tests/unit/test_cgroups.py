"""Compose's limit strings become cgroup v1 numbers, and usage is read back from the files."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.cgroups import (
    CPU_PERIOD_US,
    CgroupsUnavailable,
    Limits,
    StackCgroups,
    Usage,
    parse_cpus,
    parse_memory,
    stack_usage,
)


@pytest.mark.parametrize(
    ("text", "quota_us"), [("0.45", 45_000), ("0.15", 15_000), ("1.5", 150_000), (1, 100_000)]
)
def test_cpus_become_a_quota_per_100ms_period(text: str, quota_us: int) -> None:
    assert CPU_PERIOD_US == 100_000
    assert Limits(parse_cpus(text), 1).cpu_quota_us == quota_us


@pytest.mark.parametrize("text", ["0", "-1", "half", ""])
def test_cpus_must_be_a_positive_number(text: str) -> None:
    with pytest.raises(ValueError, match="cpus"):
        parse_cpus(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100MB", 100 * 1024**2),
        ("100M", 100 * 1024**2),
        ("100m", 100 * 1024**2),
        ("20MiB", 20 * 1024**2),
        ("512k", 512 * 1024),
        ("1g", 1024**3),
        ("1.5GB", int(1.5 * 1024**3)),
        ("4096", 4096),
        ("4096b", 4096),
        (1048576, 1048576),
    ],
)
def test_memory_sizes_use_dockers_binary_units(text: str | int, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["lots", "100TB", "MB", "-5MB"])
def test_memory_rejects_what_docker_would(text: str) -> None:
    with pytest.raises(ValueError, match="memory"):
        parse_memory(text)


def _fake_root(tmp_path: Path) -> tuple[Path, Path]:
    """A v1 layout with cpu and cpuacct mounted apart, and memory nested like a sandbox."""
    root = tmp_path / "cgroup"
    for controller in ("cpu", "cpuacct", "memory"):
        (root / controller).mkdir(parents=True)
        (root / controller / "cgroup.procs").write_text("")
    (root / "memory" / "sandbox").mkdir()
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("4:memory:/sandbox\n2:cpuacct:/\n1:cpu:/\n0::/\n")
    return root, proc


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)


def test_cgroups_nest_inside_the_current_ones_and_get_the_limits(
    tmp_path: Path, as_root: None
) -> None:
    root, proc = _fake_root(tmp_path)
    cgroups = StackCgroups.locate(Path("/stack"), root=root, proc_cgroup=proc)
    joined = cgroups.create("app1", Limits(cpus=0.45, memory_bytes=100 * 1024**2))

    memory = cgroups.parents["memory"] / "app1"
    assert memory.parent.parent == root / "memory" / "sandbox"
    assert sorted(joined) == sorted(
        [cgroups.parents["cpu"] / "app1", cgroups.parents["cpuacct"] / "app1", memory]
    )
    assert (cgroups.parents["cpu"] / "app1" / "cpu.cfs_quota_us").read_text() == "45000"
    assert (cgroups.parents["cpu"] / "app1" / "cpu.cfs_period_us").read_text() == "100000"
    assert (memory / "memory.limit_in_bytes").read_text() == str(100 * 1024**2)


def test_two_stack_folders_get_two_cgroup_trees(tmp_path: Path, as_root: None) -> None:
    root, proc = _fake_root(tmp_path)
    first = StackCgroups.locate(Path("/a"), root=root, proc_cgroup=proc)
    second = StackCgroups.locate(Path("/b"), root=root, proc_cgroup=proc)
    assert first.parents["cpu"] != second.parents["cpu"]


def test_usage_reads_cpu_time_throttling_and_peak_memory(tmp_path: Path, as_root: None) -> None:
    root, proc = _fake_root(tmp_path)
    cgroups = StackCgroups.locate(Path("/stack"), root=root, proc_cgroup=proc)
    cgroups.create("nginx", Limits(0.15, 20 * 1024**2))
    dirs = cgroups.service_dirs("nginx")
    (dirs["cpuacct"] / "cpuacct.usage").write_text("2500000000\n")
    (dirs["cpu"] / "cpu.stat").write_text(
        "nr_periods 100\nnr_throttled 7\nthrottled_time 350000000\n"
    )
    (dirs["memory"] / "memory.max_usage_in_bytes").write_text("6291456\n")
    cgroups.save(tmp_path, ["nginx"])

    usage = stack_usage(tmp_path)["nginx"]

    assert usage.cpu_s == 2.5
    assert usage.throttled_periods == 7
    assert usage.throttled_s == 0.35
    assert usage.memory_peak_bytes == 6291456
    assert usage.memory_bytes is None


def test_usage_since_an_earlier_reading_leaves_start_up_out_but_keeps_the_peak() -> None:
    at_start = Usage(1.5, 20, 1.25, 30 * 1024**2, 28 * 1024**2)
    at_end = Usage(4.0, 23, 1.5, 41 * 1024**2, 40 * 1024**2)

    during = at_end.since(at_start)

    assert during == Usage(2.5, 3, 0.25, 41 * 1024**2, 40 * 1024**2)


def test_usage_since_stays_unknown_where_either_reading_is() -> None:
    during = Usage(4.0, None, None, None, None).since(Usage(None, 2, 0.5, None, None))

    assert (during.cpu_s, during.throttled_periods, during.throttled_s) == (None, None, None)


def test_no_record_means_no_usage(tmp_path: Path) -> None:
    assert stack_usage(tmp_path) == {}


def test_not_root_means_no_limits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    root, proc = _fake_root(tmp_path)
    with pytest.raises(CgroupsUnavailable, match="not running as root"):
        StackCgroups.locate(Path("/stack"), root=root, proc_cgroup=proc)


def test_cgroup_v2_only_is_reported(tmp_path: Path, as_root: None) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    with pytest.raises(CgroupsUnavailable, match="cgroup v2"):
        StackCgroups.locate(Path("/stack"), root=tmp_path, proc_cgroup=tmp_path / "none")
