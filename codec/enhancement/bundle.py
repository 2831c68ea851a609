"""The frame bundle: one frame's motion packet and its enhancement picture in one data-channel message.

At one frame per packet each frame's enhancement bytes ride in the same message as that frame's motion
packet: aiortc does not bundle SCTP chunks, so a separate message would cost ~93 more bytes a frame on
the wire. A plain motion packet (first byte 0xA_, ``codec.bitstream``) is unchanged, so a stream
without the layer looks exactly as before; ``is_bundle`` tells the two apart by the first byte.

Layout (version 1; varint = LEB128, minimal length)::

    byte 0     0xB1                              magic nibble 0xB, version 1
    varint     L, the motion packet's length     1 .. MAX_MOTION_BYTES
    L bytes    the motion packet (``codec.bitstream`` layout, first byte 0xA_)
    u8         flags: bit 0 = the picture is an AV1 key frame; bits 2-1 = the picture interval - 1
               (a picture rides with every N-th frame, N = 1..4, ``codec.enhancement.picture_rate``: the
               frames from the picture before in the same AV1 stream, which is the rung's N except for the
               first picture after a shorter N was chosen; a key picture says the rung's N);
               bits 7-3 reserved, 0
    varint     M, the picture's length           1 .. MAX_PICTURE_BYTES
    M bytes    the picture's AV1 data (``codec.enhancement.lowres_codec`` payload)

The message ends exactly after the picture. ``unpack_bundle`` checks the framing only; the motion
packet and the AV1 data are parsed by their own decoders.

Readers: a receiver announces the bundles it reads in its ``capabilities`` message (``frame_bundle``):
1 = the layout above with the interval bits 0 (every frame a picture), 2 = with the interval bits too
(``READER_VERSION``). A sender sends an interval above 1 only to a reader of 2: a reader of 1 would drop
the whole bundle, motion included, on the "reserved" bits.

    message = pack_bundle(motion_packet, picture, key=True, interval=3)
    bundle = unpack_bundle(message)          # BundleError (a BitstreamError) for anything malformed
"""

from __future__ import annotations

from dataclasses import dataclass

from codec.exceptions import BitstreamError
from codec.varint import VarintError, get_varint, put_varint

BUNDLE_MAGIC = 0xB1  # magic nibble 0xB, version 1
MOTION_MAGIC_NIBBLE = 0xA  # codec.bitstream's packets start with 0xA_
FLAG_KEY = 0x01
INTERVAL_SHIFT, INTERVAL_MASK = 1, 0x06  # flags bits 2-1: picture interval - 1
RESERVED_FLAGS = 0xF8
MAX_INTERVAL = 4
READER_VERSION = 2  # what this build's receivers announce (capabilities.frame_bundle): interval bits read
INTERVAL_READER_VERSION = 2  # the lowest announced version an interval above 1 may be sent to
MAX_MOTION_BYTES = 4096
MAX_PICTURE_BYTES = 65536
_MAX_VARINT_BYTES = 3  # 65536 < 2^21
MAX_BUNDLE_BYTES = 1 + _MAX_VARINT_BYTES + MAX_MOTION_BYTES + 1 + _MAX_VARINT_BYTES + MAX_PICTURE_BYTES


class BundleError(BitstreamError):
    """A frame-bundle message could not be parsed (the message is dropped, motion and picture alike)."""


@dataclass(frozen=True)
class FrameBundle:
    """One frame's motion packet and its enhancement picture, as they travel together."""

    motion_packet: bytes  # codec.bitstream motion packet of exactly this frame
    picture: bytes  # the frame's AV1 data (lowres_codec payload)
    key: bool  # the picture is an AV1 key frame (a fresh decoder can start from it)
    interval: int = 1  # the sender sends a picture with every interval-th frame (the ones between carry none)


def is_bundle(message: bytes) -> bool:
    """True when ``message`` claims to be a frame bundle (its first byte is the magic); a plain motion
    packet, an empty or a text message is not one. Says nothing about whether it parses."""
    return isinstance(message, (bytes, bytearray, memoryview)) and len(message) > 0 and message[0] == BUNDLE_MAGIC


def _get_varint(buf: bytes, pos: int, what: str, max_value: int) -> tuple[int, int]:
    try:
        value, end = get_varint(buf, pos, _MAX_VARINT_BYTES)
    except VarintError as exc:
        raise BundleError({
            "truncated": f"truncated frame bundle: the {what} varint at byte {pos} runs past the end ({len(buf)} bytes)",
            "non-minimal": f"non-minimal varint for the {what} at byte {pos} of the frame bundle",
            "too long": f"frame bundle {what} varint at byte {pos} is longer than {_MAX_VARINT_BYTES} bytes (over {max_value})",
        }[exc.problem]) from None
    if not 1 <= value <= max_value:
        raise BundleError(f"frame bundle {what} {value} is outside 1..{max_value}")
    return value, end


def pack_bundle(motion_packet: bytes, picture: bytes, key: bool, interval: int = 1) -> bytes:
    """The bundle message of one frame (layout in the module docstring); ValueError for parts that
    could not be unpacked again (empty, oversize, a motion packet without its 0xA_ magic, an interval outside 1..4)."""
    if not isinstance(interval, int) or not 1 <= interval <= MAX_INTERVAL:
        raise ValueError(f"picture interval {interval!r}: a bundle says 1..{MAX_INTERVAL} (a picture with every N-th frame)")
    motion_packet, picture = bytes(motion_packet), bytes(picture)
    if not 1 <= len(motion_packet) <= MAX_MOTION_BYTES:
        raise ValueError(f"motion packet of {len(motion_packet)} bytes: a bundle carries 1..{MAX_MOTION_BYTES}")
    if motion_packet[0] >> 4 != MOTION_MAGIC_NIBBLE:
        raise ValueError(f"first byte 0x{motion_packet[0]:02x} is not a motion packet's (0xA_): pass codec.bitstream's packet")
    if not 1 <= len(picture) <= MAX_PICTURE_BYTES:
        raise ValueError(f"enhancement picture of {len(picture)} bytes: a bundle carries 1..{MAX_PICTURE_BYTES} (raise the qp)")
    out = bytearray([BUNDLE_MAGIC])
    put_varint(out, len(motion_packet))
    out += motion_packet
    out.append((FLAG_KEY if key else 0) | (interval - 1) << INTERVAL_SHIFT)
    put_varint(out, len(picture))
    out += picture
    return bytes(out)


def unpack_bundle(message: bytes) -> FrameBundle:
    """Parse a bundle message; BundleError (quoting the bad value) for a wrong magic, a non-minimal or
    out-of-range length, reserved flag bits, a motion part without its 0xA_ magic, or lengths that do
    not fill the message exactly. Nothing else is raised for any bytes."""
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise BundleError(f"a frame bundle must be bytes, got {type(message).__name__}")
    buf = bytes(message)
    if not buf:
        raise BundleError("empty frame bundle")
    if len(buf) > MAX_BUNDLE_BYTES:
        raise BundleError(f"oversize frame bundle: {len(buf)} bytes > {MAX_BUNDLE_BYTES}")
    if buf[0] != BUNDLE_MAGIC:
        if buf[0] >> 4 == BUNDLE_MAGIC >> 4:
            raise BundleError(f"unsupported frame bundle version {buf[0] & 0x0F} (this build reads {BUNDLE_MAGIC & 0x0F})")
        raise BundleError(f"not a frame bundle: first byte 0x{buf[0]:02x}, expected 0x{BUNDLE_MAGIC:02x}")
    length, pos = _get_varint(buf, 1, "motion packet length", MAX_MOTION_BYTES)
    end = pos + length
    if end > len(buf):
        raise BundleError(f"truncated frame bundle: motion packet of {length} bytes but only {len(buf) - pos} remain")
    motion_packet = buf[pos:end]
    if motion_packet[0] >> 4 != MOTION_MAGIC_NIBBLE:
        raise BundleError(f"frame bundle's motion part starts with 0x{motion_packet[0]:02x}, not a motion packet (0xA_)")
    if end >= len(buf):
        raise BundleError(f"truncated frame bundle: no flags byte after the {length}-byte motion packet")
    flags = buf[end]
    if flags & RESERVED_FLAGS:
        raise BundleError(f"frame bundle flags 0x{flags:02x} set reserved bits (bit 0 is key, bits 2-1 the interval; 7-3 are reserved)")
    size, pos = _get_varint(buf, end + 1, "picture length", MAX_PICTURE_BYTES)
    if pos + size != len(buf):
        raise BundleError(
            f"frame bundle picture length {size} does not fill the message: {len(buf) - pos} bytes follow its length field"
        )
    return FrameBundle(motion_packet, buf[pos:], bool(flags & FLAG_KEY), ((flags & INTERVAL_MASK) >> INTERVAL_SHIFT) + 1)


__all__ = [
    "BUNDLE_MAGIC", "INTERVAL_READER_VERSION", "MAX_INTERVAL", "READER_VERSION", "MAX_MOTION_BYTES", "MAX_PICTURE_BYTES", "BundleError", "FrameBundle", "is_bundle", "pack_bundle",
    "unpack_bundle",
]
