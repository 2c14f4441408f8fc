"""The shared service fixtures work on their own, before any runtime code is involved."""

from __future__ import annotations

import http.server
import socketserver
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pg8000.native
import pymemcache.client.base
import pytest

from emulator.processors import Processors
from stack import probes
from stack.memcached import MemcachedServer
from stack.postgres import PostgresServer
from tests.support.procs import free_port
from tests.support.services import start_nginx

pytestmark = pytest.mark.integration


def test_postgres_fixture_accepts_the_application_role_over_tcp(postgres: PostgresServer) -> None:
    conn = postgres.connect()
    try:
        rows = conn.run("SELECT current_user, current_database(), current_setting('fsync')")
    finally:
        conn.close()
    assert rows == [["rinha", "rinha", "on"]]


def test_postgres_fixture_env_points_the_runtime_at_its_unix_socket(
    postgres: PostgresServer,
) -> None:
    env = postgres.env()
    conn = pg8000.native.Connection(
        user=env["APP__POSTGRES__USER"],
        password=env["APP__POSTGRES__PASSWORD"],
        database=env["APP__POSTGRES__DATABASE"],
        unix_sock=f"{env['APP__POSTGRES__HOST']}/.s.PGSQL.{env['APP__POSTGRES__PORT']}",
    )
    try:
        conn.run("CREATE TABLE IF NOT EXISTS fixture_probe (id int)")
        assert conn.run("SELECT count(*) FROM fixture_probe") == [[0]]
        conn.run("DROP TABLE fixture_probe")
    finally:
        conn.close()


def test_memcached_fixture_stores_and_returns_a_value(memcached: MemcachedServer) -> None:
    host, port = memcached.server.rsplit(":", 1)
    client = pymemcache.client.base.Client((host, int(port)), timeout=1)
    try:
        client.set("fixture-probe", b"42")
        assert client.get("fixture-probe") == b"42"
    finally:
        client.close()
    assert memcached.env() == {"APP__MEMCACHED__SERVER": memcached.server}


def test_emulators_fixture_charges_each_processors_fee(emulators: Processors) -> None:
    try:
        for processor in emulators:
            status, _ = processor.request(
                "POST",
                "/payments",
                {
                    "correlationId": str(uuid.uuid4()),
                    "amount": 10.00,
                    "requestedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                },
            )
            assert status == 200
            summary = processor.summary()
            assert summary["totalRequests"] == 1
            assert summary["feePerTransaction"] == pytest.approx(processor.fee)
    finally:
        emulators.reset()
    assert emulators.default.summary()["totalRequests"] == 0


def test_emulators_fixture_admin_calls_need_the_token(emulators: Processors) -> None:
    status, _ = emulators.default.request("PUT", "/admin/configurations/delay", {"delay": 0})
    assert status == 200
    stranger = type(emulators.default)("default", emulators.default.url, 0.05, token="wrong")
    status, _ = stranger.request("PUT", "/admin/configurations/delay", {"delay": 0})
    assert status == 401


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.server.server_address.encode()  # type: ignore[union-attr]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: unix-socket clients have no address to log."""


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def upstream_socket(reachable_tmp_path: Path) -> Iterator[Path]:
    """A tiny HTTP server on a 0666 unix socket, standing in for a runtime instance."""
    path = reachable_tmp_path / "upstream.sock"
    server = _UnixHTTPServer(str(path), _Hello)
    path.chmod(0o666)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_start_nginx_proxies_to_a_unix_socket_with_the_deploy_config(
    upstream_socket: Path, reachable_tmp_path: Path
) -> None:
    port = free_port()
    with start_nginx([upstream_socket], port, reachable_tmp_path / "nginx") as conf:
        status, body = probes.http_get(port, "/anything")
        assert (status, body) == (200, str(upstream_socket).encode())
        assert "keepalive 256;" in conf.read_text()
