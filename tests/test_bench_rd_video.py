"""RTP wire estimates and the PyAV video codecs of the rate-quality benchmark."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from bench import rtp
from bench.codecs.base import BenchClip
from bench.codecs.video import (VideoCodec, av1_sweep, codec_available, h264_sweep, vp8_sweep,
                                 vp9_sweep)
from bench.synthetic_clip import synthetic_talking_head


def test_annex_b_split_handles_3_and_4_byte_start_codes() -> None:
    stream = b"\x00\x00\x00\x01\x67\xaa\xbb" + b"\x00\x00\x01\x68\xcc" + b"\x00\x00\x00\x01\x65" + b"\x11" * 5
    assert rtp.split_annex_b(stream) == [b"\x67\xaa\xbb", b"\x68\xcc", b"\x65" + b"\x11" * 5]
    with pytest.raises(ValueError, match="expected a start code at byte 0, got '67420001'"):
        rtp.split_annex_b(b"\x67\x42\x00\x01")


def test_h264_small_nal_units_are_aggregated_into_one_stap_a() -> None:
    sps, pps, idr = b"\x67" + b"\x01" * 9, b"\x68" + b"\x02" * 3, b"\x65" + b"\x03" * 99
    frame = b"".join(b"\x00\x00\x00\x01" + nal for nal in (sps, pps, idr))
    packets = rtp.packetize(frame, rtp.H264)
    assert packets.payload_sizes == (1 + 2 + 10 + 2 + 4 + 2 + 100,) and packets.media_bytes == 114
    assert packets.wire_bytes == 121 + 50


def test_h264_large_nal_unit_is_fragmented_into_fu_a() -> None:
    nal = b"\x65" + bytes(3000)  # 3001 bytes: 3000 after the NAL header, 1198 per fragment
    packets = rtp.packetize(b"\x00\x00\x01" + nal, rtp.H264)
    assert packets.payload_sizes == (1200, 1200, 2 + 3000 - 2 * 1198)
    assert packets.wire_bytes == sum(packets.payload_sizes) + 3 * rtp.PER_PACKET_HEADER_BYTES


def test_vp8_vp9_descriptors() -> None:
    frame = bytes(2500)
    vp8 = rtp.packetize(frame, rtp.VP8)
    assert vp8.packets == math.ceil(2500 / 1196) and sum(vp8.payload_sizes) == 2500 + 4 * vp8.packets
    vp9_key = rtp.packetize(frame, rtp.VP9, keyframe=True)
    vp9 = rtp.packetize(frame, rtp.VP9)
    assert sum(vp9.payload_sizes) == 2500 + 3 * vp9.packets
    assert sum(vp9_key.payload_sizes) == sum(vp9.payload_sizes) + 5
    assert all(size <= rtp.MAX_RTP_PAYLOAD_BYTES for size in vp9_key.payload_sizes)


def test_av1_temporal_delimiters_are_dropped() -> None:
    temporal_delimiter = b"\x12\x00"
    frame_obu = b"\x32\x83\x01" + bytes(131)  # OBU_FRAME, has_size, LEB128 size 131
    packets = rtp.packetize(temporal_delimiter + frame_obu, rtp.AV1)
    assert packets.payload_sizes == (1 + len(frame_obu),)
    with pytest.raises(ValueError, match="claims 131 bytes"):
        rtp.packetize(temporal_delimiter + frame_obu[:-1], rtp.AV1)


def test_unknown_format_and_empty_frame_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown RTP payload format 'h265'"):
        rtp.packetize(b"\x00", "h265")
    with pytest.raises(ValueError, match="empty frame"):
        rtp.packetize(b"", rtp.VP8)


@pytest.fixture(scope="module")
def small_clip() -> BenchClip:
    return BenchClip("synthetic", "synthetic", 25.0, synthetic_talking_head(8, 64))


def _first_point(sweep: list[VideoCodec]) -> VideoCodec:
    return sweep[0]


@pytest.mark.parametrize(
    "codec", [_first_point(h264_sweep()), _first_point(vp8_sweep((300,))), _first_point(vp9_sweep((300,))),
              _first_point(av1_sweep((30,)))],
    ids=lambda c: c.codec,
)
def test_video_codec_round_trip(codec: VideoCodec, small_clip: BenchClip) -> None:
    if not codec_available(codec.codec):
        pytest.skip(f"this PyAV build has no {codec.encoder}/{codec.decoder}")
    policy = os.sched_getscheduler(0) if hasattr(os, "sched_getscheduler") else None
    info, reconstruction = codec.run(small_clip)
    if policy is not None:  # SVT-AV1 run as root leaves its caller SCHED_FIFO 99 unless restored
        assert os.sched_getscheduler(0) == policy, f"{codec.encoder} left this thread's scheduling policy changed"
    assert reconstruction.shape == (7, 64, 64, 3) and reconstruction.dtype == np.uint8
    assert info.start_payload_bytes > 0 and info.payload_bytes > 0
    assert info.wire_bytes >= info.payload_bytes + info.packets * rtp.PER_PACKET_HEADER_BYTES
    assert info.packets >= 7
    assert info.encode_ms.shape == info.decode_ms.shape == (7,)
    assert np.all(info.encode_ms > 0) and np.all(info.decode_ms >= 0)
    err = reconstruction.astype(np.float64) - small_clip.frames[1:]
    psnr = 10 * np.log10(255.0**2 / np.mean(err**2))
    assert psnr > 28.0, f"{codec.name}: PSNR {psnr:.1f} dB at a high-quality setting"
    assert "zerolatency" in codec.setting or "realtime" in codec.setting or "low-delay" in codec.setting  # no lookahead
    _, some = codec.run(small_clip, np.array([0, 6]))
    assert np.array_equal(some, reconstruction[[0, 6]])


@pytest.mark.skipif(not codec_available("av1"), reason="this PyAV build lacks SVT-AV1 or dav1d")
def test_low_resolution_av1_codes_small_pictures_and_shows_them_at_the_crops_size() -> None:
    frames = synthetic_talking_head(8, 128, seed=3)  # (8, 128, 128, 3)
    clip = BenchClip("synthetic", "synthetic", 25.0, frames)
    full, small = av1_sweep((48,))[0], av1_sweep((48,), coded_size=32)[0]
    assert small.codec == "av1-32" and small.params()["coded_size"] == 32 and "32²" in small.setting
    full_info, _ = full.run(clip)
    small_info, shown = small.run(clip)
    assert shown.shape == (7, 128, 128, 3) and shown.dtype == np.uint8  # upscaled back to the crop
    assert small_info.payload_bytes < full_info.payload_bytes
    error = np.abs(shown.astype(np.int16) - frames[1:].astype(np.int16)).mean()
    assert error < 20  # the same face, blurred: not garbage
    with pytest.raises(ValueError, match="exceeds the crops"):
        av1_sweep((48,), coded_size=256)[0].run(clip)
    with pytest.raises(ValueError, match="at least 16"):
        VideoCodec("av1", "qp48", {}, coded_size=8)
