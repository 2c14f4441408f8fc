"""The fault suite: one fault at a time under a steady load, then a strict audit.

    STACK_QUEUE_TMPFS_MB=16 make up && .venv/bin/python -m bench.faults [--rate 200]
        [--seconds 12] [SCENARIO ...]
    make compose-up && .venv/bin/python -m bench.faults --compose [SCENARIO ...]

For each scenario: payments are posted through Nginx at ``--rate`` for ``--seconds``; the fault
is injected a quarter of the way in and undone (where it has an undo) half-way; then the suite
waits for every accepted payment to be recorded, asks both processors for every id, and
compares our summary with theirs. A service the fault kills outright (Memcached, PostgreSQL) is
started again with its recorded command line, as a container's restart policy would. It prints
one row a scenario: accepted, refused (non-2xx: we refuse rather than accept what we might
lose), lost, charged twice, seconds until ``/health`` was green again, totals equal. It exits
non-zero if anything was lost or charged twice, or the totals differ.

Runs against the stack in ``STACK_DIR`` (``make up``), or with ``--compose`` against the compose
deployment (``make compose-up``), whose faults are ``docker compose kill``s of whole services
(each started again as the undo); loopback only; every loop bounded. The queue-disk scenario
needs the queue on a small disk of its own (``STACK_QUEUE_TMPFS_MB``) and is skipped, saying
so, without one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pg8000.native
import yaml

from bench.audit import check_each, our_summary, totals_equal
from emulator.processors import Processor, Processors
from stack import daemons
from stack.deployment import Deployment
from stack.postgres import PostgresServer
from stack.services import Layout
from stack.settings import PROJECT_ROOT, StackSettings

_POST_TIMEOUT_S = 1.5
_SENDERS = 32
_SETTLE_TIMEOUT_S = 120.0
_HEALTH_TIMEOUT_S = 60.0
_HEALTH_POLL_S = 0.1
_REPEATED_KILLS = 3
_MAX_HOG_CONNECTIONS = 200
_random = random.Random()
_RED_WINDOW_S = 3.0
"""How long after the fault /health is watched for going red at all."""
_STABLE_GREEN_S = 2.0
"""How long /health must stay green after red to count as recovered."""


@dataclass(frozen=True)
class Fault:
    """What to break, and how to mend it (``None``: the stack must mend itself).

    ``setup`` and ``teardown`` run before the load starts and after the audit (a processor
    started with other limits, say); ``unavailable`` says why the scenario cannot run on this
    stack, or ``None``.
    """

    name: str
    inject: Callable[[], None]
    undo: Callable[[], None] | None = None
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    unavailable: Callable[[], str | None] | None = None
    verify: Callable[[], str | None] | None = None
    """After the audit: what did not take effect as it should, or ``None``."""


@dataclass(frozen=True)
class Row:
    """One scenario's result."""

    scenario: str
    accepted: int
    refused: int
    lost: int
    duplicated: int
    recover_s: float
    """From the fault's undo (or, for one the stack must undo itself, its injection) until
    ``/health`` was green again; 0 if it never went red."""
    totals_equal: bool
    refused_why: dict[str, int] = field(default_factory=dict)
    """What the refused requests got instead of a 2xx: ``HTTP 503``, ``timed out``, …"""
    problem: str | None = None
    """What the scenario's own check found wrong (``Fault.verify``)."""


class Target(Protocol):
    """What a scenario loads and audits: the backend's URL, the processors, its health."""

    url: str
    processors: Processors

    def healthy(self) -> bool: ...


def healthy_through_nginx(url: str) -> bool:
    """Whether ``/health`` through Nginx answers 200."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Stack:
    """The running stack's processes, as its pid files and the supervisors' logs tell."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.url = f"http://127.0.0.1:{settings.port}"
        self.processors: Processors = Layout(settings).processors()

    def record(self, name: str) -> daemons.PidRecord:
        """A service's pid record."""
        for record in daemons.read_records(self.settings.pids_dir):
            if record.name == name:
                return record
        raise LookupError(f"no running service named {name} in {self.settings.pids_dir}")

    def child_pid(self, service: str, role: str) -> int:
        """The current pid of one supervisor child (``http`` in app1, ``forwarder-0`` in
        worker1)."""
        pid = 0
        for line in Path(self.record(service).log).read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") == "started" and entry.get("child") == role:
                pid = int(entry["child_pid"])
        if not pid:
            raise LookupError(f"{service} has started no {role}")
        return pid

    def kill_service(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a whole service (its process group); SIGKILL unless told otherwise."""
        record = self.record(name)
        os.killpg(record.pid, sig)

    def restart_service(self, name: str, argv: list[str] | None = None) -> None:
        """Start a killed service again with the command line it was started with (or
        ``argv``)."""
        record = self.record(name)
        deadline = time.monotonic() + 10
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        daemons.spawn(
            record.name,
            argv or record.argv,
            order=record.order,
            env=os.environ,
            cwd=PROJECT_ROOT,
            log_path=Path(record.log),
            pid_path=self.settings.pids_dir / f"{record.name}.pid",
            stop_signal=record.stop_signal,
        )

    def healthy(self) -> bool:
        """Whether ``/health`` through Nginx answers 200."""
        return healthy_through_nginx(self.url)


class ComposeStack:
    """The compose deployment: its services are containers, its faults ``docker compose``'s."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.url = deployment.url
        default_url, fallback_url = deployment.processor_urls
        self.processors = Processors(
            Processor("default", default_url, deployment.default_fee),
            Processor("fallback", fallback_url, deployment.fallback_fee),
        )

    def healthy(self) -> bool:
        """Whether ``/health`` through Nginx answers 200."""
        return healthy_through_nginx(self.url)


def compose_faults(target: ComposeStack) -> dict[str, Fault]:
    """The scenarios of a compose deployment: whole services killed and started again, and
    the processors' own faults."""
    deployment = target.deployment

    def killed(service: str, sig: int = signal.SIGKILL) -> Fault:
        return Fault(
            f"compose kill {service}",
            lambda: deployment.kill(service, sig),
            lambda: deployment.start(service),
        )

    def failing(on: bool) -> Callable[[], None]:
        return lambda: target.processors.default.set_failure(on)

    return {
        fault.name: fault
        for fault in [
            killed("app1"),
            killed("worker1"),
            killed("postgres"),
            killed("memcached"),
            Fault("default answers 500", failing(True), failing(False)),
            killed("payment-processor-default"),
        ]
    }


def faults(stack: Stack) -> dict[str, Fault]:
    """Every scenario by name."""

    def kill_child(service: str, role: str) -> Callable[[], None]:
        return lambda: os.kill(stack.child_pid(service, role), signal.SIGKILL)

    def kill_child_repeatedly(service: str, role: str) -> Callable[[], None]:
        # Three SIGKILLs at random moments over the next few seconds, each once the child is
        # back: it dies mid-claim, mid-POST or mid-write as chance has it.
        def kills() -> None:
            for _ in range(_REPEATED_KILLS):
                time.sleep(_random.uniform(0.2, 1.5))
                pid = stack.child_pid(service, role)
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + _HEALTH_TIMEOUT_S
                while stack.child_pid(service, role) == pid and time.monotonic() < deadline:
                    time.sleep(0.05)

        return lambda: threading.Thread(target=kills, name="kills", daemon=True).start()

    connections = _ConnectionHog(Layout(stack.settings).postgres_server())

    def processor_failing(failing: bool) -> Callable[[], None]:
        return lambda: stack.processors.default.set_failure(failing)

    def processor_delay(delay_ms: int) -> Callable[[], None]:
        return lambda: stack.processors.default.set_delay(delay_ms)

    default = "payment-processor-default"
    original_argv: list[str] = []

    def restart_default(extra: list[str]) -> Callable[[], None]:
        # The emulator keeps its payments in a journal: a restart forgets none (a real
        # processor keeps them in PostgreSQL).
        def restart() -> None:
            if not original_argv:
                original_argv.extend(stack.record(default).argv)
            stack.kill_service(default, signal.SIGTERM)
            stack.restart_service(default, [*original_argv, *extra])
            _wait_for(stack.processors.default.is_ready, what=f"{default} back")

        return restart

    def kill_default() -> None:
        stack.kill_service(default)

    def restart_killed_default() -> None:
        stack.restart_service(default)
        _wait_for(stack.processors.default.is_ready, what=f"{default} back")

    queue_disk = _QueueDisk(stack.settings.queue_dir)

    def emulator_signal(sig: int) -> Callable[[], None]:
        return lambda: os.kill(stack.record("payment-processor-default").pid, sig)

    return {
        fault.name: fault
        for fault in [
            Fault("kill app1 http", kill_child("app1", "http")),
            Fault("kill app1 http 3x, random", kill_child_repeatedly("app1", "http")),
            Fault("kill app2 http", kill_child("app2", "http")),
            Fault("kill worker1 forwarder", kill_child("worker1", "forwarder-0")),
            Fault("kill worker2 forwarder", kill_child("worker2", "forwarder-0")),
            Fault("kill worker1 fwd 3x, random", kill_child_repeatedly("worker1", "forwarder-0")),
            Fault("kill worker1 health_poller", kill_child("worker1", "health_poller")),
            Fault(
                "kill memcached",
                lambda: stack.kill_service("memcached"),
                lambda: stack.restart_service("memcached"),
            ),
            Fault(
                # SIGQUIT to the postmaster is what `pg_ctl stop -m immediate` sends.
                "postgres immediate stop",
                lambda: stack.kill_service("postgres", signal.SIGQUIT),
                lambda: stack.restart_service("postgres"),
            ),
            Fault("default answers 500", processor_failing(True), processor_failing(False)),
            Fault(
                # Its limiter is the real one's (slots, then a queue, then 429) with 8 slots
                # and no queue instead of 800 and 500; a 200 ms delay fills them.
                "default answers 429",
                processor_delay(200),
                processor_delay(0),
                setup=restart_default(["--max-in-flight", "8", "--max-queued", "0"]),
                teardown=restart_default([]),
            ),
            Fault(
                # Past forwarder.request_timeout_s (8 s): our attempts end uncertain, and the
                # processor stores them anyway when its delay is over.
                "default stores late (10 s)",
                processor_delay(10_000),
                processor_delay(0),
            ),
            Fault(
                "default refuses connections",
                kill_default,
                restart_killed_default,
            ),
            Fault(
                "default hangs (SIGSTOP)",
                emulator_signal(signal.SIGSTOP),
                emulator_signal(signal.SIGCONT),
            ),
            Fault("reload nginx", lambda: os.kill(stack.record("nginx").pid, signal.SIGHUP)),
            Fault(
                "restart nginx",
                lambda: stack.kill_service("nginx", signal.SIGKILL),
                lambda: stack.restart_service("nginx"),
            ),
            Fault("postgres connections full", connections.take_all, connections.release),
            Fault(
                "queue disk full",
                queue_disk.fill,
                queue_disk.empty,
                unavailable=queue_disk.unavailable,
            ),
            reload_fault(stack),
        ]
    }


_RELOADED_MAX_AMOUNT = "5000.00"


def reload_fault(stack: Stack) -> Fault:
    """``python -m stack reload`` of the running stack (see ``config_reload_fault``)."""
    from stack.reload import reload

    def reload_stack() -> str | None:
        buffer = io.StringIO()
        status = reload(stack.settings, out=buffer)
        print(f"  ({'; '.join(buffer.getvalue().strip().splitlines())})", flush=True)
        return None if status == 0 else buffer.getvalue()

    return config_reload_fault(stack.url, stack.settings.config, reload_stack)


def config_reload_fault(url: str, config: Path | None, reload: Callable[[], str | None]) -> Fault:
    """A reload mid-load after a config value changed (``limits.max_amount``, in ``config``,
    the file the instances read): nothing refused, lost or charged twice, and the new value in
    effect afterwards (an amount above it refused with 422). ``reload`` returns what went
    wrong, or ``None``. The file is put back, and reloaded, at the end."""
    original: list[str] = []
    outcome: dict[str, object] = {}

    def unavailable() -> str | None:
        if config is None:
            return (
                "needs the stack started with STACK_CONFIG=<a copy of config/app.yaml>: "
                "the scenario edits that file"
            )
        return None

    def write(max_amount: str | None) -> None:
        assert config is not None
        if max_amount is None:
            config.write_text(original[0])
            return
        data = yaml.safe_load(original[0]) or {}
        data.setdefault("limits", {})["max_amount"] = max_amount
        config.write_text(yaml.safe_dump(data, sort_keys=False))

    def setup() -> None:
        assert config is not None
        original[:] = [config.read_text()]

    def reload_in_background() -> None:
        def run() -> None:
            write(_RELOADED_MAX_AMOUNT)
            outcome["problem"] = reload()

        thread = threading.Thread(target=run, name="reload", daemon=True)
        outcome["thread"] = thread
        thread.start()

    def verify() -> str | None:
        thread = outcome.get("thread")
        if isinstance(thread, threading.Thread):
            thread.join(_HEALTH_TIMEOUT_S)
            if thread.is_alive():
                return "the reload did not finish"
        if outcome.get("problem"):
            return f"the reload failed: {outcome['problem']}"
        above = f"{float(_RELOADED_MAX_AMOUNT) + 1:.2f}"
        post = payment_request(url, str(uuid.uuid4()), above)
        try:
            with urllib.request.urlopen(post, timeout=_POST_TIMEOUT_S) as response:
                return f"an amount of {above} was still accepted ({response.status})"
        except urllib.error.HTTPError as exc:
            if exc.code != 422:
                return f"an amount of {above} got {exc.code}, expected 422"
        return None

    def teardown() -> None:
        if original:
            write(None)
            reload()

    return Fault(
        "reload, a config value changed",
        reload_in_background,
        setup=setup,
        teardown=teardown,
        unavailable=unavailable,
        verify=verify,
    )


def payment_request(url: str, correlation_id: str, amount: str) -> urllib.request.Request:
    """``POST /payments`` of one payment, as the contest's test sends it."""
    return urllib.request.Request(
        f"{url}/payments",
        data=f'{{"correlationId":"{correlation_id}","amount":{amount}}}'.encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )


def run_scenario(stack: Target, fault: Fault, rate: float, seconds: float) -> Row:
    """Set up, load, inject, undo, settle, audit, tear down."""
    if fault.setup:
        fault.setup()
    try:
        row = _load_and_audit(stack, fault, rate, seconds)
        if fault.verify is not None:
            row = dataclasses.replace(row, problem=fault.verify())
        return row
    finally:
        if fault.teardown:
            fault.teardown()


def _load_and_audit(stack: Target, fault: Fault, rate: float, seconds: float) -> Row:
    for processor in stack.processors:
        processor.reset()
    request = urllib.request.Request(f"{stack.url}/purge-payments", method="POST")
    urllib.request.urlopen(request, timeout=5).read()
    accepted: list[str] = []
    refused: Counter[str] = Counter()
    lock = threading.Lock()

    def send(_: int) -> None:
        correlation_id = str(uuid.uuid4())
        post = payment_request(stack.url, correlation_id, "19.90")
        why = ""
        try:
            with urllib.request.urlopen(post, timeout=_POST_TIMEOUT_S) as response:
                if not 200 <= response.status < 300:
                    why = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            why = "timed out" if isinstance(reason, TimeoutError) else type(reason).__name__
        with lock:
            if why:
                refused[why] += 1
            else:
                accepted.append(correlation_id)

    total = int(rate * seconds)
    injected_at = undone = None
    watcher = _HealthWatcher(stack.healthy)
    started = time.monotonic()
    with ThreadPoolExecutor(_SENDERS) as pool:
        for index in range(total):
            due = started + index / rate
            time.sleep(max(due - time.monotonic(), 0))
            if injected_at is None and index >= total // 4:
                fault.inject()
                injected_at = time.monotonic()
                watcher.start(injected_at)
            if undone is None and fault.undo is not None and index >= total // 2:
                undone = time.monotonic()  # recovery includes the restart's own start-up
                fault.undo()
            pool.submit(send, index)
    assert injected_at is not None
    green_at = watcher.green_again_at()
    recover_s = 0.0 if green_at is None else max(green_at - (undone or injected_at), 0.0)
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            summary = our_summary(stack.url)
            if sum(part["totalRequests"] for part in summary.values()) >= len(accepted):
                break
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.5)
    holdings = check_each(accepted, stack.processors)
    equal, _ = totals_equal(stack.url, stack.processors)
    return Row(
        fault.name,
        len(accepted),
        refused.total(),
        len(holdings.lost),
        len(holdings.duplicated),
        recover_s,
        equal,
        dict(refused.most_common()),
    )


class _ConnectionHog:
    """Takes every connection PostgreSQL will still give, and holds them until released: the
    runtime's own connections are open already and must carry on."""

    def __init__(self, server: PostgresServer) -> None:
        self._server = server
        self._held: list[pg8000.native.Connection] = []

    def take_all(self) -> None:
        for _ in range(_MAX_HOG_CONNECTIONS):
            try:
                self._held.append(
                    pg8000.native.Connection(
                        user=self._server.user,
                        password=self._server.password,
                        database=self._server.database,
                        host="127.0.0.1",
                        port=self._server.port,
                        timeout=5,
                    )
                )
            except pg8000.native.DatabaseError:
                break  # "too many clients": the limit is reached
        print(f"  (holding {len(self._held)} PostgreSQL connections)", flush=True)

    def release(self) -> None:
        for connection in self._held:
            with contextlib.suppress(Exception):
                connection.close()
        self._held.clear()


class _QueueDisk:
    """The queue's disk, when the stack put it on a small tmpfs (``STACK_QUEUE_TMPFS_MB``):
    filled to the last byte by a ballast file, then freed."""

    def __init__(self, folder: Path) -> None:
        self._ballast = folder / "fault-ballast"
        self._folder = folder

    def unavailable(self) -> str | None:
        if not os.path.ismount(self._folder):
            return "the queue has no disk of its own: start the stack with STACK_QUEUE_TMPFS_MB=16"
        return None

    def fill(self) -> None:
        fd = os.open(self._ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in (b"\0" * (1 << 20), b"\0" * (1 << 12), b"\0"):  # to the last byte
                with contextlib.suppress(OSError):  # ENOSPC: on to a smaller chunk
                    while os.write(fd, chunk):
                        pass
        finally:
            os.close(fd)

    def empty(self) -> None:
        self._ballast.unlink(missing_ok=True)


def _wait_for(ready: Callable[[], bool], *, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.05)


class _HealthWatcher:
    """From the fault on, polls ``/health`` and notes when it is green again after having
    gone red."""

    def __init__(self, healthy: Callable[[], bool]) -> None:
        self._healthy = healthy
        self._green_again_at: float | None = None
        self._never_green = False
        self._thread: threading.Thread | None = None

    def start(self, since: float) -> None:
        self._thread = threading.Thread(target=self._watch, args=(since,), daemon=True)
        self._thread.start()

    def _watch(self, since: float) -> None:
        went_red = False
        green_since: float | None = None
        deadline = since + _HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            now = time.monotonic()
            if self._healthy():
                green_since = now if green_since is None else green_since
                # Each instance caches its checks for a moment, so one green answer just
                # after the fault can be stale: green counts once it has held a while.
                if went_red and now - green_since >= _STABLE_GREEN_S:
                    self._green_again_at = green_since
                    return
                if not went_red and now - since > _RED_WINDOW_S:
                    return
            else:
                went_red = True
                green_since = None
            time.sleep(_HEALTH_POLL_S)
        self._never_green = went_red

    def green_again_at(self) -> float | None:
        """When ``/health`` turned green after going red: ``None`` if it never went red,
        infinity if it was still red when the watch ended."""
        if self._thread is not None:
            self._thread.join(timeout=_HEALTH_TIMEOUT_S)
        return float("inf") if self._never_green else self._green_again_at


def main() -> None:
    """Run the chosen scenarios (all by default) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help="names from the table (default: all)")
    parser.add_argument("--rate", type=float, default=200.0, help="payments per second")
    parser.add_argument("--seconds", type=float, default=12.0, help="load per scenario")
    parser.add_argument(
        "--compose", action="store_true", help="the compose deployment (make compose-up)"
    )
    args = parser.parse_args()
    stack: Target
    if args.compose:
        stack = ComposeStack(Deployment.from_env(os.environ))
        table = compose_faults(stack)
    else:
        stack = Stack(StackSettings.from_env(os.environ))
        table = faults(stack)
    if not stack.healthy():
        up = "make compose-up" if args.compose else "make up"
        sys.exit(f"no healthy stack at {stack.url}: run `{up}` first")
    chosen = args.scenarios or list(table)
    unknown = [name for name in chosen if name not in table]
    if unknown:
        sys.exit(f"unknown scenario {unknown[0]!r}; choose from: {', '.join(table)}")
    rows = []
    width = max(len(name) for name in chosen)
    print(
        f"{'scenario':{width}s} {'accepted':>8s} {'refused':>8s} {'lost':>5s} {'twice':>6s} "
        f"{'recover s':>9s} totals"
    )
    for name in chosen:
        fault = table[name]
        reason = fault.unavailable() if fault.unavailable else None
        if reason:
            print(f"{name:{width}s} skipped: {reason}", flush=True)
            continue
        row = run_scenario(stack, fault, args.rate, args.seconds)
        rows.append(row)
        print(
            f"{row.scenario:{width}s} {row.accepted:8d} {row.refused:8d} {row.lost:5d} "
            f"{row.duplicated:6d} {row.recover_s:9.1f} {'equal' if row.totals_equal else 'DIFF'}",
            flush=True,
        )
        if row.refused_why:
            why = ", ".join(f"{count} {reason}" for reason, count in row.refused_why.items())
            print(f"  (refused: {why})", flush=True)
        if row.problem:
            print(f"  FAILED: {row.problem}", flush=True)
    failed = any(row.lost or row.duplicated or not row.totals_equal or row.problem for row in rows)
    print("RESULT: " + ("FAIL" if failed else "PASS"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
