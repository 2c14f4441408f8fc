"""PostgreSQL through pg8000: one lazily opened connection that reconnects after a failure."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pg8000.native

from runtime.config import PostgresConfig

# What a dropped or refused connection raises; anything else is the caller's mistake.
CONNECTION_ERRORS = (pg8000.native.InterfaceError, OSError)


class DatabaseUnavailable(Exception):
    """PostgreSQL did not answer; the caller decides whether to retry or answer 503."""


class Database:
    """A single connection, opened on first use, thread-safe by a lock.

    One connection a process is enough where requests run one at a time (bjoern) or where a
    function funnels its writes through one thread of its own.
    """

    def __init__(self, config: PostgresConfig) -> None:
        self._config = config
        self._conn: pg8000.native.Connection | None = None
        self._prepared: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _connect(self) -> pg8000.native.Connection:
        cfg = self._config
        socket_kwargs: dict[str, Any]
        if cfg.host.startswith("/"):
            socket_kwargs = {"unix_sock": f"{cfg.host.rstrip('/')}/.s.PGSQL.{cfg.port}"}
        else:
            socket_kwargs = {"host": cfg.host, "port": cfg.port}
        return pg8000.native.Connection(
            user=cfg.user,
            password=cfg.password or None,
            database=cfg.database,
            timeout=cfg.connect_timeout_s,
            application_name="runtime",
            **socket_kwargs,
        )

    def run(self, sql: str, *, prepared: bool = False, **params: Any) -> list[list[Any]]:
        """Run one statement; on a broken connection reconnect once and run it again.

        Only statements safe to repeat may go through here (reads, idempotent writes). With
        ``prepared``, the statement is parsed once per connection and reused: pg8000 parses
        ``:name`` parameters in Python, which costs more than the round trip for a long
        statement run hundreds of times a second.

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached.
        """
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None:
                        self._conn = self._connect()
                    if prepared:
                        return self._statement(sql).run(**params) or []
                    return self._conn.run(sql, **params) or []
                except CONNECTION_ERRORS as exc:
                    self._drop()
                    if attempt == 2:
                        raise DatabaseUnavailable(str(exc)) from None
                except pg8000.native.DatabaseError as exc:
                    if _is_connection_lost(exc):
                        self._drop()
                        if attempt == 2:
                            raise DatabaseUnavailable(str(exc)) from None
                        continue
                    raise
        raise AssertionError("unreachable")

    def transaction(self, statements: list[tuple[str, dict[str, Any]]]) -> list[list[list[Any]]]:
        """Run prepared statements in one transaction: one commit, one WAL flush for them all.

        A single statement runs on its own (it is its own transaction). Unlike ``run`` there is
        no retry here: a connection lost mid-transaction takes the earlier statements with it,
        so the caller runs them all again. That is only safe for idempotent statements, since
        a commit whose answer was lost may have happened.

        Raises:
            DatabaseUnavailable: PostgreSQL cannot be reached; nothing, or everything, was
                committed.
            pg8000.native.DatabaseError: a statement failed; nothing was committed.
        """
        if len(statements) == 1:
            sql, params = statements[0]
            return [self.run(sql, prepared=True, **params)]
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                self._conn.run("BEGIN")
                try:
                    results = [
                        self._statement(sql).run(**params) or [] for sql, params in statements
                    ]
                except pg8000.native.DatabaseError as exc:
                    if _is_connection_lost(exc):
                        raise
                    self._conn.run("ROLLBACK")
                    raise
                self._conn.run("COMMIT")
                return results
            except CONNECTION_ERRORS as exc:
                self._drop()
                raise DatabaseUnavailable(str(exc)) from None
            except pg8000.native.DatabaseError as exc:
                if _is_connection_lost(exc):
                    self._drop()
                    raise DatabaseUnavailable(str(exc)) from None
                raise

    def _statement(self, sql: str) -> Any:
        assert self._conn is not None
        statement = self._prepared.get(sql)
        if statement is None:
            statement = self._prepared[sql] = self._conn.prepare(sql)
        return statement

    def _drop(self) -> None:
        self._prepared.clear()  # prepared statements die with their connection
        if self._conn is not None:
            # The socket may be gone already; closing is best effort.
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the connection if one is open."""
        with self._lock:
            self._drop()


def _is_connection_lost(exc: pg8000.native.DatabaseError) -> bool:
    """Whether the server ended the session (shutdown, terminate), so a retry may succeed."""
    code = exc.args[0].get("C", "") if exc.args and isinstance(exc.args[0], dict) else ""
    return code.startswith(("57P", "08"))
