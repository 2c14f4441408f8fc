"""Latency over a run's timeline, read from k6's dashboard export: a p99 per 10 s period.

    python -m bench.timeline results/<run>

k6's web dashboard keeps a snapshot of every metric per period (10 s) in ``report.html``; this
reads the requests' p99, count and VUs of each period there, for our run and for the floor's
(``results/<run>/floor/report.html``), side by side. Nothing is added to the k6 script for it:
tagging each request with its stage slowed k6 enough to move the floor. Where the bench
sampled the cgroups (``usage-timeline.json``, ``bench.sampler``), each row also shows how busy
the machine and each service were, and which were throttled.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sampler import FILE_NAME

_DATA_SCRIPT = re.compile(r'<script[^>]*id="data"[^>]*>([^<]*)</script>')
_DURATION = "http_req_duration"


class ReportUnreadable(Exception):
    """The file is not a k6 dashboard export this module understands; the message says why."""


@dataclass(frozen=True)
class Period:
    """One dashboard period: when it ended (s after the start) and what its requests did."""

    end_s: float
    requests: int
    vus: int
    p99_ms: float | None


def read_periods(report_html: Path) -> list[Period]:
    """The periods of a ``report.html`` that k6 wrote with ``K6_WEB_DASHBOARD_EXPORT``."""
    events = list(_events(report_html))
    params = next((data for event, data in events if event == "param"), None)
    if params is None:
        raise ReportUnreadable(f"{report_html}: no 'param' event in the dashboard data")
    trend_stats: list[str] = params["aggregates"]["trend"]
    started_ms = next((data[0][0] for event, data in events if event == "start"), None)
    names: set[str] = set()
    periods = []
    for event, data in events:
        if event == "metric":
            names.update(data)
        elif event == "snapshot":
            # A snapshot lists every metric known so far, in the order of their names.
            values = dict(zip(sorted(names), data, strict=True))
            duration = dict(zip(trend_stats, values.get(_DURATION) or [], strict=False))
            at_ms = _first(values.get("time"))
            periods.append(
                Period(
                    end_s=0.0
                    if at_ms is None or started_ms is None
                    else (at_ms - started_ms) / 1000,
                    requests=int(_first(values.get("http_reqs")) or 0),
                    vus=int(_first(values.get("vus")) or 0),
                    p99_ms=duration.get("p(99)"),
                )
            )
    return periods


def _events(report_html: Path) -> Iterator[tuple[str, Any]]:
    match = _DATA_SCRIPT.search(report_html.read_text())
    if match is None:
        raise ReportUnreadable(f'{report_html}: no dashboard data (<script id="data">) in it')
    try:
        lines = gzip.decompress(base64.b64decode(match[1].strip())).decode().splitlines()
        for line in lines:
            event = json.loads(line)
            yield event["event"], event["data"]
    except (ValueError, OSError, KeyError) as exc:
        raise ReportUnreadable(
            f"{report_html}: the dashboard data cannot be read ({exc})"
        ) from None


def _first(values: list[float] | None) -> float | None:
    return values[0] if values else None


def table(
    ours: list[Period],
    floor: list[Period],
    usage: list[dict[str, Any]] | None = None,
    floor_usage: list[dict[str, Any]] | None = None,
) -> list[str]:
    """One row per period: time, VUs, requests, our p99 and the floor's, in ms; with the
    sampled usage (``bench.sampler``), the machine's busy cores during our run and the
    floor's, and each service's, a ``*N`` after a service throttled N times in that period."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    usage = usage or []
    floor_usage = floor_usage or []
    services = sorted({name for row in usage for name in row["services"]}, key=_service_order)
    head = f"{'until s':>8}{'VUs':>6}{'requests':>10}{'p99 ms':>9}{'floor':>8}"
    if usage:
        head += f"{'machine':>9}{'steal':>7}{'(floor)':>9}"
        head += "".join(f"{name:>11}" for name in services)
    rows = [head]
    for index, period in enumerate(ours):
        theirs = floor[index].p99_ms if index < len(floor) else None
        row = (
            f"{period.end_s:8.0f}{period.vus:6d}{period.requests:10,d}"
            f"{ms(period.p99_ms):>9}{ms(theirs):>8}"
        )
        if index < len(usage):
            sampled = usage[index]
            floor_cpus = (
                f"{floor_usage[index]['machine_cpus']:.2f}" if index < len(floor_usage) else "-"
            )
            steal = sampled.get("steal_cpus")
            steal_text = "-" if steal is None else f"{steal:.2f}"
            row += f"{sampled['machine_cpus']:9.2f}{steal_text:>7}{floor_cpus:>9}"
            for name in services:
                cell = sampled["services"].get(name)
                text = "-" if cell is None else f"{cell['cpus']:.3f}"
                if cell and cell["throttled"]:
                    text += f"*{cell['throttled']}"
                row += f"{text:>11}"
        rows.append(row)
    if usage:
        rows.append(
            "machine and services in CPUs (cores busy) over each period; steal: of the machine's"
            " busy cores, time the hypervisor gave other guests; *N: throttled"
        )
    return rows


def _service_order(name: str) -> tuple[int, str]:
    order = ("nginx", "app1", "app2", "worker1", "worker2", "postgres", "memcached")
    return (order.index(name) if name in order else len(order), name)


def main(argv: list[str] | None = None) -> None:
    """Print the table for one results folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a results/<run> folder the benchmark wrote")
    args = parser.parse_args(argv)
    try:
        ours = read_periods(args.run / "report.html")
        floor_report = args.run / "floor" / "report.html"
        floor = read_periods(floor_report) if floor_report.is_file() else []
        usage = _usage(args.run / FILE_NAME)
        floor_usage = _usage(args.run / "floor" / FILE_NAME)
    except (OSError, ValueError, ReportUnreadable) as exc:
        sys.exit(f"timeline: {exc}")
    print("\n".join(table(ours, floor, usage, floor_usage)))


def _usage(path: Path) -> list[dict[str, Any]] | None:
    return json.loads(path.read_text()) if path.is_file() else None


if __name__ == "__main__":
    main()
