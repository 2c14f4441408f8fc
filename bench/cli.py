"""``python -m bench MODE``: run the contest's load test and print the contest's score.

For ``final``, ``preview`` and ``stress`` it installs k6 1.1.0 if missing, brings the local
stack up with the mode's fees (``python -m stack up`` in a fresh ``STACK_DIR``), waits for
the backend as the contest's harness does, runs k6, reads each service's cgroup usage over the
run (start-up left out), copies the logs, takes the stack down, then runs the same test against
the floor Nginx and prints: the score, its ceiling and our share of it, our p99 over the
floor's, and the usage next to the compose limits. ``floor-MODE`` measures the floor alone.
With ``--compose`` the stack is the compose deployment instead (``python -m stack compose up``
with a project of its own, its usage read from the containers' cgroups, ``down -v`` after).

Everything lands in ``results/<timestamp>-<mode>/``: ``summary.json`` (k6's summary export),
``report.html`` (k6's web dashboard, self-contained), ``k6.log``, ``score.json``, ``logs/``
(the services' logs) and ``floor/`` (the floor run's own summary and report).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench import floor, official, report
from bench.k6 import K6Run, K6Unavailable, ensure_k6, run_k6
from bench.modes import Mode, UnknownMode, mode_names, parse_mode
from bench.sampler import UsageSampler
from bench.score import (
    REFERENCE_P99_MS,
    Score,
    ceiling,
    compute_score,
    totals_from_k6_summary,
)
from emulator.processors import EMULATOR_TOKEN, Processor
from stack import compose
from stack.cgroups import Limits, Usage, stack_usage
from stack.deployment import Deployment
from stack.probes import tcp_open
from stack.settings import PROJECT_ROOT, StackSettings

RESULTS_DIR = PROJECT_ROOT / "results"
BENCH_STACKS_DIR = PROJECT_ROOT / "var" / "bench"
PAYMENTS_P99_METRIC = "http_req_duration{scenario:payments,expected_response:true}"
# The contest's harness: `curl -f --max-time 3 .../payments-summary`, 15 tries, `sleep 5`
# after each (the successful one too).
READY_TRIES = 15
READY_INTERVAL_S = 5.0
READY_TIMEOUT_S = 3.0
_STACK_CLI_TIMEOUT_S = 300.0
_COMPOSE_UP_TIMEOUT_S = 1500.0
_SHORT_SCALE = 0.1
FLOOR_SERVICE = "nginx (floor)"
CONTEST_PORT = 9999
_STACK_PORT_VARS = (
    "STACK_PORT",
    "STACK_PG_PORT",
    "STACK_MEMCACHED_PORT",
    "STACK_DEFAULT_PORT",
    "STACK_FALLBACK_PORT",
)


@dataclass
class Target:
    """Where k6 sends its requests."""

    backend_url: str
    default_url: str
    fallback_url: str


@dataclass
class Measured:
    """One k6 run's outcome: its exit status and what its summary says, if it wrote one."""

    exit_code: int
    out_dir: Path
    summary: dict[str, Any] | None = None
    usage: dict[str, Usage] = field(default_factory=dict)
    limits: dict[str, Limits | None] = field(default_factory=dict)

    @property
    def p99_ms(self) -> float | None:
        return _p99(self.summary, "http_req_duration{expected_response:true}")

    @property
    def payments_p99_ms(self) -> float | None:
        return _p99(self.summary, PAYMENTS_P99_METRIC)


def _p99(summary: dict[str, Any] | None, metric: str) -> float | None:
    if not summary:
        return None
    value = summary.get("metrics", {}).get(metric, {}).get("p(99)")
    return None if value is None else float(value)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_for_backend(
    url: str, *, tries: int = READY_TRIES, interval_s: float = READY_INTERVAL_S
) -> bool:
    """Poll ``GET /payments-summary`` without parameters like the contest's harness."""
    for attempt in range(1, tries + 1):
        ok = False
        try:
            with urllib.request.urlopen(f"{url}/payments-summary", timeout=READY_TIMEOUT_S) as r:
                ok = r.status < 400
        except (urllib.error.URLError, OSError):
            ok = False
        print(
            f"bench: backend readiness try {attempt} of {tries}: {'ok' if ok else 'no'}", flush=True
        )
        time.sleep(interval_s)
        if ok:
            return True
    return False


def stack_ports(environ: Mapping[str, str]) -> dict[str, str]:
    """Free loopback ports for every ``STACK_*_PORT`` the caller did not set.

    A developer's own stack (``make up``) may hold the default ports; the benchmark's stack
    must not collide with it. k6 is given the URLs, so the port numbers do not matter.
    """
    return {name: str(floor.free_port()) for name in _STACK_PORT_VARS if not environ.get(name)}


def _stack_cli(command: str, env: Mapping[str, str]) -> int:
    """Run ``python -m stack COMMAND`` (the stack package's documented CLI)."""
    print(f"bench: python -m stack {command} (STACK_DIR={env['STACK_DIR']})", flush=True)
    try:
        return subprocess.run(
            [sys.executable, "-m", "stack", command],
            env=dict(env),
            cwd=PROJECT_ROOT,
            timeout=_STACK_CLI_TIMEOUT_S,
            check=False,
        ).returncode
    except subprocess.TimeoutExpired:
        print(
            f"bench: python -m stack {command} took over {_STACK_CLI_TIMEOUT_S:.0f} s", flush=True
        )
        return 124


def _stack_target(env: Mapping[str, str]) -> tuple[Target, StackSettings]:
    """The stack's URLs as its own settings derive them from ``env``."""
    settings = StackSettings.from_env(env)
    default_url, fallback_url = settings.processor_urls()
    return Target(settings.url, default_url, fallback_url), settings


def _compose_limits() -> dict[str, Limits]:
    try:
        return compose.service_limits(compose.load(PROJECT_ROOT / "docker-compose.yml"))
    except compose.ComposeError as exc:
        print(f"bench: no compose limits to show ({exc})", flush=True)
        return {}


def measure_stack(
    mode: Mode, args: argparse.Namespace, binary: Path, out_dir: Path, stack_name: str
) -> Measured:
    """Bring the stack up with the mode's fees, run k6 against it, take it down."""
    run_kwargs = dict(
        script=_script(mode, args, out_dir),
        out_dir=out_dir,
        token=str(uuid.uuid4()),
        initial_token=EMULATOR_TOKEN,
        max_requests=args.vus or mode.max_requests,
        duration_scale=args.scale,
    )
    if args.backend:
        target = Target(args.backend, args.default_processor, args.fallback_processor)
        if not wait_for_backend(target.backend_url):
            print("bench: the backend never answered GET /payments-summary", flush=True)
            return Measured(2, out_dir)
        try:
            code = run_k6(K6Run(**run_kwargs, **asdict(target)), binary, mode.duration_s)
        finally:
            _give_processors_back(target, run_kwargs["token"], run_kwargs["initial_token"])
        return Measured(code, out_dir, _read_json(out_dir / "summary.json"))
    if args.compose:
        return measure_compose(mode, args, run_kwargs, binary, out_dir)

    stack_dir = BENCH_STACKS_DIR / stack_name
    env = {
        **stack_ports(os.environ),
        **os.environ,
        **_official_ports(args),
        "STACK_DIR": str(stack_dir),
        "STACK_FEES": mode.stack_fees,
    }
    if tcp_open(CONTEST_PORT) and env["STACK_PORT"] != str(CONTEST_PORT):
        print(
            f"bench: something listens on {CONTEST_PORT}: if it is another stack, it competes "
            "for the CPU and skews these figures",
            flush=True,
        )
    target, settings = _stack_target(env)
    measured = Measured(2, out_dir, limits=_compose_limits())
    try:
        if _stack_cli("up", env) != 0:
            print("bench: the stack did not come up; see its logs in the results", flush=True)
        elif not wait_for_backend(target.backend_url):
            print("bench: the backend never answered GET /payments-summary", flush=True)
        else:
            # Read before `down`, which removes the cgroups.
            _run_measured(
                measured,
                K6Run(**run_kwargs, **asdict(target)),
                binary,
                mode,
                lambda: stack_usage(settings.pids_dir),
            )
    finally:
        if settings.logs_dir.is_dir():
            shutil.copytree(settings.logs_dir, out_dir / "logs", dirs_exist_ok=True)
        down = _stack_cli("down", env)
        if down == 0 and not args.keep_stack:
            shutil.rmtree(stack_dir, ignore_errors=True)
    return measured


def _give_processors_back(target: Target, token: str, initial_token: str) -> None:
    """Set the processors' admin token back to the one they started with.

    The test's setup takes them over with a fresh token, as the contest's harness does; left
    so, the next run against the same long-lived processors could not take them (its setup
    presents the initial token, is refused, and the test aborts having processed nothing).
    """
    for name, url in (("default", target.default_url), ("fallback", target.fallback_url)):
        processor = Processor(name, url, 0.0, token=token)
        try:
            status, _ = processor.request(
                "PUT", "/admin/configurations/token", {"token": initial_token}
            )
        except OSError as exc:
            status = f"unreachable ({exc})"
        if status != 204:
            print(
                f"bench: {name} processor's token not given back ({status}); restart it "
                "before the next run",
                flush=True,
            )


def measure_compose(
    mode: Mode, args: argparse.Namespace, run_kwargs: dict[str, Any], binary: Path, out_dir: Path
) -> Measured:
    """Bring the compose deployment up with the mode's fees, run k6 against it, take it down."""
    env = {
        **stack_ports(os.environ),
        **os.environ,
        **_official_ports(args),
        "STACK_FEES": mode.stack_fees,
        "STACK_COMPOSE_PROJECT": "rinha-bench",
        "STACK_PROCESSOR_NETWORK": "payment-processor-bench",
    }
    deployment = Deployment.from_env(env)
    default_url, fallback_url = deployment.processor_urls
    target = Target(deployment.url, default_url, fallback_url)
    measured = Measured(2, out_dir, limits=_compose_limits())
    print(f"bench: python -m stack compose up (project {deployment.project})", flush=True)
    try:
        up = subprocess.run(
            [sys.executable, "-m", "stack", "compose", "up"],
            env=env,
            cwd=PROJECT_ROOT,
            timeout=_COMPOSE_UP_TIMEOUT_S,
            check=False,
        )
        if up.returncode != 0:
            print("bench: the compose deployment did not come up", flush=True)
        elif not wait_for_backend(target.backend_url):
            print("bench: the backend never answered GET /payments-summary", flush=True)
        else:
            _run_measured(
                measured, K6Run(**run_kwargs, **asdict(target)), binary, mode, deployment.usage
            )
    finally:
        (out_dir / "logs").mkdir(exist_ok=True)
        with contextlib.suppress(Exception):
            logs = deployment.run(deployment.backend("logs", "--no-color"), timeout_s=120)
            (out_dir / "logs" / "compose.log").write_text(logs)
        with contextlib.suppress(Exception):
            deployment.down(volumes=True, out=sys.stdout)
    return measured


def _run_measured(
    measured: Measured,
    run: K6Run,
    binary: Path,
    mode: Mode,
    usage: Callable[[], dict[str, Usage]],
) -> None:
    """Run k6 with each service's usage sampled every 10 s (``bench.sampler``); fill in the
    exit code, k6's summary and the usage over the test."""
    before = usage()
    with UsageSampler(usage).running(measured.out_dir):
        measured.exit_code = run_k6(run, binary, mode.duration_s)
    measured.summary = _read_json(measured.out_dir / "summary.json")
    measured.usage = _during(usage(), before)


def _during(after: dict[str, Usage], before: dict[str, Usage]) -> dict[str, Usage]:
    """Each service's usage over the test alone (a service missing before counts from zero)."""
    return {
        service: used.since(before[service]) if service in before else used
        for service, used in after.items()
    }


def _official_ports(args: argparse.Namespace) -> dict[str, str]:
    """With ``--official``: the ports the contest's requests.js calls, for our stack."""
    return {name: str(port) for name, port in official.PORTS.items()} if args.official else {}


def _script(mode: Mode, args: argparse.Namespace, out_dir: Path) -> Path:
    """The mode's script: ours, or the contest's own copied into ``out_dir`` (k6 runs there,
    so the ``final-results.json`` it writes lands beside our summary)."""
    if not args.official:
        return mode.script_path
    return official.prepare(args.official, args.vendor, out_dir / "official", mode.name)


def _k6_against(url: str, mode: Mode, args: argparse.Namespace, binary: Path, out_dir: Path) -> int:
    """Run the mode's script with ``url`` as the backend and both processors' admin API."""
    run = K6Run(
        script=_script(mode, args, out_dir),
        out_dir=out_dir,
        backend_url=url,
        default_url=url,
        fallback_url=url,
        token=str(uuid.uuid4()),
        max_requests=args.vus or mode.max_requests,
        duration_scale=args.scale,
    )
    return run_k6(run, binary, mode.duration_s)


def measure_floor(mode: Mode, args: argparse.Namespace, binary: Path, out_dir: Path) -> Measured:
    """The same test, same VUs and timeline, against the floor Nginx under Nginx's limits."""
    print("bench: measuring the floor (Nginx alone answering 200)", flush=True)
    ports = tuple(official.PORTS.values()) if args.official else ()
    # The sampler takes the machine's busy cores alone: Nginx's usage comes once it stops.
    with (
        floor.floor_nginx(
            out_dir / "nginx", template=PROJECT_ROOT / "deploy" / "nginx.conf", ports=ports
        ) as fl,
        UsageSampler(dict).running(out_dir),
    ):
        code = _k6_against(fl.url, mode, args, binary, out_dir)
    usage = {FLOOR_SERVICE: fl.usage} if fl.usage is not None else {}
    limits = {FLOOR_SERVICE: _compose_limits().get("nginx")}
    return Measured(code, out_dir, _read_json(out_dir / "summary.json"), usage, limits)


def _usage_json(usage: Mapping[str, Any], limits: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for service, used in usage.items():
        limit = limits.get(service)
        out[service] = {
            **asdict(used),
            "limit_cpus": getattr(limit, "cpus", None),
            "limit_memory_bytes": getattr(limit, "memory_bytes", None),
        }
    return out


def summarize(
    mode: Mode,
    args: argparse.Namespace,
    ours: Measured | None,
    floor_run: Measured | None,
) -> tuple[list[str], dict[str, Any]]:
    """The printed report and ``score.json``'s content."""
    max_requests = args.vus or mode.max_requests
    lines = ["", report.title(mode, max_requests, args.scale)]
    data: dict[str, Any] = {
        "mode": mode.name,
        "max_requests": max_requests,
        "amount": float(mode.amount),
        "fees": {"default": float(mode.default_fee), "fallback": float(mode.fallback_fee)},
        "duration_scale": args.scale,
    }
    floor_p99 = floor_run.p99_ms if floor_run else None
    if floor_run is not None:
        data["floor"] = {
            "k6_exit": floor_run.exit_code,
            "p99_ms": floor_p99,
            "payments_p99_ms": floor_run.payments_p99_ms,
            "usage": _usage_json(floor_run.usage, floor_run.limits),
        }
    if ours is not None:
        data["k6_exit"] = ours.exit_code
        if ours.summary is None:
            lines.append(f"  no k6 summary (k6 exited {ours.exit_code}): no score")
        else:
            score: Score = compute_score(totals_from_k6_summary(ours.summary))
            ceiling_p99 = floor_p99 if floor_p99 is not None else REFERENCE_P99_MS
            top = ceiling(score.success, mode.amount, mode.default_fee, ceiling_p99)
            lines += report.score_lines(
                score,
                payments_p99_ms=ours.payments_p99_ms,
                floor_p99_ms=floor_p99,
                ceiling_value=top,
                ceiling_p99_ms=ceiling_p99,
            )
            data["score"] = score.to_json()
            data["payments_p99_ms"] = ours.payments_p99_ms
            data["ceiling"] = {
                "value": float(top),
                "p99_ms": ceiling_p99,
                "p99_from": "floor" if floor_p99 is not None else "contest best",
                "share": float(score.score / top) if top else None,
            }
            if floor_p99 and score.p99_ms is not None:
                data["p99_over_floor"] = float(score.p99_ms) / floor_p99
            if ours.exit_code != 0:
                lines.append(f"  note: k6 exited {ours.exit_code}")
            own = _contest_result(ours.out_dir)
            if own is not None:
                lines.append(
                    f"  contest's own  total_liquido {own.get('total_liquido')}, p99 "
                    f"{own.get('p99', {}).get('valor')}, lag {own.get('lag', {}).get('lag')} "
                    f"(its {own.get('_file')})"
                )
                data["contest_result"] = own
        if args.backend:
            lines.append("  cgroup usage: n/a (a backend started elsewhere)")
        else:
            lines.append("  cgroup usage during the test (peak memory: since start):")
            lines += report.usage_lines(ours.usage, ours.limits, _accepted(ours))
        data["usage"] = _usage_json(ours.usage, ours.limits)
    if floor_run is not None:
        lines.append(
            f"  floor           p99 {report.ms(floor_p99)}   "
            f"(POST /payments alone: {report.ms(floor_run.payments_p99_ms)}; "
            f"k6 exited {floor_run.exit_code})"
        )
        if floor_run.usage:
            lines += report.usage_lines(floor_run.usage, floor_run.limits, _accepted(floor_run))
    return lines, data


def _contest_result(out_dir: Path) -> dict[str, Any] | None:
    """What the contest's own script wrote of its run, if it ran (``--official``)."""
    for name in ("final-results.json", "partial-results.json"):
        found = _read_json(out_dir / name)
        if found is not None:
            return {**found, "_file": name}
    return None


def _accepted(run: Measured) -> int | None:
    """The payments k6 saw accepted in ``run``, or ``None`` without a summary."""
    if run.summary is None:
        return None
    return totals_from_k6_summary(run.summary).success


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the contest's load test and print the contest's score; "
        "results go to results/<timestamp>-<mode>/.",
    )
    parser.add_argument("mode", metavar="MODE", help="one of: " + ", ".join(mode_names()))
    parser.add_argument("--no-floor", action="store_true", help="skip the floor measurement")
    parser.add_argument(
        "--scale",
        type=float,
        default=float(os.environ.get("BENCH_DURATION_SCALE") or 1.0),
        help="compress the timeline (test length, stage times) by this factor; "
        "default $BENCH_DURATION_SCALE or 1",
    )
    parser.add_argument(
        "--short",
        action="store_const",
        dest="scale",
        const=_SHORT_SCALE,
        help=f"smoke run: --scale {_SHORT_SCALE}",
    )
    parser.add_argument("--vus", type=int, help="override MAX_REQUESTS (the VU target)")
    parser.add_argument(
        "--compose",
        action="store_true",
        help="run the compose deployment (docker-compose.yml for real) instead of the local stack",
    )
    parser.add_argument(
        "--backend",
        metavar="URL",
        help="test a backend already running at URL instead of starting the stack",
    )
    parser.add_argument(
        "--default-processor",
        metavar="URL",
        default="http://127.0.0.1:8001",
        help="with --backend: the default processor (token 123 at start)",
    )
    parser.add_argument(
        "--fallback-processor",
        metavar="URL",
        default="http://127.0.0.1:8002",
        help="with --backend: the fallback processor (token 123 at start)",
    )
    parser.add_argument(
        "--official",
        metavar="DIR",
        type=Path,
        help="run the contest's own scripts from DIR, a checkout of "
        "github.com/zanfranceschi/rinha-de-backend-2025 (final: commit e853c851c0e0); "
        "the stack and the floor then listen on 9999, 8001 and 8002",
    )
    parser.add_argument(
        "--vendor",
        metavar="DIR",
        type=Path,
        default=official.DEFAULT_VENDOR,
        help="with --official: local copies of the scripts' remote imports "
        f"(python -m bench.official vendor); default {official.DEFAULT_VENDOR}",
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help=f"default {RESULTS_DIR}")
    parser.add_argument(
        "--keep-stack", action="store_true", help="keep the stack's folder under var/bench/"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exits 0 when every k6 run completed, else 1 (2 on bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        mode, floor_only = parse_mode(args.mode)
    except UnknownMode as exc:
        parser.error(str(exc))
    if not 0 < args.scale <= 1:
        parser.error(f"--scale: expected a factor in (0, 1], found {args.scale}")
    if args.vus is not None and args.vus < 1:
        parser.error(f"--vus: expected at least 1, found {args.vus}")
    if args.official:
        if args.scale != 1:
            parser.error("--official runs the contest's scripts as they are: no --scale/--short")
        if args.backend:
            parser.error("--official calls localhost:9999 itself: no --backend")
        taken = [str(port) for port in official.PORTS.values() if tcp_open(port)]
        if taken:
            print(
                f"bench: --official needs ports {', '.join(map(str, official.PORTS.values()))} "
                f"(the contest's requests.js calls them); in use: {', '.join(taken)} "
                "(`make down` stops a local stack)",
                file=sys.stderr,
            )
            return 2
        try:
            with tempfile.TemporaryDirectory(prefix="bench-official-") as tmp:
                official.prepare(args.official, args.vendor, Path(tmp), mode.name)
        except official.OfficialUnavailable as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
    try:
        binary = ensure_k6()
    except K6Unavailable as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = args.results / f"{stamp}-{args.mode}"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"bench: results go to {out_dir}", flush=True)

    # Other work on the machine slows k6 and the stack alike; the load says how much there was.
    load_before = os.getloadavg()[0]
    ours = None
    if not floor_only:
        ours = measure_stack(mode, args, binary, out_dir, f"{stamp}-{mode.name}")
    floor_run = None
    if floor_only or not args.no_floor:
        floor_run = measure_floor(mode, args, binary, out_dir / "floor" if ours else out_dir)

    load_after = os.getloadavg()[0]
    lines, data = summarize(mode, args, ours, floor_run)
    lines.append(
        f"  machine load    1-min average {load_before:.2f} before, {load_after:.2f} after "
        f"({os.cpu_count()} cores)"
    )
    data["started_at"] = stamp
    data["load_average_1min"] = {"before": load_before, "after": load_after}
    (out_dir / "score.json").write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    print("\n".join(lines), flush=True)
    print(f"\nbench: wrote {out_dir}", flush=True)
    runs = [r for r in (ours, floor_run) if r is not None]
    return 0 if all(r.exit_code == 0 for r in runs) else 1


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
