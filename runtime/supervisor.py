"""Fork one instance's processes and keep them running.

The supervisor loads everything (config, manifest, function modules) before it forks, so a
child starts in milliseconds and shares the imported code's memory; it opens no connection and
starts no thread, so forking stays safe. A child that dies is started again after a backoff
that doubles with each quick death and resets once the child has run a while. Children get
SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG``), so a killed supervisor leaves no orphan
bound to the socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime.bundle import Bundle
from runtime.config import RuntimeConfig
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
_REAP_INTERVAL_S = 0.05
_PR_SET_PDEATHSIG = 1


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

    def http(stop: Stopping) -> None:
        del stop  # bjoern stops on SIGINT by itself
        serve(create_app(bundle, bundle.deps()), config.bind, config.server.socket_mode)

    kinds = KINDS_OF_ROLE[role]
    children = []
    if "http" in kinds and manifest.of_kind("http"):
        children.append(Child("http", http, stop_signal=signal.SIGINT))
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
        self, config: RuntimeConfig, children: list[Child], unit: str | None = None
    ) -> None:
        self._config = config
        self._children = children
        self._unit = unit or config.instance
        self._stopping = False
        self._metrics_dir = Path(config.metrics_dir)

    def run(self) -> int:
        """Supervise until asked to stop; returns the exit code."""
        signal.signal(signal.SIGTERM, self._ask_stop)
        signal.signal(signal.SIGINT, self._ask_stop)
        forget_instance(self._metrics_dir, self._unit)
        freeze_before_fork()  # the children share the loaded code's pages: never walked again
        for child in self._children:
            self._spawn(child)
        ready = self.ready_path(self._config, self._unit)
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.write_text(f"{os.getpid()}\n")
        try:
            self._supervise()
        finally:
            ready.unlink(missing_ok=True)
        return 0

    @staticmethod
    def ready_path(config: RuntimeConfig, unit: str) -> Path:
        """The file that exists while a supervisor runs its children: a readiness probe for
        a container without a socket (``--role workers``)."""
        return Path(config.state_dir) / f"{unit}.ready"

    def _supervise(self) -> None:
        while not self._stopping:
            self._reap()
            now = time.monotonic()
            for child in self._children:
                if child.pid == 0 and now >= child.restart_at:
                    self._spawn(child)
            time.sleep(_REAP_INTERVAL_S)
        self._stop_all()

    def _ask_stop(self, signum: int, frame: object) -> None:
        del frame
        _log.info("stopping", extra={"signal": signal.Signals(signum).name})
        self._stopping = True

    def _spawn(self, child: Child) -> None:
        pid = os.fork()
        if pid == 0:
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
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while any(c.pid for c in self._children) and time.monotonic() < deadline:
            self._reap()
            time.sleep(_REAP_INTERVAL_S)
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


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
