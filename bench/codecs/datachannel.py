"""On-the-wire size of a WebRTC data-channel message: SCTP over DTLS over UDP over IPv4.

A message of L bytes is cut into SCTP DATA chunks of at most ``SCTP_USERDATA_MAX_BYTES`` (aiortc's
own limit, 1160); each chunk travels in its own SCTP packet (aiortc does not bundle chunks), which
travels in one DTLS record in one UDP datagram. Per packet (bytes):

    SCTP common header 12 + DATA chunk header 16 + user data padded to a multiple of 4
    DTLS 1.2 record header 13 + AES-128-GCM explicit nonce 8 + tag 16
        (ECDHE-ECDSA-AES128-GCM-SHA256, the first suite aiortc offers and the one Chrome picks)
    UDP 8 + IPv4 20
    -> ``DATA_CHANNEL_PACKET_OVERHEAD_BYTES`` = 93, plus 0-3 bytes of padding
    (the same constant as ``python -m bench bitstream``: ``bench.bitstream.WIRE_OVERHEAD_BYTES``).

Not counted: the receiver's SCTP SACKs and our feedback messages (they flow the other way), as the
video codecs' RTCP is not counted either.
"""

from __future__ import annotations

import math

from aiortc.rtcsctptransport import USERDATA_MAX_LENGTH

SCTP_USERDATA_MAX_BYTES = USERDATA_MAX_LENGTH  # aiortc: 1160
IPV4_BYTES, UDP_BYTES = 20, 8
DTLS_RECORD_BYTES, GCM_NONCE_BYTES, GCM_TAG_BYTES = 13, 8, 16
SCTP_COMMON_BYTES, SCTP_DATA_CHUNK_BYTES = 12, 16
DATA_CHANNEL_PACKET_OVERHEAD_BYTES = (
    IPV4_BYTES + UDP_BYTES + DTLS_RECORD_BYTES + GCM_NONCE_BYTES + GCM_TAG_BYTES + SCTP_COMMON_BYTES + SCTP_DATA_CHUNK_BYTES
)  # 93


def data_channel_packets(message_bytes: int) -> int:
    """SCTP packets needed for one message of ``message_bytes`` bytes."""
    if message_bytes < 0:
        raise ValueError(f"message size must be ≥ 0, got {message_bytes}")
    return max(1, math.ceil(message_bytes / SCTP_USERDATA_MAX_BYTES))


def data_channel_wire_bytes(message_bytes: int) -> int:
    """IPv4 bytes that carry one data-channel message of ``message_bytes`` bytes."""
    packets = data_channel_packets(message_bytes)
    full, last = divmod(message_bytes, SCTP_USERDATA_MAX_BYTES)
    sizes = [SCTP_USERDATA_MAX_BYTES] * full + ([last] if last or not full else [])
    assert len(sizes) == packets
    return sum(DATA_CHANNEL_PACKET_OVERHEAD_BYTES + 4 * math.ceil(size / 4) for size in sizes)
