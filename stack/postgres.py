"""PostgreSQL for the local stack and the tests: one data folder, one role, one database.

The server runs as the ``postgres`` system user when we are root (PostgreSQL refuses root), so
every folder it uses is chowned to that user and its ancestors must be traversable by it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pg8000.native

SUPERUSER = "postgres"
_IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_INITDB_TIMEOUT_S = 120.0

# The tuning both the local stack and docker-compose.yml run with (a unit test compares them).
# Durability first: synchronous_commit and fsync stay ON. A payment's row is written after the
# processor charged it and just before its queue item is acknowledged, so a commit that a
# PostgreSQL crash (an OOM kill under a 100 MB limit, say) takes back would be a charge our
# summary never counts: an inconsistency, fined 35%. synchronous_commit=off could lose up to
# three wal_writer_delay (600 ms) of such commits. Waiting for the WAL flush costs little here:
# the forwarder batches its writes off the request path, so commits are few and group-committed.
# Memory is the tight budget (66 MB for the container), hence small buffers and no parallel
# workers; wal_level=minimal writes less WAL because nothing replicates. max_connections is
# what that memory can hold: the runtime keeps about eight open, and the fault suite's
# "postgres connections full" showed 40 backends get the postmaster OOM-killed; at 16, an
# extra client is refused ("too many clients") instead.
SETTINGS: dict[str, str] = {
    "synchronous_commit": "on",
    "fsync": "on",
    "full_page_writes": "on",
    "shared_buffers": "16MB",
    "effective_cache_size": "48MB",
    "work_mem": "2MB",
    "maintenance_work_mem": "16MB",
    "max_connections": "16",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "wal_buffers": "1MB",
    "max_wal_size": "256MB",
    "checkpoint_timeout": "10min",
    "max_parallel_workers_per_gather": "0",
    "jit": "off",
    "random_page_cost": "1.1",
    "huge_pages": "off",
    "log_min_messages": "warning",
}


class PostgresError(RuntimeError):
    """PostgreSQL cannot be set up here; the message says what to do."""


@dataclass(frozen=True)
class PostgresServer:
    """How to reach one running PostgreSQL as the application's role."""

    port: int
    socket_dir: Path
    user: str = "rinha"
    password: str = "rinha"
    database: str = "rinha"
    host: str = "127.0.0.1"

    def env(self, *, tcp: bool = False) -> dict[str, str]:
        """The runtime's ``APP__POSTGRES__*`` variables; through the unix socket unless ``tcp``."""
        return {
            "APP__POSTGRES__HOST": self.host if tcp else str(self.socket_dir),
            "APP__POSTGRES__PORT": str(self.port),
            "APP__POSTGRES__USER": self.user,
            "APP__POSTGRES__PASSWORD": self.password,
            "APP__POSTGRES__DATABASE": self.database,
        }

    def connect(self, *, superuser: bool = False) -> pg8000.native.Connection:
        """A new connection: the application's role over TCP, or the superuser over the socket."""
        if superuser:
            return pg8000.native.Connection(
                user=SUPERUSER, database="postgres", unix_sock=str(self.socket_path), timeout=5
            )
        return pg8000.native.Connection(
            user=self.user,
            password=self.password,
            database=self.database,
            host=self.host,
            port=self.port,
            timeout=5,
        )

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{self.port}"


def bin_dir() -> Path | None:
    """The newest PostgreSQL server binaries on this machine (Debian's layout first)."""
    candidates = sorted(
        (path for path in Path("/usr/lib/postgresql").glob("*/bin") if (path / "initdb").exists()),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def binary(name: str) -> str:
    """The path of a PostgreSQL program.

    Raises:
        PostgresError: PostgreSQL is not installed.
    """
    folder = bin_dir()
    if folder is None:
        raise PostgresError("PostgreSQL is not installed: run `bash stack/bootstrap.sh` as root")
    return str(folder / name)


def system_user() -> str | None:
    """The user PostgreSQL runs as: ``postgres`` when we are root, else ourselves (``None``)."""
    return SUPERUSER if os.geteuid() == 0 else None


def prepare_dirs(base: Path) -> tuple[Path, Path]:
    """Make ``base/data`` and ``base/run`` (the socket folder), owned by the server's user.

    Raises:
        PostgresError: an ancestor of ``base`` is closed to that user.
    """
    data_dir, socket_dir = base / "data", base / "run"
    for path in (base, socket_dir):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
    data_dir.mkdir(mode=0o700, exist_ok=True)
    user = system_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (base, socket_dir, data_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        _check_traversable(base.parent, user)
    return data_dir, socket_dir


def _check_traversable(path: Path, user: str) -> None:
    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if not mode & 0o001:
            raise PostgresError(
                f"{folder} is closed to the '{user}' user PostgreSQL runs as (mode "
                f"{oct(mode & 0o777)}); put the data elsewhere or run `chmod o+x {folder}`"
            )


def initdb(data_dir: Path, *, sync: bool = True) -> bool:
    """Create the cluster unless ``data_dir`` holds one; returns whether it did.

    Local connections are trusted (the socket folder is ours); TCP needs a password.
    ``sync=False`` skips the final fsync, for throwaway test clusters.
    """
    if (data_dir / "PG_VERSION").exists():
        return False
    argv = [
        binary("initdb"),
        "--pgdata",
        str(data_dir),
        "--username",
        SUPERUSER,
        "--encoding",
        "UTF8",
        "--locale",
        "C",
        "--auth-local",
        "trust",
        "--auth-host",
        "scram-sha-256",
        *([] if sync else ["--no-sync"]),
    ]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        user=system_user(),
        cwd="/",
        timeout=_INITDB_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise PostgresError(f"initdb failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return True


def server_argv(data_dir: Path, port: int, socket_dir: Path) -> list[str]:
    """The ``postgres`` command line: 127.0.0.1 and the socket, with :data:`SETTINGS`.

    Without PostgreSQL installed the program is plain ``postgres``; :func:`initdb`, which runs
    first, says what to install.
    """
    folder = bin_dir()
    return [
        str(folder / "postgres") if folder else "postgres",
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-k",
        str(socket_dir),
        "-c",
        "listen_addresses=127.0.0.1",
        *settings_flags(),
    ]


def settings_flags() -> list[str]:
    """:data:`SETTINGS` as ``-c key=value`` pairs, the form compose's command uses too."""
    flags = []
    for key, value in SETTINGS.items():
        flags += ["-c", f"{key}={value}"]
    return flags


def is_ready(server: PostgresServer) -> bool:
    """Whether the server accepts a superuser session on its socket."""
    try:
        conn = server.connect(superuser=True)
    except (pg8000.native.InterfaceError, pg8000.native.DatabaseError, OSError):
        return False
    conn.close()
    return True


def ensure_role_and_database(server: PostgresServer) -> None:
    """Create the application's role and database if missing; reset the role's password."""
    for name in (server.user, server.database):
        if not _IDENTIFIER_RE.match(name):
            raise PostgresError(f"{name!r}: use lower-case letters, digits and '_' for names")
    password = server.password.replace("'", "''")
    conn = server.connect(superuser=True)
    try:
        if not conn.run("SELECT 1 FROM pg_roles WHERE rolname = :n", n=server.user):
            conn.run(f"CREATE ROLE {server.user} LOGIN")
        conn.run(f"ALTER ROLE {server.user} PASSWORD '{password}'")
        if not conn.run("SELECT 1 FROM pg_database WHERE datname = :n", n=server.database):
            conn.run(f"CREATE DATABASE {server.database} OWNER {server.user}")
    finally:
        conn.close()
