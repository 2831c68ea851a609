"""Motion riding inside the audio's RTP packets: a call with sound pays no packet headers for its face (issue 21).

Why: motion as its own RTP packet costs 50 bytes of headers (RTP 12, SRTP tag 10, UDP 8, IPv4 20) for a ~19-byte
payload; at 25 packets/s that is 10 kbps of headers for 3.7 kbps of motion, and no authenticated per-frame packet
over IPv4 gets below ~12.6 kbps. A call with audio already sends an Opus RTP packet every 20, 40 or 60 ms with those
headers paid; a motion message inside one costs its own bytes plus one or two of framing.

Negotiation (the receiver's choice, as for RTP motion): a receiver that plays the sender's audio, whose offer had both
the motion (video) and the audio transceiver, sends ``motion_transport`` "rtp" and then "rtp+audio". A sender that
knows the value (and runs ``--motion-transport rtp+audio``, the default) lets that link's motion ride; an older
sender rejects the unknown value (``error`` ``bad_message``) and a sender with ``--motion-transport rtp`` answers
``error`` ``no_audio_riding``: either way the link stays on plain RTP motion, which the first message started.

Format. The motion must be encrypted like the sound, so it goes in the SRTP *payload* (header extensions are sent in
clear by SRTP). An audio RTP packet with the **marker bit set** carries, before its Opus packet::

    u8      n                       1..MAX_MESSAGES motion messages
    n × (   varint L                1..MAX_RIDE_BYTES, minimal LEB128
            L bytes                 one motion message: exactly what an RTP motion packet's payload would be
                                    (a motion packet or a frame bundle) )
    rest                            the Opus packet, unchanged (≥ 1 byte)

Marker 0 is a plain Opus packet, as before. The whole payload stays within ``MAX_RIDE_BYTES`` (one datagram, as for
RTP motion): a message that would not fit never rides. The 48 kHz RTP timestamp stays the audio's; each motion
packet carries its frames' own capture times, so nothing of the motion's 90 kHz timestamp is lost. The receiver
splits the payload (``unpack_riding``): each message goes where RTP motion goes, the Opus bytes to the audio
playout. A prefix that does not parse is an ``AudioMotionError`` (counted like a rejected motion packet); the
packet is then dropped whole, its sound included, since where the Opus bytes begin is unknown. Marker 1 from a
sender the receiver never asked is the RTP talkspurt marker of RFC 7587 and is read as plain Opus.

Scheduling (``sender.motion_rider``): a motion message waits for the link's next audio packet only when that packet
is due within ``motion_wait_ms``, and an audio packet waits for the next motion message only when that one is due
within ``audio_hold_ms``; otherwise each goes at once on its own (motion as its own RTP packet, as before). So the
motion's latency grows by at most its wait budget, the sound's by at most its hold (hidden where the receiver delays
the sound to the face anyway, which it does whenever rendering takes longer than the audio's own path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from codec.varint import VarintError, get_varint, put_varint

MAX_MESSAGES = 4  # motion messages one audio packet carries at most
MAX_RIDE_BYTES = 1200  # the whole RTP payload (prefix + Opus), as signaling.rtp_motion.MAX_RTP_PAYLOAD_BYTES
_MAX_VARINT_BYTES = 2  # 1200 < 2**14


class AudioMotionError(ValueError):
    """An audio packet's motion prefix that does not parse; the message says where and how."""


@dataclass(frozen=True)
class RidingPayload:
    """An audio RTP payload with the marker set, split."""

    messages: tuple[bytes, ...]  # the motion messages, in the order sent
    opus: bytes  # the Opus packet

    @property
    def prefix_bytes(self) -> int:
        return prefix_bytes(self.messages)


def prefix_bytes(messages: Sequence[bytes]) -> int:
    """Bytes the prefix of ``messages`` adds to an Opus packet: the count and each length and message."""
    return 1 + sum(_varint_bytes(len(m)) + len(m) for m in messages)


def fits(messages: Sequence[bytes], opus_bytes: int) -> bool:
    """Whether ``messages`` can ride an Opus packet of ``opus_bytes`` (count, sizes and the whole payload)."""
    return 1 <= len(messages) <= MAX_MESSAGES and all(messages) and prefix_bytes(messages) + opus_bytes <= MAX_RIDE_BYTES


def pack_riding(messages: Sequence[bytes], opus: bytes) -> bytes:
    """The payload of an audio packet (marker 1) carrying ``messages`` before ``opus``; ValueError when it cannot."""
    if not opus:
        raise ValueError("an empty Opus packet cannot carry motion")
    if not 1 <= len(messages) <= MAX_MESSAGES:
        raise ValueError(f"{len(messages)} motion messages in one audio packet: it carries 1..{MAX_MESSAGES}")
    if not all(messages):
        raise ValueError("an empty motion message cannot ride")
    if not fits(messages, len(opus)):
        raise ValueError(f"motion of {prefix_bytes(messages)} bytes with {len(opus)} bytes of Opus exceeds {MAX_RIDE_BYTES}: "
                         "send it as its own RTP packet")
    out = bytearray([len(messages)])
    for message in messages:
        put_varint(out, len(message))
        out += message
    out += opus
    return bytes(out)


def unpack_riding(payload: bytes) -> RidingPayload:
    """Split an audio payload whose packet had the marker set (layout in the module docstring); AudioMotionError
    naming the problem otherwise."""
    if not payload:
        raise AudioMotionError("empty audio payload with the marker set: no motion count")
    if len(payload) > MAX_RIDE_BYTES:
        raise AudioMotionError(f"audio payload of {len(payload)} bytes with motion exceeds {MAX_RIDE_BYTES}")
    count = payload[0]
    if not 1 <= count <= MAX_MESSAGES:
        raise AudioMotionError(f"motion count {count} in an audio packet is outside 1..{MAX_MESSAGES}")
    pos = 1
    messages = []
    for index in range(count):
        try:
            length, pos = get_varint(payload, pos, _MAX_VARINT_BYTES)
        except VarintError as exc:
            raise AudioMotionError(f"motion message {index + 1} of {count}: length varint at byte {pos} is {exc.problem}") from None
        if length == 0:
            raise AudioMotionError(f"motion message {index + 1} of {count} has length 0")
        if pos + length > len(payload):
            raise AudioMotionError(f"motion message {index + 1} of {count} ({length} bytes at byte {pos}) runs past the end "
                                   f"of the {len(payload)}-byte audio payload")
        messages.append(bytes(payload[pos:pos + length]))
        pos += length
    if pos >= len(payload):
        raise AudioMotionError(f"no Opus packet after {count} motion message(s) ({len(payload)} bytes, all prefix)")
    return RidingPayload(tuple(messages), bytes(payload[pos:]))


def _varint_bytes(value: int) -> int:
    n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n
