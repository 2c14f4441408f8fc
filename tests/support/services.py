"""Real services for integration tests, started the way the local stack starts them.

Command lines and setup (``initdb``, the role and database, Nginx's config) come from
:mod:`stack`; this module only owns their lifetime: each context manager starts its service as
a child process on a free port, yields once it answers and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from emulator.processors import Processor, Processors, emulator_argv
from stack import memcached, nginx, postgres, probes
from stack.memcached import MemcachedServer
from stack.postgres import PostgresServer
from tests.support.procs import free_port, running, stop

DEFAULT_FEE = 0.05
FALLBACK_FEE = 0.15


def reachable_tmp_dir(prefix: str) -> Path:
    """A fresh folder in ``/tmp`` that other users can traverse (mode 0755).

    pytest's ``tmp_path`` sits under a 0700 folder, closed to the ``postgres`` user and to
    Nginx's ``nobody`` workers; anything they must reach goes here instead.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    """A throwaway cluster on a free port, with the application's role and database."""
    base = reachable_tmp_dir("rinha-pg-")
    try:
        data_dir, socket_dir = postgres.prepare_dirs(base / "pg")
        postgres.initdb(data_dir, sync=False)
        server = PostgresServer(port=free_port(), socket_dir=socket_dir)
        with running(
            postgres.server_argv(data_dir, server.port, socket_dir),
            ready=lambda: postgres.is_ready(server),
            what="PostgreSQL",
            log_path=base / "postgres.log",
            user=postgres.system_user(),
            cwd="/",
        ) as proc:
            try:
                postgres.ensure_role_and_database(server)
                yield server
            finally:
                # Fast shutdown: SIGTERM would wait for every client to disconnect.
                stop(proc, sig=signal.SIGINT)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def start_memcached(log_dir: Path) -> Iterator[MemcachedServer]:
    """Memcached on a free port of 127.0.0.1."""
    server = MemcachedServer(port=free_port())
    with running(
        memcached.argv(server.port),
        ready=lambda: memcached.is_ready(server),
        what="Memcached",
        log_path=log_dir / "memcached.log",
    ):
        yield server


@contextlib.contextmanager
def start_emulators(
    log_dir: Path, *, fees: tuple[float, float] = (DEFAULT_FEE, FALLBACK_FEE)
) -> Iterator[Processors]:
    """The default and fallback processor emulators on free ports, admin token ``123``."""
    with contextlib.ExitStack() as stack:
        started = []
        for name, fee in zip(("default", "fallback"), fees, strict=True):
            port = free_port()
            processor = Processor(name, f"http://127.0.0.1:{port}", fee)
            stack.enter_context(
                running(
                    emulator_argv(name, port, fee),
                    ready=processor.is_ready,
                    what=f"the {name} processor emulator",
                    log_path=log_dir / f"processor-{name}.log",
                    cwd=Path(__file__).resolve().parents[2],
                )
            )
            started.append(processor)
        yield Processors(*started)


@contextlib.contextmanager
def start_nginx(upstream_sockets: Sequence[Path], port: int, dir: Path) -> Iterator[Path]:
    """Nginx on 127.0.0.1:``port`` with ``deploy/nginx.conf`` in front of ``upstream_sockets``.

    Yields the rendered config's path. As root, Nginx's workers run as ``nobody``: the sockets'
    folders must be traversable by others (see :func:`reachable_tmp_dir`).
    """
    conf = nginx.write_config(upstream_sockets, port, dir)
    with running(
        nginx.argv(conf, dir),
        ready=lambda: probes.tcp_open(port),
        what="Nginx",
        log_path=dir / "nginx.log",
    ):
        yield conf
