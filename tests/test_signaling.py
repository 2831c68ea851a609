"""Signaling: message validation, rooms and relaying, errors in-band, limits, tokens, shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from signaling import messages as m
from signaling.client import SignalingError, WebSocketSignaling, websocket_url
from signaling.server import RunningServer, ServerConfig, start_server

TIMEOUT_S = 5.0


# -- pure message codec ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "msg",
    [
        m.Join("demo", "sender"),
        m.Join("room_1-a_B", "viewer", token="s3cret"),
        m.Leave(),
        m.Ping(7),
        m.SessionDescription("offer", "abcd1234", "v=0\r\n"),
        m.SessionDescription("answer", "abcd1234", "v=0\r\n"),
        m.IceCandidate("abcd1234", "candidate:1 1 UDP 1 127.0.0.1 5000 typ host", "0", 0),
        m.IceCandidate("abcd1234", None),
    ],
)
def test_client_messages_round_trip(msg: m.ClientMessage) -> None:
    assert m.decode_client_message(m.encode_client_message(msg)) == msg


@pytest.mark.parametrize(
    "msg",
    [
        m.Joined("aa11", "demo", "receiver", (m.PeerInfo("bb22", "sender"), m.PeerInfo("cc33", "viewer"))),
        m.PeerJoined(m.PeerInfo("bb22", "sender")),
        m.PeerLeft(m.PeerInfo("bb22", "sender"), "disconnected"),
        m.Pong(3),
        m.Error(m.BAD_JSON, "nope", "join"),
        m.SessionDescription("offer", "bb22", "v=0"),
        m.IceCandidate("bb22", "candidate:x", "0", 0),
    ],
)
def test_server_messages_round_trip(msg: m.ServerMessage) -> None:
    assert m.decode_server_message(m.encode_server_message(msg)) == msg


@pytest.mark.parametrize(
    ("raw", "code", "needle"),
    [
        ("{not json", m.BAD_JSON, "not valid JSON"),
        ("[1, 2]", m.BAD_MESSAGE, "must be a JSON object, got list"),
        ('{"room": "x"}', m.BAD_MESSAGE, "'type' field"),
        ('{"type": "dance"}', m.BAD_MESSAGE, "unknown message type 'dance'"),
        ('{"type": "join", "room": "a b", "role": "sender"}', m.BAD_MESSAGE, "room name 'a b' is not valid"),
        ('{"type": "join", "room": "r", "role": "boss"}', m.BAD_MESSAGE, "'role' = 'boss' is not one of"),
        ('{"type": "join", "room": "r"}', m.BAD_MESSAGE, "lacks ['role']"),
        ('{"type": "join", "room": "r", "role": "sender", "x": 1}', m.BAD_MESSAGE, "unknown fields ['x']"),
        ('{"type": "offer", "to": "ABC!", "sdp": "v=0"}', m.BAD_MESSAGE, "'to' = 'ABC!'"),
        ('{"type": "offer", "to": "ab", "sdp": 5}', m.BAD_MESSAGE, "'sdp' must be a string, got 5"),
        ('{"type": "candidate", "to": "ab", "sdpMLineIndex": -1}', m.BAD_MESSAGE, "integer in [0, 255], got -1"),
        ('{"type": "ping", "nonce": true}', m.BAD_MESSAGE, "'nonce' must be an integer"),
        ("[" * 100_000, m.TOO_LARGE, "exceeds 65536"),
        (b"\xff\xfe", m.BAD_JSON, "not UTF-8"),
        ("[" * 50_000 + "]" * 50_000, m.TOO_LARGE, "exceeds"),
        ("[" * 20_000 + "]" * 20_000, m.BAD_JSON, "not valid JSON"),
    ],
)
def test_malformed_client_messages_raise_protocol_error(raw: str | bytes, code: str, needle: str) -> None:
    with pytest.raises(m.ProtocolError) as info:
        m.decode_client_message(raw)
    assert info.value.code == code
    assert needle in str(info.value)


def test_deeply_nested_json_is_rejected_not_crashing() -> None:
    raw = '{"type": "join", "room": ' + "[" * 30_000 + "]" * 30_000 + ', "role": "sender"}'
    with pytest.raises(m.ProtocolError) as info:
        m.decode_client_message(raw)
    assert info.value.code in (m.BAD_JSON, m.BAD_MESSAGE)


def test_websocket_url_forms() -> None:
    assert websocket_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/ws"
    assert websocket_url("http://127.0.0.1:8080/") == "ws://127.0.0.1:8080/ws"
    assert websocket_url("ws://h:1/ws") == "ws://h:1/ws"
    assert websocket_url("https://h/x") == "wss://h/x/ws"
    with pytest.raises(ValueError, match="must look like"):
        websocket_url("ftp://h")


# -- the server ------------------------------------------------------------------------------------
@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    (tmp_path / "index.html").write_text("<h1>page</h1>")
    (tmp_path / "app.js").write_text("// js")
    running = await start_server(ServerConfig(port=0, static_dir=tmp_path, rate_per_s=20, rate_burst=30, room_tokens={"locked": "pw"}))
    yield running
    await running.close()


class RawClient:
    """A bare WebSocket for sending arbitrary frames."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session, self.ws = session, ws

    @classmethod
    async def open(cls, server: RunningServer) -> RawClient:
        session = aiohttp.ClientSession()
        return cls(session, await session.ws_connect(server.ws_url))

    async def send(self, obj: object) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv(self) -> dict[str, object]:
        frame = await asyncio.wait_for(self.ws.receive(), TIMEOUT_S)
        assert frame.type == aiohttp.WSMsgType.TEXT, frame
        return json.loads(frame.data)  # type: ignore[no-any-return]

    async def join(self, room: str, role: str) -> dict[str, object]:
        await self.send({"type": "join", "room": room, "role": role})
        reply = await self.recv()
        assert reply["type"] == "joined", reply
        return reply

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


_seen: dict[int, list[object]] = {}


async def recv_type(sig: WebSocketSignaling, kind: type) -> object:
    """The next message of ``kind`` (messages of other kinds are kept for later calls, not lost)."""
    backlog = _seen.setdefault(id(sig), [])
    for i, msg in enumerate(backlog):
        if isinstance(msg, kind):
            return backlog.pop(i)
    while True:
        msg = await asyncio.wait_for(sig.receive(), TIMEOUT_S)
        assert msg is not None, f"connection closed while waiting for {kind.__name__}"
        if isinstance(msg, kind):
            return msg
        backlog.append(msg)


async def test_two_peers_join_and_relay(server: RunningServer) -> None:
    sender = WebSocketSignaling(server.url, "demo", "sender")
    receiver = WebSocketSignaling(server.url, "demo", "receiver")
    other_room = WebSocketSignaling(server.url, "elsewhere", "receiver")
    j1 = await sender.connect()
    await other_room.connect()
    j2 = await receiver.connect()
    assert j1.peers == () and j2.peers == (m.PeerInfo(j1.peer_id, "sender"),)
    assert await recv_type(sender, m.PeerJoined) == m.PeerJoined(m.PeerInfo(j2.peer_id, "receiver"))

    await sender.send(m.SessionDescription("offer", j2.peer_id, "v=0 offer"))
    assert await recv_type(receiver, m.SessionDescription) == m.SessionDescription("offer", j1.peer_id, "v=0 offer")
    await receiver.send(m.SessionDescription("answer", j1.peer_id, "v=0 answer"))
    assert await recv_type(sender, m.SessionDescription) == m.SessionDescription("answer", j2.peer_id, "v=0 answer")
    await receiver.send(m.IceCandidate(j1.peer_id, "candidate:1 1 udp 1 127.0.0.1 9 typ host", "0", 0))
    assert await recv_type(sender, m.IceCandidate) == m.IceCandidate(j2.peer_id, "candidate:1 1 udp 1 127.0.0.1 9 typ host", "0", 0)

    # A peer of another room is unknown here.
    assert other_room.peer_id is not None
    await sender.send(m.SessionDescription("offer", other_room.peer_id, "v=0"))
    err = await recv_type(sender, m.Error)
    assert isinstance(err, m.Error) and err.code == m.UNKNOWN_PEER and err.ref == "offer"

    await receiver.close()
    left = await recv_type(sender, m.PeerLeft)
    assert left == m.PeerLeft(m.PeerInfo(j2.peer_id, "receiver"), "disconnected")
    await sender.close()
    await other_room.close()


async def test_errors_are_answered_in_band_and_the_connection_survives(server: RunningServer) -> None:
    raw = await RawClient.open(server)
    cases: list[tuple[object, str]] = [
        ("{oops", m.BAD_JSON),
        ({"type": "offer", "to": "abcd", "sdp": "v=0"}, m.NOT_JOINED),
        ({"type": "leave"}, m.NOT_JOINED),
        ({"type": "join", "room": "r", "role": "spy"}, m.BAD_MESSAGE),
        ({"type": "join", "room": "r", "role": "viewer", "token": "x" * 300}, m.BAD_MESSAGE),
        ("x" * (70 * 1024), m.TOO_LARGE),
    ]
    for payload, code in cases:
        await raw.send(payload)
        reply = await raw.recv()
        assert reply["type"] == "error" and reply["code"] == code, (payload if isinstance(payload, dict) else str(payload)[:30], reply)
    await raw.ws.send_bytes(b"\x00binary")
    reply = await raw.recv()
    assert reply["code"] == m.BAD_FRAME
    # Still usable.
    await raw.send({"type": "join", "room": "r", "role": "viewer"})
    reply = await raw.recv()
    assert reply["type"] == "joined"
    await raw.send({"type": "join", "room": "r2", "role": "viewer"})
    assert (await raw.recv())["code"] == m.ALREADY_JOINED
    await raw.send({"type": "ping", "nonce": 42})
    assert await raw.recv() == {"type": "pong", "nonce": 42}
    await raw.close()


async def test_rate_limit_drops_a_flood_with_one_error_per_second(server: RunningServer) -> None:
    raw = await RawClient.open(server)
    for i in range(100):
        await raw.send({"type": "ping", "nonce": i})
    replies = []
    with pytest.raises(asyncio.TimeoutError):
        while True:
            frame = await asyncio.wait_for(raw.ws.receive(), 0.5)
            replies.append(json.loads(frame.data))
    pongs = [r for r in replies if r["type"] == "pong"]
    errors = [r for r in replies if r["type"] == "error"]
    assert 30 <= len(pongs) < 45, len(pongs)  # burst of 30 plus refill at 20/s during the send
    assert len(errors) == 1 and errors[0]["code"] == m.RATE_LIMITED and errors[0]["ref"] == "ping"
    await asyncio.sleep(0.2)
    await raw.send({"type": "ping", "nonce": 1000})
    assert await raw.recv() == {"type": "pong", "nonce": 1000}
    await raw.close()


async def test_room_tokens(server: RunningServer) -> None:
    with pytest.raises(SignalingError) as info:
        await WebSocketSignaling(server.url, "locked", "viewer").connect()
    assert info.value.code == m.UNAUTHORIZED and "missing" in str(info.value)
    with pytest.raises(SignalingError, match="wrong"):
        await WebSocketSignaling(server.url, "locked", "viewer", token="nope").connect()
    ok = WebSocketSignaling(server.url, "locked", "viewer", token="pw")
    assert (await ok.connect()).room == "locked"
    await ok.close()


async def test_room_full_and_many_rooms(tmp_path: Path) -> None:
    running = await start_server(ServerConfig(port=0, static_dir=None, max_peers_per_room=2, max_rooms=2))
    try:
        a, b = WebSocketSignaling(running.url, "r", "sender"), WebSocketSignaling(running.url, "r", "receiver")
        await a.connect()
        await b.connect()
        with pytest.raises(SignalingError) as info:
            await WebSocketSignaling(running.url, "r", "viewer").connect()
        assert info.value.code == m.ROOM_FULL
        c = WebSocketSignaling(running.url, "r2", "viewer")
        await c.connect()
        with pytest.raises(SignalingError) as info:
            await WebSocketSignaling(running.url, "r3", "viewer").connect()
        assert info.value.code == m.SERVER_FULL
        await asyncio.gather(a.close(), b.close(), c.close())
    finally:
        await running.close()


async def test_healthz_and_static_files(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session:
        viewer = WebSocketSignaling(server.url, "demo", "viewer")
        await viewer.connect()
        async with session.get(server.url + "/healthz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "ok", "rooms": 1, "peers": 1, "connections": 1}
        async with session.get(server.url + "/?room=demo") as resp:
            assert resp.status == 200 and "<h1>page</h1>" in await resp.text()
        async with session.get(server.url + "/app.js") as resp:
            assert resp.status == 200
        for bad in ("/../signaling/server.py", "/%2e%2e/%2e%2e/etc/passwd", "/nothing.js"):
            async with session.get(server.url + bad) as resp:
                assert resp.status == 404, bad
        await viewer.close()


async def test_shutdown_closes_clients_with_going_away() -> None:
    running = await start_server(ServerConfig(port=0, static_dir=None))
    a, b = WebSocketSignaling(running.url, "r", "sender"), WebSocketSignaling(running.url, "r", "receiver")
    await a.connect()
    await b.connect()
    assert isinstance(await a.receive(), m.PeerJoined)

    async def drain(client: WebSocketSignaling) -> list[object]:
        seen = []
        while (msg := await client.receive()) is not None:
            seen.append(msg)
        return seen

    readers = [asyncio.ensure_future(drain(c)) for c in (a, b)]  # clients read continuously, as real ones do
    await asyncio.sleep(0.05)
    await asyncio.wait_for(running.close(), TIMEOUT_S)
    for client, reader in zip((a, b), readers):
        seen = await asyncio.wait_for(reader, TIMEOUT_S)
        assert all(isinstance(x, m.PeerLeft) and x.reason == "shutdown" for x in seen), seen
        assert client._ws is not None and client._ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
        await client.close()


async def test_a_stuck_client_does_not_block_others() -> None:
    running = await start_server(ServerConfig(port=0, static_dir=None, outbox_size=8, rate_per_s=1000, rate_burst=1000))
    try:
        stuck = await RawClient.open(running)  # joins, then never reads
        await stuck.send({"type": "join", "room": "r", "role": "receiver"})
        talker = WebSocketSignaling(running.url, "r", "sender")
        witness = WebSocketSignaling(running.url, "r", "viewer")
        joined = await talker.connect()
        await witness.connect()
        stuck_id = next(p.peer_id for p in joined.peers if p.role == "receiver")
        witness_id = witness.peer_id
        assert witness_id is not None
        sdp = "a" * 50_000
        for i in range(300):  # ~15 MB towards the stuck client: far more than socket buffers
            await talker.send(m.SessionDescription("offer", stuck_id, sdp))
            if i % 50 == 0:
                await talker.send(m.SessionDescription("offer", witness_id, f"ping {i}"))
                got = await recv_type(witness, m.SessionDescription)
                assert isinstance(got, m.SessionDescription) and got.sdp == f"ping {i}"
        left = await recv_type(witness, m.PeerLeft)
        assert isinstance(left, m.PeerLeft) and left.peer.peer_id == stuck_id
        await asyncio.gather(talker.close(), witness.close(), stuck.close())
    finally:
        await running.close()


async def test_client_reports_unreachable_server() -> None:
    with pytest.raises(SignalingError, match="cannot reach"):
        await WebSocketSignaling("http://127.0.0.1:9", "r", "sender", connect_timeout_s=2).connect()
