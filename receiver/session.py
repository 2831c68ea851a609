"""The receiver: joins a room, answers the sender, decodes and plays out motion, renders, publishes.

Per sender (the newest one in the room is the active one): an answering RTCPeerConnection with
the sender's "motion" (unordered, no retransmit) and "control" (reliable) data channels; a
MotionDepacketizer; the reference portrait (from its cache, or reassembled from chunks); feedback
(acks, KEY requests) every ``feedback_interval_ms`` and at once for a KEY request; delay reports.
With a model that has the enhancement branch the receiver announces ``capabilities`` and accepts
frame bundles (``codec.enhancement.bundle``) on the motion channel: the motion part goes to the
depacketizer as usual, the picture to ``receiver.enhancement`` (which asks the sender for a key
picture when it needs one), and the frame renders with it when it decoded, else from motion alone.
Per viewer: an offering RTCPeerConnection carrying the synthesized video track and a "control"
channel (stats, status and rate decisions out; commands and avatar uploads in).

    receiver = Receiver(ReceiverConfig("http://127.0.0.1:8080", room="demo"), synthesizer)
    await receiver.run()      # until stop(), max_frames output frames, or (optionally) the sender leaves
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCDataChannel

from codec.bitstream import pack_feedback, unpack_header
from codec.enhancement.bundle import FrameBundle, is_bundle, unpack_bundle
from codec.exceptions import BitstreamError
from codec.motion import MotionParams
from codec.prediction import MotionDepacketizer
from codec.reference_message import ChunkReassembler, ReferenceMessage, decode_portrait, unpack_reference_message
from receiver.audio_playout import AudioPlayout
from receiver.audio_track import PlayoutAudioTrack
from receiver.bounded_state import MAX_EVENTS, MAX_REMOTE_ERRORS, CpuBudget, LinkTotals, RateLimitedLog, SenderHistory, SerialWorker
from receiver.enhancement import EnhancementReceiver
from receiver.playout import PlayoutBuffer, PlayoutFrame, unwrap_timestamp_ms
from receiver.portrait_cache import DEFAULT_CACHE_MAX_BYTES
from receiver.references import ReferenceStore, cache_key
from receiver.render_worker import RenderedFrame, RenderWorker, Scene, Synthesizer, wall_ms
from receiver.sinks import FrameSink, Mp4Recorder, NullSink, WindowSink
from receiver.video_track import LatestFrame, SynthesizedVideoTrack
from signaling import control as c
from signaling import messages as m
from signaling.client import Signaling, WebSocketSignaling
from signaling.reconnect import DEPARTED_REASONS, PERMANENT_CODES, rejoin_after_loss
from signaling.rtc import PeerLink, RtcOptions, close_links
from signaling.rtp_audio import AudioRtpChannel, AudioRtpPacket
from signaling.rtp_motion import MotionRtpChannel, prefer_srtp_profiles

logger = logging.getLogger(__name__)
peer_log = RateLimitedLog(logger)  # what peers can repeat at will (bad packets, their errors): one line per kind per 10 s

ERROR_REPLY_INTERVAL_S = 1.0
CALL_RECORDS = 15_000  # per-frame output and render records kept for report() (the last 10 min at 25 fps)
SENDER_ALIVE_CHECK_S = 1.0  # a sender the server says left, whose motion still arrives within this, is kept
VIEWER_ERRORS_PER_S = 5  # error replies a viewer may get per second (a page shows each; a flood gets fewer)
MAX_AVATAR_PIXELS = 4096 * 4096
RATE_WINDOW_S = 3.0  # the "recent" rates of the viewers' stats (payload, wire, rendered fps) span this long


@dataclass(frozen=True)
class ReceiverConfig:
    """Receiver settings; the field comments are the CLI help."""

    signaling_url: str  # the signaling server, http://HOST:PORT
    room: str = "demo"  # room to join
    token: str | None = field(default=None, repr=False)  # the room's shared secret, if it has one
    rtc: RtcOptions = RtcOptions()
    record: Path | None = None  # write the synthesized video to this MP4
    show: bool = False  # show the synthesized video in a window
    view: str | None = None  # "frontal" or "yaw=..,pitch=..,roll=.." (free view); None: the sender's
    avatar: Path | None = None  # drive this portrait with the sender's motion (cross-identity)
    cache_dir: Path | None = None  # keep received portraits here (no re-send on the next call)
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES  # disk cap of that cache; the least recently used portraits go first
    max_frames: int | None = None  # stop after this many output frames
    exit_when_sender_leaves: bool = False  # end when the active sender leaves (default: wait for another)
    reconnect: bool = True  # join the signaling server again when it goes away (the call carries on meanwhile)
    feedback_interval_ms: float = 1000.0  # acks at most this often (each costs the sender a 93-byte SACK on the wire)
    report_interval_s: float = 5.0  # delay reports to the sender (each costs it a SACK too)
    stats_interval_s: float = 1.0  # stats to viewers
    max_delay_ms: float = 500.0  # jitter-buffer ceiling
    audio: bool = True  # play the sender's audio in sync with the face, record and publish it (False: refuse it)


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One output frame, for tests and the benchmark (times are wall-clock ms)."""

    slot: int
    stream_id: int
    seq: int
    concealed: bool
    capture_ms: float
    due_ms: float
    arrival_ms: float | None


@dataclass(frozen=True, slots=True)
class RenderRecord:
    slot: int
    concealed: bool
    capture_ms: float
    rendered_ms: float
    render_ms: float


class _SenderLink:
    """The receiving side of one sender."""

    def __init__(self, link: PeerLink, enhancement_size: int = 0) -> None:
        self.link = link
        self.enhancement = EnhancementReceiver(enhancement_size)
        self.motion: RTCDataChannel | None = None
        self.control: RTCDataChannel | None = None
        self.rtp: MotionRtpChannel | None = None  # motion as RTP when the sender's offer has it (signaling.rtp_motion)
        self.rtp_motion_seen = False  # an RTP motion packet arrived: the sender reads feedback as RTP too
        self.audio_rtp: AudioRtpChannel | None = None  # its audio when the offer has it and we accept it (signaling.rtp_audio)
        self.depacketizer = MotionDepacketizer()
        self.reassembler = ChunkReassembler()
        self.hello: c.Hello | None = None
        self.key: str | None = None
        self.ready = False
        self.packets = 0
        self.payload_bytes = 0
        self.bad_packets = 0
        self.bad_control = 0
        self.last_error_reply = 0.0
        self.last_feedback: tuple[Any, ...] | None = None
        self.last_feedback_ms = 0.0
        self.rate: c.RateDecision | None = None
        self.first_packet_ms: float | None = None
        self.remote_errors: deque[str] = deque(maxlen=MAX_REMOTE_ERRORS)
        self.packet_delays_ms: deque[float] = deque(maxlen=100)  # arrival − capture of each packet's last frame
        self.jobs = SerialWorker(f"{link.prefix} sender")  # hellos and whole references, in order, bounded
        self.reassembly_drops = 0  # incomplete references the reassembler dropped (already logged)
        self.decode_budget = CpuBudget()  # motion decoding's share of the loop (see receiver.bounded_state.CpuBudget)

    def totals(self) -> LinkTotals:
        fb = self.depacketizer.feedback()
        e = self.enhancement
        return LinkTotals(
            self.packets, self.payload_bytes, self.bad_packets, 0 if fb is None else fb.frames_lost, 0 if fb is None else fb.frames_received,
            self.link.counters().wire_bytes_received, e.received, e.decoded, e.dropped, e.ignored, e.key_requests,
            self.decode_budget.refused,
        )

    async def release(self) -> None:
        """Closed: stop its queued work and drop partial references (its counters stay for stats)."""
        await self.jobs.close()
        self.reassembler = ChunkReassembler()

    @property
    def network_jitter_ms(self) -> float:
        """p95 of the per-packet delay above its minimum: the path's jitter, without the packetization
        wait (the first frames of a packet wait for its last one; that is not the network)."""
        if not self.packet_delays_ms:
            return 0.0
        delays = np.asarray(self.packet_delays_ms)
        return float(np.percentile(delays - delays.min(), 95))

    @property
    def peer_id(self) -> str:
        return self.link.peer.peer_id

    def send_control(self, msg: c.ControlMessage | bytes) -> None:
        channel = self.control
        if channel is None or channel.readyState != "open":
            return
        channel.send(msg if isinstance(msg, bytes) else c.encode_control(msg))

    @property
    def motion_transport(self) -> str:
        if self.rtp is None or not self.rtp.active:
            return "datachannel"
        return "rtp+audio" if self.audio_rtp is not None and self.audio_rtp.on_motion is not None else "rtp"

    def send_feedback(self, feedback: bytes) -> None:
        """Feedback goes back as RTP once motion arrives as RTP (no SACK for it, and a lost one is superseded by
        the next: acks are cumulative, KEY requests repeat), else on the control channel."""
        if self.rtp is not None and self.rtp.active and self.rtp_motion_seen:
            with contextlib.suppress(ConnectionError, ValueError):
                self.rtp.send(feedback)
                return
        self.send_control(feedback)


class _ViewerLink:
    def __init__(self, link: PeerLink) -> None:
        self.link = link
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


class _ViewerError(Exception):
    """A viewer's message that cannot be carried out: ``code`` and a message for the page."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _RecentRates:
    """Per-second rates over the last ``window_s`` from cumulative counters sampled once per stats tick."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.samples: deque[tuple[float, tuple[float, ...]]] = deque()

    def add(self, now_s: float, counters: tuple[float, ...]) -> None:
        if self.samples and any(new < old for new, old in zip(counters, self.samples[-1][1])):
            self.samples.clear()  # a counter restarted (a new sender): so do the rates
        self.samples.append((now_s, counters))
        while len(self.samples) > 2 and self.samples[1][0] <= now_s - self.window_s:
            self.samples.popleft()

    def rates(self) -> tuple[float, ...] | None:
        """Counter increase per second over the window (None until two samples ≥ 0.5 s apart)."""
        if len(self.samples) < 2 or self.samples[-1][0] - self.samples[0][0] < 0.5:
            return None
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return tuple((b - a) / (t1 - t0) for a, b in zip(c0, c1))


class Receiver:
    """See the module docstring."""

    def __init__(
        self, config: ReceiverConfig, synthesizer: Synthesizer, signaling: Signaling | None = None,
        view_parser: Callable[[str], Any] | None = None,
        face_crop: Callable[[np.ndarray, int], np.ndarray] | None = None,
        retarget: Callable[[MotionParams, MotionParams, MotionParams], MotionParams] | None = None,
        sinks: list[FrameSink] | None = None,
    ) -> None:
        self.config = config
        self.synthesizer = synthesizer
        self.signaling = signaling or WebSocketSignaling(config.signaling_url, config.room, "receiver", config.token)
        self._view_parser = view_parser
        self._face_crop = face_crop
        self._retarget = retarget
        self._extra_sinks = sinks or []
        self.store = ReferenceStore(config.cache_dir, cache_max_bytes=config.cache_max_bytes)
        self.playout = PlayoutBuffer(max_delay_ms=config.max_delay_ms)
        self.latest = LatestFrame(getattr(synthesizer, "image_size", 256))
        self.senders: dict[str, _SenderLink] = {}
        self.sender_history: SenderHistory[_SenderLink] = SenderHistory(_SenderLink.totals)  # the last few, and totals of all
        self.active: _SenderLink | None = None
        self.viewers: dict[str, _ViewerLink] = {}
        self.peer_roles: dict[str, m.Role] = {}  # what the server says each peer of the room is (only "sender" may offer a call)
        self._signaling_refusal: str | None = None  # a PERMANENT_CODES error the server sent: do not join again
        self.view: Any = None
        self.avatar_state: Any = None
        # per-frame records for report() and tests: the last 10 minutes at 25 fps (a few MB at most, both together)
        self.outputs: deque[OutputRecord] = deque(maxlen=CALL_RECORDS)
        self.renders: deque[RenderRecord] = deque(maxlen=CALL_RECORDS)
        self.events: deque[tuple[float, str, str]] = deque(maxlen=MAX_EVENTS)  # (wall ms, event, detail), for tests and logs
        self.frames_without_reference = 0
        self.sink_errors = 0
        self._sinks: list[FrameSink] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._rendered: asyncio.Queue[RenderedFrame] = asyncio.Queue()
        self._worker: RenderWorker | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped_reason = ""
        self._last_report = 0.0
        self._recent = _RecentRates(RATE_WINDOW_S)
        self.enhancement_size = int(getattr(synthesizer, "enhancement_size", 0) or 0)  # E of the model's branch (0: none)
        self.audio = AudioPlayout(self.playout)  # the active sender's audio, in sync with the faces (receiver.audio_playout)

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
            self.view = self._parse_view(self.config.view)
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
            recorder = Mp4Recorder(self.config.record, self.playout.fps, audio_expected=self._audio_expected if self.config.audio else None)
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

    # -- signaling ------------------------------------------------------------------------------
    async def _on_joined(self, joined: m.Joined, again: bool = False) -> None:
        self._event("rejoined" if again else "joined", f"{joined.room} as {joined.peer_id}")
        self.peer_roles = {peer.peer_id: peer.role for peer in joined.peers}
        for peer in joined.peers:
            if peer.role == "viewer":
                await self._add_viewer(peer)

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
                await self._add_viewer(msg.peer)
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

    async def _peer_left(self, msg: m.PeerLeft) -> None:
        sender = self.senders.get(msg.peer.peer_id)
        if sender is not None and msg.reason not in DEPARTED_REASONS and await sender.link.media_alive(SENDER_ALIVE_CHECK_S):
            self._event("sender_signaling_lost", f"{msg.peer.peer_id} ({msg.reason}): its motion still arrives; the call goes on")
            return
        sender = self.senders.pop(msg.peer.peer_id, None)
        if sender is not None:
            was_active = sender is self.active
            if was_active:
                self.active = None
            await sender.link.close()
            await sender.release()
            if was_active:
                self._event("sender_left", f"{msg.peer.peer_id} ({msg.reason})")
                self._broadcast(c.Status("sender_left", f"the sender left ({msg.reason}); waiting for one to join"))
                if self.config.exit_when_sender_leaves:
                    self.stop("sender_left")
        viewer = self.viewers.pop(msg.peer.peer_id, None)
        if viewer is not None:
            await viewer.link.close()
            await viewer.jobs.close()
            self._event("viewer_left", msg.peer.peer_id)

    # -- the sender -----------------------------------------------------------------------------
    async def _add_sender(self, peer: m.PeerInfo, offer: m.SessionDescription) -> None:
        link = PeerLink(peer, self.signaling, self.config.rtc, "receiver")
        sender = _SenderLink(link, self.enhancement_size)
        previous = self.active
        self.senders[peer.peer_id] = sender
        self.sender_history.append(sender)
        self.active = sender
        self.playout.restart()
        self._event("sender_joined", peer.peer_id)
        if previous is not None:
            logger.info("%s: a newer sender replaces %s", link.prefix, previous.peer_id)
            self.senders.pop(previous.peer_id, None)
            await previous.link.close()
            await previous.release()

        def on_rtp_motion(data: bytes) -> None:
            sender.rtp_motion_seen = True
            self._on_motion(sender, data)

        def before_answer() -> None:
            if self.config.rtc.motion_transport in ("rtp", "rtp+audio"):
                sender.rtp = MotionRtpChannel.prepare_answer(link.pc, on_rtp_motion)
            prefer_srtp_profiles(link.pc, self.config.rtc.srtp_tag_bits)
            sender.audio_rtp = AudioRtpChannel.prepare_answer(link.pc, on_audio, accept=self.config.audio)

        def on_audio(packet: AudioRtpPacket) -> None:
            if sender is self.active:
                self.audio.on_packet(packet)

        link.before_answer = before_answer

        @link.pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label == "motion":
                sender.motion = channel
                channel.on("message", lambda data: self._on_motion(sender, data))
            elif channel.label == "control":
                sender.control = channel
                channel.on("message", lambda data: self._on_sender_control(sender, data))
            else:
                logger.warning("%s: ignoring unexpected data channel %r", link.prefix, channel.label)

        def on_close() -> None:
            asyncio.ensure_future(sender.release())
            if self.senders.get(peer.peer_id) is sender:
                del self.senders[peer.peer_id]
            if self.active is sender:
                self.active = None
                self._event("sender_lost", peer.peer_id)
                self._broadcast(c.Status("sender_left", "the connection to the sender was lost; waiting for one to join"))
                if self.config.exit_when_sender_leaves:
                    self.stop("sender_left")

        link.on_close(on_close)
        await link.on_signal(offer)

    def _error_reply(self, sender: _SenderLink, code: str, message: str) -> None:
        now = time.monotonic()
        if now - sender.last_error_reply >= ERROR_REPLY_INTERVAL_S:
            sender.last_error_reply = now
            sender.send_control(c.ErrorReply(code, message[:500]))

    def _on_motion(self, sender: _SenderLink, data: bytes | str) -> None:
        if sender is not self.active:
            return
        now = wall_ms()
        if not isinstance(data, bytes):
            sender.bad_packets += 1
            self._error_reply(sender, "bad_packet", f"motion packets are binary; got text ({sender.bad_packets} rejected)")
            return
        if not sender.decode_budget.allow():  # a flood: dropped undecoded, as loss (the sender hears of it in feedback)
            peer_log.log(logging.WARNING, "over_budget", f"{sender.link.prefix}: motion packets arrive faster than they decode: "
                         f"{sender.decode_budget.refused} dropped so far")
            return
        bundle: FrameBundle | None = None
        started_cpu_s = sender.decode_budget.start()
        try:
            packet = data
            if is_bundle(data):
                bundle = unpack_bundle(data)
                packet = bundle.motion_packet
            frames = sender.depacketizer.receive(packet)
        except BitstreamError as exc:
            sender.bad_packets += 1
            peer_log.log(logging.INFO, "bad_packet", f"{sender.link.prefix}: rejected motion packet: {exc}")
            self._error_reply(sender, "bad_packet", f"{exc} ({sender.bad_packets} rejected)")
            sender.decode_budget.spend(started_cpu_s)
            return
        if bundle is not None:
            self._on_picture(sender, bundle, packet, now)  # the enhancement picture's decode counts in the budget too
        sender.decode_budget.spend(started_cpu_s)
        sender.packets += 1
        sender.payload_bytes += len(data)
        if sender.first_packet_ms is None:
            sender.first_packet_ms = now
        for frame in frames:
            self.playout.push(frame, now)
        if frames:
            last = frames[-1]
            sender.packet_delays_ms.append(now - unwrap_timestamp_ms(last.capture_ts_ms, now))
        fb = sender.depacketizer.feedback()
        if fb is not None and (fb.key_request_after is not None or any(f.key for f in frames)):
            self._send_feedback(sender, force=True)  # KEY requests at once; a KEY acked at once (a fresh reference)
        self._wake.set()

    def _on_picture(self, sender: _SenderLink, bundle: FrameBundle, packet: bytes, now_ms: float) -> None:
        """The picture of an accepted bundle: decoded and kept for its frame; a key picture asked for when needed."""
        header = unpack_header(packet)  # parsed once already by the depacketizer: cannot fail here
        sender.enhancement.receive(bundle, header.stream_id, header.seq, header.num_frames, now_ms)
        seq = sender.enhancement.key_request_due(now_ms)
        if seq is not None:
            sender.send_control(c.EnhancementKey(seq))

    def _send_feedback(self, sender: _SenderLink, force: bool = False) -> None:
        fb = sender.depacketizer.feedback()
        if fb is None:
            return
        state = (fb.stream_id, fb.acked_seq, fb.acked_mask, fb.key_request_after)
        now = wall_ms()
        if state == sender.last_feedback and not force:
            return
        if not force and now - sender.last_feedback_ms < self.config.feedback_interval_ms:
            return
        if force and state == sender.last_feedback and now - sender.last_feedback_ms < 100.0:
            return
        sender.last_feedback, sender.last_feedback_ms = state, now
        sender.send_feedback(pack_feedback(fb))

    def _on_sender_control(self, sender: _SenderLink, data: bytes | str) -> None:
        if isinstance(data, bytes):
            self._on_reference_chunk(sender, data)
            return
        try:
            msg = c.decode_control(data)
        except c.ControlError as exc:
            sender.bad_control += 1
            peer_log.log(logging.INFO, "bad_control", f"{sender.link.prefix}: rejected control message: {exc}")
            self._error_reply(sender, "bad_message", str(exc))
            return
        if isinstance(msg, c.Hello):
            self._queue_sender_job(sender, functools.partial(self._on_hello, sender, msg))
        elif isinstance(msg, c.Ping):
            sender.send_control(c.Pong(msg.t_ms))
        elif isinstance(msg, c.RateDecision):
            sender.rate = msg
            self._broadcast(msg)
        elif isinstance(msg, c.ErrorReply):
            sender.remote_errors.append(f"{msg.code}: {msg.message}")
            if sender.audio_rtp is not None and (msg.code == "no_audio_riding" or (msg.code == "bad_message" and "rtp+audio" in msg.message)):
                sender.audio_rtp.on_motion = None  # the sender keeps motion out of its audio: plain RTP motion
                self._event("motion_transport", f"{sender.peer_id}: rtp (the sender declined motion in the audio: {msg.code})")
            peer_log.log(logging.WARNING, "sender_error", f"{sender.link.prefix}: the sender reports {msg.code}: {msg.message}")
            if msg.code == "bad_command":  # the answer to a viewer's command: the viewers see it
                for viewer in list(self.viewers.values()):
                    viewer.send_error(msg.code, f"the sender refused the command: {msg.message}")
        elif isinstance(msg, c.Stats):
            self._broadcast(msg)
        else:
            self._error_reply(sender, "unexpected", f"a receiver does not accept {msg.TYPE!r} from a sender")

    async def _on_hello(self, sender: _SenderLink, hello: c.Hello) -> None:
        synth = self.synthesizer
        sender.hello = hello
        if (hello.model_id, hello.model_version) != (synth.model_id, synth.model_version):
            text = (
                f"the sender's motion is for model {hello.model_id} {hello.model_version}, this receiver runs "
                f"{synth.model_id} {synth.model_version}: use the same weights on both sides"
            )
            logger.error("%s: %s", sender.link.prefix, text)
            sender.send_control(c.ErrorReply("model_mismatch", text))
            self._broadcast(c.Status("error", text))
            return
        with contextlib.suppress(ValueError):
            self.playout.set_fps(hello.fps)
        key = cache_key(hello.content_hash, hello.model_id, hello.model_version)
        sender.key = key
        have = self.store.has(key)
        if self.enhancement_size:  # only a receiver with the branch says so: others look exactly as before
            from codec.enhancement.bundle import BUNDLE_MAGIC

            sender.send_control(c.Capabilities(BUNDLE_MAGIC & 0x0F, self.enhancement_size))
        if sender.rtp is not None and not sender.rtp.active and sender.rtp.start():
            sender.send_control(c.MotionTransport("rtp"))  # an older sender rejects it and keeps the data channel
            if self.config.rtc.motion_transport == "rtp+audio" and sender.audio_rtp is not None:
                self._ask_motion_in_audio(sender)
        sender.send_control(c.ReferenceStatus(hello.content_hash, have))
        self._event("hello", f"stream {hello.stream_id}, reference {hello.content_hash[:12]} {'cached' if have else 'needed'}")
        if have:
            msg = self.store.load(key)
            if self.store.state(key) is None and msg is None:  # vanished between has() and load()
                sender.send_control(c.ReferenceStatus(hello.content_hash, False))
                return
            await self._prepare(sender, key, msg, cached=True)

    def _ask_motion_in_audio(self, sender: _SenderLink) -> None:
        """We play this sender's audio: ask for its motion inside the audio packets (``signaling.audio_motion``) and
        split the marked ones from now on. A sender that does not do it answers with an error (an older one rejects
        the value, bad_message; one with --motion-transport rtp, no_audio_riding) and motion stays on plain RTP."""
        audio = sender.audio_rtp
        assert audio is not None

        def on_motion(data: bytes) -> None:
            sender.rtp_motion_seen = True
            self._on_motion(sender, data)

        def on_bad_motion(reason: str) -> None:
            if sender is not self.active:
                return
            sender.bad_packets += 1
            peer_log.log(logging.INFO, "bad_packet", f"{sender.link.prefix}: rejected audio packet with motion: {reason}")
            self._error_reply(sender, "bad_packet", f"audio packet with motion: {reason} ({sender.bad_packets} rejected)")

        audio.on_motion, audio.on_bad_motion = on_motion, on_bad_motion
        sender.send_control(c.MotionTransport("rtp+audio"))

    def _queue_sender_job(self, sender: _SenderLink, job: Callable[[], Awaitable[None]]) -> None:
        if not sender.jobs.submit(job):
            self._error_reply(sender, "busy", f"the receiver is still handling {sender.jobs.waiting} earlier messages: this one was dropped")

    def _on_reference_chunk(self, sender: _SenderLink, chunk: bytes) -> None:
        try:
            whole = sender.reassembler.add(chunk)
            msg = None if whole is None else unpack_reference_message(whole)
        except BitstreamError as exc:
            sender.bad_control += 1
            peer_log.log(logging.WARNING, "bad_reference", f"{sender.link.prefix}: rejected reference data: {exc}")
            self._error_reply(sender, "bad_reference", str(exc))
            return
        finally:
            self._log_reassembly_drops(sender)
        if msg is not None:  # checked and prepared in turn with the hellos (the one that announces it comes first)
            self._queue_sender_job(sender, functools.partial(self._on_reference, sender, msg))

    async def _on_reference(self, sender: _SenderLink, msg: ReferenceMessage) -> None:
        if sender.hello is None or msg.cache_key != sender.key:
            self._error_reply(sender, "unexpected_reference", f"reference {msg.content_hash.hex()[:12]} was not announced by a hello")
            return
        await self._prepare(sender, msg.cache_key, msg, cached=False)

    def _log_reassembly_drops(self, sender: _SenderLink) -> None:
        dropped = sender.reassembler.dropped
        if dropped > sender.reassembly_drops:
            sender.reassembly_drops = dropped
            peer_log.log(
                logging.WARNING, "reassembly_dropped",
                f"{sender.link.prefix}: dropped an incomplete reference message (too many pending; {dropped} from this sender so far)",
            )

    async def _prepare(self, sender: _SenderLink, key: str, msg: ReferenceMessage | None, cached: bool) -> None:
        assert self._worker is not None
        if self.store.state(key) is None:
            if msg is None:
                return
            try:
                rgb = await asyncio.to_thread(decode_portrait, msg)
                state = await self._worker.call(self.synthesizer.prepare, self._fit_portrait(rgb))
            except (BitstreamError, ValueError) as exc:
                peer_log.log(logging.ERROR, "bad_portrait", f"{sender.link.prefix}: cannot use the reference portrait: {exc}")
                sender.send_control(c.ErrorReply("bad_reference", str(exc)[:500]))
                return
            self.store.put_state(key, state)
        if not cached and msg is not None:  # decoded and prepared (now or before): only then kept, and on disk
            self.store.remember(msg)
            await asyncio.to_thread(self.store.write, msg)
        sender.ready = True
        hash_hex = key.split(":", 1)[0]
        sender.send_control(c.ReferenceReady(hash_hex, cached))
        self._event("reference_ready", f"{hash_hex[:12]} {'cached' if cached else 'received'}")
        self._broadcast(c.Status("receiving", "reference ready; rendering the sender's motion"))

    def _fit_portrait(self, rgb: np.ndarray) -> np.ndarray:
        """The sender sends an S×S face crop; anything else is resized to the synthesizer's size."""
        size = getattr(self.synthesizer, "image_size", rgb.shape[0])
        if rgb.shape[:2] == (size, size):
            return rgb
        from PIL import Image

        return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC))

    # -- playout and rendering ------------------------------------------------------------------
    def _scene(self) -> Scene | None:
        sender = self.active
        if sender is None or not sender.ready or sender.key is None:
            return None
        state = self.store.state(sender.key)
        if state is None:
            return None
        if self.avatar_state is None:
            return Scene(state, self.view)
        retarget = self._retarget_fn()
        source_motion, avatar_motion = state.motion, self.avatar_state.motion
        return Scene(self.avatar_state, self.view, lambda motion: retarget(motion, source_motion, avatar_motion))

    async def _playout_loop(self) -> None:
        while True:
            due = self.playout.next_due_ms()
            now = wall_ms()
            if due is None or due > now:
                self._wake.clear()
                timeout = 0.5 if due is None else (due - now) / 1000.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            for frame in self.playout.pop_due(now):
                self._emit(frame)

    def _emit(self, frame: PlayoutFrame) -> None:
        if self.config.max_frames is not None and frame.slot >= self.config.max_frames:
            return  # past the last frame asked for: the call is ending (stop() follows that frame's render)
        self.outputs.append(
            OutputRecord(frame.slot, frame.stream_id, frame.seq, frame.concealed, frame.capture_ms, frame.due_ms, frame.arrival_ms)
        )
        scene = self._scene()
        if scene is None:
            self.frames_without_reference += 1
            return
        assert self._worker is not None
        picture = None
        sender = self.active
        if sender is not None and not frame.concealed:
            picture = sender.enhancement.take(frame.stream_id, frame.seq)
        if scene.motion_map is not None or scene.view is not None:
            picture = None  # the picture shows the sender's face in the sender's pose: not for an avatar or another view
        self._worker.submit(frame, scene, picture)

    async def _output_loop(self) -> None:
        while True:
            await self._deliver(await self._rendered.get())

    async def _deliver(self, rendered: RenderedFrame) -> None:
        frame = rendered.frame
        self.latest.update(frame.slot, rendered.image)
        self.renders.append(RenderRecord(frame.slot, frame.concealed, frame.capture_ms, rendered.rendered_ms, rendered.render_ms))
        self.audio.on_video_rendered(frame, rendered.rendered_ms)
        for sink in self._sinks:
            try:
                await asyncio.to_thread(sink.write, frame.slot, rendered.image)
            except Exception as exc:  # noqa: BLE001 - a failing sink (disk full, no display) must not end the call
                self.sink_errors += 1
                logger.error("%s failed on frame %d: %s", type(sink).__name__, frame.slot, exc)
        if self.config.max_frames is not None and frame.slot + 1 >= self.config.max_frames:
            self.stop("max_frames")

    async def _feedback_loop(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            if self.active is not None:
                self._send_feedback(self.active)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(min(self.config.report_interval_s, self.config.stats_interval_s))
            now = time.monotonic()
            sender = self.active
            if sender is not None and now - self._last_report >= self.config.report_interval_s:
                self._last_report = now
                sender.send_control(
                    c.DelayReport(
                        round(sender.network_jitter_ms, 2), round(self.playout.target_delay_ms, 2),
                        self.playout.frames_late, self.playout.frames_concealed,
                    )
                )
            self._sample_rates(now)
            if self.viewers:
                self._broadcast(c.Stats("receiver", self.stats()))

    def _sample_rates(self, now_s: float) -> None:
        sender, worker = self.active, self._worker
        payload = 0 if sender is None else sender.payload_bytes
        wire = 0 if sender is None else sender.link.counters().wire_bytes_received
        self._recent.add(now_s, (payload, wire, 0 if worker is None else worker.frames_rendered))

    def stats(self) -> dict[str, float | int | str | None]:
        """Numbers for viewers and logs (see signaling/PROTOCOL.md)."""
        sender = self.active
        renders = list(self.renders)[-100:]
        latencies = [r.rendered_ms - r.capture_ms for r in renders if not r.concealed]
        worker = self._worker
        counters = None if sender is None else sender.link.counters()
        elapsed_s = None if sender is None or sender.first_packet_ms is None else (wall_ms() - sender.first_packet_ms) / 1000.0
        recent = self._recent.rates() if sender is not None else None
        feedback = None if sender is None else sender.depacketizer.feedback()
        out: dict[str, float | int | str | None] = {
            "frames_output": self.playout.next_slot,
            "frames_rendered": 0 if worker is None else worker.frames_rendered,
            "frames_concealed": self.playout.frames_concealed,
            "frames_late": self.playout.frames_late,
            "jitter_ms": None if sender is None else round(sender.network_jitter_ms, 1),
            "playout_delay_ms": round(self.playout.target_delay_ms, 1),
            "latency_ms_median": round(float(np.median(latencies)), 1) if latencies else None,
            "render_ms_median": round(float(np.median(list(worker.render_ms)[-100:])), 1) if worker and worker.render_ms else None,
            "packets_received": 0 if sender is None else sender.packets,
            "payload_kbps": None if not elapsed_s or sender is None else round(sender.payload_bytes * 8 / 1000 / elapsed_s, 2),
            "wire_kbps_in": None if not elapsed_s or counters is None else round(counters.wire_bytes_received * 8 / 1000 / elapsed_s, 2),
            "fps": self.playout.fps,
            "payload_kbps_recent": None if recent is None else round(recent[0] * 8 / 1000, 2),
            "wire_kbps_recent": None if recent is None else round(recent[1] * 8 / 1000, 2),
            "fps_rendered": None if recent is None else round(recent[2], 1),
            "frames_lost": None if feedback is None else feedback.frames_lost,
            "motion_transport": None if sender is None else sender.motion_transport,
            "keypoints_max": getattr(self.synthesizer, "num_keypoints", None),
            **self._enhancement_stats(sender),
        }
        if sender is not None and sender.rate is not None:
            out.update(keypoints=sender.rate.keypoints, preset=sender.rate.preset, frames_per_packet=sender.rate.frames_per_packet,
                       enhancement_qp=sender.rate.enhancement_qp)
        return out

    def _enhancement_stats(self, sender: _SenderLink | None) -> dict[str, int]:
        """The enhancement layer's counts: pictures of the active sender, frames rendered with/without one."""
        worker = self._worker
        rendered = 0 if worker is None else worker.frames_rendered
        enhanced = 0 if worker is None else worker.frames_enhanced
        counts = None if sender is None else sender.enhancement.counts()
        return {
            "enhancement_received": 0 if counts is None else counts.received,
            "enhancement_decoded": 0 if counts is None else counts.decoded,
            "enhancement_dropped": 0 if counts is None else counts.dropped,
            "enhancement_ignored": 0 if counts is None else counts.ignored,
            "enhancement_key_requests": 0 if counts is None else counts.key_requests,
            "frames_rendered_enhanced": enhanced,
            "frames_rendered_motion_only": rendered - enhanced,
        }

    def report(self) -> dict[str, Any]:
        """The whole call, for --stats-json and the benchmark (times in ms, rates per second of output).

        Latency = rendered (image ready) − the sender's capture time, over frames decoded from motion
        (concealed frames have no capture); it needs one clock on both sides (the same machine).
        """

        def percentiles(values: list[float]) -> dict[str, float | None]:
            if not values:
                return {"median": None, "p95": None, "max": None}
            arr = np.asarray(values)
            return {"median": round(float(np.median(arr)), 2), "p95": round(float(np.percentile(arr, 95)), 2), "max": round(float(arr.max()), 2)}

        renders, outputs = list(self.renders), list(self.outputs)
        decoded = [r for r in renders if not r.concealed]
        duration_s = (renders[-1].rendered_ms - renders[0].rendered_ms) / 1000.0 if len(renders) > 1 else 0.0
        span_s = (outputs[-1].due_ms - outputs[0].due_ms) / 1000.0 if len(outputs) > 1 else 0.0
        worker = self._worker
        links = self.sender_history
        totals = links.totals()
        return {
            "frames_output": len(outputs),
            "frames_rendered": len(renders),
            "frames_concealed": sum(o.concealed for o in outputs),
            "frames_late": self.playout.frames_late,
            "frames_interpolated": self.playout.frames_interpolated,
            "frames_skipped_by_renderer": 0 if worker is None else worker.frames_skipped,
            "frames_without_reference": self.frames_without_reference,
            "output_fps": round((len(outputs) - 1) / span_s, 3) if span_s else None,
            "rendered_fps": round((len(renders) - 1) / duration_s, 3) if duration_s else None,
            "latency_ms": percentiles([r.rendered_ms - r.capture_ms for r in decoded]),
            "render_ms": percentiles([r.render_ms for r in renders]),
            "playout_delay_ms": round(self.playout.target_delay_ms, 2),
            "network_jitter_ms": round(links[-1].network_jitter_ms, 2) if links else None,
            "packets_received": totals.packets,
            "payload_bytes_received": totals.payload_bytes,
            "packets_rejected": totals.bad_packets,
            "packets_over_budget": totals.packets_over_budget,
            "frames_lost_in_transit": totals.frames_lost,
            "frames_received": totals.frames_received,
            "wire_bytes_received": totals.wire_bytes_received,
            "render_errors": 0 if worker is None else worker.render_errors,
            "sink_errors": self.sink_errors,
            "enhancement_received": totals.enhancement_received,
            "enhancement_decoded": totals.enhancement_decoded,
            "enhancement_dropped": totals.enhancement_dropped,
            "enhancement_ignored": totals.enhancement_ignored,
            "enhancement_key_requests": totals.enhancement_key_requests,
            "frames_rendered_enhanced": 0 if worker is None else worker.frames_enhanced,
            "motion_transport": links[-1].motion_transport if links else None,
            "rtp": asdict(links[-1].rtp.counters()) if links and links[-1].rtp is not None else None,
            "audio_rtp": asdict(links[-1].audio_rtp.counters()) if links and links[-1].audio_rtp is not None else None,
            "audio": self.audio.report(),
        }

    # -- viewers --------------------------------------------------------------------------------
    async def _add_viewer(self, peer: m.PeerInfo) -> None:
        link = PeerLink(peer, self.signaling, self.config.rtc, "receiver")
        viewer = _ViewerLink(link)
        self.viewers[peer.peer_id] = viewer
        self._event("viewer_joined", peer.peer_id)
        link.pc.addTrack(SynthesizedVideoTrack(self.latest, self.playout.fps))
        if self.config.audio:
            link.pc.addTrack(PlayoutAudioTrack(self.audio))  # the sound in step with the faces (silent without a sender's)
        channel = link.pc.createDataChannel("control")
        viewer.control = channel

        @channel.on("open")
        def on_open() -> None:
            state = "receiving" if self.active is not None else "waiting"
            viewer.send(c.Status(state, "receiving the sender's motion" if self.active else "waiting for a sender"))
            if self.active is not None and self.active.rate is not None:
                viewer.send(self.active.rate)

        channel.on("message", functools.partial(self._on_viewer_message, viewer))

        def on_close() -> None:
            asyncio.ensure_future(viewer.jobs.close())
            if self.viewers.get(peer.peer_id) is viewer:
                del self.viewers[peer.peer_id]

        link.on_close(on_close)
        await link.offer()

    def _audio_expected(self) -> bool:
        """Whether the call has sound (asked by the recorder at its first frame): the active sender offered audio."""
        return self.active is not None and self.active.audio_rtp is not None

    def _broadcast(self, msg: c.ControlMessage) -> None:
        for viewer in list(self.viewers.values()):
            viewer.send(msg)

    def _on_viewer_message(self, viewer: _ViewerLink, data: bytes | str) -> None:
        """Queued for the viewer's one worker (in order; a flood beyond the queue is refused with "busy")."""
        if not viewer.jobs.submit(functools.partial(self._on_viewer_control, viewer, data)):
            viewer.send_error("busy", f"the receiver is still handling {viewer.jobs.waiting} earlier messages: this one was dropped")

    async def _on_viewer_control(self, viewer: _ViewerLink, data: bytes | str) -> None:
        """A viewer's command or upload: carried out and acknowledged, or answered with an error (never silent)."""
        try:
            if isinstance(data, bytes):
                raise _ViewerError("bad_message", "viewers send JSON text messages, not binary")
            try:
                msg = c.decode_control(data)
            except c.ControlError as exc:
                raise _ViewerError("bad_message", str(exc)) from None
            if isinstance(msg, c.Command):
                await self._on_command(viewer, msg)
            elif isinstance(msg, c.AvatarChunk):
                await self._on_avatar_chunk(viewer, msg)
            elif isinstance(msg, c.Ping):
                viewer.send(c.Pong(msg.t_ms))
            else:
                raise _ViewerError("bad_message", f"a receiver does not accept {msg.TYPE!r} from a viewer")
        except _ViewerError as exc:
            peer_log.log(logging.INFO, "viewer_error", f"{viewer.link.prefix}: {exc.code}: {exc}")
            viewer.send_error(exc.code, str(exc))
        except Exception as exc:  # noqa: BLE001 - whatever fails, the page hears about it
            logger.exception("%s: viewer message failed", viewer.link.prefix)
            viewer.send_error("internal", f"the receiver failed to carry that out: {exc}")

    async def _on_avatar_chunk(self, viewer: _ViewerLink, chunk: c.AvatarChunk) -> None:
        try:
            image = viewer.avatar.add(chunk)
        except c.ControlError as exc:
            raise _ViewerError("bad_avatar", str(exc)) from None
        if image is None:
            return
        try:
            await self._load_avatar(image, "the uploaded portrait")
        except ValueError as exc:
            raise _ViewerError("bad_avatar", str(exc)) from None
        viewer.send(c.Ack("avatar", f"driving the uploaded portrait ({len(image) // 1024} KiB) with the sender's motion"))
        self._broadcast(c.Status("avatar", "driving the uploaded portrait"))

    async def _on_command(self, viewer: _ViewerLink, command: c.Command) -> None:
        forward = command.sender_part()
        if forward is not None and self.active is None:
            raise _ViewerError("no_sender", "there is no sender in the call: keypoints and max kbps go to the sender's controller")
        if command.view is not None:
            try:
                self.view = self._parse_view(command.view)
            except ValueError as exc:
                raise _ViewerError("bad_view", str(exc)) from None
            self._event("view", command.view)
            viewer.send(c.Ack("view", f"view set to {command.view}"))
        if command.avatar == "reset":
            self.avatar_state = None
            self._event("avatar", "reset")
            viewer.send(c.Ack("avatar", "driving the sender's own portrait again"))
            self._broadcast(c.Status("receiving", "driving the sender's own portrait"))
        if forward is not None and self.active is not None:
            self.active.send_control(forward)
            fields = [k for k in ("keypoints", "frames_per_packet", "max_kbps") if getattr(forward, k) is not None]
            viewer.send(c.Ack(",".join(fields), "passed to the sender; its next rate decision confirms it"))

    def _parse_view(self, text: str) -> Any:
        parser = self._view_parser
        if parser is None:
            from codec.model import ViewControl  # the model engineer's parser (ValueError on bad text)

            parser = ViewControl.parse
        return parser(text)

    def _retarget_fn(self) -> Callable[[MotionParams, MotionParams, MotionParams], MotionParams]:
        if self._retarget is None:
            from codec.model import retarget_relative

            self._retarget = retarget_relative
        return self._retarget

    async def _load_avatar(self, data: bytes, what: str) -> None:
        """Decode, crop and prepare a portrait to drive with the sender's motion (ValueError if unusable)."""
        from codec.image_input import ImageInputError, ImageLimits, read_image

        assert self._worker is not None
        try:  # JPEG/PNG/WebP only, size checked from the header before decoding (codec.image_input)
            rgb = await asyncio.to_thread(read_image, data, what, ImageLimits(max_pixels=MAX_AVATAR_PIXELS))
        except ImageInputError as exc:
            raise ValueError(f"{what} is not an image this receiver can read: {exc}") from None
        size = getattr(self.synthesizer, "image_size", 256)
        crop = self._face_crop
        if crop is None:
            from codec.face.crop import crop_reference

            def crop(image: np.ndarray, output_size: int) -> np.ndarray:
                return np.asarray(crop_reference(image, output_size=output_size).image)

        face = await asyncio.to_thread(crop, rgb, size)
        self.avatar_state = await self._worker.call(self.synthesizer.prepare, face)
        self._retarget_fn()  # fail now, not on the first frame, if retargeting is unavailable
        self._event("avatar", what)

