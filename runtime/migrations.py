"""Versioned SQL migrations: ``migrations/NNNN_name.sql``, each applied once, in order.

Safe to run from several processes at once (an advisory lock serialises them) and again and
again (applied versions are recorded in ``schema_migrations``). Statements in a file are split
on lines that end with ``;``.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from runtime.config import PostgresConfig
from runtime.db import Database, DatabaseUnavailable
from runtime.errors import RuntimeStartError

_log = logging.getLogger("runtime.migrations")
_FILE_RE = re.compile(r"^(?P<version>\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 72_025_001
_STATEMENT_END = re.compile(r";\s*$", re.MULTILINE)


def pending_files(folder: Path) -> list[tuple[int, Path]]:
    """The migration files in ``folder``, by version; refuses strays and duplicates."""
    found: dict[int, Path] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise RuntimeStartError(f"{path}: migration files must be named NNNN_name.sql")
        version = int(match["version"])
        if version in found:
            raise RuntimeStartError(f"{path}: version {version} is also {found[version].name}")
        found[version] = path
    return sorted(found.items())


def migrate(db: Database, folder: Path) -> list[int]:
    """Apply every migration not applied yet; returns the versions applied now."""
    files = pending_files(folder)
    db.run("SELECT pg_advisory_lock(:key)", key=_LOCK_KEY)
    try:
        db.run(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in db.run("SELECT version FROM schema_migrations")}
        applied = []
        for version, path in files:
            if version in done:
                continue
            statements = [s.strip() for s in _STATEMENT_END.split(path.read_text()) if s.strip()]
            db.run("BEGIN")
            try:
                for statement in statements:
                    db.run(statement)
                db.run(
                    "INSERT INTO schema_migrations (version, name) VALUES (:v, :n)",
                    v=version,
                    n=path.name,
                )
                db.run("COMMIT")
            except Exception:
                db.run("ROLLBACK")
                raise
            _log.info("migration applied", extra={"version": version, "file": path.name})
            applied.append(version)
        return applied
    finally:
        db.run("SELECT pg_advisory_unlock(:key)", key=_LOCK_KEY)


def migrate_database(config: PostgresConfig, folder: Path, timeout_s: float = 60.0) -> list[int]:
    """Open the config's database, ``migrate_when_ready``, close it; returns what was applied."""
    db = Database(config)
    try:
        return migrate_when_ready(db, folder, timeout_s)
    finally:
        db.close()


def migrate_when_ready(db: Database, folder: Path, timeout_s: float) -> list[int]:
    """``migrate``, retrying while PostgreSQL is still starting, for at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return migrate(db, folder)
        except DatabaseUnavailable as exc:
            if time.monotonic() >= deadline:
                raise RuntimeStartError(
                    f"PostgreSQL did not answer within {timeout_s:.0f} s: {exc}; check "
                    "postgres.host/port/user in the config"
                ) from None
            time.sleep(0.5)
