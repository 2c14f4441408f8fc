"""Reading the per-period p99 back from k6's dashboard export."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest

from bench import timeline

_TRENDS = ["avg", "max", "med", "min", "p(90)", "p(95)", "p(99)"]


def _report(tmp_path: Path, events: list[tuple[str, object]]) -> Path:
    lines = "\n".join(json.dumps({"event": name, "data": data}) for name, data in events)
    payload = base64.b64encode(gzip.compress(lines.encode())).decode()
    path = tmp_path / "report.html"
    path.write_text(
        f'<html><script id="data" type="application/json; charset=utf-8; gzip; base64">'
        f"{payload}</script></html>"
    )
    return path


def _trend(p99: float) -> list[float]:
    return [p99 / 3, p99 * 2, p99 / 4, 0.1, p99 / 2, p99 * 0.8, p99]


def test_each_snapshot_becomes_a_period_with_its_p99_requests_and_vus(tmp_path: Path) -> None:
    started = 1_000_000
    report = _report(
        tmp_path,
        [
            ("param", {"aggregates": {"trend": _TRENDS}, "period": 10000}),
            ("metric", {"time": {}}),
            ("start", [[started]]),
            # Names arrive unsorted; each snapshot lists values in sorted-name order.
            ("metric", {"vus": {}, "http_reqs": {}, "http_req_duration": {}}),
            ("snapshot", [_trend(1.5), [300, 30.0], [started + 10_000], [31]]),
            ("snapshot", [_trend(4.25), [900, 90.0], [started + 20_000], [92]]),
        ],
    )

    periods = timeline.read_periods(report)

    assert periods == [
        timeline.Period(end_s=10.0, requests=300, vus=31, p99_ms=1.5),
        timeline.Period(end_s=20.0, requests=900, vus=92, p99_ms=4.25),
    ]


def test_a_period_without_requests_has_no_p99(tmp_path: Path) -> None:
    report = _report(
        tmp_path,
        [
            ("param", {"aggregates": {"trend": _TRENDS}}),
            ("metric", {"http_req_duration": {}, "http_reqs": {}}),
            ("snapshot", [[], []]),
        ],
    )

    assert timeline.read_periods(report) == [
        timeline.Period(end_s=0.0, requests=0, vus=0, p99_ms=None)
    ]


def test_a_page_without_dashboard_data_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text("<html>no data</html>")

    with pytest.raises(timeline.ReportUnreadable, match="no dashboard data"):
        timeline.read_periods(page)


def test_the_table_puts_the_floor_beside_each_period() -> None:
    ours = [timeline.Period(10.0, 300, 31, 1.5), timeline.Period(20.0, 900, 92, 4.25)]
    floor = [timeline.Period(10.0, 300, 31, 0.5)]

    header, first, second = timeline.table(ours, floor)

    assert header.split() == ["until", "s", "VUs", "requests", "p99", "ms", "floor"]
    assert first.split() == ["10", "31", "300", "1.50", "0.50"]
    assert second.split() == ["20", "92", "900", "4.25", "-"]
