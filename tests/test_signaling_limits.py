"""Per-client limits of the signaling server: per-IP TCP connections, silent and slow HTTP sockets, join and
token-guess rates, rooms per IP, outboxes bounded in bytes with a close code for a client that does not read,
and one log line per interval when file descriptors run out."""

from __future__ import annotations

import asyncio
import errno
import logging
import time

import aiohttp
import pytest

from signaling import messages as m
from signaling.client import SignalingError, WebSocketSignaling
from signaling.limits import AcceptErrorFilter, ClientLimits
from signaling.server import CLOSE_NOT_READING, RunningServer, ServerConfig, start_server
from tests.test_signaling import RawClient

TIMEOUT_S = 5.0


async def _closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
    """Whether the server closes this connection within ``within_s`` (EOF or reset), reading whatever it sends."""
    try:
        async with asyncio.timeout(within_s):
            while await reader.read(65536):
                pass
        return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def test_an_address_gets_at_most_its_quota_of_tcp_connections() -> None:
    running = await start_server(ServerConfig(port=0, static_dir=None, limits=ClientLimits(max_connections_per_ip=4)))
    try:
        held = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(4)]  # silent sockets count too
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        assert await _closed_by_server(reader, 2.0)  # the fifth is aborted before any HTTP
        writer.close()
        assert running.server.quotas.connections("127.0.0.1") == 4 and running.server.quotas.refused_connections == 1
        held[0][1].close()
        await asyncio.sleep(0.1)
        ws = WebSocketSignaling(running.url, "r", "viewer")  # a slot is free again
        await ws.connect()
        await ws.close()
        for _, w in held[1:]:
            w.close()
    finally:
        await running.close()


async def test_silent_and_slow_http_sockets_are_closed() -> None:
    running = await start_server(ServerConfig(port=0, static_dir=None, http_idle_timeout_s=0.5))
    try:
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", running.port)
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", running.port)
        started = time.monotonic()
        slow_writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

        async def dribble() -> None:  # a header line every 0.1 s, never the blank line that ends them
            for i in range(100):
                await asyncio.sleep(0.1)
                slow_writer.write(f"X-{i}: y\r\n".encode())

        dribbler = asyncio.ensure_future(dribble())
        assert await _closed_by_server(silent_reader, 3.0)
        assert await _closed_by_server(slow_reader, 3.0)
        assert time.monotonic() - started < 3.0
        dribbler.cancel()
        await asyncio.sleep(0.05)
        assert running.server.quotas.connections("127.0.0.1") == 0
        silent_writer.close()
        slow_writer.close()
        ws = WebSocketSignaling(running.url, "r", "viewer")  # a WebSocket is not an idle HTTP connection
        await ws.connect()
        await asyncio.sleep(1.0)
        await ws.send(m.Ping(5))
        assert await asyncio.wait_for(ws.receive(), TIMEOUT_S) == m.Pong(5)
        await ws.close()
    finally:
        await running.close()


async def test_token_guessing_is_limited_per_address_across_reconnects() -> None:
    limits = ClientLimits(failed_join_burst=5, failed_joins_per_s=0.5, join_burst=1000, joins_per_s=1000)
    running = await start_server(ServerConfig(port=0, static_dir=None, room_tokens={"locked": "right"}, limits=limits))
    try:
        codes: list[str | None] = []
        started = time.monotonic()
        for i in range(12):  # a fresh connection for each guess: reconnecting does not reset the count
            with pytest.raises(SignalingError) as info:
                await WebSocketSignaling(running.url, "locked", "viewer", token=f"guess{i}").connect()
            codes.append(info.value.code)
        elapsed = time.monotonic() - started
        guesses = codes.count(m.UNAUTHORIZED)
        assert guesses <= 5 + 0.5 * elapsed + 1 and codes[-1] == m.RATE_LIMITED, codes
        with pytest.raises(SignalingError, match="too many joins or refused tokens from 127.0.0.1: try again in") as info:
            await WebSocketSignaling(running.url, "locked", "viewer", token="right").connect()  # even the right one waits
        assert info.value.code == m.RATE_LIMITED
        await asyncio.sleep(2.1)
        ok = WebSocketSignaling(running.url, "locked", "viewer", token="right")
        await ok.connect()
        await ok.close()
    finally:
        await running.close()


async def test_joins_per_address_are_rate_limited() -> None:
    running = await start_server(ServerConfig(port=0, static_dir=None, limits=ClientLimits(join_burst=3, joins_per_s=1.0)))
    try:
        raw = await RawClient.open(running)
        replies = []
        for _ in range(5):
            await raw.send({"type": "join", "room": "r", "role": "viewer"})
            reply = await raw.recv()
            replies.append(reply.get("code", reply["type"]))
            if reply["type"] == "joined":
                await raw.send({"type": "leave"})
        assert replies == ["joined", "joined", "joined", m.RATE_LIMITED, m.RATE_LIMITED], replies
        await raw.close()
    finally:
        await running.close()


async def test_an_address_may_occupy_a_bounded_number_of_rooms() -> None:
    running = await start_server(ServerConfig(port=0, static_dir=None, limits=ClientLimits(max_rooms_per_ip=2)))
    try:
        a, b = WebSocketSignaling(running.url, "r1", "viewer"), WebSocketSignaling(running.url, "r2", "viewer")
        await a.connect()
        await b.connect()
        with pytest.raises(SignalingError, match="127.0.0.1 is already in 2 rooms") as info:
            await WebSocketSignaling(running.url, "r3", "viewer").connect()
        assert info.value.code == m.OVER_QUOTA
        c = WebSocketSignaling(running.url, "r1", "sender")  # a room it is already in does not count again
        await c.connect()
        await asyncio.gather(a.close(), b.close(), c.close())
    finally:
        await running.close()


async def test_a_client_that_does_not_read_is_dropped_with_a_close_code_and_bounded_bytes() -> None:
    bound = 256 * 1024
    running = await start_server(ServerConfig(port=0, static_dir=None, outbox_size=10_000, outbox_bytes=bound, rate_per_s=1e4, rate_burst=1e4))
    try:
        slow = await RawClient.open(running)
        slow_id = (await slow.join("r", "receiver"))["peer_id"]
        talker = WebSocketSignaling(running.url, "r", "sender")
        await talker.connect()
        (conn,) = [c for c in running.server.connections if c.peer_id == slow_id]
        sent = 0
        while not conn.overflowed and sent < 2000:  # 60 kB offers until the server gives up on it
            await talker.send(m.SessionDescription("offer", str(slow_id), "a" * 60_000))
            sent += 1
            await asyncio.sleep(0)
        assert conn.overflowed, f"{sent} offers and the outbox never overflowed"
        assert conn.outbox_peak <= bound  # never more than the bound queued (it was ~16 MB before)
        # It reads at last, within the grace period: what was sent, then the close frame with its code.
        while True:
            frame = await asyncio.wait_for(slow.ws.receive(), TIMEOUT_S)
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
        assert frame.type == aiohttp.WSMsgType.CLOSE and frame.data == CLOSE_NOT_READING, frame
        await talker.close()
        await slow.close()
    finally:
        await running.close()


async def test_fd_exhaustion_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    passed_on: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: passed_on.append(context))
    emfile = OSError(errno.EMFILE, "Too many open files")
    try:
        handler = AcceptErrorFilter(loop, interval_s=60.0)
        handler.install()
        with caplog.at_level(logging.ERROR, logger="signaling.limits"):
            for _ in range(1000):
                loop.call_exception_handler({"message": "socket.accept() out of system resource", "exception": emfile})
        lines = [r for r in caplog.records if r.name == "signaling.limits"]
        assert len(lines) == 1 and lines[0].exc_info is None and "ulimit -n" in lines[0].getMessage()
        assert handler.throttle.suppressed == 999
        loop.call_exception_handler({"message": "something else", "exception": ValueError("x")})
        assert [c["message"] for c in passed_on] == ["something else"]  # the rest goes to the handler before
        handler.uninstall()
    finally:
        loop.set_exception_handler(None)


async def test_the_server_installs_the_filter_while_it_runs() -> None:
    loop = asyncio.get_running_loop()
    running: RunningServer = await start_server(ServerConfig(port=0, static_dir=None))
    assert isinstance(loop.get_exception_handler(), AcceptErrorFilter)
    await running.close()
    assert loop.get_exception_handler() is None
