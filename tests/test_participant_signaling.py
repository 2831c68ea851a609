"""participant.call_signaling over a real signaling server: each part of a participant sees its own one-way call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from participant.call_signaling import CallSignaling, PartSignaling
from signaling import messages as m
from signaling.client import WebSocketSignaling
from signaling.room_store import MAX_PARTICIPANTS
from signaling.server import RunningServer, ServerConfig, start_server


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(ServerConfig(host="127.0.0.1", port=0))
    try:
        yield running
    finally:
        await running.close()


class Roster:
    def __init__(self) -> None:
        self.changes: list[tuple[str, bool]] = []

    def __call__(self, peer_id: str, joined: bool) -> None:
        self.changes.append((peer_id, joined))


async def _join(server: RunningServer, room: str = "team") -> tuple[CallSignaling, Roster]:
    roster = Roster()
    call = CallSignaling(WebSocketSignaling(server.url, room, "participant"), roster)
    await call.connect()
    return call, roster


async def _next(part: PartSignaling, timeout_s: float = 3.0) -> m.ServerMessage | None:
    return await asyncio.wait_for(part.receive(), timeout_s)


async def test_each_part_sees_its_own_one_way_call(server: RunningServer) -> None:
    a, roster_a = await _join(server)
    b, roster_b = await _join(server)
    try:
        await asyncio.sleep(0.1)
        assert roster_a.changes == [(b.peer_id, True)] and roster_b.changes == [(a.peer_id, True)]
        # a's sender sees b as a receiver; b's receiver of a sees a as the sender
        a_sender = a.sender_side()
        joined = await a_sender.connect()
        assert joined.role == "sender" and joined.peers == (m.PeerInfo(b.peer_id, "receiver"),)
        b_of_a = b.receiver_side(a.peer_id)
        joined = await b_of_a.connect()
        assert joined.role == "receiver" and joined.peers == (m.PeerInfo(a.peer_id, "sender"),)
        # a's offer (stream a) reaches b's receiver of a; b's answer reaches a's sender
        await a_sender.send(m.SessionDescription("offer", b.peer_id, "v=0 a"))
        msg = await _next(b_of_a)
        assert isinstance(msg, m.SessionDescription) and msg.kind == "offer" and msg.peer == a.peer_id and msg.stream == a.peer_id
        await b_of_a.send(m.SessionDescription("answer", a.peer_id, "v=0 b"))
        msg = await _next(a_sender)
        assert isinstance(msg, m.SessionDescription) and msg.kind == "answer" and msg.stream == a.peer_id
        # the other direction runs on its own parts: b's sender to a's receiver of b
        b_sender, a_of_b = b.sender_side(), a.receiver_side(b.peer_id)
        await b_sender.connect()
        await a_of_b.connect()
        await b_sender.send(m.IceCandidate(a.peer_id, "candidate:1 1 udp 1 127.0.0.1 9 typ host", "0", 0))
        msg = await _next(a_of_b)
        assert isinstance(msg, m.IceCandidate) and msg.stream == b.peer_id
        assert a_sender._queue.empty() and b_of_a._queue.empty()  # nothing went to the wrong part
        # b leaves: a's sender loses a receiver, a's receiver of b loses its sender, the roster says so
        await b.close()
        msg = await _next(a_sender)
        assert isinstance(msg, m.PeerLeft) and msg.peer == m.PeerInfo(b.peer_id, "receiver")
        msg = await _next(a_of_b)
        assert isinstance(msg, m.PeerLeft) and msg.peer == m.PeerInfo(b.peer_id, "sender")
        assert roster_a.changes[-1] == (b.peer_id, False)
    finally:
        await a.close()
        await b.close()


async def test_each_face_is_served_to_viewers_by_one_participant(server: RunningServer) -> None:
    calls = [await _join(server) for _ in range(3)]
    viewer = WebSocketSignaling(server.url, "team", "viewer")
    try:
        await viewer.connect()
        await asyncio.sleep(0.2)
        ids = [c.peer_id for c, _ in calls]
        for face in ids:  # exactly one of the others serves each face
            servers = [c.peer_id for c, _ in calls if c.peer_id != face and c.serves(face)]
            assert servers == [min(p for p in ids if p != face)]
        lowest = next(c for c, _ in calls if c.peer_id == min(ids))
        face = next(p for p in ids if p != lowest.peer_id)
        part = lowest.receiver_side(face)
        joined = await part.connect()
        # the viewer as the server announced it, grants included (an open room's: both), so the receiver enforces them
        assert m.PeerInfo(viewer.joined.peer_id, "viewer", (m.GRANT_ORIGINAL, m.GRANT_CONTROL)) in joined.peers  # type: ignore[union-attr]
        # the viewer's answer for that face reaches that receiver part; one naming a face we do not serve goes nowhere
        await viewer.send(m.SessionDescription("answer", lowest.peer_id, "v=0", stream=face))
        msg = await _next(part)
        assert isinstance(msg, m.SessionDescription) and msg.peer == viewer.joined.peer_id  # type: ignore[union-attr]
        await viewer.send(m.SessionDescription("answer", lowest.peer_id, "v=0", stream=lowest.peer_id))
        await asyncio.sleep(0.2)
        assert part._queue.empty()
    finally:
        await viewer.close()
        for call, _ in calls:
            await call.close()


async def test_a_call_holds_at_most_four_participants_and_relays_name_their_stream(server: RunningServer) -> None:
    calls = [await _join(server) for _ in range(MAX_PARTICIPANTS)]
    try:
        with pytest.raises(Exception, match="participants"):
            await _join(server)
        # a participant's relay to another must name one of the two as the stream: the server refuses others
        raw = WebSocketSignaling(server.url, "team2", "participant")
        other = WebSocketSignaling(server.url, "team2", "participant")
        await raw.connect()
        joined = await other.connect()
        try:
            await raw.send(m.SessionDescription("offer", joined.peer_id, "v=0"))  # no stream
            msg = await asyncio.wait_for(raw.receive(), 3)
            while isinstance(msg, m.PeerJoined):
                msg = await asyncio.wait_for(raw.receive(), 3)
            assert isinstance(msg, m.Error) and msg.code == m.FORBIDDEN
        finally:
            await raw.close()
            await other.close()
    finally:
        for call, _ in calls:
            await call.close()


async def test_the_sender_part_waits_for_a_rejoin_and_receivers_end(server: RunningServer) -> None:
    a, _ = await _join(server)
    b, _ = await _join(server)
    try:
        await asyncio.sleep(0.1)
        a_sender, a_of_b = a.sender_side(), a.receiver_side(b.peer_id)
        await a_sender.connect()
        await a_of_b.connect()
        old_id = a.peer_id
        assert a.signaling._ws is not None  # type: ignore[attr-defined]
        await a.signaling._ws.close()  # type: ignore[attr-defined]  # the WebSocket drops (a server restart, a blip)
        assert await _next(a_sender) is None and await _next(a_of_b) is None
        with pytest.raises(Exception):
            await a_of_b.connect()  # a receiver of one participant does not come back: the participant makes new ones
        joined = await asyncio.wait_for(a_sender.connect(), 15)  # the sender's own rejoin waits for the call's
        assert joined.peer_id != old_id and joined.peers == (m.PeerInfo(b.peer_id, "receiver"),) and a.rejoins == 1
    finally:
        await a.close()
        await b.close()


async def test_receiver_parts_see_each_viewer_with_its_grants() -> None:
    """The viewers a participant's receiver parts serve keep the grants the server announced (here: no control), also
    when a participant leaves and another starts serving a face, so the participant's receivers enforce them."""
    running = await start_server(ServerConfig(host="127.0.0.1", port=0, static_dir=None, open_control=False))
    calls = [await _join(running) for _ in range(3)]
    viewer = WebSocketSignaling(running.url, "team", "viewer")
    try:
        await viewer.connect()
        await asyncio.sleep(0.2)
        watching = m.PeerInfo(viewer.joined.peer_id, "viewer", (m.GRANT_ORIGINAL,))  # type: ignore[union-attr]
        p0, p1, p2 = sorted((c for c, _ in calls), key=lambda c: c.peer_id)
        joined = await p0.receiver_side(p2.peer_id).connect()  # p0 serves p2's face
        assert watching in joined.peers and not next(p for p in joined.peers if p.role == "viewer").control
        p1_of_p2 = p1.receiver_side(p2.peer_id)
        joined = await p1_of_p2.connect()  # p0 serves it, not p1: no viewers yet
        assert [p.role for p in joined.peers] == ["sender"]
        await p0.close()  # p1 is now the lowest other than p2: its receiver of p2 offers to the viewer
        msg = await _next(p1_of_p2)
        assert msg == m.PeerJoined(watching), msg
    finally:
        await viewer.close()
        for call, _ in calls:
            await call.close()
        await running.close()
