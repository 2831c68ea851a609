"""Motion packets as RTP between Python peers: ~50 bytes of headers a packet instead of a data channel's ~95.

A data-channel message pays SCTP (common header 12 + DATA chunk 16), a DTLS record (13 + AES-GCM nonce 8 +
tag 16), UDP 8 and IPv4 20, and the receiving SCTP returns a SACK (another ~93 bytes) for every one or two
packets. An RTP packet (RFC 3550) protected by SRTP pays its fixed header 12, the SRTP authentication tag
(10 bytes with AES_CM_128_HMAC_SHA1_80, the profile these links prefer; 4 with ``..._SHA1_32``) and UDP/IPv4
28, and nothing comes back for it. Motion is unordered, never retransmitted and its losses are concealed, so
RTP's unreliable datagrams are exactly the data channel's ``ordered=False, maxRetransmits=0`` without SCTP.

How a link carries it (``MotionRtpChannel``):

- negotiation: the offering sender adds one ``video`` transceiver (``sendrecv``, VP8 the only codec, so the
  payload type is known) next to its data channels; the answering receiver turns that transceiver to
  ``sendrecv`` before it answers (``prepare_answer``). Both ends thus hold each other's SSRC, and aiortc's RTP
  router hands this transceiver's packets to its receiver object, whose packet handler is replaced here: the
  payload goes to the callback as is (nothing reaches aiortc's VP8 depacketizer, jitter buffer or decoder);
- aiortc's own RTP sender of the transceiver is stopped once the link is up (``quiet``): it would send an RTCP
  sender report and SDES every 0.5-1.5 s (~118 bytes, ~1 kbps) for a stream it never carries. Packets go out
  through the DTLS transport's SRTP session directly, without header extensions;
- each packet: version 2, payload type of the negotiated codec, marker 1, sequence number +1 a packet,
  timestamp = the 90 kHz capture clock when given (else the send time), the transceiver's SSRC, and one whole
  message as payload (a motion packet or frame bundle one way, receiver feedback the other). A message larger
  than ``MAX_RTP_PAYLOAD_BYTES`` does not fit one datagram: ``fits`` says so and the caller sends it on the data
  channel instead;
- which transport carries a link's motion is the receiver's choice: it sends the control message
  ``motion_transport`` ("rtp") when it found the transceiver; a sender that never hears it (or an older one
  that rejects the message type) keeps the data channel, so both ends fall back without a renegotiation.

``prefer_srtp_profiles`` sets which SRTP protection profiles a peer connection's DTLS transport offers, before
the handshake: the shorter tag is what makes one frame per packet affordable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtcdtlstransport import SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM, SRTP_AES128_CM_SHA1_80, SRTPProtectionProfile
from aiortc.rtp import RtpPacket
from pylibsrtp import Policy

from codec.bitstream import unwrap_seq
from signaling.own_rtp import OwnRtpStream, add_transceiver

logger = logging.getLogger(__name__)

MOTION_RTP_KIND = "video"  # the media kind of the motion transceiver (the only video m-line of a sender->receiver link)
MOTION_RTP_CODEC = "video/VP8"  # negotiated only to agree on a payload type; never decoded
MAX_RTP_PAYLOAD_BYTES = 1200  # one datagram under a 1280-byte IPv6 minimum MTU with headers; larger goes by data channel
RTP_HEADER_BYTES = 12  # RFC 3550 fixed header, no CSRC, no extensions
UDP_IPV4_BYTES = 28
RTP_CLOCK_HZ = 90_000

SRTP_AES128_CM_SHA1_32 = SRTPProtectionProfile(
    libsrtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    openssl_profile=b"SRTP_AES128_CM_SHA1_32",
    key_length=16,
    salt_length=14,
)
SRTP_TAG_BYTES = {80: 10, 32: 4}  # RTP authentication tag of the preferred profile, by its tag bits
# What each preference puts first; the rest follow so that a peer that lacks the first still connects.
_PROFILES_BY_TAG_BITS: dict[int, list[SRTPProtectionProfile]] = {
    80: [SRTP_AES128_CM_SHA1_80, SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM],
    32: [SRTP_AES128_CM_SHA1_32, SRTP_AES128_CM_SHA1_80, SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM],
}


def rtp_packet_overhead_bytes(srtp_tag_bits: int = 80) -> int:
    """Bytes on the wire around one RTP payload: RTP header + SRTP tag + UDP + IPv4."""
    return RTP_HEADER_BYTES + SRTP_TAG_BYTES[srtp_tag_bits] + UDP_IPV4_BYTES


def prefer_srtp_profiles(pc: RTCPeerConnection, srtp_tag_bits: int) -> None:
    """Make ``pc``'s DTLS transports offer the SRTP profile with a ``srtp_tag_bits``-bit tag first (80 or 32).

    Call after the local (offerer) or remote (answerer) description created the transports and before the
    handshake (the answer's ``setLocalDescription``). Both ends of a link must prefer the same profile for it to
    be chosen; a peer that lacks it (a browser) negotiates the next one both share.
    """
    if srtp_tag_bits not in _PROFILES_BY_TAG_BITS:
        raise ValueError(f"SRTP tag of {srtp_tag_bits} bits: pick one of {sorted(_PROFILES_BY_TAG_BITS)}")
    profiles = list(_PROFILES_BY_TAG_BITS[srtp_tag_bits])
    for transceiver in pc.getTransceivers():
        transceiver.sender.transport._srtp_profiles = profiles  # noqa: SLF001 - aiortc reads it when the handshake starts
    if pc.sctp is not None:
        pc.sctp.transport._srtp_profiles = profiles  # noqa: SLF001


@dataclass(frozen=True)
class RtpCounters:
    """What one end of a motion RTP channel sent and received."""

    packets_sent: int
    bytes_sent: int  # RTP payload bytes
    packets_received: int
    bytes_received: int
    packets_lost: int  # sequence-number gaps never filled
    packets_reordered: int  # arrived after a later one (late, still delivered)
    packets_duplicate: int
    malformed: int  # empty payloads, or a payload type other than the negotiated one
    send_errors: int


class MotionRtpChannel(OwnRtpStream):
    """One link's motion stream as RTP on its video transceiver (see the module docstring).

    ``on_message(payload)`` gets every received payload, in arrival order. ``send`` queues a payload (after
    ``start``); sending never blocks and a failure is counted, not raised (as the motion data channel).
    """

    def __init__(self, transceiver: RTCRtpTransceiver, on_message: Callable[[bytes], None] | None = None) -> None:
        super().__init__(transceiver, MOTION_RTP_CODEC, "motion")
        self.on_message = on_message
        self.active = False  # sending allowed (the peer reads RTP); see start()
        self._seq = 0
        self._last_seq: int | None = None  # highest (extended) sequence number received
        self._seen: set[int] = set()  # recent extended sequence numbers (duplicates / reorder), bounded
        self.packets_sent = self.bytes_sent = 0
        self.packets_received = self.bytes_received = 0
        self.packets_reordered = self.packets_duplicate = self.malformed = 0
        self._expected_first: int | None = None
        self.handle(self._on_rtp)

    # -- negotiation ------------------------------------------------------------------------------
    @classmethod
    def offer(cls, pc: RTCPeerConnection, on_message: Callable[[bytes], None] | None = None) -> MotionRtpChannel:
        """The sender's side: add the motion transceiver to ``pc`` before its offer is created."""
        return cls(add_transceiver(pc, MOTION_RTP_KIND, MOTION_RTP_CODEC, "sendrecv"), on_message)

    @classmethod
    def prepare_answer(cls, pc: RTCPeerConnection, on_message: Callable[[bytes], None] | None = None) -> MotionRtpChannel | None:
        """The receiver's side, after the remote offer was applied and before the answer: the offer's video
        transceiver turned ``sendrecv`` (None when the offer has none: an older sender, motion stays on the data
        channel)."""
        videos = [t for t in pc.getTransceivers() if t.kind == MOTION_RTP_KIND and not t.stopped]
        if len(videos) != 1:
            if videos:
                logger.warning("the sender's offer has %d video m-lines (expected 1): motion stays on the data channel", len(videos))
            return None
        videos[0].direction = "sendrecv"
        return cls(videos[0], on_message)

    def start(self) -> bool:
        """Allow sending (the link is connected and the peer reads RTP); False when the transceiver was not
        negotiated (the peer rejected the m-line, or the link is not up yet)."""
        pt = self.negotiated_payload_type()
        if pt is None or self.transceiver.sender.transport is None or self.transceiver.currentDirection != "sendrecv":
            return False
        self.payload_type = pt
        self.quiet()
        self.active = True
        return True

    # -- sending ----------------------------------------------------------------------------------
    def send(self, payload: bytes, capture_ts_ms: float | None = None) -> None:
        if not self.active or self.payload_type is None:
            raise ConnectionError("the motion RTP channel is not started")
        if not fits(payload):
            raise ValueError(f"RTP payload of {len(payload)} bytes exceeds {MAX_RTP_PAYLOAD_BYTES}: send it on the data channel")
        ms = time.time() * 1000.0 if capture_ts_ms is None else capture_ts_ms
        packet = RtpPacket(
            payload_type=self.payload_type, marker=1, sequence_number=self._seq, timestamp=int(ms * (RTP_CLOCK_HZ // 1000)) & 0xFFFFFFFF,
            ssrc=self.ssrc, payload=payload,
        )
        self._seq = (self._seq + 1) & 0xFFFF
        self.send_soon(packet.serialize(), lambda size=len(payload): self._sent(size))

    def _sent(self, payload_bytes: int) -> None:
        self.packets_sent += 1
        self.bytes_sent += payload_bytes

    # -- receiving --------------------------------------------------------------------------------
    async def _on_rtp(self, packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        if not packet.payload or (self.payload_type is not None and packet.payload_type != self.payload_type):
            self.malformed += 1
            return
        self._count(packet.sequence_number)
        self.packets_received += 1
        self.bytes_received += len(packet.payload)
        if self.on_message is not None:
            self.on_message(bytes(packet.payload))

    def _count(self, seq16: int) -> None:
        extended = unwrap_seq(seq16, self._last_seq)  # RTP's sequence number is 16 bits, as the motion packets'
        if self._last_seq is None:
            self._last_seq = self._expected_first = extended
            self._seen.add(extended)
            return
        if extended in self._seen:
            self.packets_duplicate += 1
            return
        self._seen.add(extended)
        if extended < self._last_seq:
            self.packets_reordered += 1
        else:
            self._last_seq = extended
        if len(self._seen) > 4096:
            floor = self._last_seq - 2048
            self._seen = {s for s in self._seen if s >= floor}

    @property
    def packets_lost(self) -> int:
        if self._last_seq is None or self._expected_first is None:
            return 0
        expected = self._last_seq - self._expected_first + 1
        return max(0, expected - (self.packets_received - self.packets_duplicate))

    def counters(self) -> RtpCounters:
        return RtpCounters(
            self.packets_sent, self.bytes_sent, self.packets_received, self.bytes_received, self.packets_lost,
            self.packets_reordered, self.packets_duplicate, self.malformed, self.send_errors,
        )


def fits(payload: bytes) -> bool:
    """Whether ``payload`` fits one RTP packet of this channel."""
    return 0 < len(payload) <= MAX_RTP_PAYLOAD_BYTES
