"""Fork one instance's processes and keep them running.

The supervisor loads everything (config, manifest, function modules) before it forks, so a
child starts in milliseconds and shares the imported code's memory; it opens no connection and
starts no thread, so forking stays safe. A child that dies is started again after a backoff
that doubles with each quick death and resets once the child has run a while. Children get
SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG``), so a killed supervisor leaves no orphan
bound to the socket.

SIGHUP reloads the bundle in place: its files (functions, the domain package, the manifest,
the config, the migrations) are read again into the supervisor, checked as ``runtime check``
checks them, and only then do the children stop and new ones start from the new bundle: the
instance is without an HTTP server for the few milliseconds between the two. A broken bundle
is refused, logged with its fault, and the running children go on. Where the memory limit
leaves no room to load a second bundle beside the running children, they stop first (behind
Nginx the other instance answers meanwhile) and start again with the old bundle if the new one
is refused. The runtime's own code is not reloaded: a change to it needs a restart.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime.bundle import Bundle
from runtime.config import RuntimeConfig
from runtime.errors import RuntimeStartError
from runtime.heap import freeze_before_fork
from runtime.logs import setup_logging
from runtime.manifest import KINDS_OF_ROLE
from runtime.metrics import forget_instance, forget_process
from runtime.queue import hold_producer
from runtime.stopping import Stopping

_log = logging.getLogger("runtime.supervisor")
_BACKOFF_INITIAL_S = 0.1
_BACKOFF_MAX_S = 10.0
_STABLE_AFTER_S = 30.0
_STOP_TIMEOUT_S = 15.0
_HTTP_STOP_TIMEOUT_S = 1.0
_REAP_INTERVAL_S = 0.05
_IDLE_WAKE_S = 1.0
"""The longest the supervisor sleeps between looks at its children: a signal (a child's death,
SIGTERM, SIGHUP) wakes it at once, so this is only a safety net."""
_PR_SET_PDEATHSIG = 1
_RELOAD_HEADROOM_BYTES = 16 * 1024 * 1024
"""What loading a second bundle may need beside the running children (it measured 10 MiB)."""
_LISTENING_TIMEOUT_S = 30.0


Reloader = Callable[[], tuple[RuntimeConfig, list["Child"]]]
"""Loads and checks the bundle's files as they are now; returns the new config and children.
Raises ``RuntimeStartError`` (the fault) and leaves the loaded bundle as it was."""


def unit_name(instance: str, role: str) -> str:
    """The supervisor's own name: the instance, plus the role when it runs only part of it.

    Two supervisors of one instance (``--role http`` and ``--role workers``) share the metrics
    folder; each forgets only its own processes' stale gauges.
    """
    return instance if role == "all" else f"{instance}.{role}"


@dataclass
class Child:
    """One supervised process: what it runs and how it has fared."""

    name: str
    target: Callable[[Stopping], None]
    stop_signal: int = signal.SIGTERM
    stop_timeout_s: float = _STOP_TIMEOUT_S
    """How long it may take to stop before it is killed."""
    pid: int = 0
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0


def children_for(bundle: Bundle, role: str = "all") -> list[Child]:
    """The processes of one instance in ``role``: the HTTP server, then each worker process."""
    from runtime.app import create_app
    from runtime.server import serve
    from runtime.workers import BackgroundRunner, run_schedule

    config = bundle.runtime
    manifest = bundle.manifest

    listening = Supervisor.listening_path(config, unit_name(config.instance, role))

    def http(stop: Stopping) -> None:
        del stop  # bjoern stops on SIGINT by itself

        def announce() -> None:
            listening.parent.mkdir(parents=True, exist_ok=True)
            written = listening.with_suffix(f".{os.getpid()}.tmp")
            written.write_text(f"{os.getpid()}\n")
            os.replace(written, listening)  # whole or not at all for the supervisor reading it

        app = create_app(bundle, bundle.deps())
        serve(app, config.bind, config.server.socket_mode, on_listening=announce)

    kinds = KINDS_OF_ROLE[role]
    children = []
    if "http" in kinds and manifest.of_kind("http"):
        # bjoern stops accepting on SIGINT but serves its open connections until they close,
        # and Nginx keeps idle ones for a minute: after the request in hand (microseconds),
        # a second is plenty. Nginx retries what a killed connection dropped elsewhere.
        children.append(
            Child("http", http, stop_signal=signal.SIGINT, stop_timeout_s=_HTTP_STOP_TIMEOUT_S)
        )
    for spec in manifest.of_kind("background") if "background" in kinds else []:
        for index in range(spec.processes):

            def background(stop: Stopping, spec=spec) -> None:
                BackgroundRunner(bundle, spec, bundle.deps(), stop).run()

            children.append(Child(f"{spec.name}-{index}", background))
    for spec in manifest.of_kind("schedule") if "schedule" in kinds else []:

        def schedule(stop: Stopping, spec=spec) -> None:
            run_schedule(bundle, spec, bundle.deps(), stop)

        children.append(Child(spec.name, schedule))
    return children


def hold_instance_name(bundle: Bundle, role: str) -> None:
    """Reserve the instance's name on every queue its HTTP functions put to, for this process
    and the children it forks: a second ``serve`` with the same name is refused here, before
    it writes a byte (two writers under one name would lose items).

    Raises:
        InstanceInUse: another process runs under this instance name.
    """
    if "http" not in KINDS_OF_ROLE[role]:
        return
    queues = {spec.queue for spec in bundle.manifest.of_kind("http") if spec.queue}
    for queue in sorted(queues):
        hold_producer(Path(bundle.runtime.queue.dir) / queue, bundle.runtime.instance)


class Supervisor:
    """Starts the children, restarts the ones that die, stops them all on SIGTERM or SIGINT."""

    def __init__(
        self,
        config: RuntimeConfig,
        children: list[Child],
        unit: str | None = None,
        reload: Reloader | None = None,
    ) -> None:
        self._config = config
        self._children = children
        self._unit = unit or config.instance
        self._stopping = False
        self._reload_asked = False
        self._reload = reload
        self._metrics_dir = Path(config.metrics_dir)
        self._wake_read = self._wake_write = -1

    def run(self) -> int:
        """Supervise until asked to stop; returns the exit code."""
        signal.signal(signal.SIGTERM, self._ask_stop)
        signal.signal(signal.SIGINT, self._ask_stop)
        signal.signal(signal.SIGHUP, self._ask_reload)
        self._wake_on_signals()
        forget_instance(self._metrics_dir, self._unit)
        freeze_before_fork()  # the children share the loaded code's pages: never walked again
        for child in self._children:
            self._spawn(child)
        self._mark_ready()
        try:
            self._supervise()
        finally:
            self.ready_path(self._config, self._unit).unlink(missing_ok=True)
        return 0

    def _mark_ready(self) -> None:
        """Once the HTTP server listens (if there is one): write the ready file, stamped."""
        self._wait_listening()
        ready = self.ready_path(self._config, self._unit)
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.write_text(f"{os.getpid()} {time.time_ns()}\n")

    @staticmethod
    def ready_path(config: RuntimeConfig, unit: str) -> Path:
        """The file that exists while a supervisor runs its children: a readiness probe for
        a container without a socket (``--role workers``). It holds the supervisor's pid and
        when it started them, so a reload's end can be told from its start."""
        return Path(config.state_dir) / f"{unit}.ready"

    @staticmethod
    def listening_path(config: RuntimeConfig, unit: str) -> Path:
        """Holds the pid of the HTTP server that last started listening."""
        return Path(config.state_dir) / f"{unit}.listening"

    def _supervise(self) -> None:
        while not self._stopping:
            self._reap()
            if self._reload_asked:
                self._reload_asked = False
                self._reload_now()
            now = time.monotonic()
            for child in self._children:
                if child.pid == 0 and now >= child.restart_at:
                    self._spawn(child)
            self._sleep_until_signalled(self._next_restart_in())
        self._stop_all()

    def _wake_on_signals(self) -> None:
        """Have every signal with a handler, SIGCHLD included, wake ``_sleep_until_signalled``.

        Polling the children every 50 ms cost each supervisor 20 wake-ups a second (about
        35 µs of CPU each) for nothing. The C-level handler writes the signal's number to a
        pipe (``set_wakeup_fd``): no Python lock is involved, so no signal can deadlock it.
        """
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _noted)

    def _sleep_until_signalled(self, timeout_s: float) -> None:
        with contextlib.suppress(InterruptedError):
            select.select([self._wake_read], [], [], timeout_s)
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_read, 4096)

    def _next_restart_in(self) -> float:
        """Seconds until the next child due to be started again, at most ``_IDLE_WAKE_S``."""
        due = [child.restart_at for child in self._children if child.pid == 0]
        if not due:
            return _IDLE_WAKE_S
        return min(_IDLE_WAKE_S, max(0.0, min(due) - time.monotonic()))

    def _ask_stop(self, signum: int, frame: object) -> None:
        del frame
        _log.info("stopping", extra={"signal": signal.Signals(signum).name})
        self._stopping = True

    def _ask_reload(self, signum: int, frame: object) -> None:
        del signum, frame
        self._reload_asked = True

    # --- reload -------------------------------------------------------------------------------

    def _reload_now(self) -> None:
        """Load and check the bundle as it is now; if it passes, replace the children."""
        if self._reload is None:
            _log.warning("SIGHUP ignored: this supervisor was started without a reloader")
            return
        headroom = memory_headroom_bytes()
        paused = headroom is not None and headroom < _RELOAD_HEADROOM_BYTES
        if paused:
            _log.info(
                "reload asked: the children stop first, the memory limit leaves no room for "
                "a second bundle beside them",
                extra={"memory_headroom_mib": round(headroom / 2**20, 1)},
            )
            self._stop_all()
        else:
            _log.info("reload asked: loading and checking the bundle")
        started = time.monotonic()
        try:
            config, children = self._reload()
        except Exception as exc:  # a fault in user code must never take the supervisor down
            then = "the running bundle starts again" if paused else "still serving the running one"
            _log.error(
                f"reload refused: the new bundle or config does not check; {then}",
                extra={"fault": str(exc) if isinstance(exc, RuntimeStartError) else repr(exc)},
            )
            for child in self._children:
                child.restart_at = 0.0
                child.quick_deaths = 0
            return
        if not paused:
            self._stop_all()
        self._config = config
        self._children = children
        _refreeze()
        for child in self._children:
            self._spawn(child)
        self._mark_ready()
        _log.info(
            "reloaded",
            extra={
                "children": [c.name for c in children],
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    def _wait_listening(self) -> None:
        """Wait until the HTTP server takes connections (or dies, or 30 s pass): the ready
        file then means "serving"."""
        http = next((c for c in self._children if c.stop_signal == signal.SIGINT), None)
        if http is None:
            return
        marker = self.listening_path(self._config, self._unit)
        deadline = time.monotonic() + _LISTENING_TIMEOUT_S
        while time.monotonic() < deadline and http.pid:
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(marker.read_text().split()[0]) == http.pid:
                    return
            self._reap()
            time.sleep(_REAP_INTERVAL_S / 5)

    def _spawn(self, child: Child) -> None:
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)  # the supervisor's pipe: a child's signals are its own
            for fd in (self._wake_read, self._wake_write):
                if fd >= 0:
                    os.close(fd)
            _child_main(self._config, child)  # never returns
        child.pid, child.started_at = pid, time.monotonic()
        _log.info("started", extra={"child": child.name, "child_pid": pid})

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self._children if c.pid == pid), None)
            if child is None:
                continue
            forget_process(self._metrics_dir, self._unit, pid)
            ran_s = time.monotonic() - child.started_at
            child.quick_deaths = 0 if ran_s >= _STABLE_AFTER_S else child.quick_deaths + 1
            delay_s = min(_BACKOFF_INITIAL_S * 2 ** max(child.quick_deaths - 1, 0), _BACKOFF_MAX_S)
            if child.quick_deaths == 0:
                delay_s = 0.0
            child.pid, child.restart_at = 0, time.monotonic() + delay_s
            if not self._stopping:
                _log.warning(
                    "child died; restarting",
                    extra={
                        "child": child.name,
                        "child_pid": pid,
                        "status": _describe(status),
                        "ran_s": round(ran_s, 3),
                        "restart_in_s": delay_s,
                    },
                )

    def _stop_all(self) -> None:
        for child in self._children:
            if child.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, child.stop_signal)
        started = time.monotonic()

        def overdue(child: Child) -> bool:
            return time.monotonic() - started >= child.stop_timeout_s

        while any(c.pid and not overdue(c) for c in self._children):
            self._reap()
            time.sleep(_REAP_INTERVAL_S)
        self._reap()
        for child in self._children:
            if child.pid:
                _log.warning("child did not stop; killing", extra={"child": child.name})
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child.pid, 0)
                child.pid = 0
        _log.info("stopped")


def _child_main(config: RuntimeConfig, child: Child) -> None:
    code = 0
    try:
        _die_with_parent()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor's to act on, not ours
        stop = Stopping()
        if child.stop_signal == signal.SIGINT:
            # bjoern leaves its loop on SIGINT by itself; SIGTERM stays deadly.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        else:
            _stop_on_signals(stop)
        threaded = child.stop_signal != signal.SIGINT  # every child but the HTTP server
        setup_logging(config.logging.level, f"{config.instance}/{child.name}", threaded=threaded)
        child.target(stop)
    except KeyboardInterrupt:
        pass
    except BaseException:
        logging.getLogger("runtime.supervisor").exception(
            "child crashed", extra={"child": child.name}
        )
        code = 1
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()  # writes what a batched log writer still holds
            sys.stderr.flush()
        os._exit(code)


def _noted(signum: int, frame: object) -> None:
    """SIGCHLD's handler: its only job is to exist, so that the wakeup pipe hears of it."""


def _stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT, from a thread of its own.

    Not from a signal handler: a handler runs in the main thread between two bytecodes,
    possibly while that thread holds ``stop``'s own lock inside ``stop.wait()``, and
    ``stop.set()`` would then wait for that lock forever (a child orphaned that way kept its
    journal locked). Blocked in every thread, the signals wait for ``sigwait`` instead.
    """
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # before any thread: all inherit it

    def wait_for_signal() -> None:
        signal.sigwait(signals)
        stop.set()

    threading.Thread(target=wait_for_signal, name="stop-signals", daemon=True).start()


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _refreeze() -> None:
    """Let the collector see the replaced bundle's objects again, collect them, freeze anew
    (with no child running: the copies the walk makes are the supervisor's alone)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def memory_headroom_bytes() -> int | None:
    """How far this process's memory cgroup (v1) is from its limit; ``None`` without one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    relative = next(
        (line.split(":", 2)[2] for line in lines if "memory" in line.split(":", 2)[1].split(",")),
        None,
    )
    if relative is None:
        return None
    # Inside a container the hierarchy's root is the container's own cgroup.
    for folder in (
        Path("/sys/fs/cgroup/memory") / relative.lstrip("/"),
        Path("/sys/fs/cgroup/memory"),
    ):
        try:
            limit = int((folder / "memory.limit_in_bytes").read_text())
            usage = int((folder / "memory.usage_in_bytes").read_text())
            stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
        except (OSError, ValueError):
            continue
        usage -= int(stat.get("total_inactive_file", 0))  # page cache the kernel gives back
        if limit >= 1 << 60:  # "no limit" is a huge number
            return None
        return limit - usage
    return None


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
