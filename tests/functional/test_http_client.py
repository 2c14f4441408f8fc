"""payments.http_client against a scripted HTTP server on a loopback port.

The server reads each request whole and answers with the bytes the test scripted for it, cut
into pieces with pauses between them where the test says so, so every framing (length,
chunked, close-delimited), interim answers, keep-alive and the failure cases are exercised
over a real socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from payments.http_client import ConnectionPool, NoResponse, RequestNotSent

_TIMEOUT_S = 5.0

Script = Callable[[bytes], list[bytes | float | None]]
"""For each request received (its raw bytes), what to send: bytes, a pause in seconds, or
``None`` to close the connection."""


@dataclass
class Server:
    port: int
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0


@asynccontextmanager
async def scripted_server(script: Script) -> AsyncIterator[Server]:
    server_info = Server(0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_info.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                server_info.requests.append(request)
                for step in script(request):
                    if step is None:
                        writer.close()
                        return
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                        continue
                    writer.write(step)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    server_info.port = server.sockets[0].getsockname()[1]
    try:
        yield server_info
    finally:
        server.close()


def pool_for(server: Server, max_connections: int = 8) -> ConnectionPool:
    return ConnectionPool(
        "127.0.0.1", server.port, connect_timeout_s=1.0, max_connections=max_connections
    )


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def run(coroutine: object) -> object:
    return asyncio.run(asyncio.wait_for(coroutine, _TIMEOUT_S))  # type: ignore[arg-type]


def test_a_post_is_sent_whole_in_one_request_and_its_answer_read_by_length() -> None:
    async def scenario() -> None:
        async with scripted_server(lambda request: [ok()]) as server:
            pool = pool_for(server)
            response = await pool.request(
                "POST",
                "/payments",
                body=b'{"a":1}',
                headers="Content-Type: application/json\r\n",
                timeout_s=1.0,
            )
            assert (response.status, response.body) == (200, b'{"ok":true}')
            assert response.headers["content-length"] == "11"
            request = server.requests[0]
            assert request.startswith(b"POST /payments HTTP/1.1\r\n")
            assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in request
            assert b"Content-Type: application/json\r\nContent-Length: 7\r\n\r\n" in request
            assert request.endswith(b'\r\n\r\n{"a":1}')

    run(scenario())


def test_kept_alive_connections_are_reused() -> None:
    async def scenario() -> None:
        async with scripted_server(lambda request: [ok()]) as server:
            pool = pool_for(server)
            for _ in range(5):
                assert (await pool.request("GET", "/x", timeout_s=1.0)).status == 200
            assert server.connections == 1

    run(scenario())


def test_a_chunked_answer_cut_anywhere_is_put_together() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )

    def in_pieces(request: bytes) -> list[bytes | float | None]:
        steps: list[bytes | float | None] = []
        for start in range(0, len(answer), 7):
            steps += [answer[start : start + 7], 0.001]
        return steps

    async def scenario() -> None:
        async with scripted_server(in_pieces) as server:
            pool = pool_for(server)
            for _ in range(2):  # and the connection is fit for the next request
                response = await pool.request("GET", "/wiki", timeout_s=1.0)
                assert response.body == b"Wikipedia in \r\n\r\nchunks."
            assert server.connections == 1

    run(scenario())


def test_an_answer_framed_by_the_connection_closing_is_read_to_the_end() -> None:
    script: Script = lambda request: [b"HTTP/1.0 200 OK\r\n\r\nall ", 0.01, b"of it", None]  # noqa: E731

    async def scenario() -> None:
        async with scripted_server(script) as server:
            pool = pool_for(server)
            response = await pool.request("GET", "/", timeout_s=1.0)
            assert response.body == b"all of it"
            assert (await pool.request("GET", "/", timeout_s=1.0)).body == b"all of it"
            assert server.connections == 2  # that connection could not be used again

    run(scenario())


def test_interim_answers_are_skipped() -> None:
    script: Script = lambda request: [b"HTTP/1.1 100 Continue\r\n\r\n", ok(b"done")]  # noqa: E731

    async def scenario() -> None:
        async with scripted_server(script) as server:
            response = await pool_for(server).request("POST", "/", body=b"x", timeout_s=1.0)
            assert (response.status, response.body) == (200, b"done")

    run(scenario())


def test_an_answer_saying_connection_close_is_not_reused() -> None:
    script: Script = lambda request: [ok(extra=b"Connection: close\r\n")]  # noqa: E731

    async def scenario() -> None:
        async with scripted_server(script) as server:
            pool = pool_for(server)
            for _ in range(3):
                assert (await pool.request("GET", "/", timeout_s=1.0)).status == 200
            assert server.connections == 3

    run(scenario())


def test_no_answer_in_time_is_no_response_and_the_late_one_never_meets_the_next_request() -> None:
    def slow_first(request: bytes) -> list[bytes | float | None]:
        return [0.5, ok(b"late")] if b"/slow" in request else [ok(b"fresh")]

    async def scenario() -> None:
        async with scripted_server(slow_first) as server:
            pool = pool_for(server)
            with pytest.raises(NoResponse, match="no answer within"):
                await pool.request("GET", "/slow", timeout_s=0.1)
            response = await pool.request("GET", "/next", timeout_s=1.0)
            assert response.body == b"fresh"
            assert server.connections == 2

    run(scenario())


def test_a_connection_broken_before_the_answer_is_no_response() -> None:
    cut_short: Script = lambda request: [b"HTTP/1.1 200 OK\r\nContent-", None]  # noqa: E731

    async def scenario() -> None:
        async with scripted_server(cut_short) as server:
            with pytest.raises(NoResponse, match="closed before the whole answer"):
                await pool_for(server).request("POST", "/", body=b"x", timeout_s=1.0)

    run(scenario())


def test_bytes_that_are_not_http_are_no_response() -> None:
    async def scenario() -> None:
        async with scripted_server(lambda request: [b"SMTP ready\r\n\r\n"]) as server:
            with pytest.raises(NoResponse, match="malformed answer"):
                await pool_for(server).request("GET", "/", timeout_s=1.0)

    run(scenario())


def test_a_refused_connection_means_the_request_was_not_sent() -> None:
    async def scenario() -> None:
        async with scripted_server(lambda request: [ok()]) as server:
            port = server.port
        pool = ConnectionPool("127.0.0.1", port, connect_timeout_s=1.0, max_connections=2)
        with pytest.raises(RequestNotSent, match="cannot connect"):
            await pool.request("GET", "/", timeout_s=1.0)

    run(scenario())


def test_an_idle_connection_the_server_closed_is_replaced_without_an_error() -> None:
    async def scenario() -> None:
        async with scripted_server(lambda request: [ok(), None]) as server:  # close after each
            pool = pool_for(server)
            assert (await pool.request("GET", "/", timeout_s=1.0)).status == 200
            await asyncio.sleep(0.05)  # the close reaches the idle connection
            assert (await pool.request("GET", "/", timeout_s=1.0)).status == 200
            assert server.connections == 2

    run(scenario())


def test_callers_beyond_the_connection_limit_wait_for_a_free_one() -> None:
    async def scenario() -> None:
        async with scripted_server(lambda request: [0.05, ok()]) as server:
            pool = pool_for(server, max_connections=2)
            answers = await asyncio.gather(
                *[pool.request("GET", f"/{n}", timeout_s=2.0) for n in range(6)]
            )
            assert [answer.status for answer in answers] == [200] * 6
            assert server.connections == 2

    run(scenario())


def test_a_cancelled_request_gives_its_connection_back_for_a_new_one() -> None:
    async def scenario() -> None:
        async with scripted_server(lambda request: [0.3, ok()]) as server:
            pool = pool_for(server, max_connections=1)
            first = asyncio.ensure_future(pool.request("GET", "/a", timeout_s=2.0))
            await asyncio.sleep(0.05)
            first.cancel()
            response = await pool.request("GET", "/b", timeout_s=2.0)
            assert response.status == 200
            assert server.connections == 2  # the cancelled one's connection was not reused

    run(scenario())
