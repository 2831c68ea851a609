"""Signaling on Redis: several instances share rooms (joins, relays, roles, limits, tickets), a dead instance's peers leave.

Each test module run starts its own redis-server on a free loopback port in a temp dir (never the
system service) and stops it; skipped with the reason when there is no redis-server binary.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from signaling import messages as m
from signaling.client import SignalingError, WebSocketSignaling
from signaling.credentials import Ticket, issue_ticket
from signaling.local_redis import LocalRedis, free_loopback_port, redis_server_missing
from signaling.redis_rooms import RedisConfig
from signaling.room_store import StoreUnavailable
from signaling.server import RunningServer, ServerConfig, start_server

TIMEOUT_S = 5.0
HEARTBEAT_S = 0.2  # a dead instance is reaped within ~4 heartbeats
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = redis_server_missing()
    if missing is not None:
        pytest.skip(missing)
    with LocalRedis(tmp_path_factory.mktemp("redis")) as url:
        yield url


_prefixes = iter(range(10**6))


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix per test: tests share the module's Redis without seeing each other's rooms."""
    return f"t{os.getpid()}x{next(_prefixes)}"


async def _instances(redis_url: str, prefix: str, count: int, **config: object) -> list[RunningServer]:
    redis = RedisConfig(redis_url, heartbeat_s=HEARTBEAT_S, prefix=prefix)
    return [await start_server(ServerConfig(port=0, static_dir=None, redis=redis, **config)) for _ in range(count)]  # type: ignore[arg-type]


@pytest.fixture
async def two(redis_url: str, prefix: str) -> AsyncIterator[list[RunningServer]]:
    servers = await _instances(redis_url, prefix, 2)
    yield servers
    await asyncio.gather(*(s.close() for s in servers))


async def next_of(sig: WebSocketSignaling, kind: type, skip: tuple[type, ...] = (m.PeerJoined,)) -> object:
    """The next message that is not of a ``skip`` type (other arrivals), which must be of ``kind``."""
    while True:
        msg = await asyncio.wait_for(sig.receive(), TIMEOUT_S)
        if isinstance(msg, kind):
            return msg
        assert isinstance(msg, skip), msg


async def test_peers_on_two_instances_share_a_room_and_relay(two: list[RunningServer]) -> None:
    a, b = two
    sender = WebSocketSignaling(a.url, "call", "sender")
    receiver = WebSocketSignaling(b.url, "call", "receiver")
    joined_s = await sender.connect()
    joined_r = await receiver.connect()
    assert joined_s.peers == () and joined_r.peers == (m.PeerInfo(joined_s.peer_id, "sender"),)
    assert await next_of(sender, m.PeerJoined) == m.PeerJoined(m.PeerInfo(joined_r.peer_id, "receiver"))
    await sender.send(m.SessionDescription("offer", joined_r.peer_id, "v=0 offer"))
    assert await next_of(receiver, m.SessionDescription) == m.SessionDescription("offer", joined_s.peer_id, "v=0 offer")
    await receiver.send(m.SessionDescription("answer", joined_s.peer_id, "v=0 answer"))
    assert await next_of(sender, m.SessionDescription) == m.SessionDescription("answer", joined_r.peer_id, "v=0 answer")
    line = "candidate:1 1 UDP 2130706431 10.0.0.2 5000 typ host"
    await receiver.send(m.IceCandidate(joined_s.peer_id, line, "0", 0))
    await receiver.send(m.IceCandidate(joined_s.peer_id, None))
    assert await next_of(sender, m.IceCandidate) == m.IceCandidate(joined_r.peer_id, line, "0", 0)
    assert await next_of(sender, m.IceCandidate) == m.IceCandidate(joined_r.peer_id, None, None, None)
    async with aiohttp.ClientSession() as session:
        for server in (a, b):  # each instance counts the room across instances, and its own sockets
            async with session.get(server.url + "/healthz") as resp:
                body = await resp.json()
                assert (body["rooms"], body["peers"], body["connections"]) == (1, 2, 1), body
    await receiver.close()
    left = await next_of(sender, m.PeerLeft)
    assert left == m.PeerLeft(m.PeerInfo(joined_r.peer_id, "receiver"), "disconnected")
    await sender.close()


async def test_room_rules_hold_across_instances(redis_url: str, prefix: str) -> None:
    servers = await _instances(redis_url, prefix, 3, max_peers_per_room=3)
    a, b, c = servers
    try:
        sender = WebSocketSignaling(a.url, "r", "sender")
        await sender.connect()
        with pytest.raises(SignalingError) as taken:  # the first sender holds its role on every instance
            await WebSocketSignaling(b.url, "r", "sender").connect()
        assert taken.value.code == m.ROLE_TAKEN and "already has a sender" in str(taken.value)
        v1, v2 = WebSocketSignaling(b.url, "r", "viewer"), WebSocketSignaling(c.url, "r", "viewer")
        j1, j2 = await v1.connect(), await v2.connect()
        with pytest.raises(SignalingError) as full:
            await WebSocketSignaling(c.url, "r", "receiver").connect()
        assert full.value.code == m.ROOM_FULL and "(3 participants)" in str(full.value)
        await v1.send(m.SessionDescription("offer", j2.peer_id, "v=0"))  # viewer -> viewer: no link
        err = await next_of(v1, m.Error)
        assert isinstance(err, m.Error) and err.code == m.FORBIDDEN
        await v1.send(m.SessionDescription("offer", "feedbeef", "v=0"))
        err = await next_of(v1, m.Error)
        assert isinstance(err, m.Error) and err.code == m.UNKNOWN_PEER and "no peer 'feedbeef' in room 'r'" in err.message
        await v1.send(m.SessionDescription("offer", sender.peer_id or "", "v=0"))  # open rooms grant the original
        assert await next_of(sender, m.SessionDescription) == m.SessionDescription("offer", j1.peer_id, "v=0")
        await asyncio.gather(sender.close(), v1.close(), v2.close())
    finally:
        await asyncio.gather(*(s.close() for s in servers))


async def test_rooms_per_address_and_room_count_are_counted_across_instances(redis_url: str, prefix: str) -> None:
    from signaling.limits import ClientLimits

    servers = await _instances(redis_url, prefix, 2, max_rooms=3, limits=ClientLimits(max_rooms_per_ip=2))
    a, b = servers
    try:
        clients = [WebSocketSignaling(s.url, room, "viewer") for s, room in ((a, "r1"), (b, "r2"))]
        for client in clients:
            await client.connect()
        with pytest.raises(SignalingError) as quota:
            await WebSocketSignaling(b.url, "r3", "viewer").connect()
        assert quota.value.code == m.OVER_QUOTA and "already in 2 rooms" in str(quota.value)
        again = WebSocketSignaling(b.url, "r1", "receiver")  # a room the address is in already is fine
        await again.connect()
        await asyncio.gather(*(c.close() for c in (*clients, again)))
    finally:
        await asyncio.gather(*(s.close() for s in servers))


async def test_a_ticket_holder_on_another_instance_replaces_the_sender(redis_url: str, prefix: str) -> None:
    secret = b"0123456789abcdef0123456789abcdef"
    servers = await _instances(redis_url, prefix, 2, ticket_secret=secret)
    a, b = servers

    def ticket(role: m.Role) -> str:
        return issue_ticket(secret, Ticket("t", role, int(time.time()) + 600))

    try:
        old = WebSocketSignaling(a.url, "t", "sender", ticket("sender"))
        receiver = WebSocketSignaling(b.url, "t", "receiver", ticket("receiver"))
        j_old = await old.connect()
        await receiver.connect()
        assert await next_of(old, m.PeerJoined)
        new = WebSocketSignaling(b.url, "t", "sender", ticket("sender"))
        j_new = await new.connect()
        assert j_new.peers == (m.PeerInfo(receiver.peer_id or "", "receiver"),)
        err = await next_of(old, m.Error)
        assert isinstance(err, m.Error) and err.code == m.REPLACED
        assert await next_of(receiver, m.PeerLeft) == m.PeerLeft(m.PeerInfo(j_old.peer_id, "sender"), "replaced")
        assert await next_of(receiver, m.PeerJoined) == m.PeerJoined(m.PeerInfo(j_new.peer_id, "sender"))
        await old.send(m.SessionDescription("offer", receiver.peer_id or "", "v=0"))  # it is no longer in the room
        err = await next_of(old, m.Error)
        assert isinstance(err, m.Error) and err.code == m.NOT_JOINED
        await asyncio.gather(old.close(), receiver.close(), new.close())
    finally:
        await asyncio.gather(*(s.close() for s in servers))


def _spawn_instance(redis_url: str, prefix: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "signaling", "--host", "127.0.0.1", "--port", str(port), "--redis", redis_url,
         "--redis-prefix", prefix, "--redis-heartbeat-s", str(HEARTBEAT_S), "--static-dir", "/nonexistent"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


async def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"").decode()
            try:
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not come up within {timeout_s} s")


async def test_a_killed_instance_s_peers_show_as_left_within_the_heartbeat(redis_url: str, prefix: str) -> None:
    (survivor,) = await _instances(redis_url, prefix, 1)
    port = free_loopback_port()
    proc = _spawn_instance(redis_url, prefix, port)
    try:
        await _wait_healthy(f"http://127.0.0.1:{port}", proc)
        receiver = WebSocketSignaling(survivor.url, "k", "receiver")
        await receiver.connect()
        doomed = WebSocketSignaling(f"http://127.0.0.1:{port}", "k", "sender")
        j = await doomed.connect()
        assert await next_of(receiver, m.PeerJoined) == m.PeerJoined(m.PeerInfo(j.peer_id, "sender"))
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)  # no goodbye: its sockets die, its presence key expires
        left = await asyncio.wait_for(receiver.receive(), 4 * HEARTBEAT_S + TIMEOUT_S)
        elapsed = time.monotonic() - killed_at
        assert left == m.PeerLeft(m.PeerInfo(j.peer_id, "sender"), "disconnected")
        assert elapsed <= 5 * HEARTBEAT_S + 0.5, f"peer_left after {elapsed:.2f} s"
        again = WebSocketSignaling(survivor.url, "k", "sender")  # the role is free again: reconnect elsewhere
        await again.connect()
        await asyncio.gather(receiver.close(), again.close(), doomed.close())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        await survivor.close()


async def test_an_instance_whose_presence_expired_closes_its_reaped_members(two: list[RunningServer], prefix: str) -> None:
    a, b = two
    receiver = WebSocketSignaling(a.url, "e", "receiver")
    await receiver.connect()
    stalled = WebSocketSignaling(b.url, "e", "sender")
    j = await stalled.connect()
    assert await next_of(receiver, m.PeerJoined)
    store = b.server.store
    redis = store.redis  # type: ignore[attr-defined]
    await redis.delete(f"{prefix}:alive:{store.instance}")  # type: ignore[attr-defined]  # as if b had stalled past the TTL
    await a.server.store._reap_dead()  # type: ignore[attr-defined]  # and a reaped it before b's next beat
    assert await next_of(receiver, m.PeerLeft) == m.PeerLeft(m.PeerInfo(j.peer_id, "sender"), "disconnected")
    assert await asyncio.wait_for(stalled.receive(), TIMEOUT_S) is None  # b noticed and closed the socket: reconnect
    await asyncio.gather(receiver.close(), stalled.close())


async def test_an_unreachable_redis_is_a_clear_error() -> None:
    config = ServerConfig(port=0, static_dir=None, redis=RedisConfig(f"redis://127.0.0.1:{free_loopback_port()}/0"))
    with pytest.raises(StoreUnavailable, match=r"cannot reach Redis at redis://127\.0\.0\.1:\d+/0: .*is redis-server running"):
        await start_server(config)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"url": "http://x"}, "must look like redis://"),
        ({"url": "redis://x", "heartbeat_s": 0.0}, "heartbeat must be between"),
        ({"url": "redis://x", "prefix": "a:b"}, "prefix 'a:b'"),
    ],
)
def test_redis_config_is_checked(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        RedisConfig(**kwargs)  # type: ignore[arg-type]


async def test_the_relay_script_applies_the_same_rule_as_check_link(two: list[RunningServer]) -> None:
    """Every pair of roles (and a viewer with and without the original): the Lua rule relays exactly what check_link allows."""
    from signaling.room_store import Member, check_link

    store = two[0].server.store
    members = [
        Member("aa01", "sender", "10.0.0.1"), Member("aa02", "receiver", "10.0.0.1"),
        Member("aa03", "viewer", "10.0.0.1", original=True), Member("aa04", "viewer", "10.0.0.1", original=False),
        Member("aa05", "participant", "10.0.0.1"), Member("aa06", "participant", "10.0.0.1"),
    ]
    redis = store.redis  # type: ignore[attr-defined]
    from signaling.redis_rooms import _member_json

    for member in members:  # straight into the room hash: the join script would refuse a second viewer's role mix-ups
        await redis.hset(f"{store.config.prefix}:room:rule", member.peer_id, _member_json(member, "nowhere"))  # type: ignore[attr-defined]
    for src in members:
        for dst in members:
            if src is dst:
                continue
            for stream in (None, src.peer_id, dst.peer_id, "aa99"):  # participants must name one of them as the stream
                try:
                    check_link(src, dst, stream)
                    allowed = True
                except m.ProtocolError:
                    allowed = False
                try:
                    await store.relay("rule", src, dst.peer_id, m.SessionDescription("offer", src.peer_id, "v=0", stream))
                    relayed = True
                except m.ProtocolError as exc:
                    assert exc.code == m.FORBIDDEN, exc
                    relayed = False
                assert relayed == allowed, (src, dst, stream)


async def test_a_lost_redis_is_answered_in_band_and_healthz_says_so(tmp_path: Path, prefix: str) -> None:
    if redis_server_missing():
        pytest.skip(redis_server_missing() or "")
    own = LocalRedis(tmp_path / "redis")
    (server,) = await _instances(own.start(), prefix, 1)
    try:
        early = WebSocketSignaling(server.url, "x", "receiver")
        await early.connect()
        own.stop()  # Redis goes away under a running instance
        late = WebSocketSignaling(server.url, "x", "sender")
        with pytest.raises(SignalingError) as info:
            await late.connect()
        assert info.value.code == m.UNAVAILABLE and "try again shortly" in str(info.value)
        async with aiohttp.ClientSession() as session, session.get(server.url + "/healthz") as resp:
            assert resp.status == 503 and (await resp.json())["status"] == "unavailable"
        await early.close()  # its leave is kept for when Redis is back; the socket closes as usual
        await asyncio.sleep(0.2)
        assert server.server.connections == set()
        assert server.server.store._pending_leaves  # type: ignore[attr-defined]
    finally:
        own.stop()
        await server.close()


async def test_a_webrtc_call_between_peers_on_two_instances(two: list[RunningServer]) -> None:
    """Real aiortc peers (a data channel, 5 round trips) whose signaling goes through two instances and Redis."""
    from tests.turn_peer import run

    a, b = two
    receiver = asyncio.ensure_future(run("receiver", b.url, "webrtc", 20.0, host_candidates="loopback"))
    await asyncio.sleep(0.2)
    sender = await run("sender", a.url, "webrtc", 20.0, host_candidates="loopback")
    result = await receiver
    assert sender["done"] and result["done"], (sender, result)
    assert sender["messages"] == [f"pong {i}" for i in range(5)]
    assert sender["local_type"] == "host" and sender["remote"].startswith("127.0.0.1:")


async def _announced_grants(receiver_url: str, viewer_url: str, sender_url: str, room: str) -> tuple[object, object]:
    """A viewer's grants as the room's receiver is told (``peer_joined``) and as a later sender finds them (``joined``)."""
    receiver, viewer, sender = (WebSocketSignaling(receiver_url, room, "receiver"), WebSocketSignaling(viewer_url, room, "viewer"),
                                WebSocketSignaling(sender_url, room, "sender"))
    await receiver.connect()
    viewer_id = (await viewer.connect()).peer_id
    announced = await next_of(receiver, m.PeerJoined, skip=())
    assert isinstance(announced, m.PeerJoined) and announced.peer.peer_id == viewer_id
    found = next(p for p in (await sender.connect()).peers if p.peer_id == viewer_id)
    await asyncio.gather(receiver.close(), viewer.close(), sender.close())
    return announced.peer.grants, found.grants


async def test_a_viewer_s_grants_reach_the_others_as_in_one_process(redis_url: str, prefix: str) -> None:
    """The join script's ``joined``/``peer_joined`` carry each viewer's grants (original, control) exactly as the memory
    store announces them; a member written by an instance from before control grants (no "c") has none."""
    cases: list[tuple[dict[str, bool], tuple[str, ...]]] = [
        ({}, (m.GRANT_ORIGINAL, m.GRANT_CONTROL)), ({"open_control": False}, (m.GRANT_ORIGINAL,)),
        ({"open_original": False}, (m.GRANT_CONTROL,)), ({"open_original": False, "open_control": False}, ()),
    ]
    for n, (config, grants) in enumerate(cases):
        memory = await start_server(ServerConfig(port=0, static_dir=None, **config))  # type: ignore[arg-type]
        servers = await _instances(redis_url, f"{prefix}c{n}", 2, **config)
        try:
            assert await _announced_grants(memory.url, memory.url, memory.url, "g") == (grants, grants), config
            assert await _announced_grants(servers[0].url, servers[1].url, servers[0].url, "g") == (grants, grants), config
        finally:
            await asyncio.gather(memory.close(), *(s.close() for s in servers))
    # a viewer another (older) instance wrote without "c": announced without control, read back without it
    servers = await _instances(redis_url, prefix, 1)
    try:
        from signaling.redis_rooms import _member_from_json

        store = servers[0].server.store
        old = '{"i": "nowhere", "role": "viewer", "ip": "10.0.0.9", "o": true, "t": false}'
        await store.redis.hset(f"{prefix}:room:old", "ab0001", old)  # type: ignore[attr-defined]
        receiver = WebSocketSignaling(servers[0].url, "old", "receiver")
        joined = await receiver.connect()
        await receiver.close()
        assert joined.peers == (m.PeerInfo("ab0001", "viewer", (m.GRANT_ORIGINAL,)),)
        assert not _member_from_json("ab0001", old).control and _member_from_json("ab0001", old).original
    finally:
        await servers[0].close()
