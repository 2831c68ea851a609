"""The frame bundle (``codec.enhancement.bundle``): exact layout, strict parsing, a seeded fuzz."""

from __future__ import annotations

import random

import pytest

from codec.enhancement.bundle import (
    MAX_MOTION_BYTES,
    MAX_PICTURE_BYTES,
    BundleError,
    FrameBundle,
    is_bundle,
    pack_bundle,
    unpack_bundle,
)
from codec.exceptions import BitstreamError
from codec.prediction import MotionPacketizer
from codec.synthetic_trace import synthetic_trace
from tests.test_bitstream_fuzz import mutate

MOTION = bytes([0xA1, 0x80, 0x05]) + bytes(range(10))  # any bytes starting 0xA_ (the bundle does not parse it)
PICTURE = bytes(range(200))


def test_layout_is_exact() -> None:
    message = pack_bundle(MOTION, PICTURE, key=True)
    # magic, L = 13 (one byte), motion, flags = key, M = 200 (0xC8 0x01), picture
    assert message == bytes([0xB1, 13]) + MOTION + bytes([0x01, 0xC8, 0x01]) + PICTURE
    assert unpack_bundle(message) == FrameBundle(MOTION, PICTURE, True)
    assert pack_bundle(MOTION, b"\x12", key=False) == bytes([0xB1, 13]) + MOTION + bytes([0x00, 0x01, 0x12])


def test_round_trip_at_the_limits_and_real_packets() -> None:
    big = bytes([0xA1]) + bytes(MAX_MOTION_BYTES - 1)
    for motion, picture, key in ((big, bytes(MAX_PICTURE_BYTES), False), (b"\xa1", b"\x00", True)):
        assert unpack_bundle(pack_bundle(motion, picture, key)) == FrameBundle(motion, picture, key)
    packetizer = MotionPacketizer(3, frames_per_packet=1)
    for i, motion in enumerate(synthetic_trace(5, 25.0)):
        packet = packetizer.push(motion, 40 * i)
        assert packet is not None
        bundle = unpack_bundle(pack_bundle(packet, PICTURE, key=i == 0))
        assert bundle.motion_packet == packet and bundle.key == (i == 0)


def test_the_picture_interval_rides_in_flag_bits_2_1() -> None:
    for interval in range(1, 5):
        message = pack_bundle(MOTION, PICTURE, key=interval == 2, interval=interval)
        assert message[1 + 1 + len(MOTION)] == (interval == 2) | (interval - 1) << 1
        assert unpack_bundle(message) == FrameBundle(MOTION, PICTURE, interval == 2, interval)
    assert pack_bundle(MOTION, PICTURE, key=True) == pack_bundle(MOTION, PICTURE, key=True, interval=1)  # version-1 readers' bundles
    for bad in (0, 5, 2.0):
        with pytest.raises(ValueError, match="picture interval"):
            pack_bundle(MOTION, PICTURE, key=False, interval=bad)  # type: ignore[arg-type]


def test_is_bundle_tells_plain_motion_packets_apart() -> None:
    assert is_bundle(pack_bundle(MOTION, PICTURE, False))
    assert not is_bundle(MOTION) and not is_bundle(b"") and not is_bundle("\xb1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (b"", "empty frame bundle"),
        (MOTION, "not a frame bundle: first byte 0xa1, expected 0xb1"),
        (bytes([0xB2, 1, 0xA1, 0, 1, 0]), "unsupported frame bundle version 2 (this build reads 1)"),
        (bytes([0xB1]), "truncated frame bundle: the motion packet length varint at byte 1 runs past the end (1 bytes)"),
        (bytes([0xB1, 0x00]), "frame bundle motion packet length 0 is outside 1..4096"),
        (bytes([0xB1, 0x81, 0x00, 0xA1, 0, 1, 0]), "non-minimal varint for the motion packet length at byte 1 of the frame bundle"),
        (bytes([0xB1, 0x81, 0x20]), "frame bundle motion packet length 4097 is outside 1..4096"),
        (bytes([0xB1, 0x80, 0x80, 0x80, 0x01]), "frame bundle motion packet length varint at byte 1 is longer than 3 bytes (over 4096)"),
        (bytes([0xB1, 5, 0xA1, 0]), "truncated frame bundle: motion packet of 5 bytes but only 2 remain"),
        (bytes([0xB1, 1, 0x51, 0, 1, 0]), "frame bundle's motion part starts with 0x51, not a motion packet (0xA_)"),
        (bytes([0xB1, 1, 0xA1]), "truncated frame bundle: no flags byte after the 1-byte motion packet"),
        (bytes([0xB1, 1, 0xA1, 0x08, 1, 0]), "frame bundle flags 0x08 set reserved bits (bit 0 is key, bits 2-1 the interval; 7-3 are reserved)"),
        (bytes([0xB1, 1, 0xA1, 0x00, 0]), "frame bundle picture length 0 is outside 1..65536"),
        (bytes([0xB1, 1, 0xA1, 0x00, 0x81, 0x80, 0x04]), "frame bundle picture length 65537 is outside 1..65536"),
        (bytes([0xB1, 1, 0xA1, 0x01, 3, 1, 2]), "frame bundle picture length 3 does not fill the message: 2 bytes follow its length field"),
        (bytes([0xB1, 1, 0xA1, 0x01, 1, 1, 2]), "frame bundle picture length 1 does not fill the message: 2 bytes follow its length field"),
    ],
)
def test_malformed_messages_are_rejected_with_exact_text(message: bytes, text: str) -> None:
    with pytest.raises(BundleError) as info:
        unpack_bundle(message)
    assert str(info.value) == text
    assert isinstance(info.value, BitstreamError)


def test_oversize_and_non_bytes_are_rejected() -> None:
    with pytest.raises(BundleError, match="oversize frame bundle"):
        unpack_bundle(bytes([0xB1]) + bytes(MAX_MOTION_BYTES + MAX_PICTURE_BYTES + 16))
    with pytest.raises(BundleError, match="must be bytes, got str"):
        unpack_bundle("\xb1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("motion", "picture", "text"),
    [
        (b"", PICTURE, "motion packet of 0 bytes"),
        (bytes([0xA1]) + bytes(MAX_MOTION_BYTES), PICTURE, "motion packet of 4097 bytes"),
        (b"\xb1\x00", PICTURE, "is not a motion packet's"),
        (MOTION, b"", "enhancement picture of 0 bytes"),
        (MOTION, bytes(MAX_PICTURE_BYTES + 1), "enhancement picture of 65537 bytes"),
    ],
)
def test_pack_refuses_what_could_not_be_unpacked(motion: bytes, picture: bytes, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        pack_bundle(motion, picture, key=False)


def test_fuzz_only_the_documented_error() -> None:
    """≥ 2000 seeded mutations of valid bundles: each parses to a consistent bundle or raises BundleError."""
    rng = random.Random(20261205)
    corpus = [
        pack_bundle(MOTION, PICTURE, True),
        pack_bundle(b"\xa1", b"\x00", False),
        pack_bundle(bytes([0xA1]) + bytes(range(200)), bytes(range(256)) * 3, False),
    ]
    parsed = rejected = 0
    for i in range(3000):
        message = mutate(rng, rng.choice(corpus))
        if i % 3 == 0:  # mutations of mutations reach deeper
            message = mutate(rng, message)
        try:
            bundle = unpack_bundle(message)
        except BundleError:
            rejected += 1
            continue
        parsed += 1
        assert pack_bundle(bundle.motion_packet, bundle.picture, bundle.key, bundle.interval) == message  # canonical: one message per bundle
    assert parsed + rejected == 3000 and rejected > 1000 and parsed > 50
