"""Rooms shared through Redis: the ``RoomStore`` that lets several signaling instances serve one room.

::

    python -m signaling --port 8080 --redis redis://127.0.0.1:6379/0      # instance 1
    python -m signaling --port 8081 --redis redis://127.0.0.1:6379/0      # instance 2: same rooms

Membership lives in Redis hashes changed only by the Lua scripts of ``signaling.redis_scripts`` (one
atomic command per join, leave or reap), so the rules of a room (its capacity, the first sender and
receiver holding their roles, ticket holders replacing them, rooms per client address) hold across
instances as they do in one process. Messages reach a member through its instance's pub/sub channel:
the scripts publish ``joined`` / ``peer_joined`` / ``peer_left`` in the order the room changed, and a
relay (``offer``/``answer``/``candidate``) looks the recipient up and publishes to its instance.

Presence: every instance refreshes a key that expires after ``3 x heartbeat_s`` and, on the same beat,
reaps every registered instance whose key has expired: its members are removed and the others see
``peer_left`` "disconnected". So a killed instance's peers show as left within about
``4 x heartbeat_s`` (the TTL plus one beat of another instance), and their clients can reconnect to any
instance. An instance that finds its own key expired (it stalled longer than the TTL, or Redis lost it)
registers again and evicts any of its members that were reaped meanwhile (the server closes their
sockets so that they reconnect).

Pub/sub delivers at most once: while an instance is cut off from Redis, messages for its members are
lost, and the members are reaped if it stays away longer than the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from signaling import messages as m
from signaling import redis_scripts
from signaling import room_store as rs
from signaling.limits import ThrottledLog

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedisConfig:
    """Where the shared rooms are; the field comments are the CLI help."""

    url: str  # redis://[user:password@]HOST:PORT/DB (rediss:// for TLS)
    heartbeat_s: float = 5.0  # presence refresh; a dead instance's peers show as left within ~4 heartbeats
    prefix: str = "kpcall"  # key and channel prefix (several deployments may share one Redis)

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"Redis URL {self.url!r} must look like redis://HOST:PORT/DB (or rediss://, unix://)")
        if not 0.05 <= self.heartbeat_s <= 300:
            raise ValueError(f"the Redis heartbeat must be between 0.05 and 300 s, got {self.heartbeat_s}")
        if not self.prefix or any(c in self.prefix for c in " \n:"):
            raise ValueError(f"Redis prefix {self.prefix!r} must be non-empty without spaces, newlines or ':'")

    @property
    def ttl_ms(self) -> int:
        return int(3 * self.heartbeat_s * 1000)


def _member_json(member: rs.Member, instance: str) -> str:
    return json.dumps({
        "i": instance, "role": member.role, "ip": member.remote, "o": member.original, "t": member.ticketed, "c": member.control,
    })


def _member_from_json(peer_id: str, text: str) -> rs.Member:
    obj = json.loads(text)  # "c" is absent from members an instance without grants wrote: no control
    return rs.Member(peer_id, obj["role"], obj["ip"], bool(obj["o"]), bool(obj["t"]), bool(obj.get("c", False)))


def _peer_info(peer_id: str, role: m.Role, original: object = False, control: object = False) -> m.PeerInfo:
    """A peer of a Lua envelope: its ``o``/``c`` flags are JSON true/false (absent, from an older script: none)."""
    return m.granted_peer(peer_id, role, original is True, control is True)


class RedisRoomStore(rs.RoomStore):
    """Rooms in Redis; this instance's members get their messages on its own channel."""

    def __init__(self, config: RedisConfig, limits: rs.RoomLimits) -> None:
        self.config = config
        self.limits = limits
        self.instance = secrets.token_hex(6)
        self._redis: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._local: rs.LocalPeers | None = None
        self._members: set[tuple[str, str]] = set()  # (room, peer id) this instance holds
        self._pending_leaves: dict[tuple[str, str], str] = {}  # (room, peer id) -> reason: leaves Redis did not take yet
        self._tasks: list[asyncio.Task[None]] = []
        self._errors = ThrottledLog(10.0)
        p = config.prefix
        self._alive_key = f"{p}:alive:{self.instance}"
        self._members_key = f"{p}:members:{self.instance}"
        self._instances_key = f"{p}:instances"
        self._channel = f"{p}:inst:{self.instance}"

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the Redis room store is not started: await start() first")
        return self._redis

    async def start(self, local: rs.LocalPeers) -> None:
        self._local = local
        self._redis = aioredis.Redis.from_url(self.config.url, decode_responses=True, socket_connect_timeout=5.0)
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            await self._redis.aclose()
            self._redis = None
            raise rs.StoreUnavailable(
                f"cannot reach Redis at {self.config.url}: {exc} (is redis-server running there? check --redis)"
            ) from None
        self._join_script = self._redis.register_script(redis_scripts.JOIN)
        self._leave_script = self._redis.register_script(redis_scripts.LEAVE)
        self._relay_script = self._redis.register_script(redis_scripts.RELAY)
        self._reap_script = self._redis.register_script(redis_scripts.REAP)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=False)
        await self._pubsub.subscribe(self._channel)
        async with asyncio.timeout(5.0):  # the confirmation: from here on nothing published to us is missed
            while (msg := await self._pubsub.get_message(timeout=1.0)) is None or msg["type"] != "subscribe":
                pass
        await self._redis.set(self._alive_key, time.time(), px=self.config.ttl_ms)
        await self._redis.sadd(self._instances_key, self.instance)
        self._tasks = [asyncio.ensure_future(self._listen()), asyncio.ensure_future(self._heartbeat_loop())]
        logger.info("rooms in Redis at %s as instance %s (heartbeat %.1f s)", self.config.url, self.instance, self.config.heartbeat_s)
        await self._reap_dead()

    # -- rooms -------------------------------------------------------------------------------------
    async def _script(self, script: Any, args: list[Any]) -> Any:
        """Run a script; a Redis that cannot be reached is ``StoreUnavailable``."""
        try:
            return await script(args=args)
        except (RedisError, OSError) as exc:
            raise rs.StoreUnavailable(f"Redis at {self.config.url}: {exc}") from None

    async def join(self, room: str, member: rs.Member) -> None:
        limits = self.limits
        result = await self._script(self._join_script, [
            self.config.prefix, room, member.peer_id, _member_json(member, self.instance), limits.max_rooms,
            limits.max_peers_per_room, limits.max_rooms_per_ip, int(member.role in rs.EXCLUSIVE_ROLES), rs.MAX_PARTICIPANTS,
        ])
        outcome = result[0]
        if outcome == "ok":
            self._members.add((room, member.peer_id))
            return
        if outcome == "server_full":
            raise rs.server_full(limits.max_rooms)
        if outcome == "over_quota":
            raise rs.over_quota(member.remote, int(result[1]))
        if outcome == "room_full":
            raise rs.room_full(room, limits.max_peers_per_room)
        if outcome == "call_full":
            raise rs.call_full(room)
        if outcome == "role_taken":
            raise rs.role_taken(room, member.role, result[1])
        raise AssertionError(f"unexpected answer of the join script: {result!r}")

    async def leave(self, room: str, member: rs.Member, reason: str) -> None:
        """Remove it; if Redis cannot be reached, the leave is kept and retried on every heartbeat (StoreUnavailable)."""
        self._members.discard((room, member.peer_id))
        try:
            await self._script(self._leave_script, [self.config.prefix, room, member.peer_id, reason])
        except rs.StoreUnavailable:
            self._pending_leaves[(room, member.peer_id)] = reason
            raise

    async def _retry_leaves(self) -> None:
        for (room, peer_id), reason in list(self._pending_leaves.items()):
            await self._leave_script(args=[self.config.prefix, room, peer_id, reason])
            del self._pending_leaves[(room, peer_id)]

    async def relay(self, room: str, src: rs.Member, dst_peer_id: str, msg: m.SessionDescription | m.IceCandidate) -> None:
        text = m.encode_server_message(msg)
        (outcome,) = await self._script(self._relay_script, [self.config.prefix, room, src.peer_id, dst_peer_id, text, msg.stream or ""])
        if outcome == "ok":
            return
        if outcome == "not_joined":
            raise m.ProtocolError(m.NOT_JOINED, f"you are no longer in room {room!r} (replaced or expired): join again")
        if outcome == "unknown_peer":
            raise rs.unknown_peer(room, dst_peer_id)
        dst_json = await self.redis.hget(f"{self.config.prefix}:room:{room}", dst_peer_id)  # the refusal's text names the roles
        if dst_json is not None:
            rs.check_link(src, _member_from_json(dst_peer_id, dst_json), msg.stream)
        raise m.ProtocolError(m.FORBIDDEN, f"no link between you and {dst_peer_id!r} in room {room!r}: nothing relayed")

    async def counts(self) -> rs.StoreCounts:
        p = self.config.prefix
        try:
            rooms = await self.redis.smembers(f"{p}:rooms")
            async with self.redis.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.hlen(f"{p}:room:{room}")
                sizes = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise rs.StoreUnavailable(f"Redis at {self.config.url}: {exc}") from None
        return rs.StoreCounts(len(rooms), sum(sizes))

    # -- delivery ----------------------------------------------------------------------------------
    async def _listen(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message["type"] == "message":
                        self._on_envelope(message["data"])
            except (RedisError, OSError) as exc:
                self._errors.log(logger, logging.ERROR, "Redis pub/sub of instance %s failed (%s); retrying", self.instance, exc)
                await asyncio.sleep(1.0)

    def _on_envelope(self, data: str) -> None:
        local = self._local
        if local is None:
            return
        if data.startswith("m\n"):  # a relayed message: m, room, peer id, text
            _, room, to, text = data.split("\n", 3)
            local.deliver(room, to, text)
            return
        try:
            env = json.loads(data)
            kind, room, to = env["k"], env["r"], env["to"]
            if kind == "joined":
                peers = env["peers"] or []  # Lua's cjson writes an empty list as {}
                infos = tuple(_peer_info(*p[:4]) for p in peers)  # [id, role, original, control]
                local.joined(room, m.Joined(to, room, env["role"], infos))
            elif kind == "joined_peer":
                peer = _peer_info(env["id"], env["role"], env.get("o", False), env.get("c", False))
                local.deliver(room, to, m.encode_server_message(m.PeerJoined(peer)))
            elif kind == "left":
                local.deliver(room, to, m.encode_server_message(m.PeerLeft(m.PeerInfo(env["id"], env["role"]), env["why"])))
            elif kind == "evict":
                self._members.discard((room, to))
                local.evict(room, to, env["why"])
            else:
                raise ValueError(f"unknown envelope kind {kind!r}")
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            self._errors.log(logger, logging.ERROR, "bad envelope on %s (%s): %.200r", self._channel, exc, data)

    # -- presence ----------------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                self._errors.log(logger, logging.ERROR, "Redis heartbeat of instance %s failed: %s", self.instance, exc)

    async def _beat(self) -> None:
        redis = self.redis
        if not await redis.set(self._alive_key, time.time(), px=self.config.ttl_ms, xx=True):
            logger.error(
                "instance %s: its presence in Redis had expired (no heartbeat for %d ms); registering again and"
                " closing the sockets of members that were reaped meanwhile", self.instance, self.config.ttl_ms,
            )
            await redis.set(self._alive_key, time.time(), px=self.config.ttl_ms)
            kept = {tuple(e.split("\n", 1)) for e in await redis.smembers(self._members_key)}
            for room, peer_id in sorted(self._members - kept):
                self._members.discard((room, peer_id))
                if self._local is not None:
                    self._local.evict(room, peer_id, "expired")
        await redis.sadd(self._instances_key, self.instance)
        await self._retry_leaves()
        await self._reap_dead()

    async def _reap_dead(self) -> None:
        redis = self.redis
        others = [i for i in await redis.smembers(self._instances_key) if i != self.instance]
        if not others:
            return
        async with redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.exists(f"{self.config.prefix}:alive:{other}")
            alive = await pipe.execute()
        for other, is_alive in zip(others, alive):
            if not is_alive:
                removed = await self._reap_script(args=[self.config.prefix, other])
                if removed >= 0:
                    logger.warning("instance %s reaped dead instance %s: %d members removed", self.instance, other, removed)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._local = None
        if self._redis is None:
            return
        with contextlib.suppress(RedisError, OSError):
            for room, peer_id in list(self._members):  # normally none: the server made every member leave
                await self._leave_script(args=[self.config.prefix, room, peer_id, "shutdown"])
            await self._redis.delete(self._alive_key, self._members_key)
            await self._redis.srem(self._instances_key, self.instance)
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()
        await self._redis.aclose()
        self._redis = None
