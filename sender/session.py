"""The sender: joins a room, offers a connection to every receiver, streams motion and the reference.

Per receiver: an offering RTCPeerConnection with a "motion" data channel (unordered, no
retransmits: motion packets), a "control" channel (reliable: hello, reference chunks, feedback,
commands, rate decisions) and a video transceiver for motion as RTP (``signaling.rtp_motion``): once the
receiver asks for it (``motion_transport``), motion packets go as RTP (~50 bytes of headers instead of ~95,
no SACKs back) and its feedback comes back the same way; messages too large for one RTP packet (a key
picture's bundle) still take the data channel, as does everything for a receiver that never asks. A receiver that
plays the audio may ask ("rtp+audio") for the motion to ride inside the audio's RTP packets (``sender.motion_rider``,
``signaling.audio_motion``): a message then costs its bytes plus one or two, not 50 of headers; its own MotionPacketizer (stream id random per sender run, below 128 so
it costs one byte a packet) and BandwidthController. The reference portrait is announced in the hello
and sent only when the receiver answers that it does not hold it.
With a model that has the enhancement branch (``enhancement_size`` E > 0), a receiver that announced
``capabilities`` for it gets the controller's enhanced rungs (``sender.controller``): on those each frame's
face crop is also coded at E×E (or the rung's larger side, up to what the receiver announced) by SVT-AV1
(``codec.enhancement.lowres_codec``) at the rung's qp and sent
in the same message as that frame's motion packet (a frame bundle, ``codec.enhancement.bundle``); the
receiver's ``enhancement_key`` requests make the next picture a key frame. ``enhancement_qp`` pins the
qp, 0 takes the layer off. Other receivers, motion-only rungs, and any frame without a face crop get
the plain motion packet.
Per viewer that asks for the original pictures (it offers a receive-only video transceiver and a
"control" data channel): an answering RTCPeerConnection carrying ``OriginalVideoTrack`` (VP8), up to
``MAX_ORIGINAL_VIEWERS`` at once; the control channel tells the viewer what the pictures are.

    sender = Sender(SenderConfig("http://127.0.0.1:8080", room="demo"), source, reference_message)
    await sender.run()     # until the source ends or stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from aiortc import RTCDataChannel

from codec.bitstream import unpack_feedback, unpack_header
from codec.enhancement.bundle import BUNDLE_MAGIC, INTERVAL_READER_VERSION, MAX_INTERVAL, pack_bundle
from codec.exceptions import BitstreamError
from codec.prediction import DEFAULT_KEY_INTERVAL_FRAMES, MotionPacketizer
from codec.quantize import get_preset
from codec.reference_message import ReferenceMessage, chunk_message, decode_portrait, pack_reference_message
from sender.audio_sender import AudioSender
from sender.controller import PACKET_OVERHEAD_BYTES, BandwidthController, Decision, Rung
from sender.enhancement_sender import EnhancementSender
from sender.motion_rider import DEFAULT_HOLD_MS, MotionRider, default_wait_ms
from sender.original import OriginalVideoTrack, PosedPortrait
from sender.sources import MotionFrame, MotionSource, TraceSource
from signaling import control as c
from signaling import messages as m
from signaling.client import Signaling, WebSocketSignaling
from signaling.reconnect import DEPARTED_REASONS, PERMANENT_CODES, rejoin_after_loss
from signaling.rtc import PeerLink, RtcOptions, TransportCounters, close_links
from signaling.rtp_audio import AudioRtpChannel
from signaling.rtp_motion import MotionRtpChannel, fits, prefer_srtp_profiles, rtp_packet_overhead_bytes

logger = logging.getLogger(__name__)

ERROR_REPLY_INTERVAL_S = 1.0
DEFAULT_MAX_KBPS = 8.0
END_OF_STREAM_DRAIN_S = 0.3  # after the source ends, before the connections close
# Stream ids are a varint in every packet: below 128 they cost 1 byte (a 31-bit id would cost 5, 4 bytes
# a packet for nothing). Each receiver has a fresh depacketizer per peer connection, so ids only need
# to differ within one connection's lifetime; a random start keeps a restarted sender distinct anyway.
STREAM_IDS = 128
REOFFER_FIRST_S, REOFFER_MAX_S = 1.0, 30.0  # offering again to a receiver whose link dropped: 1 s doubling to 30 s
RECEIVER_ALIVE_CHECK_S = 2.5  # a receiver the server says left is kept if it sent anything within this (feedback: 1/s)
MAX_ORIGINAL_VIEWERS = 4  # viewers of the original pictures at once (each costs a VP8 encoder)


@dataclass(frozen=True)
class SenderConfig:
    """Sender settings; the field comments are the CLI help."""

    signaling_url: str  # the signaling server, http://HOST:PORT
    room: str = "demo"  # room to join
    token: str | None = field(default=None, repr=False)  # the room's shared secret, if it has one
    rtc: RtcOptions = RtcOptions()
    max_kbps: float | None = DEFAULT_MAX_KBPS  # on-the-wire cap for the controller (None/0: none)
    keypoints: int | None = None  # send δ of this many keypoints (None: the controller decides)
    frames_per_packet: int | None = None  # frames per motion packet (None: the controller decides)
    preset: str | None = None  # quantizer preset name (None: the controller decides)
    key_interval_frames: int = DEFAULT_KEY_INTERVAL_FRAMES  # periodic KEY packets (0: never)
    wait_for_receiver: bool = True  # start the source once a receiver holds the reference
    ping_interval_s: float = 10.0  # round-trip probes on the control channel
    reconnect: bool = True  # join the signaling server again when it goes away (the calls carry on meanwhile)
    enhancement_qp: int | None = None  # the enhancement layer's SVT-AV1 qp (1-63; higher = fewer bytes) when the model has the
    # branch, the receiver reads bundles and the rate allows (None: the controller chooses; 0: motion only)
    motion_audio_wait_ms: float | None = None  # with motion riding in the audio: how long a motion message may wait for the
    # next audio packet before it goes on its own (None: one audio frame, at most 20 ms; see sender.motion_rider)
    audio_hold_ms: float = DEFAULT_HOLD_MS  # ... and how long an audio packet may wait for the next motion message


class _ReceiverLink:
    """The sending side towards one receiver."""

    def __init__(self, link: PeerLink, stream_id: int, config: SenderConfig, fps: float, num_keypoints: int,
                 expression_baseline: np.ndarray | None = None) -> None:
        self.link = link
        self.stream_id = stream_id
        self.controller = BandwidthController(
            fps, num_keypoints, config.max_kbps, config.keypoints, config.frames_per_packet, config.preset,
            expression_baseline, config.enhancement_qp,
        )
        self.packetizer = MotionPacketizer(stream_id, key_interval_frames=config.key_interval_frames)
        self.motion: RTCDataChannel | None = None
        self.control: RTCDataChannel | None = None
        self.rtp: MotionRtpChannel | None = None  # motion as RTP, offered; active once the receiver asked for it
        self.srtp_tag_bits: int | None = None  # the SRTP tag the handshake chose (Sender._srtp_tag_bits)
        self.audio: AudioRtpChannel | None = None  # Opus RTP, offered with --audio; active once the receiver accepted it
        self.rider: MotionRider | None = None  # motion inside the audio packets, once the receiver asked ("rtp+audio")
        self.rung: Rung | None = None
        self.reference_sent = 0  # times the whole reference went out
        self.reference_skipped = 0  # times the receiver already held it
        self.reference_ready = asyncio.Event()
        self.bad_messages = 0
        self.last_error_reply = 0.0
        self.send_errors = 0
        self.started_ms: float | None = None
        self.rtt_ms: float | None = None
        self.remote_errors: list[str] = []
        self.first_motion: tuple[float, TransportCounters] | None = None  # (wall ms, counters) at the first motion packet
        self.last_motion: tuple[float, TransportCounters] | None = None  # ... at the last one
        self.decision_log: list[tuple[float, Decision]] = []  # (wall ms, decision)
        self.capabilities: c.Capabilities | None = None  # what the receiver said it reads (None: nothing optional)
        self.enhancement = EnhancementSender()

    @property
    def peer_id(self) -> str:
        return self.link.peer.peer_id

    @property
    def motion_open(self) -> bool:
        return self.motion is not None and self.motion.readyState == "open"

    @property
    def motion_transport(self) -> str:
        if self.rtp is None or not self.rtp.active:
            return "datachannel"
        return "rtp+audio" if self.rider is not None else "rtp"

    @property
    def audio_outlet(self) -> MotionRider | AudioRtpChannel | None:
        """Where the audio sender hands this link's Opus packets: the rider when motion rides in them."""
        return self.rider if self.rider is not None else self.audio

    def send_motion(self, message: bytes, capture_ts_ms: float | None = None) -> None:
        """One motion packet or frame bundle: inside the audio packets when the receiver asked and one comes in time
        (``sender.motion_rider``), else as RTP once the receiver reads it and it fits one packet, else on the motion
        data channel. Raises what the channel raises (the caller counts it)."""
        if self.rtp is not None and self.rtp.active and fits(message):
            if self.rider is not None:
                self.rider.send_motion(message, capture_ts_ms)
                return
            self.rtp.send(message, capture_ts_ms)
        else:
            assert self.motion is not None
            self.motion.send(message)

    def send_control(self, msg: c.ControlMessage | bytes) -> None:
        channel = self.control
        if channel is None or channel.readyState != "open":
            return
        channel.send(msg if isinstance(msg, bytes) else c.encode_control(msg))

    def apply(self, decision: Decision) -> None:
        rung = decision.rung
        packetizer = self.packetizer
        if self.rung is None or rung.preset_id != self.rung.preset_id:
            packetizer.set_preset(rung.preset_id)
        packetizer.set_num_keypoints(rung.keypoints, decision.order)
        packetizer.frames_per_packet = rung.frames_per_packet
        if rung.enhancement_qp is None:
            self.enhancement.paused = True  # should the layer resume, its first picture is a key frame
        # (a new qp or side takes effect at the next picture, a key frame: SVT-AV1 is re-opened; a new interval is not)
        self.rung = rung
        self.decision_log.append((time.time() * 1000.0, decision))
        self.send_control(decision.message())


class _OriginalViewer:
    """The answering side towards one viewer of the original pictures."""

    def __init__(self, link: PeerLink) -> None:
        self.link = link
        self.track: OriginalVideoTrack | None = None
        self.control: RTCDataChannel | None = None

    def send(self, msg: c.ControlMessage) -> None:
        if self.control is not None and self.control.readyState == "open":
            self.control.send(c.encode_control(msg))


class Sender:
    """See the module docstring."""

    def __init__(
        self, config: SenderConfig, source: MotionSource, reference: ReferenceMessage, signaling: Signaling | None = None,
        packet_filter: Callable[[bytes], bytes | None] | None = None, expression_baseline: np.ndarray | None = None,
        enhancement_size: int = 0, audio: AudioSender | None = None,
    ) -> None:
        """``packet_filter``: fault injection for tests and benchmarks; sees every motion packet and
        returns what to send instead (None: drop it). The packetizer still counts it as sent.
        ``expression_baseline``: (K, 3) the reference's own δ (``MotionEncoder.encode`` of the portrait as the receiver
        decodes it): at a low K the receiver keeps it for the keypoints not sent, so the controller sends those whose
        δ strays from it most.
        ``enhancement_size``: E of the model's enhancement branch (0: none; no enhanced rungs then).
        ``audio``: the call's audio (``sender.audio_sender``; None: no audio transceiver is offered at all)."""
        self.config = config
        if config.enhancement_qp is not None and not 0 <= config.enhancement_qp <= 63:
            raise ValueError(f"enhancement_qp must be an SVT-AV1 qp in 1..63 (higher = fewer bytes), 0 for motion only or None "
                             f"for the controller's choice, got {config.enhancement_qp!r}")
        self.enhancement_size = int(enhancement_size)
        self._packet_filter = packet_filter
        self.packets_filtered_out = 0
        self.source = source
        self.audio = audio
        self.reference = reference
        self._packed_reference = pack_reference_message(reference)
        self.signaling = signaling or WebSocketSignaling(config.signaling_url, config.room, "sender", config.token)
        self.stream_base = secrets.randbelow(STREAM_IDS)
        self.links: dict[str, _ReceiverLink] = {}
        self.link_history: list[_ReceiverLink] = []  # every receiver link of this run, for stats
        self.frames_captured = 0
        self.frames_without_receiver = 0
        self.events: list[tuple[float, str, str]] = []
        self._stop = asyncio.Event()
        self._any_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._num_keypoints = source_keypoints(source)
        self._expression_baseline = None if expression_baseline is None else np.asarray(expression_baseline)
        if self._expression_baseline is not None and self._expression_baseline.shape != (self._num_keypoints, 3):
            raise ValueError(f"expression_baseline must be ({self._num_keypoints}, 3) for this source's K = "
                             f"{self._num_keypoints}, got {self._expression_baseline.shape} (encode the reference with "
                             "the model that drives the source)")
        self._link_count = 0
        self.peer_roles: dict[str, m.Role] = {}
        self.viewers: dict[str, _OriginalViewer] = {}  # viewers of the original pictures
        self.latest_frame: MotionFrame | None = None
        self._posed: PosedPortrait | None = None
        self._signaling_refusal: str | None = None  # a PERMANENT_CODES error the server sent: do not join again
        self._reoffers: dict[str, int] = {}  # receiver peer id -> offers made again since its link last worked
        self._reoffer_tasks: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        self._stop.set()

    def _event(self, name: str, detail: str = "") -> None:
        self.events.append((time.time() * 1000.0, name, detail))
        logger.info("event %s %s", name, detail)

    async def run(self) -> str:
        """Stream until the source ends ("source_ended"), stop() ("stopped") or signaling ends for good
        ("signaling_closed": reconnect off, or the server refused us in a way waiting cannot cure)."""
        self.config.rtc.apply()
        reason = "stopped"
        try:
            await self._on_joined(await self.signaling.connect())
            signaling_task = asyncio.ensure_future(self._signaling_loop())
            motion_task = asyncio.ensure_future(self._motion_loop())
            ping_task = asyncio.ensure_future(self._ping_loop())
            stop_task = asyncio.ensure_future(self._stop.wait())
            self._tasks = [signaling_task, motion_task, ping_task, stop_task, asyncio.ensure_future(self._audio_loop())]
            done, _ = await asyncio.wait({signaling_task, motion_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if motion_task in done:
                motion_task.result()  # a source failure propagates
                reason = "source_ended"
            elif signaling_task in done:
                reason = "signaling_closed"
        finally:
            for task in [*self._tasks, *self._reoffer_tasks]:
                task.cancel()
            await asyncio.gather(*self._tasks, *self._reoffer_tasks, return_exceptions=True)
            self.source.close()
            for rx in self.link_history:
                rx.enhancement.close()
            await close_links([link.link for link in self.links.values()] + [v.link for v in self.viewers.values()])
            await self.signaling.close()
        return reason

    # -- signaling ------------------------------------------------------------------------------
    async def _on_joined(self, joined: m.Joined, again: bool = False) -> None:
        self._event("rejoined" if again else "joined", f"{joined.room} as {joined.peer_id}")
        self.peer_roles = {peer.peer_id: peer.role for peer in joined.peers}
        for peer in joined.peers:
            if peer.role == "receiver":
                await self._add_receiver(peer)

    async def _signaling_loop(self) -> None:
        while True:
            msg = await self.signaling.receive()
            if msg is None:
                joined = await rejoin_after_loss(
                    self.signaling, self._stop, self.config.reconnect, self._signaling_refusal, self._event,
                    f"calls carry on; joining again ({len(self.links)} receiver link(s) up)",
                )
                if joined is None:
                    return
                self._signaling_refusal = None
                await self._on_joined(joined, again=True)
                continue
            if isinstance(msg, m.PeerJoined):
                self.peer_roles[msg.peer.peer_id] = msg.peer.role
                if msg.peer.role == "receiver":
                    await self._add_receiver(msg.peer)
            elif isinstance(msg, m.PeerLeft):
                self.peer_roles.pop(msg.peer.peer_id, None)
                link = self.links.get(msg.peer.peer_id)
                if link is not None and msg.reason not in DEPARTED_REASONS and await link.link.media_alive(RECEIVER_ALIVE_CHECK_S):
                    self._event("receiver_signaling_lost", f"{msg.peer.peer_id} ({msg.reason}): it still answers; the call goes on")
                    continue
                link = self.links.pop(msg.peer.peer_id, None)
                if link is not None:
                    self._event("receiver_left", f"{msg.peer.peer_id} ({msg.reason})")
                    await link.link.close()
                viewer = self.viewers.pop(msg.peer.peer_id, None)
                if viewer is not None:
                    await viewer.link.close()
            elif isinstance(msg, (m.SessionDescription, m.IceCandidate)):
                target = self.links.get(msg.peer)
                viewer = self.viewers.get(msg.peer)
                if target is not None:
                    await target.link.on_signal(msg)
                elif isinstance(msg, m.SessionDescription) and msg.kind == "offer" and self.peer_roles.get(msg.peer) == "viewer":
                    await self._add_viewer(m.PeerInfo(msg.peer, "viewer"), msg)
                elif viewer is not None:
                    await viewer.link.on_signal(msg)
                else:
                    logger.info("ignoring %s from %s (not a receiver or viewer of ours)", type(msg).__name__, msg.peer)
            elif isinstance(msg, m.Error):
                logger.warning("signaling server: %s (%s)", msg.message, msg.code)
                if msg.code in PERMANENT_CODES:
                    self._signaling_refusal = msg.code

    async def _add_receiver(self, peer: m.PeerInfo) -> None:
        if peer.peer_id in self.links:
            return
        link = PeerLink(peer, self.signaling, self.config.rtc, "sender")
        stream_id = (self.stream_base + self._link_count) % STREAM_IDS
        self._link_count += 1
        rx = _ReceiverLink(link, stream_id, self.config, self.source.fps, self._num_keypoints, self._expression_baseline)
        self.links[peer.peer_id] = rx
        self.link_history.append(rx)
        self._event("receiver_joined", peer.peer_id)
        rx.motion = link.pc.createDataChannel("motion", ordered=False, maxRetransmits=0)
        rx.control = link.pc.createDataChannel("control")
        if self.config.rtc.motion_transport in ("rtp", "rtp+audio"):
            rx.rtp = MotionRtpChannel.offer(link.pc, lambda data: self._on_feedback(rx, data))
            link.before_offer_sent = lambda: prefer_srtp_profiles(link.pc, self.config.rtc.srtp_tag_bits)
        if self.audio is not None:
            rx.audio = self.audio.offer(link.pc)

        @rx.control.on("open")
        def on_open() -> None:
            rx.started_ms = time.time() * 1000.0
            if rx.rtp is not None:
                rx.rtp.quiet()  # aiortc's idle RTP sender of the transceiver would send RTCP reports every ~1 s
            if rx.audio is not None and not rx.audio.start():  # the receiver answered inactive (--audio none)
                rx.audio.quiet()
            rx.send_control(
                c.Hello(
                    c.PROTOCOL_VERSION, stream_id, self.source.fps, self.reference.content_hash.hex(), self.reference.model_id,
                    self.reference.model_version, len(self._packed_reference),
                )
            )

        rx.control.on("message", lambda data: self._on_control(rx, data))
        link.on_close(lambda: self._link_closed(rx))
        await link.offer()

    # -- viewers of the original pictures --------------------------------------------------------
    async def _add_viewer(self, peer: m.PeerInfo, offer: m.SessionDescription) -> None:
        """Answer a viewer's offer with the original pictures (a new offer replaces its previous link)."""
        previous = self.viewers.pop(peer.peer_id, None)
        if previous is not None:
            await previous.link.close()
        link = PeerLink(peer, self.signaling, self.config.rtc, "sender")
        viewer = _OriginalViewer(link)
        full = len(self.viewers) >= MAX_ORIGINAL_VIEWERS
        if not full:
            viewer.track = OriginalVideoTrack(self.original_picture, self.source.fps)
            link.pc.addTrack(viewer.track)  # matched to the offer's receive-only video transceiver
            self.viewers[peer.peer_id] = viewer
        self._event("original_viewer", f"{peer.peer_id}{' refused: full' if full else ''}")

        def greet() -> None:
            if full:
                viewer.send(c.ErrorReply("too_many_viewers", f"the sender already streams its original pictures to {MAX_ORIGINAL_VIEWERS} viewers"))
                asyncio.get_running_loop().call_later(1.0, lambda: asyncio.ensure_future(link.close()))
            else:
                viewer.send(c.Status("original", self.original_description()))

        @link.pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            viewer.control = channel
            if channel.readyState == "open":  # a channel the remote opened arrives open (its "open" event is past)
                greet()
            else:
                channel.on("open", greet)

        link.on_close(lambda: self.viewers.pop(peer.peer_id, None) if self.viewers.get(peer.peer_id) is viewer else None)
        await link.on_signal(offer)

    def original_description(self) -> str:
        if isinstance(self.source, TraceSource):
            return "no camera: the sender's portrait turned by the scripted head motion (pose only, no expression)"
        return f"the sender's camera pictures ({self.source.name})"

    def original_picture(self) -> np.ndarray | None:
        """The source's newest picture, or for a source without pictures the portrait posed by its motion."""
        picture = self.source.latest_picture()
        if picture is not None:
            return picture
        if self._posed is None:
            try:
                self._posed = PosedPortrait(decode_portrait(self.reference))
            except BitstreamError as exc:
                logger.warning("cannot show the portrait to viewers: %s", exc)
                return None
        frame = self.latest_frame
        return self._posed.render(None if frame is None else frame.motion)

    def _link_closed(self, rx: _ReceiverLink) -> None:
        if rx.rider is not None:
            rx.rider.close()
        if self.links.get(rx.peer_id) is rx:
            del self.links[rx.peer_id]
            self._event("receiver_lost", rx.peer_id)
            if self.peer_roles.get(rx.peer_id) == "receiver" and not self._stop.is_set():
                attempt = self._reoffers.get(rx.peer_id, 0)
                self._reoffers[rx.peer_id] = attempt + 1
                delay = min(REOFFER_MAX_S, REOFFER_FIRST_S * 2 ** attempt)
                task = asyncio.ensure_future(self._reoffer(rx.link.peer, delay))
                self._reoffer_tasks.add(task)
                task.add_done_callback(self._reoffer_tasks.discard)

    async def _reoffer(self, peer: m.PeerInfo, delay_s: float) -> None:
        """The link to a receiver that is still in the room dropped (ICE failed, the receiver closed it): offer again."""
        await asyncio.sleep(delay_s)
        if self._stop.is_set() or peer.peer_id in self.links or self.peer_roles.get(peer.peer_id) != "receiver":
            return
        self._event("reoffer", f"{peer.peer_id} after {delay_s:g} s")
        await self._add_receiver(peer)

    # -- control channel ------------------------------------------------------------------------
    def _error_reply(self, rx: _ReceiverLink, code: str, message: str) -> None:
        rx.bad_messages += 1
        now = time.monotonic()
        if now - rx.last_error_reply >= ERROR_REPLY_INTERVAL_S:
            rx.last_error_reply = now
            rx.send_control(c.ErrorReply(code, f"{message[:400]} ({rx.bad_messages} rejected)"))

    def _on_control(self, rx: _ReceiverLink, data: bytes | str) -> None:
        if isinstance(data, bytes):
            self._on_feedback(rx, data)
            return
        try:
            msg = c.decode_control(data)
        except c.ControlError as exc:
            logger.info("%s: rejected control message: %s", rx.link.prefix, exc)
            self._error_reply(rx, "bad_message", str(exc))
            return
        if isinstance(msg, c.ReferenceStatus):
            if msg.content_hash != self.reference.content_hash.hex():
                self._error_reply(rx, "unknown_reference", f"reference {msg.content_hash[:12]} is not the one announced")
            elif msg.have:
                rx.reference_skipped += 1
                self._event("reference_skipped", rx.peer_id)
            else:
                self._send_reference(rx)
        elif isinstance(msg, c.ReferenceReady):
            rx.reference_ready.set()
            self._reoffers.pop(rx.peer_id, None)  # the link works: a later drop starts the backoff afresh
            self._any_ready.set()
            self._event("reference_ready", f"{rx.peer_id} ({'cached' if msg.cached else 'sent'})")
        elif isinstance(msg, c.Pong):
            rtt = time.monotonic() * 1000.0 - msg.t_ms
            if 0 <= rtt < 60_000:
                rx.rtt_ms = rtt
                rx.controller.on_rtt(rtt)
        elif isinstance(msg, c.Ping):
            rx.send_control(c.Pong(msg.t_ms))
        elif isinstance(msg, c.DelayReport):
            rx.controller.on_delay_report(msg)
        elif isinstance(msg, c.Capabilities):
            rx.capabilities = msg
            square = self.reference.width == self.reference.height  # the portrait at the model's output side
            rx.controller.set_enhancement(self._layer_possible(rx), MAX_INTERVAL if msg.frame_bundle >= INTERVAL_READER_VERSION else 1,
                                          msg.enhancement_max_size, self.reference.width if square else 0)
            self._event("capabilities", f"{rx.peer_id}: frame bundle {msg.frame_bundle}, enhancement {msg.enhancement_size}"
                        + (f" up to {msg.enhancement_max_size}" if msg.enhancement_max_size > msg.enhancement_size else ""))
        elif isinstance(msg, c.MotionTransport):
            self._on_motion_transport(rx, msg)
        elif isinstance(msg, c.EnhancementKey):
            rx.enhancement.on_key_request(msg.seq)
        elif isinstance(msg, c.Command):
            self._on_command(rx, msg)
        elif isinstance(msg, c.ErrorReply):
            rx.remote_errors.append(f"{msg.code}: {msg.message}")
            logger.warning("%s: the receiver reports %s: %s", rx.link.prefix, msg.code, msg.message)
        else:
            self._error_reply(rx, "unexpected", f"a sender does not accept {msg.TYPE!r}")

    def _on_feedback(self, rx: _ReceiverLink, data: bytes) -> None:
        """Receiver feedback, from the control channel or as RTP."""
        try:
            feedback = unpack_feedback(data)
        except BitstreamError as exc:
            logger.info("%s: rejected feedback: %s", rx.link.prefix, exc)
            self._error_reply(rx, "bad_feedback", str(exc))
            return
        rx.packetizer.on_feedback(feedback)
        if feedback.stream_id == rx.stream_id:
            rx.controller.on_feedback(time.monotonic(), feedback)

    def _on_motion_transport(self, rx: _ReceiverLink, msg: c.MotionTransport) -> None:
        if msg.transport != "rtp+audio" and rx.rider is not None:
            rx.rider.close()
            rx.rider = None
        if msg.transport == "datachannel":
            if rx.rtp is not None:
                rx.rtp.active = False
            rx.controller.set_packet_overhead(PACKET_OVERHEAD_BYTES)
        elif rx.rtp is None or not (rx.rtp.active or rx.rtp.start()):
            self._error_reply(rx, "no_rtp_motion", "this sender offered no motion RTP transceiver on this link "
                              "(--motion-transport datachannel, or it was not negotiated): motion stays on the data channel")
            return
        elif msg.transport == "rtp+audio" and rx.rider is None:
            if self.config.rtc.motion_transport != "rtp+audio" or rx.audio is None or self.audio is None:
                self._error_reply(rx, "no_audio_riding", "this sender does not put motion inside its audio packets on this link "
                                  f"({'--motion-transport rtp' if rx.audio is not None else 'no audio'}): motion stays on plain RTP")
                return
            rtp, tag_bits = rx.rtp, self._srtp_tag_bits(rx)
            wait_ms = self.config.motion_audio_wait_ms
            rx.rider = MotionRider(rx.audio, rtp.send, default_wait_ms(self.audio.config.frame_ms) if wait_ms is None else wait_ms,
                                   self.config.audio_hold_ms)
            rx.rider.set_srtp_tag_bits(tag_bits)
            rx.controller.set_packet_overhead(rx.rider.overhead_bytes())
        elif rx.rider is None:
            rx.controller.set_packet_overhead(rtp_packet_overhead_bytes(self._srtp_tag_bits(rx)))
        self._event("motion_transport", f"{rx.peer_id}: {rx.motion_transport}")

    def _srtp_tag_bits(self, rx: _ReceiverLink) -> int:
        """The SRTP tag the link's DTLS handshake chose (the preference is only that); read once the handshake is
        done, then kept (the per-frame audio accounting asks for it)."""
        if rx.srtp_tag_bits is None:
            try:
                profile = rx.link.pc.sctp.transport._ssl.get_selected_srtp_profile()  # noqa: SLF001
            except Exception:  # noqa: BLE001 - no transport, no handshake yet: assume the common profile, ask again later
                return 80
            rx.srtp_tag_bits = 32 if profile == b"SRTP_AES128_CM_SHA1_32" else 80
        return rx.srtp_tag_bits

    def _send_reference(self, rx: _ReceiverLink) -> None:
        chunks = chunk_message(self._packed_reference)
        for chunk in chunks:
            rx.send_control(chunk)
        rx.reference_sent += 1
        self._event("reference_sent", f"{rx.peer_id}: {len(self._packed_reference)} bytes in {len(chunks)} chunks")

    def _on_command(self, rx: _ReceiverLink, cmd: c.Command) -> None:
        controller = rx.controller
        try:
            if cmd.max_kbps is not None:
                controller.set_max_kbps(cmd.max_kbps)
            if cmd.keypoints is not None or cmd.frames_per_packet is not None:
                keypoints = controller.pin_keypoints if cmd.keypoints is None else (None if cmd.keypoints == "auto" else int(cmd.keypoints))
                fpp = controller.pin_frames_per_packet if cmd.frames_per_packet is None else (
                    None if cmd.frames_per_packet == "auto" else int(cmd.frames_per_packet)
                )
                controller.set_overrides(keypoints, fpp)
        except ValueError as exc:
            self._error_reply(rx, "bad_command", str(exc))
            return
        self._event("command", repr(cmd))
        # Confirm at once (the viewer waits for it): a new decision, or the unchanged one with the new cap.
        decision = controller.decide(time.monotonic())
        if decision is not None:
            rx.apply(decision)
        elif controller.current is not None:
            rx.send_control(replace(controller.current.message(), max_kbps=controller.max_kbps, reason="command applied, setting unchanged"))

    # -- motion ---------------------------------------------------------------------------------
    async def _motion_loop(self) -> None:
        if self.config.wait_for_receiver:
            await self._any_ready.wait()
        async for frame in self.source.frames():
            self.frames_captured += 1
            self.latest_frame = frame
            if not self.links:
                self.frames_without_receiver += 1
            for rx in list(self.links.values()):
                self._push(rx, frame)
        for rx in list(self.links.values()):  # the last partly filled packet, then time to deliver it
            packet = rx.packetizer.flush()
            if packet is not None and rx.motion_open:
                with contextlib.suppress(ValueError, ConnectionError, RuntimeError):
                    rx.send_motion(packet)
        await asyncio.sleep(END_OF_STREAM_DRAIN_S)

    def _audio_wire_bytes(self, rx: _ReceiverLink) -> int:
        """What the link's audio put on the wire (Opus + RTP/SRTP/UDP/IPv4 headers): not motion's, so not under its cap."""
        if rx.audio is None:
            return 0
        return rx.audio.bytes_sent + rx.audio.packets_sent * rtp_packet_overhead_bytes(self._srtp_tag_bits(rx))

    async def _audio_loop(self) -> None:
        """The audio (when there is any) from when the motion starts, to every link whose receiver takes it."""
        if self.audio is None:
            return
        if self.config.wait_for_receiver:
            await self._any_ready.wait()
        try:
            await self.audio.run(lambda: [rx.audio_outlet for rx in self.links.values()])
        except Exception as exc:  # noqa: BLE001 - a failing microphone ends the audio, not the call
            logger.error("audio stopped: %s", exc)
            self._event("audio_failed", str(exc))

    def _push(self, rx: _ReceiverLink, frame: MotionFrame) -> None:
        if not rx.motion_open:
            return
        now_s = time.monotonic()
        controller = rx.controller
        controller.observe_motion(frame.motion)
        if rx.rider is not None:  # what a message costs now: a prefix share when riding, RTP headers when alone
            controller.set_packet_overhead(rx.rider.overhead_bytes())
        controller.on_wire_bytes(now_s, rx.link.counters().wire_bytes_sent - self._audio_wire_bytes(rx))  # the cap is motion's
        decision = controller.decide(now_s)
        if decision is not None:
            rx.apply(decision)
        frames_before = rx.packetizer.frames_sent
        packet = rx.packetizer.push(frame.motion, frame.capture_ts_ms)
        if packet is None:
            return
        assert rx.motion is not None and rx.rung is not None
        frames_in_packet = rx.packetizer.frames_sent - frames_before
        message = self._with_picture(rx, frame, packet, frames_in_packet)
        with_picture = message is not packet
        controller.on_packet(now_s, len(packet), frames_in_packet, rx.rung, len(message) - len(packet),
                             key_picture=with_picture and rx.enhancement.last_was_key)
        wire_packet: bytes | None = message if self._packet_filter is None else self._packet_filter(message)
        if wire_packet is None:
            self.packets_filtered_out += 1
            return
        try:
            rx.send_motion(wire_packet, frame.capture_ts_ms)
        except (ValueError, ConnectionError, RuntimeError) as exc:
            rx.send_errors += 1
            logger.info("%s: motion packet not sent: %s", rx.link.prefix, exc)
            return
        sample = (time.time() * 1000.0, rx.link.counters())
        if rx.first_motion is None:
            rx.first_motion = sample
        rx.last_motion = sample

    def _layer_possible(self, rx: _ReceiverLink) -> bool:
        """Whether this link can carry the enhancement layer: the model has the branch, the source gives face crops
        (the built-in trace has none), the receiver reads frame bundles at its E, and the layer is not turned off
        (``enhancement_qp`` 0)."""
        caps = rx.capabilities
        return (
            self.config.enhancement_qp != 0 and self.enhancement_size > 0 and self.source.provides_faces
            and caps is not None
            and caps.frame_bundle >= BUNDLE_MAGIC & 0x0F and caps.enhancement_size == self.enhancement_size
        )

    def _layer_on(self, rx: _ReceiverLink) -> bool:
        """Whether this link gets the enhancement layer now: it can carry it and the controller chose an enhanced rung."""
        rung = rx.rung
        return rung is not None and rung.enhancement_qp is not None and rung.frames_per_packet == 1 and self._layer_possible(rx)

    def _with_picture(self, rx: _ReceiverLink, frame: MotionFrame, packet: bytes, frames_in_packet: int) -> bytes:
        """The frame bundle of ``packet`` and this frame's picture when the layer is on and a picture is due (every
        frame, or every N-th on a rung with a picture interval N), else ``packet`` itself."""
        layer = rx.enhancement
        if not self._layer_on(rx) or frame.face is None or frames_in_packet != 1:
            layer.paused = True
            return packet
        assert rx.rung is not None and rx.rung.enhancement_qp is not None
        interval = rx.rung.enhancement_interval
        if not layer.due(interval):
            layer.skip()  # the receiver renders this frame with the newest picture
            return packet
        try:
            side = rx.rung.enhancement_size or self.enhancement_size  # a top rung's larger picture, else the model's E
            step = layer.step(interval)  # = interval, but for the first picture after a shorter interval was chosen
            picture, key = layer.encode(frame.face, side, rx.rung.enhancement_qp, self.source.fps / interval)
            message = pack_bundle(packet, picture, key, interval if key else step)
        except (ValueError, RuntimeError) as exc:  # a face crop smaller than E, an SVT-AV1 surprise: motion alone
            logger.warning("%s: enhancement picture not sent: %s", rx.link.prefix, exc)
            layer.paused = True
            return packet
        if key:
            layer.key_pictures += 1
            layer.last_key_seq = unpack_header(packet).seq
        layer.pictures += 1
        layer.bytes += len(picture)
        return message

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval_s)
            for rx in list(self.links.values()):
                rx.send_control(c.Ping(time.monotonic() * 1000.0))

    def link_stats(self) -> list[dict[str, Any]]:
        """Per receiver link of this run: what was sent (for logs, tests and the benchmark).

        ``wire_kbps`` is the sender's outgoing IPv4 rate over the motion period (first to last motion
        packet: motion, control messages, SACKs, DTLS), from the DTLS transport's counters.
        """
        out = []
        calibrator = getattr(self.source, "calibrator", None)  # sender/calibration.py, on a camera or file source
        calibration = calibrator.stats() if hasattr(calibrator, "stats") else None
        for rx in self.link_history:
            p = rx.packetizer
            counters = rx.link.counters()
            stats: dict[str, Any] = {
                "peer_id": rx.peer_id, "stream_id": rx.stream_id, "packets": p.packets_sent, "key_packets": p.key_packets_sent,
                "frames": p.frames_sent, "payload_bytes": p.bytes_sent, "wire_bytes_sent": counters.wire_bytes_sent,
                "wire_bytes_received": counters.wire_bytes_received, "reference_sent": rx.reference_sent,
                "reference_skipped": rx.reference_skipped, "rtt_ms": rx.rtt_ms, "send_errors": rx.send_errors,
                "rung": None if rx.rung is None else _rung_dict(rx.rung),
                "motion_transport": rx.motion_transport,
                "rtp": None if rx.rtp is None else asdict(rx.rtp.counters()),
                "audio_rtp": None if rx.audio is None else {"active": rx.audio.active, **asdict(rx.audio.counters())},
                "motion_in_audio": None if rx.rider is None else {
                    "wait_ms": rx.rider.wait_ms, "hold_ms": rx.rider.hold_ms, **asdict(rx.rider.counters())},
                "enhancement": rx.enhancement.stats(),
                "keypoint_calibration": calibration,
                "pictures_measured": rx.controller.picture_measurements(),
                "decisions": [
                    {"t_ms": t, **_rung_dict(d.rung), "estimated_kbps": round(d.estimated_kbps, 2), "reason": d.reason,
                     "left_measured_kbps": None if d.left_measured_kbps is None else round(d.left_measured_kbps, 2),
                     "left_predicted_kbps": None if d.left_predicted_kbps is None else round(d.left_predicted_kbps, 2)}
                    for t, d in rx.decision_log
                ],
            }
            if rx.first_motion is not None and rx.last_motion is not None and rx.last_motion[0] > rx.first_motion[0]:
                (t0, c0), (t1, c1) = rx.first_motion, rx.last_motion
                seconds = (t1 - t0) / 1000.0
                stats["motion_seconds"] = round(seconds, 3)
                stats["wire_kbps"] = round((c1.wire_bytes_sent - c0.wire_bytes_sent) * 8 / 1000 / seconds, 3)
                stats["wire_kbps_reverse"] = round((c1.wire_bytes_received - c0.wire_bytes_received) * 8 / 1000 / seconds, 3)
                stats["packets_per_s"] = round((c1.packets_sent - c0.packets_sent) / seconds, 2)
            out.append(stats)
        return out


def _rung_dict(rung: Rung) -> dict[str, Any]:
    """The rung for stats; ``enhancement_qp``, ``enhancement_interval`` and ``enhancement_size`` (None: the model's E) only
    on an enhanced rung (as in ``rate_decision``)."""
    out: dict[str, Any] = {"keypoints": rung.keypoints, "preset": get_preset(rung.preset_id).name,
                           "frames_per_packet": rung.frames_per_packet}
    if rung.enhancement_qp is not None:
        out["enhancement_qp"] = rung.enhancement_qp
        out["enhancement_interval"] = rung.enhancement_interval
        out["enhancement_size"] = rung.enhancement_size
    return out


def source_keypoints(source: MotionSource) -> int:
    """K of the source's motion (the trace knows it; others default to the project's K)."""
    from codec.motion import DEFAULT_NUM_KEYPOINTS

    trace = getattr(source, "motion_at", None)
    if trace is not None:
        with contextlib.suppress(Exception):
            return int(trace(0).num_keypoints)
    return DEFAULT_NUM_KEYPOINTS
