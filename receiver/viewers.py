"""The receiver's viewers: their links (the synthesized video and sound, a control channel), what they are told and what they ask.

Per viewer: an offering RTCPeerConnection carrying the synthesized video track (and the call's audio)
and a "control" channel: status, stats and the sender's rate decisions go out; commands (view, avatar
reset, and keypoints/frames per packet/max kbps passed on to the sender), avatar uploads and pings come
in, each carried out in order on the viewer's ``SerialWorker`` and acknowledged or answered with an error.
Commands and avatar uploads are carried out only for a viewer the signaling server granted control
(``PeerInfo.control``: its ticket, or an open room's default); the others get ``forbidden``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable

from aiortc import RTCDataChannel

from receiver.audio_playout import AudioPlayout
from receiver.audio_track import PlayoutAudioTrack
from receiver.bounded_state import RateLimitedLog, SerialWorker
from receiver.config import ReceiverConfig
from receiver.playout import PlayoutBuffer
from receiver.scene_control import SceneControl
from receiver.sender_link import SenderLink
from receiver.video_track import LatestFrame, SynthesizedVideoTrack
from signaling import control as c
from signaling import messages as m
from signaling.client import Signaling
from signaling.rtc import PeerLink

logger = logging.getLogger(__name__)
peer_log = RateLimitedLog(logger)  # what peers can repeat at will: one line per kind per 10 s

VIEWER_ERRORS_PER_S = 5  # error replies a viewer may get per second (a page shows each; a flood gets fewer)
FORBIDDEN = "forbidden"  # the error code for a command or upload from a viewer not granted control


class ViewerLink:
    """The sending side of one viewer; ``may_control``: the server granted it commands and avatar uploads."""

    def __init__(self, link: PeerLink, control: bool = False) -> None:
        self.link = link
        self.may_control = control
        self.control: RTCDataChannel | None = None
        self.avatar = c.AvatarAssembler()
        self.error_times: deque[float] = deque(maxlen=VIEWER_ERRORS_PER_S)
        self.jobs = SerialWorker(f"{link.prefix} viewer")  # its messages, in order, bounded

    def send(self, msg: c.ControlMessage) -> None:
        if self.control is not None and self.control.readyState == "open":
            self.control.send(c.encode_control(msg))

    def send_error(self, code: str, message: str) -> None:
        """An error reply, at most VIEWER_ERRORS_PER_S a second (the page shows every one it gets)."""
        now = time.monotonic()
        if len(self.error_times) == self.error_times.maxlen and now - self.error_times[0] < 1.0:
            return
        self.error_times.append(now)
        self.send(c.ErrorReply(code, message[:500]))


class ViewerError(Exception):
    """A viewer's message that cannot be carried out: ``code`` and a message for the page."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ViewerHub:
    """The viewers of the call; ``active`` says which sender (if any) the call has now, ``event`` logs."""

    def __init__(
        self, config: ReceiverConfig, signaling: Signaling, latest: LatestFrame, playout: PlayoutBuffer, audio: AudioPlayout,
        scene: SceneControl, *, active: Callable[[], SenderLink | None], event: Callable[[str, str], None],
    ) -> None:
        self.config = config
        self.signaling = signaling
        self.latest = latest
        self.playout = playout
        self.audio = audio
        self.scene = scene
        self._active = active
        self._event = event
        self.links: dict[str, ViewerLink] = {}

    async def add(self, peer: m.PeerInfo) -> None:
        """A viewer joined: offered the video (and sound) and a control channel."""
        link = PeerLink(peer, self.signaling, self.config.rtc, "receiver")
        viewer = ViewerLink(link, control=peer.control)
        self.links[peer.peer_id] = viewer
        self._event("viewer_joined", peer.peer_id)
        link.pc.addTrack(SynthesizedVideoTrack(self.latest, self.playout.fps))
        if self.config.audio:
            link.pc.addTrack(PlayoutAudioTrack(self.audio))  # the sound in step with the faces (silent without a sender's)
        channel = link.pc.createDataChannel("control")
        viewer.control = channel

        @channel.on("open")
        def on_open() -> None:
            active = self._active()
            state = "receiving" if active is not None else "waiting"
            viewer.send(c.Status(state, "receiving the sender's motion" if active else "waiting for a sender", viewer.may_control))
            if active is not None and active.rate is not None:
                viewer.send(active.rate)

        channel.on("message", functools.partial(self.on_message, viewer))

        def on_close() -> None:
            asyncio.ensure_future(viewer.jobs.close())
            if self.links.get(peer.peer_id) is viewer:
                del self.links[peer.peer_id]

        link.on_close(on_close)
        await link.offer()

    async def remove(self, peer_id: str) -> None:
        """The server says a peer left: if it was a viewer, its link closes."""
        viewer = self.links.pop(peer_id, None)
        if viewer is not None:
            await viewer.link.close()
            await viewer.jobs.close()
            self._event("viewer_left", peer_id)

    def broadcast(self, msg: c.ControlMessage) -> None:
        for viewer in list(self.links.values()):
            viewer.send(msg)

    def send_error_to_all(self, code: str, message: str) -> None:
        for viewer in list(self.links.values()):
            viewer.send_error(code, message)

    def on_message(self, viewer: ViewerLink, data: bytes | str) -> None:
        """Queued for the viewer's one worker (in order; a flood beyond the queue is refused with "busy")."""
        if not viewer.jobs.submit(functools.partial(self._on_control, viewer, data)):
            viewer.send_error("busy", f"the receiver is still handling {viewer.jobs.waiting} earlier messages: this one was dropped")

    async def _on_control(self, viewer: ViewerLink, data: bytes | str) -> None:
        """A viewer's command or upload: carried out and acknowledged, or answered with an error (never silent)."""
        try:
            if isinstance(data, bytes):
                raise ViewerError("bad_message", "viewers send JSON text messages, not binary")
            try:
                msg = c.decode_control(data)
            except c.ControlError as exc:
                raise ViewerError("bad_message", str(exc)) from None
            if isinstance(msg, (c.Command, c.AvatarChunk)) and not viewer.may_control:
                what = "commands" if isinstance(msg, c.Command) else "avatar uploads"
                raise ViewerError(
                    FORBIDDEN, f"this viewer is not granted control of the call, so its {what} are refused: watch only, or join"
                    " with a viewer ticket issued with --control (python -m signaling ticket --role viewer --control)",
                )
            if isinstance(msg, c.Command):
                await self._on_command(viewer, msg)
            elif isinstance(msg, c.AvatarChunk):
                await self._on_avatar_chunk(viewer, msg)
            elif isinstance(msg, c.Ping):
                viewer.send(c.Pong(msg.t_ms))
            else:
                raise ViewerError("bad_message", f"a receiver does not accept {msg.TYPE!r} from a viewer")
        except ViewerError as exc:
            peer_log.log(logging.INFO, "viewer_error", f"{viewer.link.prefix}: {exc.code}: {exc}")
            viewer.send_error(exc.code, str(exc))
        except Exception as exc:  # noqa: BLE001 - whatever fails, the page hears about it
            logger.exception("%s: viewer message failed", viewer.link.prefix)
            viewer.send_error("internal", f"the receiver failed to carry that out: {exc}")

    async def _on_avatar_chunk(self, viewer: ViewerLink, chunk: c.AvatarChunk) -> None:
        try:
            image = viewer.avatar.add(chunk)
        except c.ControlError as exc:
            raise ViewerError("bad_avatar", str(exc)) from None
        if image is None:
            return
        try:
            await self.scene.load_avatar(image, "the uploaded portrait")
        except ValueError as exc:
            raise ViewerError("bad_avatar", str(exc)) from None
        viewer.send(c.Ack("avatar", f"driving the uploaded portrait ({len(image) // 1024} KiB) with the sender's motion"))
        self.broadcast(c.Status("avatar", "driving the uploaded portrait"))

    async def _on_command(self, viewer: ViewerLink, command: c.Command) -> None:
        forward = command.sender_part()
        if forward is not None and self._active() is None:
            raise ViewerError("no_sender", "there is no sender in the call: keypoints and max kbps go to the sender's controller")
        if command.view is not None:
            try:
                self.scene.view = self.scene.parse_view(command.view)
            except ValueError as exc:
                raise ViewerError("bad_view", str(exc)) from None
            self._event("view", command.view)
            viewer.send(c.Ack("view", f"view set to {command.view}"))
        if command.avatar == "reset":
            self.scene.avatar_state = None
            self._event("avatar", "reset")
            viewer.send(c.Ack("avatar", "driving the sender's own portrait again"))
            self.broadcast(c.Status("receiving", "driving the sender's own portrait"))
        active = self._active()
        if forward is not None and active is not None:
            active.send_control(forward)
            fields = [k for k in ("keypoints", "frames_per_packet", "max_kbps") if getattr(forward, k) is not None]
            viewer.send(c.Ack(",".join(fields), "passed to the sender; its next rate decision confirms it"))
