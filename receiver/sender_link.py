"""One sender as the receiver holds it: its link and channels, motion decoder, reference reassembler, counters and replies."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from aiortc import RTCDataChannel

from codec.prediction import MotionDepacketizer
from codec.reference_message import ChunkReassembler
from receiver.bounded_state import MAX_REMOTE_ERRORS, CpuBudget, LinkTotals, SerialWorker
from receiver.enhancement import EnhancementReceiver
from signaling import control as c
from signaling.rtc import PeerLink
from signaling.rtp_audio import AudioRtpChannel
from signaling.rtp_motion import MotionRtpChannel

ERROR_REPLY_INTERVAL_S = 1.0  # error replies to one sender at most this often (the rest are dropped)


class SenderLink:
    """The receiving side of one sender."""

    def __init__(self, link: PeerLink, enhancement_size: int = 0, error_reply_interval_s: float = ERROR_REPLY_INTERVAL_S,
                 enhancement_max_size: int = 0) -> None:
        self.link = link
        self.enhancement = EnhancementReceiver(enhancement_size, max_size=enhancement_max_size)
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
        self.error_reply_interval_s = error_reply_interval_s
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

    def send_error(self, code: str, message: str) -> None:
        """An error reply, at most one per ``error_reply_interval_s`` (a peer repeating a mistake hears of it now and then)."""
        now = time.monotonic()
        if now - self.last_error_reply >= self.error_reply_interval_s:
            self.last_error_reply = now
            self.send_control(c.ErrorReply(code, message[:500]))

    def queue_job(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` after this sender's earlier messages; a flood beyond the queue is refused with "busy"."""
        if not self.jobs.submit(job):
            self.send_error("busy", f"the receiver is still handling {self.jobs.waiting} earlier messages: this one was dropped")

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
