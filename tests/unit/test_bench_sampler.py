"""The usage sampler's periods, and how the timeline prints them beside the p99."""

from __future__ import annotations

import json
from pathlib import Path

from bench import sampler, timeline
from bench.sampler import Sample
from stack.cgroups import Usage
from tests.support.procs import wait_until


def _usage(cpu_s: float, throttled: int) -> Usage:
    return Usage(cpu_s, throttled, None, None, None)


def test_a_period_is_the_cpu_used_between_two_samples_in_cores_and_the_throttles() -> None:
    samples = [
        Sample(0.0, 100.0, {"app1": _usage(1.0, 2), "worker1": _usage(5.0, 0)}, 7.0),
        Sample(10.0, 112.0, {"app1": _usage(2.5, 2), "worker1": _usage(5.5, 3)}, 8.0),
        Sample(20.0, 130.0, {"app1": _usage(3.0, 4)}, 8.0),  # worker1 gone: not reported
    ]

    assert sampler.periods(samples) == [
        {
            "until_s": 10.0,
            "machine_cpus": 1.2,
            "steal_cpus": 0.1,
            "services": {
                "app1": {"cpus": 0.15, "throttled": 0},
                "worker1": {"cpus": 0.05, "throttled": 3},
            },
        },
        {
            "until_s": 20.0,
            "machine_cpus": 1.8,
            "steal_cpus": 0.0,
            "services": {"app1": {"cpus": 0.05, "throttled": 2}},
        },
    ]


def test_the_machine_busy_time_leaves_idle_and_iowait_out(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 1000 25 5 5 0 40 0\ncpu0 1 2 3 4\n")

    ticks_per_s = sampler.os.sysconf("SC_CLK_TCK")
    assert sampler.machine_cpu_s(stat) == (160 / ticks_per_s, 0.0)
    stat.write_text("cpu  100 0 50 1000 25 5 5 30 40 0\n")
    # steal is time we wanted: busy, and counted apart too
    assert sampler.machine_cpu_s(stat) == (190 / ticks_per_s, 30 / ticks_per_s)


def test_the_timeline_shows_each_services_cores_and_marks_throttling() -> None:
    periods = [timeline.Period(10.0, 100, 20, 2.5), timeline.Period(20.0, 300, 40, 31.0)]
    usage = [
        {
            "until_s": 10,
            "machine_cpus": 1.1,
            "steal_cpus": 0.25,
            "services": {"app1": {"cpus": 0.1, "throttled": 0}},
        },
        {"until_s": 20, "machine_cpus": 1.9, "services": {"app1": {"cpus": 0.2, "throttled": 4}}},
    ]

    floor_usage = [{"until_s": 10, "machine_cpus": 0.8, "services": {}}]

    rows = timeline.table(periods, [], usage, floor_usage)

    head = "until s VUs requests p99 ms floor machine steal (floor) app1"
    assert rows[0].split() == head.split()
    assert rows[1].split() == ["10", "20", "100", "2.50", "-", "1.10", "0.25", "0.80", "0.100"]
    # a sample without steal (an older run's file) shows a dash there
    assert rows[2].split() == ["20", "40", "300", "31.00", "-", "1.90", "-", "-", "0.200*4"]
    assert "throttled" in rows[-1]


def test_sampling_a_block_writes_its_periods_when_the_block_ends(tmp_path: Path) -> None:
    reads = iter(_usage(float(n), 0) for n in range(1_000))
    timed = sampler.UsageSampler(lambda: {"app1": next(reads)}, period_s=0.01)

    with timed.running(tmp_path):
        wait_until(lambda: len(timed.samples) >= 3, timeout_s=5, what="three samples")

    written = json.loads((tmp_path / sampler.FILE_NAME).read_text())
    assert len(written) == len(timed.samples) - 1
    assert all(period["services"]["app1"]["throttled"] == 0 for period in written)
