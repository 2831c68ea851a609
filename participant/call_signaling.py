"""One participant's signaling: a single WebSocket as ``participant``, split into a Signaling per part of the call.

A call is a room of up to four participants (``signaling.room_store.MAX_PARTICIPANTS``), full mesh: every
participant's sender offers one connection to every other participant, which that one's receiver for it answers.
Between two participants A and B there are thus two connections, A's motion to B and B's motion to A; every
relayed offer, answer and candidate names the participant whose motion its connection carries (``stream``,
PROTOCOL.md §1), and that is how ``CallSignaling`` hands it to the right part:

- ``stream`` = our own peer id: it belongs to our sender's connection to that participant (``sender_side``);
- ``stream`` = the relaying participant's id: its sender's connection to our receiver for it (``receiver_side``);
- from a viewer, ``stream`` names whose face the viewer wants: our receiver of that participant, if we serve it.

Each part sees the room as the one-way call it was written for: the sender sees every other participant as a
``receiver`` (and no viewers), a receiver sees its participant as the room's ``sender`` and, when we are the
participant that serves that face to the room's viewers, the viewers. The face of participant X is served to viewers by
the participant with the lowest peer id other than X (every participant computes the same from the same roster), so
a viewer gets each face once.

When the WebSocket goes away the parts are told (``receive`` gives None); the sender's ``connect`` then waits until
``CallSignaling`` has joined again (backoff, ``signaling.reconnect``), the receivers end (the participant starts new ones
for the participants of the new roster: ids change with every join).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from signaling import messages as m
from signaling.client import Signaling, SignalingError
from signaling.reconnect import Backoff, rejoin

logger = logging.getLogger(__name__)

RosterListener = Callable[[str, bool], None]  # (participant peer id, True: joined / False: left)


class PartSignaling(Signaling):
    """What one part of a participant (its sender, or its receiver of one other participant) sees of the room."""

    def __init__(self, call: CallSignaling, stream: str | None) -> None:
        self._call = call
        self.stream = stream  # None: our sender's side; else the participant whose motion this receiver takes
        self._queue: asyncio.Queue[m.ServerMessage | None] = asyncio.Queue()
        self.connected = False
        self.closed = False

    @property
    def ice_servers(self) -> m.IceServers | None:  # type: ignore[override]
        return self._call.signaling.ice_servers

    async def connect(self) -> m.Joined:
        if self.closed:
            raise SignalingError("this part of the call has ended", m.REPLACED)
        if self.stream is not None and self.connected:
            raise SignalingError(f"participant {self.stream} is gone (a receiver of one participant does not join again)", m.REPLACED)
        await self._call.wait_joined()
        self._drain_roster()
        self.connected = True
        return self._call.view_for(self)

    def _drain_roster(self) -> None:
        """Room changes queued before (re)connecting are already in the view ``connect`` returns; relays are kept."""
        kept = [msg for msg in _drain(self._queue) if isinstance(msg, (m.SessionDescription, m.IceCandidate))]
        for msg in kept:
            self._queue.put_nowait(msg)

    async def send(self, msg: m.ClientMessage) -> None:
        if isinstance(msg, (m.SessionDescription, m.IceCandidate)):
            msg = replace(msg, stream=self.stream if self.stream is not None else self._call.peer_id)
        await self._call.send(msg)

    async def receive(self) -> m.ServerMessage | None:
        if self.closed:
            return None
        return await self._queue.get()

    def deliver(self, msg: m.ServerMessage | None) -> None:
        if not self.closed:
            self._queue.put_nowait(msg)

    async def close(self) -> None:
        """The part lets go (a receiver for good; the sender before joining again): nothing closes the WebSocket."""
        if self.stream is not None:
            self.closed = True
            self._queue.put_nowait(None)
            self._call.forget(self)


class CallSignaling:
    """See the module docstring. ``on_roster(peer_id, joined)`` is called for every other participant that comes or goes."""

    def __init__(self, signaling: Signaling, on_roster: RosterListener, backoff: Backoff | None = None) -> None:
        self.signaling = signaling
        self._on_roster = on_roster
        self._backoff = backoff
        self.peer_id = ""
        self.room = ""
        self.participants: list[str] = []  # the others, in the order they came
        self.viewers: dict[str, m.PeerInfo] = {}  # peer id -> as the server announced it (a viewer's grants included)
        self._sender = PartSignaling(self, None)
        self._receivers: dict[str, PartSignaling] = {}
        self._joined = asyncio.Event()
        self._stop = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self.refusal: SignalingError | None = None  # why the call's signaling ended for good, if it did
        self.rejoins = 0

    # -- the parts ------------------------------------------------------------------------------
    def sender_side(self) -> PartSignaling:
        return self._sender

    def receiver_side(self, participant: str) -> PartSignaling:
        part = self._receivers.get(participant)
        if part is None or part.closed:
            part = self._receivers[participant] = PartSignaling(self, participant)
        return part

    def forget(self, part: PartSignaling) -> None:
        if part.stream is not None and self._receivers.get(part.stream) is part:
            del self._receivers[part.stream]

    def serves(self, participant: str) -> bool:
        """Whether we serve ``participant``'s face to the room's viewers (the lowest other peer id does)."""
        others = [p for p in [self.peer_id, *self.participants] if p != participant]
        return bool(others) and min(others) == self.peer_id

    def view_for(self, part: PartSignaling) -> m.Joined:
        if part.stream is None:
            peers = tuple(m.PeerInfo(p, "receiver") for p in self.participants)
            return m.Joined(self.peer_id, self.room, "sender", peers)
        peers = tuple(m.PeerInfo(p, "sender") for p in self.participants if p == part.stream)
        if self.serves(part.stream):
            peers += tuple(self.viewers.values())
        return m.Joined(self.peer_id, self.room, "receiver", peers)

    # -- the WebSocket --------------------------------------------------------------------------
    async def connect(self) -> m.Joined:
        """Join (SignalingError if refused) and start handing messages to the parts."""
        joined = await self.signaling.connect()
        self._on_joined(joined)
        self._pump = asyncio.ensure_future(self._run())
        return joined

    async def wait_joined(self) -> None:
        waiter = asyncio.ensure_future(self._joined.wait())
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()
        if not self._joined.is_set():
            raise self.refusal or SignalingError("the call's signaling has stopped", m.REPLACED)

    async def send(self, msg: m.ClientMessage) -> None:
        if not self._joined.is_set():
            raise SignalingError("not connected to the signaling server (joining again)")
        await self.signaling.send(msg)

    async def close(self) -> None:
        self._stop.set()
        self._joined.clear()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        self._sender.deliver(None)
        for part in list(self._receivers.values()):
            part.deliver(None)
        await self.signaling.close()

    def _on_joined(self, joined: m.Joined) -> None:
        self.peer_id, self.room = joined.peer_id, joined.room
        self.participants = [p.peer_id for p in joined.peers if p.role == "participant"]
        self.viewers = {p.peer_id: p for p in joined.peers if p.role == "viewer"}
        self._joined.set()
        for participant in self.participants:
            self._on_roster(participant, True)

    async def _run(self) -> None:
        while not self._stop.is_set():
            msg = await self.signaling.receive()
            if msg is None:
                await self._lost()
                if self._stop.is_set():
                    return
                continue
            self._dispatch(msg)

    async def _lost(self) -> None:
        """The WebSocket went away: every part hears it; rejoin with backoff (a new peer id, a new roster)."""
        self._joined.clear()
        gone, self.participants, self.viewers = self.participants, [], {}
        self._sender.deliver(None)
        for participant in gone:
            self._on_roster(participant, False)
        for part in list(self._receivers.values()):
            part.deliver(None)
        logger.warning("call signaling: the server went away; joining again")
        try:
            joined = await rejoin(self.signaling, self._stop, self._backoff)
        except SignalingError as exc:
            logger.error("call signaling: the server refused us for good: %s", exc)
            self.refusal = exc
            self._stop.set()
            return
        if joined is None:
            return
        self.rejoins += 1
        self._on_joined(joined)

    def _dispatch(self, msg: m.ServerMessage) -> None:
        if isinstance(msg, m.PeerJoined):
            self._peer_joined(msg.peer)
        elif isinstance(msg, m.PeerLeft):
            self._peer_left(msg.peer, msg.reason)
        elif isinstance(msg, (m.SessionDescription, m.IceCandidate)):
            part = self._route(msg)
            if part is None:
                logger.info("call signaling: ignoring %s from %s for stream %s (no part of ours takes it)",
                            type(msg).__name__, msg.peer, msg.stream)
            else:
                part.deliver(msg)
        elif isinstance(msg, m.Error):
            logger.warning("signaling server: %s (%s)", msg.message, msg.code)
            self._sender.deliver(msg)

    def _route(self, msg: m.SessionDescription | m.IceCandidate) -> PartSignaling | None:
        if msg.peer in self.participants:
            if msg.stream == self.peer_id:
                return self._sender
            if msg.stream == msg.peer:
                return self._receivers.get(msg.peer)
            return None
        if msg.peer in self.viewers and msg.stream is not None and self.serves(msg.stream):
            return self._receivers.get(msg.stream)
        return None

    def _serving(self) -> set[str]:
        return {p for p in self.participants if self.serves(p)}

    def _peer_joined(self, peer: m.PeerInfo) -> None:
        if peer.role == "participant":
            served_before = self._serving()
            self.participants.append(peer.peer_id)
            self._sender.deliver(m.PeerJoined(m.PeerInfo(peer.peer_id, "receiver")))
            self._on_roster(peer.peer_id, True)  # makes its receiver part (which then connects and sees the viewers)
            for participant in served_before - self._serving():
                self._viewers_change(participant, joined=False)
        elif peer.role == "viewer":
            self.viewers[peer.peer_id] = peer
            for participant in self._serving():
                part = self._receivers.get(participant)
                if part is not None and part.connected:
                    part.deliver(m.PeerJoined(peer))

    def _peer_left(self, peer: m.PeerInfo, reason: str) -> None:
        if peer.role == "participant" and peer.peer_id in self.participants:
            served_before = self._serving()
            self.participants.remove(peer.peer_id)
            self._sender.deliver(m.PeerLeft(m.PeerInfo(peer.peer_id, "receiver"), reason))
            part = self._receivers.get(peer.peer_id)
            if part is not None:
                part.deliver(m.PeerLeft(m.PeerInfo(peer.peer_id, "sender"), reason))
            self._on_roster(peer.peer_id, False)
            for participant in self._serving() - served_before:
                self._viewers_change(participant, joined=True)
        elif peer.role == "viewer" and peer.peer_id in self.viewers:
            del self.viewers[peer.peer_id]
            for participant in self._serving():
                part = self._receivers.get(participant)
                if part is not None and part.connected:
                    part.deliver(m.PeerLeft(peer, reason))

    def _viewers_change(self, participant: str, joined: bool) -> None:
        """We start (or stop) serving ``participant``'s face to the viewers: its receiver part offers to (drops) them."""
        part = self._receivers.get(participant)
        if part is None or not part.connected:
            return
        for viewer in self.viewers.values():
            part.deliver(m.PeerJoined(viewer) if joined else m.PeerLeft(viewer, "left"))


def _drain(queue: asyncio.Queue[m.ServerMessage | None]) -> list[m.ServerMessage | None]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
