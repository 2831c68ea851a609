"""The receiver's senders: their links (the newest is the active one), motion and control intake, feedback, delay reports.

Per sender: an answering RTCPeerConnection with the sender's "motion" (unordered, no retransmit) and
"control" (reliable) data channels, or motion as RTP (``signaling.rtp_motion``), or inside the audio's
RTP packets (``signaling.audio_motion``); motion packets go through the sender's ``MotionDepacketizer``
into the playout buffer; feedback (acks, KEY requests) goes back every ``feedback_interval_ms`` and at
once for a KEY request. With a model that has the enhancement branch the receiver announces
``capabilities`` and accepts frame bundles (``codec.enhancement.bundle``) on the motion channel: the
motion part goes to the depacketizer as usual, the picture to the link's ``EnhancementReceiver`` (which
asks the sender for a key picture when it needs one). The reference portrait a hello announces is the
business of ``receiver.reference_intake``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from aiortc import RTCDataChannel

from codec.bitstream import pack_feedback, unpack_header
from codec.enhancement.bundle import FrameBundle, is_bundle, unpack_bundle
from codec.exceptions import BitstreamError
from receiver.audio_playout import AudioPlayout
from receiver.bounded_state import RateLimitedLog, SenderHistory
from receiver.config import ReceiverConfig
from receiver.playout import PlayoutBuffer, unwrap_timestamp_ms
from receiver.reference_intake import ReferenceIntake
from receiver.references import cache_key
from receiver.render_worker import Synthesizer, wall_ms
from receiver.sender_link import ERROR_REPLY_INTERVAL_S, SenderLink
from signaling import control as c
from signaling import messages as m
from signaling.client import Signaling
from signaling.reconnect import DEPARTED_REASONS
from signaling.rtc import PeerLink
from signaling.rtp_audio import AudioRtpChannel, AudioRtpPacket
from signaling.rtp_motion import MotionRtpChannel, prefer_srtp_profiles

logger = logging.getLogger(__name__)
peer_log = RateLimitedLog(logger)  # what peers can repeat at will (bad packets, their errors): one line per kind per 10 s

SENDER_ALIVE_CHECK_S = 1.0  # a sender the server says left, whose motion still arrives within this, is kept


class SenderHub:
    """The senders of the call and what they send.

    It tells the rest of the receiver through callbacks: ``wake`` (frames reached the playout buffer),
    ``event`` (the receiver's event log), ``broadcast`` and ``tell_viewers_error`` (to every viewer) and
    ``stop`` (end the call).
    """

    def __init__(
        self, config: ReceiverConfig, synthesizer: Synthesizer, signaling: Signaling, playout: PlayoutBuffer, audio: AudioPlayout,
        references: ReferenceIntake, *, enhancement_size: int, wake: Callable[[], None], event: Callable[[str, str], None],
        broadcast: Callable[[c.ControlMessage], None], tell_viewers_error: Callable[[str, str], None], stop: Callable[[str], None],
        error_reply_interval_s: float = ERROR_REPLY_INTERVAL_S,
    ) -> None:
        self.config = config
        self.synthesizer = synthesizer
        self.signaling = signaling
        self.playout = playout
        self.audio = audio
        self.references = references
        self.enhancement_size = enhancement_size  # E of the model's branch (0: none)
        self.enhancement_max_size = 0  # the largest picture side its links decode (0: no branch)
        if enhancement_size:
            from codec.enhancement.picture_rate import readable_sizes  # PyAV's codecs only where they are used

            self.enhancement_max_size = max(readable_sizes(enhancement_size, getattr(synthesizer, "image_size", enhancement_size)))
        self.error_reply_interval_s = error_reply_interval_s
        self._wake = wake
        self._event = event
        self._broadcast = broadcast
        self._tell_viewers_error = tell_viewers_error
        self._stop = stop
        self.links: dict[str, SenderLink] = {}
        self.history: SenderHistory[SenderLink] = SenderHistory(SenderLink.totals)  # the last few, and totals of all
        self.active: SenderLink | None = None

    # -- links ----------------------------------------------------------------------------------
    async def add(self, peer: m.PeerInfo, offer: m.SessionDescription) -> None:
        """A sender's offer: answered, and the sender becomes the active one (a previous one is closed)."""
        link = PeerLink(peer, self.signaling, self.config.rtc, "receiver")
        sender = SenderLink(link, self.enhancement_size, self.error_reply_interval_s, self.enhancement_max_size)
        previous = self.active
        self.links[peer.peer_id] = sender
        self.history.append(sender)
        self.active = sender
        self.playout.restart()
        self._event("sender_joined", peer.peer_id)
        if previous is not None:
            logger.info("%s: a newer sender replaces %s", link.prefix, previous.peer_id)
            self.links.pop(previous.peer_id, None)
            await previous.link.close()
            await previous.release()

        def on_rtp_motion(data: bytes) -> None:
            sender.rtp_motion_seen = True
            self.on_motion(sender, data)

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
                channel.on("message", lambda data: self.on_motion(sender, data))
            elif channel.label == "control":
                sender.control = channel
                channel.on("message", lambda data: self.on_control(sender, data))
            else:
                logger.warning("%s: ignoring unexpected data channel %r", link.prefix, channel.label)

        def on_close() -> None:
            asyncio.ensure_future(sender.release())
            if self.links.get(peer.peer_id) is sender:
                del self.links[peer.peer_id]
            if self.active is sender:
                self.active = None
                self._event("sender_lost", peer.peer_id)
                self._broadcast(c.Status("sender_left", "the connection to the sender was lost; waiting for one to join"))
                if self.config.exit_when_sender_leaves:
                    self._stop("sender_left")

        link.on_close(on_close)
        await link.on_signal(offer)

    async def on_peer_left(self, msg: m.PeerLeft) -> bool:
        """The server says a peer left: a sender of ours is closed, unless its motion still arrives (True: kept)."""
        sender = self.links.get(msg.peer.peer_id)
        if sender is not None and msg.reason not in DEPARTED_REASONS and await sender.link.media_alive(SENDER_ALIVE_CHECK_S):
            self._event("sender_signaling_lost", f"{msg.peer.peer_id} ({msg.reason}): its motion still arrives; the call goes on")
            return True
        sender = self.links.pop(msg.peer.peer_id, None)
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
                    self._stop("sender_left")
        return False

    def audio_expected(self) -> bool:
        """Whether the call has sound (asked by the recorder at its first frame): the active sender offered audio."""
        return self.active is not None and self.active.audio_rtp is not None

    # -- motion ---------------------------------------------------------------------------------
    def on_motion(self, sender: SenderLink, data: bytes | str) -> None:
        if sender is not self.active:
            return
        now = wall_ms()
        if not isinstance(data, bytes):
            sender.bad_packets += 1
            sender.send_error("bad_packet", f"motion packets are binary; got text ({sender.bad_packets} rejected)")
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
            sender.send_error("bad_packet", f"{exc} ({sender.bad_packets} rejected)")
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
            self.send_feedback(sender, force=True)  # KEY requests at once; a KEY acked at once (a fresh reference)
        self._wake()

    def _on_picture(self, sender: SenderLink, bundle: FrameBundle, packet: bytes, now_ms: float) -> None:
        """The picture of an accepted bundle: decoded and kept for its frame; a key picture asked for when needed."""
        header = unpack_header(packet)  # parsed once already by the depacketizer: cannot fail here
        sender.enhancement.receive(bundle, header.stream_id, header.seq, header.num_frames, now_ms)
        seq = sender.enhancement.key_request_due(now_ms)
        if seq is not None:
            sender.send_control(c.EnhancementKey(seq))

    def send_feedback(self, sender: SenderLink, force: bool = False) -> None:
        """Acks and KEY requests: when they changed, at most every ``feedback_interval_ms`` (``force``: now)."""
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

    def send_delay_report(self, sender: SenderLink, rendered_fps: float | None = None) -> None:
        """How late motion arrives and what the playout buffer makes of it (the sender's controller reads it); how
        many frames a second the renderer made, while the sender sends pictures (``rendered_fps``)."""
        sender.send_control(
            c.DelayReport(
                round(sender.network_jitter_ms, 2), round(self.playout.target_delay_ms, 2),
                self.playout.frames_late, self.playout.frames_concealed,
                None if rendered_fps is None or not sender.enhancement.active else round(rendered_fps, 2),
            )
        )

    # -- control --------------------------------------------------------------------------------
    def on_control(self, sender: SenderLink, data: bytes | str) -> None:
        if isinstance(data, bytes):
            self.references.on_chunk(sender, data)
            return
        try:
            msg = c.decode_control(data)
        except c.ControlError as exc:
            sender.bad_control += 1
            peer_log.log(logging.INFO, "bad_control", f"{sender.link.prefix}: rejected control message: {exc}")
            sender.send_error("bad_message", str(exc))
            return
        if isinstance(msg, c.Hello):
            sender.queue_job(functools.partial(self._on_hello, sender, msg))
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
                self._tell_viewers_error(msg.code, f"the sender refused the command: {msg.message}")
        elif isinstance(msg, c.Stats):
            self._broadcast(msg)
        else:
            sender.send_error("unexpected", f"a receiver does not accept {msg.TYPE!r} from a sender")

    async def _on_hello(self, sender: SenderLink, hello: c.Hello) -> None:
        synth = self.synthesizer
        sender.hello = hello
        motion_model_id = getattr(synth, "motion_model_id", synth.model_id)  # a distilled model reads its teacher's
        if (hello.model_id, hello.model_version) != (motion_model_id, synth.model_version):
            reads = "" if motion_model_id == synth.model_id else f" (reading the motion of {motion_model_id})"
            text = (
                f"the sender's motion is for model {hello.model_id} {hello.model_version}, this receiver runs "
                f"{synth.model_id} {synth.model_version}{reads}: use the same weights on both sides"
            )
            logger.error("%s: %s", sender.link.prefix, text)
            sender.send_control(c.ErrorReply("model_mismatch", text))
            self._broadcast(c.Status("error", text))
            return
        with contextlib.suppress(ValueError):
            self.playout.set_fps(hello.fps)
        key = cache_key(hello.content_hash, hello.model_id, hello.model_version)
        sender.key = key
        have = self.references.store.has(key)
        if self.enhancement_size:  # only a receiver with the branch says so: others look exactly as before
            from codec.enhancement.bundle import READER_VERSION

            sender.send_control(c.Capabilities(READER_VERSION, self.enhancement_size, self.enhancement_max_size))
        if sender.rtp is not None and not sender.rtp.active and sender.rtp.start():
            sender.send_control(c.MotionTransport("rtp"))  # an older sender rejects it and keeps the data channel
            if self.config.rtc.motion_transport == "rtp+audio" and sender.audio_rtp is not None:
                self._ask_motion_in_audio(sender)
        sender.send_control(c.ReferenceStatus(hello.content_hash, have))
        self._event("hello", f"stream {hello.stream_id}, reference {hello.content_hash[:12]} {'cached' if have else 'needed'}")
        if have:
            await self.references.use_cached(sender, hello.content_hash, key)

    def _ask_motion_in_audio(self, sender: SenderLink) -> None:
        """We play this sender's audio: ask for its motion inside the audio packets (``signaling.audio_motion``) and
        split the marked ones from now on. A sender that does not do it answers with an error (an older one rejects
        the value, bad_message; one with --motion-transport rtp, no_audio_riding) and motion stays on plain RTP."""
        audio = sender.audio_rtp
        assert audio is not None

        def on_motion(data: bytes) -> None:
            sender.rtp_motion_seen = True
            self.on_motion(sender, data)

        def on_bad_motion(reason: str) -> None:
            if sender is not self.active:
                return
            sender.bad_packets += 1
            peer_log.log(logging.INFO, "bad_packet", f"{sender.link.prefix}: rejected audio packet with motion: {reason}")
            sender.send_error("bad_packet", f"audio packet with motion: {reason} ({sender.bad_packets} rejected)")

        audio.on_motion, audio.on_bad_motion = on_motion, on_bad_motion
        sender.send_control(c.MotionTransport("rtp+audio"))
