"""Where the signaling server's rooms live: the ``RoomStore`` interface, the member record and the rules every store applies alike.

The server (``signaling.server``) owns the WebSockets; a store owns who is in which room and carries
messages to members. Two stores implement it:

- ``signaling.memory_rooms.MemoryRoomStore``: one process holds every room (the default; one machine);
- ``signaling.redis_rooms.RedisRoomStore``: several server instances share rooms through Redis
  (``python -m signaling --redis redis://HOST:6379/0``).

A store delivers every message meant for a member (``joined`` through ``LocalPeers.joined``;
``peer_joined``, ``peer_left`` and the relayed ``offer``/``answer``/``candidate`` through
``LocalPeers.deliver``) to the instance that holds the member's WebSocket, in the order the room changed; it tells an instance through ``LocalPeers.evict`` when
one of its members was removed by someone else (a ticket holder replaced it, or the instance was given
up for dead). Refusals are ``messages.ProtocolError`` with the texts below, the same from every store.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol

from signaling import messages as m

EXCLUSIVE_ROLES = ("sender", "receiver")  # one per room at a time
MAX_PARTICIPANTS = 4  # participants of one call (full mesh: each sends its motion to every other)


class StoreUnavailable(RuntimeError):
    """A store cannot reach what holds its rooms (Redis); the message names where and what to check.

    At start it stops the server; later the request that met it is answered with ``unavailable``."""


@dataclass(frozen=True)
class Member:
    """One participant of a room, as the store records it."""

    peer_id: str
    role: m.Role
    remote: str  # the client's IP address (rooms per address are limited)
    original: bool = False  # (a viewer) may exchange signaling with the sender for its original pictures
    ticketed: bool = False  # joined with a valid ticket: it may replace the holder of its role, and be replaced
    control: bool = False  # (a viewer) may send commands and avatars to the receiver (the receiver enforces it)

    @property
    def info(self) -> m.PeerInfo:
        """As the others are told of it (``joined``, ``peer_joined``): a viewer's grants included."""
        return m.granted_peer(self.peer_id, self.role, self.original, self.control)


@dataclass(frozen=True)
class RoomLimits:
    """The limits a store checks at a join (``ServerConfig`` fills them in)."""

    max_rooms: int = 256  # rooms that may exist at once (with Redis: across every instance)
    max_peers_per_room: int = 16
    max_rooms_per_ip: int = 8  # rooms one client address may be present in


@dataclass(frozen=True)
class StoreCounts:
    rooms: int  # rooms the store knows (with Redis: across every instance)
    peers: int  # members of those rooms


class LocalPeers(Protocol):
    """What a store calls on the server instance that holds a member's WebSocket."""

    def deliver(self, room: str, peer_id: str, text: str) -> None:
        """Queue ``text`` (an encoded server message) for ``peer_id`` if it is still in ``room`` here."""

    def joined(self, room: str, msg: m.Joined) -> None:
        """``msg.peer_id`` is in ``room`` (the first message of the room for it; the server may send credentials first)."""

    def evict(self, room: str, peer_id: str, reason: str) -> None:
        """``peer_id`` was removed from ``room`` by someone else (``reason``: "replaced", "expired")."""


class RoomStore(abc.ABC):
    """Rooms and their members; see the module docstring."""

    @abc.abstractmethod
    async def start(self, local: LocalPeers) -> None:
        """Connect (if it has anything to connect to) and start delivering to ``local``."""

    @abc.abstractmethod
    async def join(self, room: str, member: Member) -> None:
        """Add ``member`` to ``room``: it is delivered ``joined``, the others ``peer_joined``; ProtocolError if refused.

        A ticketed member that finds its role held replaces the holder (evicted with "replaced", the others see
        ``peer_left`` "replaced"); an unticketed one is refused with ``role_taken``."""

    @abc.abstractmethod
    async def leave(self, room: str, member: Member, reason: str) -> None:
        """Remove ``member`` (a no-op if it is gone already); the others see ``peer_left`` with ``reason``."""

    @abc.abstractmethod
    async def relay(self, room: str, src: Member, dst_peer_id: str, msg: m.SessionDescription | m.IceCandidate) -> None:
        """Deliver ``msg`` (its peer field already ``src``) to ``dst_peer_id``; ProtocolError (``unknown_peer``, ``forbidden``)."""

    @abc.abstractmethod
    async def counts(self) -> StoreCounts:
        """Rooms and members, for ``/healthz``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop delivering and release connections (members should have left first)."""


# -- the rules, one copy for every store -------------------------------------------------------------
def check_link(src: Member, dst: Member, stream: str | None = None) -> None:
    """ProtocolError(FORBIDDEN) unless the two roles have a link in the protocol (PROTOCOL.md §1, "Roles").

    Between two participants ``stream`` must name one of them (the one whose motion that connection carries)."""
    roles = {src.role, dst.role}
    if roles in ({"sender", "receiver"}, {"receiver", "viewer"}, {"participant", "viewer"}):
        return
    if roles == {"participant"}:
        if stream in (src.peer_id, dst.peer_id):
            return
        raise m.ProtocolError(
            m.FORBIDDEN, f"a relay between participants must name in 'stream' the one whose motion it carries"
            f" ({src.peer_id} or {dst.peer_id}), got {stream!r:.40}",
        )
    if roles == {"sender", "viewer"}:
        viewer = src if src.role == "viewer" else dst
        if viewer.original:
            return
        raise m.ProtocolError(
            m.FORBIDDEN, f"viewer {viewer.peer_id} is not granted the sender's original pictures"
            " (this room needs a viewer ticket issued with --original)",
        )
    raise m.ProtocolError(m.FORBIDDEN, f"a {src.role} and a {dst.role} have no connection in this protocol: nothing relayed")


def server_full(max_rooms: int) -> m.ProtocolError:
    return m.ProtocolError(m.SERVER_FULL, f"the server holds its maximum of {max_rooms} rooms")


def over_quota(remote: str, present: int) -> m.ProtocolError:
    return m.ProtocolError(
        m.OVER_QUOTA, f"{remote} is already in {present} rooms, the most one address may be in (--max-rooms-per-ip)"
    )


def call_full(room: str) -> m.ProtocolError:
    return m.ProtocolError(m.ROOM_FULL, f"room {room!r} already has {MAX_PARTICIPANTS} participants, the most one call holds")


def check_participants(room: str, role: str, roles_present: list[str]) -> None:
    """ROOM_FULL for a participant joining a call that has ``MAX_PARTICIPANTS`` already."""
    if role == "participant" and roles_present.count("participant") >= MAX_PARTICIPANTS:
        raise call_full(room)


def room_full(room: str, max_peers: int) -> m.ProtocolError:
    return m.ProtocolError(m.ROOM_FULL, f"room {room!r} is full ({max_peers} participants)")


def role_taken(room: str, role: str, holder_peer_id: str) -> m.ProtocolError:
    return m.ProtocolError(
        m.ROLE_TAKEN, f"room {room!r} already has a {role} ({holder_peer_id}); it keeps the role while it is connected:"
        " try again once it has left, or use another room (a server with join tickets lets a ticket holder take over)",
    )


def unknown_peer(room: str, peer_id: str) -> m.ProtocolError:
    return m.ProtocolError(m.UNKNOWN_PEER, f"no peer {peer_id!r} in room {room!r}")
