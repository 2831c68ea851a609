"""On-the-wire size of one motion message as the call sends it between Python peers (``signaling.rtp_motion``).

A message that fits one RTP packet (≤ ``MAX_RTP_PAYLOAD_BYTES``, every motion packet and all but key-picture
bundles) travels as RTP: payload + RTP header 12 + SRTP tag 10 (AES_CM_128_HMAC_SHA1_80, what these links
prefer) + UDP 8 + IPv4 20 = payload + ``RTP_MOTION_OVERHEAD_BYTES`` (50; with ``--srtp-tag-bits 32``, 44). Larger
messages take the motion data channel (``bench.codecs.datachannel``), as the sender does. No header extension,
no RTCP (the transceiver's aiortc sender is stopped), no acknowledgement comes back for either.

Not counted, as for the video codecs' RTP: the receiver's feedback (one RTP packet a second) and the ICE
consent checks; ``bench call`` measures those.

In a call with sound the sender lets each message ride inside the audio's SRTP packets (``signaling.audio_motion``,
the default transport when the receiver plays the sender's audio): with the sender's default 40 ms Opus frames
there is one audio packet per frame at 25 fps, so a message costs itself plus the prefix (a count byte and its
varint length), ``riding_wire_bytes``. The audio packet and its headers are the sound's and sent anyway (the sound
is the same for every codec in such a call, so it is not counted for any); a message that would not fit beside a
``RIDING_OPUS_BYTES`` Opus packet goes alone, as above.
"""

from __future__ import annotations

from bench.codecs.datachannel import data_channel_packets, data_channel_wire_bytes
from signaling.audio_motion import fits, prefix_bytes
from signaling.rtp_motion import MAX_RTP_PAYLOAD_BYTES, rtp_packet_overhead_bytes

RTP_MOTION_OVERHEAD_BYTES = rtp_packet_overhead_bytes(80)  # 50
TRANSPORT = (
    f"RTP (SRTP AES_CM_128_HMAC_SHA1_80): payload + {RTP_MOTION_OVERHEAD_BYTES} B (RTP 12 + SRTP tag 10 + UDP 8 + IPv4 20) "
    f"for a message of ≤ {MAX_RTP_PAYLOAD_BYTES} B; larger ones on the data channel (93 B a packet + padding to 4)"
)


def motion_wire_bytes(message_bytes: int, srtp_tag_bits: int = 80) -> int:
    """IPv4 bytes that carry one motion message (a motion packet or frame bundle) of ``message_bytes``."""
    if message_bytes < 0:
        raise ValueError(f"message size must be ≥ 0, got {message_bytes}")
    if 0 < message_bytes <= MAX_RTP_PAYLOAD_BYTES:
        return message_bytes + rtp_packet_overhead_bytes(srtp_tag_bits)
    return data_channel_wire_bytes(message_bytes)


RIDING_OPUS_BYTES = 80  # an Opus packet at the sender's default 16 kbps and 40 ms frames
RIDING_TRANSPORT = (
    "riding the audio's SRTP packets (a call with sound, one message per 40 ms Opus packet): payload + 1 B count + "
    f"its varint length; a message that does not fit beside a {RIDING_OPUS_BYTES} B Opus packet goes alone as above"
)


def riding_wire_bytes(message_bytes: int) -> int:
    """IPv4 bytes one motion message adds to a call with sound, riding an audio packet (alone when it cannot)."""
    if message_bytes < 0:
        raise ValueError(f"message size must be ≥ 0, got {message_bytes}")
    if message_bytes == 0:
        return 0
    message = bytes(message_bytes)  # only its length matters
    if fits([message], RIDING_OPUS_BYTES):
        return prefix_bytes([message])
    return motion_wire_bytes(message_bytes)


def motion_packets(message_bytes: int) -> int:
    """Datagrams that carry one motion message."""
    return 1 if 0 < message_bytes <= MAX_RTP_PAYLOAD_BYTES else data_channel_packets(message_bytes)
