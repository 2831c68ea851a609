"""On-the-wire size of an encoded video frame sent over WebRTC: RTP packetization plus headers.

Each encoded frame is split into RTP packets the way libwebrtc's packetizers do (payload at most
``MAX_RTP_PAYLOAD_BYTES``), each packet carrying its codec's payload descriptor, then every packet
pays the fixed per-packet headers below. Constants (bytes):

    RTP fixed header 12 (RFC 3550), UDP 8, IPv4 20, SRTP authentication tag 10
    (AES_CM_128_HMAC_SHA1_80, RFC 3711)  ->  ``PER_PACKET_HEADER_BYTES`` = 50.

Not counted (so the video codecs are, if anything, favoured): RTP header extensions (libwebrtc adds
transport-wide sequence numbers, abs-send-time etc., typically 8-16 bytes a packet), RTCP, FEC,
retransmissions and padding probes.

Payload formats, as packetized here:
- H.264 (RFC 6184, packetization-mode=1): the Annex B stream is split at start codes into NAL units
  (start codes are not sent). Consecutive NAL units that fit together in one packet are aggregated
  into a STAP-A (1-byte STAP-A header, 2-byte size before each NAL unit); a NAL unit larger than a
  packet is fragmented into FU-A packets (its 1-byte NAL header is replaced by a 2-byte FU indicator
  and FU header in each fragment); other NAL units go alone (single NAL unit packet, no extra bytes).
- VP8 (RFC 7741): a 4-byte payload descriptor in every packet (required byte, X byte, 15-bit
  PictureID), as libwebrtc sends without temporal layers.
- VP9 (RFC 9628, non-flexible mode, one spatial and temporal layer): a 3-byte descriptor (required
  byte, 15-bit PictureID) in every packet, plus a 5-byte scalability structure (N_S/Y/G byte and
  one layer's width and height) in the first packet of a keyframe.
- AV1 (AV1 RTP specification v1.0): temporal delimiter OBUs are dropped; a 1-byte aggregation
  header per packet. OBUs travel without their size field but each OBU element except the last in
  a packet is preceded by a LEB128 length, so the OBU bytes are counted as emitted by the encoder
  (size fields included), which is the same up to a byte per OBU element.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from codec.enhancement.lowres_codec import strip_temporal_delimiters

RTP_HEADER_BYTES = 12
UDP_HEADER_BYTES = 8
IPV4_HEADER_BYTES = 20
SRTP_AUTH_TAG_BYTES = 10
PER_PACKET_HEADER_BYTES = RTP_HEADER_BYTES + UDP_HEADER_BYTES + IPV4_HEADER_BYTES + SRTP_AUTH_TAG_BYTES
MAX_RTP_PAYLOAD_BYTES = 1200

H264, VP8, VP9, AV1 = "h264", "vp8", "vp9", "av1"
PAYLOAD_FORMATS = (H264, VP8, VP9, AV1)

_STAP_A_HEADER_BYTES = 1
_STAP_A_NALU_SIZE_BYTES = 2
_FU_A_HEADER_BYTES = 2  # FU indicator + FU header, replacing the 1-byte NAL header
_VP8_DESCRIPTOR_BYTES = 4
_VP9_DESCRIPTOR_BYTES = 3
_VP9_SCALABILITY_STRUCTURE_BYTES = 5
_AV1_AGGREGATION_HEADER_BYTES = 1


@dataclass(frozen=True)
class RtpFrame:
    """One encoded frame as RTP packets: the codec's bytes carried, RTP payload sizes, IP packet bytes."""

    media_bytes: int  # the codec's own bytes that travel (no start codes, no temporal delimiters)
    payload_sizes: tuple[int, ...]  # RTP payload bytes of each packet (payload descriptor included)

    @property
    def packets(self) -> int:
        return len(self.payload_sizes)

    @property
    def wire_bytes(self) -> int:
        """IPv4 packet bytes: RTP payloads + RTP, UDP, IPv4 headers and the SRTP tag."""
        return sum(self.payload_sizes) + PER_PACKET_HEADER_BYTES * len(self.payload_sizes)


def split_annex_b(stream: bytes) -> list[bytes]:
    """H.264 Annex B byte stream -> NAL units without their start codes."""
    starts: list[tuple[int, int]] = []  # (start-code position, NAL position)
    i, n = 0, len(stream)
    while i + 3 <= n:
        if stream[i] == 0 and stream[i + 1] == 0 and stream[i + 2] == 1:
            code_at = i - 1 if i > 0 and stream[i - 1] == 0 else i
            starts.append((code_at, i + 3))
            i += 3
        else:
            i += 1
    if not starts or starts[0][0] != 0:
        raise ValueError(
            f"not an Annex B H.264 stream: expected a start code at byte 0, got {stream[:4].hex()!r}"
        )
    nals = []
    for k, (_, nal_at) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else n
        if end > nal_at:
            nals.append(stream[nal_at:end])
    return nals


def _h264_payloads(nals: list[bytes]) -> list[int]:
    sizes: list[int] = []
    aggregate: list[int] = []  # NAL sizes waiting to be sent together

    def flush() -> None:
        if len(aggregate) == 1:
            sizes.append(aggregate[0])
        elif aggregate:
            sizes.append(_STAP_A_HEADER_BYTES + sum(_STAP_A_NALU_SIZE_BYTES + s for s in aggregate))
        aggregate.clear()

    for nal in nals:
        size = len(nal)
        if size > MAX_RTP_PAYLOAD_BYTES:
            flush()
            body = size - 1  # the NAL header travels inside the FU header
            per_fragment = MAX_RTP_PAYLOAD_BYTES - _FU_A_HEADER_BYTES
            count = math.ceil(body / per_fragment)
            sizes.extend(_FU_A_HEADER_BYTES + min(per_fragment, body - k * per_fragment) for k in range(count))
            continue
        candidate = aggregate + [size]
        stap = _STAP_A_HEADER_BYTES + sum(_STAP_A_NALU_SIZE_BYTES + s for s in candidate)
        if len(candidate) > 1 and stap > MAX_RTP_PAYLOAD_BYTES:
            flush()
        aggregate.append(size)
    flush()
    return sizes


def _fragment(body: int, descriptor: int, first_extra: int = 0) -> list[int]:
    """Split ``body`` bytes into packets of at most MAX_RTP_PAYLOAD_BYTES with a per-packet descriptor."""
    sizes = []
    remaining = body
    first = True
    while remaining > 0 or first:
        header = descriptor + (first_extra if first else 0)
        take = min(remaining, MAX_RTP_PAYLOAD_BYTES - header)
        sizes.append(header + take)
        remaining -= take
        first = False
    return sizes


def av1_obus_without_temporal_delimiters(frame: bytes) -> int:
    """Bytes of an AV1 low-overhead-format temporal unit once its temporal delimiter OBUs are dropped (the
    enhancement layer's parser, ``codec.enhancement.lowres_codec``)."""
    return len(strip_temporal_delimiters(frame))


def packetize(frame: bytes, payload_format: str, keyframe: bool = False) -> RtpFrame:
    """RTP packet sizes of one encoded frame in the given payload format (see the module docstring)."""
    if not frame:
        raise ValueError("cannot packetize an empty frame (a dropped frame sends no packets)")
    media = len(frame)
    if payload_format == H264:
        nals = split_annex_b(frame)
        media = sum(len(nal) for nal in nals)
        sizes = _h264_payloads(nals)
    elif payload_format == VP8:
        sizes = _fragment(media, _VP8_DESCRIPTOR_BYTES)
    elif payload_format == VP9:
        sizes = _fragment(media, _VP9_DESCRIPTOR_BYTES, _VP9_SCALABILITY_STRUCTURE_BYTES if keyframe else 0)
    elif payload_format == AV1:
        media = av1_obus_without_temporal_delimiters(frame)
        sizes = _fragment(media, _AV1_AGGREGATION_HEADER_BYTES)
    else:
        raise ValueError(f"unknown RTP payload format {payload_format!r}; expected one of {PAYLOAD_FORMATS}")
    return RtpFrame(media, tuple(sizes))
