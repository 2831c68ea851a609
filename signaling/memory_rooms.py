"""Rooms in this process's memory: the default ``RoomStore`` of one signaling server on one machine."""

from __future__ import annotations

from signaling import messages as m
from signaling import room_store as rs


class MemoryRoomStore(rs.RoomStore):
    """Every room and member in dicts; every member is local, every delivery immediate."""

    def __init__(self, limits: rs.RoomLimits) -> None:
        self.limits = limits
        self.rooms: dict[str, dict[str, rs.Member]] = {}
        self._local: rs.LocalPeers | None = None

    async def start(self, local: rs.LocalPeers) -> None:
        self._local = local

    def _deliver(self, room: str, peer_id: str, msg: m.ServerMessage) -> None:
        assert self._local is not None, "start() the store first"
        self._local.deliver(room, peer_id, m.encode_server_message(msg))

    async def join(self, room: str, member: rs.Member) -> None:
        limits = self.limits
        members = self.rooms.get(room)
        if members is None and len(self.rooms) >= limits.max_rooms:
            raise rs.server_full(limits.max_rooms)
        if members is None or all(p.remote != member.remote for p in members.values()):
            present = sum(1 for r in self.rooms.values() if any(p.remote == member.remote for p in r.values()))
            if present >= limits.max_rooms_per_ip:
                raise rs.over_quota(member.remote, present)
        if members is not None and len(members) >= limits.max_peers_per_room:
            raise rs.room_full(room, limits.max_peers_per_room)
        if members is not None:
            rs.check_participants(room, member.role, [p.role for p in members.values()])
        holder = None
        if members is not None and member.role in rs.EXCLUSIVE_ROLES:
            holder = next((p for p in members.values() if p.role == member.role), None)
        if holder is not None and not member.ticketed:
            raise rs.role_taken(room, member.role, holder.peer_id)
        if holder is not None:  # both hold a valid ticket for the role: the newer one takes over (e.g. a restarted process)
            self._remove(room, holder, "replaced")
            assert self._local is not None
            self._local.evict(room, holder.peer_id, "replaced")
        members = self.rooms.setdefault(room, {})
        assert self._local is not None
        self._local.joined(room, m.Joined(member.peer_id, room, member.role, tuple(p.info for p in members.values())))
        for other in members.values():
            self._deliver(room, other.peer_id, m.PeerJoined(member.info))
        members[member.peer_id] = member

    def _remove(self, room: str, member: rs.Member, reason: str) -> None:
        members = self.rooms.get(room, {})
        if members.pop(member.peer_id, None) is None:
            return
        for other in members.values():
            self._deliver(room, other.peer_id, m.PeerLeft(member.info, reason))
        if not members:
            self.rooms.pop(room, None)

    async def leave(self, room: str, member: rs.Member, reason: str) -> None:
        self._remove(room, member, reason)

    async def relay(self, room: str, src: rs.Member, dst_peer_id: str, msg: m.SessionDescription | m.IceCandidate) -> None:
        dst = self.rooms.get(room, {}).get(dst_peer_id)
        if dst is None or dst.peer_id == src.peer_id:
            raise rs.unknown_peer(room, dst_peer_id)
        rs.check_link(src, dst, msg.stream)
        self._deliver(room, dst_peer_id, msg)

    async def counts(self) -> rs.StoreCounts:
        return rs.StoreCounts(len(self.rooms), sum(len(r) for r in self.rooms.values()))

    async def close(self) -> None:
        self._local = None
