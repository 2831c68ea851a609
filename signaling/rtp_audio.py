"""Audio as Opus RTP on a sender->receiver link, stamped with the capture clock (the receiver syncs it to the face).

How a link carries it (``AudioRtpChannel``), next to the motion transceiver of ``signaling.rtp_motion``:

- negotiation: the offering sender adds one ``audio`` transceiver (``sendonly``, Opus the only codec) beside its
  video (motion) transceiver and data channels, so the link still has exactly one video m-line. The answering
  receiver turns it ``recvonly`` (it plays the audio) or ``inactive`` (``--audio none``: nothing is sent) before it
  answers (``prepare_answer``). An older receiver answers ``recvonly`` on its own and ignores the track;
- the sender encodes once (``sender.audio_sender``) and sends each Opus packet straight through the link's SRTP
  session, as the motion channel does: aiortc's RTP sender of the transceiver is stopped once the link is up
  (``quiet``; it would send RTCP reports for a stream it does not carry, and its own Opus encoder runs at 96 kbps
  stereo with a random timestamp origin). On the receiving side the transceiver's packet handler is replaced:
  payloads go to a callback with their timestamp (aiortc's jitter buffer and decoder are not used);
- each packet: version 2, the negotiated Opus payload type, marker 0, sequence number +1 a packet, timestamp =
  the first sample's **capture time on a 48 kHz clock** (``capture_ms · 48`` mod 2³², the sender's wall clock, like
  the motion packets' 90 kHz timestamp), the transceiver's SSRC, no header extensions, one Opus packet (one frame of
  20, 40 or 60 ms) as payload. Both media thus carry the capture clock; the receiver unwraps the timestamp against
  its own clock (``unwrap_audio_timestamp``) and schedules playout from it (``receiver.audio_playout``);
- when the receiver asked for it (``motion_transport`` "rtp+audio"), a packet may carry motion messages before its
  Opus packet, flagged by the marker bit (``signaling.audio_motion``): ``send(..., motion=[...])`` builds it, and a
  receiving channel with ``on_motion`` set splits it (the messages to ``on_motion``, the Opus bytes to ``on_packet``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtp import RtpPacket

from signaling.audio_motion import AudioMotionError, pack_riding, prefix_bytes, unpack_riding
from signaling.own_rtp import OwnRtpStream, add_transceiver


AUDIO_RTP_KIND = "audio"
AUDIO_RTP_CODEC = "audio/opus"
AUDIO_CLOCK_HZ = 48_000  # Opus's RTP clock (RFC 7587), whatever the coded bandwidth
SAMPLES_PER_MS = AUDIO_CLOCK_HZ // 1000
TIMESTAMP_MODULUS = 1 << 32


def capture_timestamp(capture_ms: float) -> int:
    """A capture time (wall ms) as a 32-bit 48 kHz RTP timestamp."""
    return int(round(capture_ms * SAMPLES_PER_MS)) % TIMESTAMP_MODULUS


def unwrap_audio_timestamp(timestamp: int, near_ms: float) -> float:
    """A 32-bit 48 kHz timestamp -> the capture time in wall ms closest to ``near_ms`` (clocks within ±12 h)."""
    near = int(round(near_ms * SAMPLES_PER_MS))
    diff = (near - timestamp + (TIMESTAMP_MODULUS >> 1)) % TIMESTAMP_MODULUS - (TIMESTAMP_MODULUS >> 1)
    return (near - diff) / SAMPLES_PER_MS


@dataclass(frozen=True)
class AudioRtpPacket:
    """One received audio packet: its Opus payload and where it belongs on the capture clock."""

    ssrc: int  # a new SSRC is a new stream (a restarted sender)
    sequence_number: int  # 16-bit
    timestamp: int  # 32-bit, 48 kHz capture clock
    payload: bytes
    arrival_ms: float  # the receiver's wall clock


@dataclass(frozen=True)
class AudioRtpCounters:
    packets_sent: int
    bytes_sent: int  # Opus bytes (a motion prefix is counted apart, below)
    packets_received: int
    bytes_received: int  # Opus bytes
    malformed: int  # empty payloads or another payload type
    send_errors: int
    motion_packets_sent: int = 0  # audio packets that carried motion (marker 1)
    motion_messages_sent: int = 0
    motion_bytes_sent: int = 0  # their prefixes: count, lengths and messages (what motion costs riding here)
    motion_packets_received: int = 0
    motion_messages_received: int = 0
    motion_bytes_received: int = 0
    motion_malformed: int = 0  # marker-1 payloads whose prefix did not parse (dropped whole)


class AudioRtpChannel(OwnRtpStream):
    """One link's audio as Opus RTP on its audio transceiver (see the module docstring)."""

    def __init__(self, transceiver: RTCRtpTransceiver, on_packet: Callable[[AudioRtpPacket], None] | None = None) -> None:
        super().__init__(transceiver, AUDIO_RTP_CODEC, "audio")
        self.on_packet = on_packet
        # Set by a receiver that asked for motion inside the audio: marker-1 payloads are split, each motion message
        # goes here, and a prefix that does not parse to ``on_bad_motion`` (with the reason). None: marker ignored.
        self.on_motion: Callable[[bytes], None] | None = None
        self.on_bad_motion: Callable[[str], None] | None = None
        self.active = False  # sending allowed (negotiated, link up); see start()
        self._seq = 0
        self.packets_sent = self.bytes_sent = 0
        self.packets_received = self.bytes_received = self.malformed = 0
        self.motion_packets_sent = self.motion_messages_sent = self.motion_bytes_sent = 0
        self.motion_packets_received = self.motion_messages_received = self.motion_bytes_received = self.motion_malformed = 0
        self.handle(self._on_rtp)

    # -- negotiation ------------------------------------------------------------------------------
    @classmethod
    def offer(cls, pc: RTCPeerConnection) -> AudioRtpChannel:
        """The sender's side: add the audio transceiver to ``pc`` before its offer is created."""
        return cls(add_transceiver(pc, AUDIO_RTP_KIND, AUDIO_RTP_CODEC, "sendonly"))

    @classmethod
    def prepare_answer(
        cls, pc: RTCPeerConnection, on_packet: Callable[[AudioRtpPacket], None], accept: bool = True,
    ) -> AudioRtpChannel | None:
        """The receiver's side, after the remote offer was applied and before the answer: the offer's audio transceiver
        turned ``recvonly`` (``accept``) or ``inactive``. None when the offer has no audio (a sender with ``--audio
        none`` or an older one) or when it is refused."""
        audios = [t for t in pc.getTransceivers() if t.kind == AUDIO_RTP_KIND and not t.stopped]
        if not audios:
            return None
        for extra in audios[1:]:  # one stream per sender; more is not ours to play
            extra.direction = "inactive"
        if not accept:
            audios[0].direction = "inactive"
            return None
        audios[0].direction = "recvonly"
        return cls(audios[0], on_packet)

    def start(self) -> bool:
        """Allow sending (the link is up and the receiver accepted the stream); False otherwise (it answered
        ``inactive``: ``--audio none``, or the link is not connected yet)."""
        pt = self.negotiated_payload_type()
        if pt is None or self.transceiver.sender.transport is None or self.transceiver.currentDirection not in ("sendonly", "sendrecv"):
            return False
        self.payload_type = pt
        self.quiet()
        self.active = True
        return True

    # -- sending ----------------------------------------------------------------------------------
    def send(self, payload: bytes, timestamp: int, motion: Sequence[bytes] = ()) -> None:
        """One Opus packet whose first sample was captured at ``timestamp`` (48 kHz, see ``capture_timestamp``), with
        ``motion`` messages riding before it (marker 1; ``signaling.audio_motion``; ValueError when they do not fit)."""
        if not self.active or self.payload_type is None:
            raise ConnectionError("the audio RTP channel is not started")
        if not payload:
            raise ValueError("an empty Opus packet")
        data = pack_riding(motion, payload) if motion else payload
        packet = RtpPacket(
            payload_type=self.payload_type, marker=1 if motion else 0, sequence_number=self._seq, timestamp=timestamp % TIMESTAMP_MODULUS,
            ssrc=self.ssrc, payload=data,
        )
        self._seq = (self._seq + 1) & 0xFFFF
        sizes = (len(payload), len(motion), len(data) - len(payload))
        self.send_soon(packet.serialize(), lambda: self._sent(*sizes))

    def _sent(self, payload_bytes: int, motion_messages: int, motion_bytes: int) -> None:
        self.packets_sent += 1
        self.bytes_sent += payload_bytes
        if motion_messages:
            self.motion_packets_sent += 1
            self.motion_messages_sent += motion_messages
            self.motion_bytes_sent += motion_bytes

    # -- receiving --------------------------------------------------------------------------------
    async def _on_rtp(self, packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        if self.payload_type is None:
            self.payload_type = self.negotiated_payload_type()
        if not packet.payload or (self.payload_type is not None and packet.payload_type != self.payload_type):
            self.malformed += 1
            return
        opus = bytes(packet.payload)
        if packet.marker and self.on_motion is not None:
            try:
                riding = unpack_riding(opus)
            except AudioMotionError as exc:
                self.motion_malformed += 1
                if self.on_bad_motion is not None:
                    self.on_bad_motion(str(exc))
                return
            self.motion_packets_received += 1
            self.motion_messages_received += len(riding.messages)
            self.motion_bytes_received += prefix_bytes(riding.messages)
            opus = riding.opus
            for message in riding.messages:
                self.on_motion(message)
        self.packets_received += 1
        self.bytes_received += len(opus)
        if self.on_packet is not None:
            self.on_packet(AudioRtpPacket(packet.ssrc, packet.sequence_number, packet.timestamp, opus, time.time() * 1000.0))

    def counters(self) -> AudioRtpCounters:
        return AudioRtpCounters(
            self.packets_sent, self.bytes_sent, self.packets_received, self.bytes_received, self.malformed, self.send_errors,
            self.motion_packets_sent, self.motion_messages_sent, self.motion_bytes_sent, self.motion_packets_received,
            self.motion_messages_received, self.motion_bytes_received, self.motion_malformed,
        )
