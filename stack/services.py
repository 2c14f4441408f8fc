"""The stack's services, in start order, with their command lines: the one list of them.

Each limited service carries the name of its docker-compose.yml service, whose CPU and memory
limits it runs under; the app instances run the very argv compose gives its containers
(:func:`app_argv`; ``tests/unit/test_compose.py`` holds the two together).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emulator.processors import Processor, Processors, emulator_argv
from runtime.supervisor import unit_name
from stack import memcached, nginx, postgres, probes
from stack.daemons import StartError
from stack.memcached import MemcachedServer
from stack.postgres import PostgresServer
from stack.settings import StackSettings

APP_INSTANCES = ("app1", "app2")
WORKER_SERVICES = {"worker1": "app1", "worker2": "app2"}
"""Each instance's background and scheduled functions, in a service (container) of their own so
the forwarder's CPU bursts never throttle the HTTP server's: service name -> instance."""
_MIGRATE_TIMEOUT_S = 90.0


def app_argv(instance: str, *, python: str = "python") -> list[str]:
    """One instance's HTTP server, as docker-compose.yml runs it (``python`` there)."""
    return [python, "-m", "runtime", "serve", "--instance", instance, "--role", "http"]


def worker_argv(instance: str, *, python: str = "python") -> list[str]:
    """One instance's background and scheduled functions, as docker-compose.yml runs them."""
    return [python, "-m", "runtime", "serve", "--instance", instance, "--role", "workers"]


@dataclass(frozen=True)
class Service:
    """One process of the stack and how to know it is up."""

    name: str
    """Also its docker-compose.yml service when ``limited``."""
    argv: list[str]
    ready: Callable[[], bool]
    limited: bool = True
    """Runs under compose's limits; the emulators stand for external services and do not."""
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    """Run as this system user (PostgreSQL refuses root)."""
    stop_signal: int = signal.SIGTERM
    ready_timeout_s: float = 30.0
    before: Callable[[], None] | None = None
    """Runs before the start (``initdb``)."""
    after: Callable[[], None] | None = None
    """Runs once it is ready (the role, the database, the migrations)."""


@dataclass(frozen=True)
class Layout:
    """Where each service's files go under the stack folder."""

    settings: StackSettings

    @property
    def postgres_dir(self) -> Path:
        return self.settings.postgres_dir

    @property
    def nginx_dir(self) -> Path:
        return self.settings.dir / "nginx"

    def processor_journal(self, name: str) -> Path:
        """Where an emulator keeps the payments it stored."""
        return self.settings.dir / "processors" / f"{name}.journal"

    def socket(self, instance: str) -> Path:
        return self.settings.run_dir / f"{instance}.sock"

    def state_dir(self, instance: str) -> Path:
        return self.settings.dir / instance

    def postgres_server(self) -> PostgresServer:
        s = self.settings
        return PostgresServer(
            port=s.pg_port,
            socket_dir=self.postgres_dir / "run",
            user=s.pg_user,
            password=s.pg_password,
            database=s.pg_database,
        )

    def memcached_server(self) -> MemcachedServer:
        return MemcachedServer(port=self.settings.memcached_port)

    def processors(self) -> Processors:
        s = self.settings
        default_url, fallback_url = s.processor_urls()
        return Processors(
            Processor("default", default_url, s.default_fee),
            Processor("fallback", fallback_url, s.fallback_fee),
        )


def _forget_journal(layout: Layout, name: str) -> None:
    journal = layout.processor_journal(name)
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.unlink(missing_ok=True)


def app_env(layout: Layout, instance: str) -> dict[str, str]:
    """What one instance is told through ``APP__*`` (compose sets the same keys)."""
    config = {"APP_CONFIG": str(layout.settings.config)} if layout.settings.config else {}
    return {
        **config,
        "APP__SERVER__BIND": f"unix:{layout.socket(instance)}",
        "APP__STATE_DIR": str(layout.state_dir(instance)),
        "APP__QUEUE__DIR": str(layout.settings.queue_dir),
        **layout.postgres_server().env(),
        **layout.memcached_server().env(),
        **layout.processors().env(),
    }


def write_tools_env(settings: StackSettings) -> Path:
    """Write what the instances share (PostgreSQL, Memcached, the processors, the queue) as
    ``NAME=value`` lines for the runtime's tools; owner-only, it holds the password."""
    layout = Layout(settings)
    shared = {
        **layout.postgres_server().env(),
        **layout.memcached_server().env(),
        **layout.processors().env(),
        "APP__QUEUE__DIR": str(settings.queue_dir),
    }
    path = settings.tools_env_file
    text = "# Written by `python -m stack up`, removed by `down`: the stack's services.\n"
    text += "".join(f"{name}={value}\n" for name, value in shared.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    return path


def plan(settings: StackSettings, *, python: str = sys.executable) -> list[Service]:
    """Every service of the stack, in the order they start."""
    layout = Layout(settings)
    pg = layout.postgres_server()
    mc = layout.memcached_server()
    processors = layout.processors()
    services = [
        Service(
            name="postgres",
            argv=postgres.server_argv(layout.postgres_dir / "data", pg.port, pg.socket_dir),
            ready=lambda: postgres.is_ready(pg),
            user=postgres.system_user(),
            # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for clients to leave.
            stop_signal=signal.SIGINT,
            ready_timeout_s=60.0,
            before=lambda: _init_postgres(layout),
            after=lambda: _setup_database(layout, python),
        ),
        Service(
            name="memcached",
            argv=memcached.argv(mc.port),
            ready=lambda: memcached.is_ready(mc),
        ),
    ]
    if settings.emulated:
        for processor, port in zip(
            processors, (settings.default_port, settings.fallback_port), strict=True
        ):
            services.append(
                Service(
                    name=f"payment-processor-{processor.name}",
                    argv=emulator_argv(
                        processor.name,
                        port,
                        processor.fee,
                        python=python,
                        journal=layout.processor_journal(processor.name),
                    ),
                    ready=processor.is_ready,
                    limited=False,
                    # Each `up` starts the processors empty; a restart of one (the fault
                    # suite's) finds what it stored.
                    before=lambda name=processor.name: _forget_journal(layout, name),
                )
            )
    for instance in APP_INSTANCES:
        socket = str(layout.socket(instance))
        services.append(
            Service(
                name=instance,
                argv=app_argv(instance, python=python),
                ready=lambda socket=socket: probes.answers_200(
                    lambda: probes.unix_http_get(socket, "/health")
                ),
                env=app_env(layout, instance),
                before=lambda instance=instance: _prepare_app(layout, instance),
                ready_timeout_s=60.0,
            )
        )
    for name, instance in WORKER_SERVICES.items():
        services.append(
            Service(
                name=name,
                argv=worker_argv(instance, python=python),
                # Up once its supervisor has started the children (it has no socket).
                ready=lambda instance=instance: _supervising(layout, instance, "workers"),
                env=app_env(layout, instance),
                before=lambda instance=instance: _prepare_dirs(layout, instance),
                ready_timeout_s=60.0,
            )
        )
    services.append(
        Service(
            name="nginx",
            argv=nginx.argv(layout.nginx_dir / "nginx.conf", layout.nginx_dir),
            ready=lambda: probes.answers_200(lambda: probes.http_get(settings.port, "/health")),
            before=lambda: _write_nginx_config(layout),
        )
    )
    return services


def tcp_ports(settings: StackSettings) -> dict[str, int]:
    """The loopback ports the stack will listen on, by what listens there."""
    ports = {
        "nginx (STACK_PORT)": settings.port,
        "postgres (STACK_PG_PORT)": settings.pg_port,
        "memcached (STACK_MEMCACHED_PORT)": settings.memcached_port,
    }
    if settings.emulated:
        ports["default processor (STACK_DEFAULT_PORT)"] = settings.default_port
        ports["fallback processor (STACK_FALLBACK_PORT)"] = settings.fallback_port
    return ports


def _init_postgres(layout: Layout) -> None:
    data_dir, _ = postgres.prepare_dirs(layout.postgres_dir)
    postgres.initdb(data_dir)


def _setup_database(layout: Layout, python: str) -> None:
    """Role, database, then the runtime's migrations, before any instance starts."""
    postgres.ensure_role_and_database(layout.postgres_server())
    result = subprocess.run(
        [python, "-m", "runtime", "migrate"],
        cwd=layout.settings.root,
        env={**os.environ, **app_env(layout, APP_INSTANCES[0])},
        capture_output=True,
        text=True,
        timeout=_MIGRATE_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise StartError(
            f"`python -m runtime migrate` failed ({result.returncode}):\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )


def _supervising(layout: Layout, instance: str, role: str) -> bool:
    """Whether ``instance``'s ``role`` supervisor runs its children (its ready file exists)."""
    return (layout.state_dir(instance) / f"{unit_name(instance, role)}.ready").exists()


def _prepare_dirs(layout: Layout, instance: str) -> None:
    for path in (layout.state_dir(instance), layout.settings.queue_dir):
        path.mkdir(parents=True, exist_ok=True)


def _prepare_app(layout: Layout, instance: str) -> None:
    _prepare_dirs(layout, instance)
    # A socket left by a killed instance would make the new one fail to bind.
    layout.socket(instance).unlink(missing_ok=True)


def _write_nginx_config(layout: Layout) -> None:
    sockets = [layout.socket(instance) for instance in APP_INSTANCES]
    nginx.write_config(sockets, layout.settings.port, layout.nginx_dir)
