"""The receiver: joins a room, answers the sender, decodes and plays out motion, renders, publishes.

``Receiver`` is the composition and the call's lifecycle: the signaling loop (who joins and leaves,
offers and candidates routed to their links), the playout loop (due frames rendered on the render
thread, delivered to the sinks and viewers' video track) and the timers (feedback, delay reports, stats).
The rest lives beside it, one concern a file:

* ``receiver.senders`` (``SenderHub``): per sender (the newest one in the room is the active one) an
  answering RTCPeerConnection, motion intake into the playout buffer (data channel, RTP, or inside the
  audio), the enhancement pictures of frame bundles, feedback and delay reports, its control messages;
  ``receiver.sender_link`` holds one sender's state;
* ``receiver.reference_intake``: the reference portrait (from its cache, or reassembled from chunks),
  prepared on the render thread;
* ``receiver.viewers`` (``ViewerHub``): per viewer an offering RTCPeerConnection carrying the
  synthesized video track and a "control" channel (stats, status and rate decisions out; commands and
  avatar uploads in, carried out only for a viewer the server granted control: ``PeerInfo.grants`` of its
  ``joined``/``peer_joined`` entry, which the signaling loop hands over as it came);
* ``receiver.scene_control``: the view and the avatar (what is drawn);
* ``receiver.call_report``: the per-frame records, ``stats()`` and ``report()``.

A ``frame_gate`` (for a host that shares one renderer between calls) may keep a due frame from being
rendered: the sinks keep the last picture, and ``frames_unscheduled`` counts it.

    receiver = Receiver(ReceiverConfig("http://127.0.0.1:8080", room="demo"), synthesizer)
    await receiver.run()      # until stop(), max_frames output frames, or (optionally) the sender leaves
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from codec.enhancement.passthrough import shows_picture
from codec.motion import MotionParams
from receiver.audio_playout import AudioPlayout
from receiver.bounded_state import MAX_EVENTS, SenderHistory
from receiver.call_report import CALL_RECORDS, CallRecords, OutputRecord, RecentRates, RenderRecord
from receiver.config import ReceiverConfig
from receiver.playout import PlayoutBuffer, PlayoutFrame
from receiver.reference_intake import ReferenceIntake
from receiver.references import ReferenceStore
from receiver.render_worker import RenderedFrame, RenderWorker, Scene, Synthesizer, wall_ms
from receiver.scene_control import SceneControl
from receiver.sender_link import ERROR_REPLY_INTERVAL_S, SenderLink
from receiver.senders import SenderHub
from receiver.sinks import FrameSink, Mp4Recorder, NullSink, WindowSink
from receiver.video_track import LatestFrame
from receiver.viewers import VIEWER_ERRORS_PER_S, ViewerHub, ViewerLink
from signaling import control as c
from signaling import messages as m
from signaling.client import Signaling, WebSocketSignaling
from signaling.reconnect import PERMANENT_CODES, rejoin_after_loss
from signaling.rtc import close_links

__all__ = ["CALL_RECORDS", "ERROR_REPLY_INTERVAL_S", "VIEWER_ERRORS_PER_S", "OutputRecord", "Receiver", "ReceiverConfig", "RenderRecord"]

logger = logging.getLogger(__name__)

FIRST_REPORTS_S = 2.0  # delay reports come this often until one carried the render rate (then report_interval_s)

# The names these parts had when they lived here (tests import them from this module).
_SenderLink = SenderLink
_ViewerLink = ViewerLink
_RecentRates = RecentRates


class Receiver:
    """See the module docstring."""

    def __init__(
        self, config: ReceiverConfig, synthesizer: Synthesizer, signaling: Signaling | None = None,
        view_parser: Callable[[str], Any] | None = None,
        face_crop: Callable[[np.ndarray, int], np.ndarray] | None = None,
        retarget: Callable[[MotionParams, MotionParams, MotionParams], MotionParams] | None = None,
        sinks: list[FrameSink] | None = None,
        frame_gate: Callable[[PlayoutFrame], bool] | None = None,
    ) -> None:
        self.config = config
        self.synthesizer = synthesizer
        self.signaling = signaling or WebSocketSignaling(config.signaling_url, config.room, "receiver", config.token)
        self._extra_sinks = sinks or []
        self._frame_gate = frame_gate  # False for a due frame: it is not rendered (the sinks keep the last picture)
        self.store = ReferenceStore(config.cache_dir, cache_max_bytes=config.cache_max_bytes)
        self.playout = PlayoutBuffer(max_delay_ms=config.max_delay_ms)
        self._output_size: int = getattr(synthesizer, "image_size", 256)
        self.latest = LatestFrame(self._output_size)
        self.peer_roles: dict[str, m.Role] = {}  # what the server says each peer of the room is (only "sender" may offer a call)
        self._signaling_refusal: str | None = None  # a PERMANENT_CODES error the server sent: do not join again
        self.records = CallRecords()  # per-frame records and counts for stats(), report() and tests
        self.events: deque[tuple[float, str, str]] = deque(maxlen=MAX_EVENTS)  # (wall ms, event, detail), for tests and logs
        self._sinks: list[FrameSink] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._rendered: asyncio.Queue[RenderedFrame] = asyncio.Queue()
        self._worker: RenderWorker | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped_reason = ""
        self._last_report = 0.0
        self._rendered_at_report: int | None = None  # the render worker's frame count at the last delay report
        self._rate_reported = False  # a delay report with the render rate went out
        self.enhancement_size = int(getattr(synthesizer, "enhancement_size", 0) or 0)  # E of the model's branch (0: none)
        self.audio = AudioPlayout(self.playout)  # the active sender's audio, in sync with the faces (receiver.audio_playout)
        self.scene = SceneControl(
            self._prepare_portrait, getattr(synthesizer, "image_size", 256), self._event,
            view_parser=view_parser, face_crop=face_crop, retarget=retarget,
        )
        self.viewer_hub = ViewerHub(
            config, self.signaling, self.latest, self.playout, self.audio, self.scene, active=lambda: self.active, event=self._event,
        )
        references = ReferenceIntake(
            self.store, self._prepare_portrait, getattr(synthesizer, "image_size", None), self._event, self.viewer_hub.broadcast,
        )
        self.sender_hub = SenderHub(
            config, synthesizer, self.signaling, self.playout, self.audio, references,
            enhancement_size=self.enhancement_size, wake=self._wake.set, event=self._event, broadcast=self.viewer_hub.broadcast,
            tell_viewers_error=self.viewer_hub.send_error_to_all, stop=self.stop,
            error_reply_interval_s=ERROR_REPLY_INTERVAL_S,  # read here, so that tests can change it in this module
        )

    # -- the parts' state, under the names it had when it lived here ---------------------------------
    @property
    def senders(self) -> dict[str, SenderLink]:
        return self.sender_hub.links

    @property
    def sender_history(self) -> SenderHistory[SenderLink]:
        """The last few sender links, and the totals of all."""
        return self.sender_hub.history

    @property
    def active(self) -> SenderLink | None:
        """The sender whose motion is played (the newest one), if any."""
        return self.sender_hub.active

    @active.setter
    def active(self, sender: SenderLink | None) -> None:
        self.sender_hub.active = sender

    @property
    def viewers(self) -> dict[str, ViewerLink]:
        return self.viewer_hub.links

    @property
    def view(self) -> Any:
        return self.scene.view

    @view.setter
    def view(self, view: Any) -> None:
        self.scene.view = view

    @property
    def avatar_state(self) -> Any:
        return self.scene.avatar_state

    @avatar_state.setter
    def avatar_state(self, state: Any) -> None:
        self.scene.avatar_state = state

    @property
    def outputs(self) -> deque[OutputRecord]:
        return self.records.outputs

    @property
    def renders(self) -> deque[RenderRecord]:
        return self.records.renders

    @property
    def frames_without_reference(self) -> int:
        return self.records.frames_without_reference

    @property
    def frames_unscheduled(self) -> int:
        return self.records.frames_unscheduled

    @property
    def sink_errors(self) -> int:
        return self.records.sink_errors

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        if not self._stop.is_set():
            self._stopped_reason = reason
            self._stop.set()

    def _event(self, name: str, detail: str = "") -> None:
        self.events.append((wall_ms(), name, detail))
        logger.info("event %s %s", name, detail)

    async def run(self) -> str:
        """Run the call; returns why it ended ("max_frames", "sender_left", "signaling_closed", "stopped")."""
        loop = asyncio.get_running_loop()
        self.config.rtc.apply()
        if self.config.view is not None:
            self.scene.view = self.scene.parse_view(self.config.view)
        self._worker = RenderWorker(self.synthesizer, loop, self._rendered.put_nowait)
        self._worker.start()
        try:
            self._sinks = self._open_sinks() + self._extra_sinks
            if self.config.avatar is not None:
                await self._load_avatar(self.config.avatar.read_bytes(), f"avatar {str(self.config.avatar)!r}")
            await self._on_joined(await self.signaling.connect())
            self._tasks = [
                asyncio.ensure_future(coro)
                for coro in (self._signaling_loop(), self._playout_loop(), self._output_loop(), self._feedback_loop(), self._report_loop())
            ]
            await self._stop.wait()
        finally:
            await self._shutdown()
        return self._stopped_reason

    def _open_sinks(self) -> list[FrameSink]:
        sinks: list[FrameSink] = []
        if self.config.record is not None:
            audio_expected = self.sender_hub.audio_expected if self.config.audio else None
            recorder = Mp4Recorder(self.config.record, self.playout.fps, audio_expected=audio_expected)
            self.audio.record_to(recorder)
            sinks.append(recorder)
        if self.config.show:
            sinks.append(WindowSink())
        return sinks or [NullSink()]

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(v.jobs.close() for v in self.viewers.values()), *(s.release() for s in self.senders.values()))
        await close_links([s.link for s in self.senders.values()] + [v.link for v in self.viewers.values()])
        self.audio.close()
        if self._worker is not None:
            await self._worker.close()
        while not self._rendered.empty():  # frames finished during shutdown still reach the sinks
            await self._deliver(self._rendered.get_nowait())
        for sink in self._sinks:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sink.close)
        await self.signaling.close()

    def _prepare_portrait(self, rgb: np.ndarray) -> asyncio.Future[Any]:
        """The synthesizer's prepare (a reference or an avatar), on the render thread."""
        assert self._worker is not None
        return self._worker.call(self.synthesizer.prepare, rgb)

    # -- signaling ------------------------------------------------------------------------------
    async def _on_joined(self, joined: m.Joined, again: bool = False) -> None:
        self._event("rejoined" if again else "joined", f"{joined.room} as {joined.peer_id}")
        self.peer_roles = {peer.peer_id: peer.role for peer in joined.peers}
        for peer in joined.peers:
            if peer.role == "viewer":
                await self.viewer_hub.add(peer)

    async def _signaling_loop(self) -> None:
        while True:
            msg = await self.signaling.receive()
            if msg is None:
                joined = await rejoin_after_loss(
                    self.signaling, self._stop, self.config.reconnect, self._signaling_refusal, self._event,
                    "the call carries on; joining again",
                )
                if joined is None:
                    if not self._stop.is_set():
                        self.stop("signaling_closed")
                    return
                self._signaling_refusal = None
                await self._on_joined(joined, again=True)
                continue
            if isinstance(msg, m.PeerJoined):
                self.peer_roles[msg.peer.peer_id] = msg.peer.role
            elif isinstance(msg, m.PeerLeft):
                self.peer_roles.pop(msg.peer.peer_id, None)
            if isinstance(msg, m.PeerJoined) and msg.peer.role == "viewer":
                await self.viewer_hub.add(msg.peer)
            elif isinstance(msg, m.PeerLeft):
                await self._peer_left(msg)
            elif isinstance(msg, (m.SessionDescription, m.IceCandidate)):
                await self._on_signal(msg)
            elif isinstance(msg, m.Error):
                logger.warning("signaling server: %s (%s)", msg.message, msg.code)
                if msg.code in PERMANENT_CODES:
                    self._signaling_refusal = msg.code

    async def _on_signal(self, msg: m.SessionDescription | m.IceCandidate) -> None:
        sender = self.senders.get(msg.peer)
        if sender is not None:
            await sender.link.on_signal(msg)
            return
        viewer = self.viewers.get(msg.peer)
        if viewer is not None:
            await viewer.link.on_signal(msg)
            return
        if isinstance(msg, m.SessionDescription) and msg.kind == "offer" and self.peer_roles.get(msg.peer) == "sender":
            await self._add_sender(m.PeerInfo(msg.peer, "sender"), msg)  # the server binds the role (PROTOCOL.md §1)
        else:
            logger.info("ignoring %s from peer %s (%s): only the room's sender offers a call", type(msg).__name__, msg.peer,
                        self.peer_roles.get(msg.peer, "unknown"))

    async def _add_sender(self, peer: m.PeerInfo, offer: m.SessionDescription) -> None:
        await self.sender_hub.add(peer, offer)

    async def _peer_left(self, msg: m.PeerLeft) -> None:
        if await self.sender_hub.on_peer_left(msg):
            return  # a sender whose motion still arrives: kept
        await self.viewer_hub.remove(msg.peer.peer_id)

    # -- what tests drive directly (the parts own these paths) ----------------------------------
    def _on_sender_control(self, sender: SenderLink, data: bytes | str) -> None:
        self.sender_hub.on_control(sender, data)

    def _on_viewer_message(self, viewer: ViewerLink, data: bytes | str) -> None:
        self.viewer_hub.on_message(viewer, data)

    async def _load_avatar(self, data: bytes, what: str) -> None:
        await self.scene.load_avatar(data, what)

    # -- playout and rendering ------------------------------------------------------------------
    def _scene(self) -> Scene | None:
        sender = self.active
        if sender is None or not sender.ready or sender.key is None:
            return None
        state = self.store.state(sender.key)
        if state is None:
            return None
        return self.scene.scene(state)

    async def _playout_loop(self) -> None:
        while True:
            due = self.playout.next_due_ms()
            now = wall_ms()
            if due is None or due > now:
                self._wake.clear()
                timeout = 0.5 if due is None else (due - now) / 1000.0
                with contextlib.suppress(TimeoutError):
                    # (not wait_for: on Python 3.11 it swallows a cancel that comes as the wake-up does, and this loop
                    # then outlived _shutdown's cancel: a stopped participant hung there and never left the room)
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                continue
            for frame in self.playout.pop_due(now):
                self._emit(frame)

    def _emit(self, frame: PlayoutFrame) -> None:
        if self.config.max_frames is not None and frame.slot >= self.config.max_frames:
            return  # past the last frame asked for: the call is ending (stop() follows that frame's render)
        self.records.outputs.append(
            OutputRecord(frame.slot, frame.stream_id, frame.seq, frame.concealed, frame.capture_ms, frame.due_ms, frame.arrival_ms)
        )
        scene = self._scene()
        if scene is None:
            self.records.frames_without_reference += 1
            return
        assert self._worker is not None
        picture = None
        sender = self.active
        if sender is not None and not frame.concealed:
            picture = sender.enhancement.take(frame.stream_id, frame.seq)
        if scene.motion_map is not None or scene.view is not None:
            picture = None  # the picture shows the sender's face in the sender's pose: not for an avatar or another view
        if self._frame_gate is not None and not self._frame_gate(frame):
            self.records.frames_unscheduled += 1  # not rendered (its picture, if any, goes with it): the sinks keep the last one
            return
        show = False
        if picture is not None and sender is not None:
            own = sender.enhancement.own_picture(frame.stream_id, frame.seq)  # (take returns it first when there is one)
            show = own is not None and shows_picture(own[0].shape[0], self._output_size, own[1], own=True)
        self._worker.submit(frame, scene, picture, show_picture=show)

    async def _output_loop(self) -> None:
        while True:
            await self._deliver(await self._rendered.get())

    async def _deliver(self, rendered: RenderedFrame) -> None:
        frame = rendered.frame
        self.latest.update(frame.slot, rendered.image)
        self.records.renders.append(RenderRecord(frame.slot, frame.concealed, frame.capture_ms, rendered.rendered_ms, rendered.render_ms))
        self.audio.on_video_rendered(frame, rendered.rendered_ms)
        for sink in self._sinks:
            try:
                await asyncio.to_thread(sink.write, frame.slot, rendered.image)
            except Exception as exc:  # noqa: BLE001 - a failing sink (disk full, no display) must not end the call
                self.records.sink_errors += 1
                logger.error("%s failed on frame %d: %s", type(sink).__name__, frame.slot, exc)
        if self.config.max_frames is not None and frame.slot + 1 >= self.config.max_frames:
            self.stop("max_frames")

    # -- timers ---------------------------------------------------------------------------------
    async def _feedback_loop(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            if self.active is not None:
                self.sender_hub.send_feedback(self.active)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(min(self.config.report_interval_s, self.config.stats_interval_s))
            now = time.monotonic()
            sender = self.active
            # Until a render rate went out, every FIRST_REPORTS_S: the sender's first rungs depend on it.
            interval = self.config.report_interval_s if self._rate_reported else min(FIRST_REPORTS_S, self.config.report_interval_s)
            if sender is not None and now - self._last_report >= interval:
                rendered = None if self._worker is None else self._worker.frames_rendered
                rendered_fps = None
                since = now - self._last_report  # (a gap: no sender for a while, the count covers no call)
                # only over a window that began with frames already rendering (not the call's start-up)
                if rendered is not None and self._rendered_at_report and 0 < since <= 3 * self.config.report_interval_s:
                    rendered_fps = (rendered - self._rendered_at_report) / since
                    self._rate_reported = True
                self._last_report, self._rendered_at_report = now, rendered
                self.sender_hub.send_delay_report(sender, rendered_fps)
            self.records.sample_rates(now, self.active, self._worker)
            if self.viewers:
                self.viewer_hub.broadcast(c.Stats("receiver", self.stats()))

    # -- numbers --------------------------------------------------------------------------------
    def stats(self) -> dict[str, float | int | str | None]:
        """Numbers for viewers and logs (see signaling/PROTOCOL.md)."""
        return self.records.stats(self.active, self.playout, self._worker, getattr(self.synthesizer, "num_keypoints", None))

    def report(self) -> dict[str, Any]:
        """The whole call, for --stats-json and the benchmark (see ``receiver.call_report.CallRecords.report``)."""
        return self.records.report(self.sender_history, self.playout, self._worker, self.audio)
