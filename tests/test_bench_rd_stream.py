"""Our codec's transport in the benchmark: motion stream simulation, data-channel sizes, reference message."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.codecs.datachannel import (
    DATA_CHANNEL_PACKET_OVERHEAD_BYTES,
    SCTP_USERDATA_MAX_BYTES,
    data_channel_packets,
    data_channel_wire_bytes,
)
from bench.codecs.motion_stream import stream_motion
from bench.codecs.reference import send_reference
from bench.synthetic_clip import synthetic_talking_head
from codec.motion import MotionParams
from codec.quantize import get_preset
from codec.synthetic_trace import synthetic_trace


def test_data_channel_overhead_and_fragmentation() -> None:
    assert DATA_CHANNEL_PACKET_OVERHEAD_BYTES == 12 + 16 + 13 + 24 + 8 + 20
    assert SCTP_USERDATA_MAX_BYTES == 1160
    assert data_channel_wire_bytes(10) == 93 + 12  # padded to 4
    assert data_channel_wire_bytes(12) == 93 + 12
    assert data_channel_packets(1160) == 1 and data_channel_packets(1161) == 2
    assert data_channel_wire_bytes(1161) == 2 * 93 + 1160 + 4
    with pytest.raises(ValueError, match="got -1"):
        data_channel_wire_bytes(-1)


@pytest.mark.parametrize("frames_per_packet", [1, 3])
def test_stream_decodes_every_frame_to_the_quantized_motion(frames_per_packet: int) -> None:
    motions = synthetic_trace(num_frames=40, fps=25.0, num_keypoints=20, seed=1)
    preset = get_preset("default")
    result = stream_motion(motions, 25.0, preset.preset_id, frames_per_packet, None)
    assert len(result.decoded) == 40
    assert len(result.packets) == math.ceil(40 / frames_per_packet)
    for sent, got in zip(motions, result.decoded):
        expected = preset.dequantize(preset.quantize(sent))
        diff = expected.max_abs_difference(got)
        assert max(diff.values()) < 1e-6
    # The first packets are KEYs (no ack yet), later ones DELTAs: the stream gets cheaper.
    assert 1 <= result.key_packets < len(result.packets)
    assert np.mean(result.packets[-5:]) < result.packets[0]
    assert result.feedback_bytes > 0
    assert result.pack_ms.shape == result.unpack_ms.shape == (40,)


def test_stream_sends_only_k_keypoints() -> None:
    motions = synthetic_trace(num_frames=10, fps=25.0, num_keypoints=20, seed=2)
    full = stream_motion(motions, 25.0, 2, 1, None)
    five = stream_motion(motions, 25.0, 2, 1, 5)
    none = stream_motion(motions, 25.0, 2, 1, 0)
    assert all(int(m.present.sum()) == 5 for m in five.decoded)
    assert all(not m.present.any() and not m.expression.any() for m in none.decoded)
    assert sum(none.packets) < sum(five.packets) < sum(full.packets)


def test_the_keypoints_sent_are_chosen_causally_as_the_sender_does() -> None:
    """At K < 20 the stream sends what the sender would have chosen from the frames so far: keypoints that only
    start to move late in the clip are not sent from its first frame (no peeking at the future)."""
    count, fps = 200, 25.0
    base = synthetic_trace(num_frames=count, fps=fps, num_keypoints=20, seed=3)
    motions = []
    for i, m in enumerate(base):
        expression = np.zeros_like(m.expression)
        expression[[0, 1] if i < 50 else [7, 9]] = 0.3  # early movers, then late movers
        motions.append(MotionParams(m.yaw, m.pitch, m.roll, m.translation, expression, m.present))
    stream = stream_motion(motions, fps, 2, 1, 2)
    sent = [set(np.flatnonzero(m.present).tolist()) for m in stream.decoded]
    assert sent[0] == {0, 1}  # all the sender had seen
    assert sent[-1] == {7, 9}  # revised once they strayed for long enough
    switch = next(i for i, s in enumerate(sent) if s == {7, 9})
    assert switch >= 50 and stream.keypoint_choices == 2


def test_reference_crosses_as_its_message() -> None:
    image = synthetic_talking_head(1, 128)[0]
    sent = send_reference(image)
    assert sent.image.shape == image.shape and sent.image.dtype == np.uint8
    assert 0 < np.abs(sent.image.astype(int) - image).mean() < 3  # JPEG: close, not identical
    assert sent.payload_bytes > 1000
    assert sent.wire_bytes == data_channel_wire_bytes(sent.payload_bytes)


def test_motion_messages_cost_rtp_overhead_and_large_ones_the_data_channel() -> None:
    from bench.codecs.motion_transport import RTP_MOTION_OVERHEAD_BYTES, motion_packets, motion_wire_bytes
    from signaling.rtp_motion import MAX_RTP_PAYLOAD_BYTES

    assert RTP_MOTION_OVERHEAD_BYTES == 12 + 10 + 8 + 20
    assert motion_wire_bytes(19) == 19 + 50 and motion_wire_bytes(19, srtp_tag_bits=32) == 19 + 44
    assert motion_wire_bytes(MAX_RTP_PAYLOAD_BYTES) == MAX_RTP_PAYLOAD_BYTES + 50 and motion_packets(MAX_RTP_PAYLOAD_BYTES) == 1
    big = MAX_RTP_PAYLOAD_BYTES + 1  # a key picture's bundle: the sender puts it on the data channel
    assert motion_wire_bytes(big) == data_channel_wire_bytes(big) and motion_packets(big) == data_channel_packets(big) == 2


def test_riding_messages_cost_their_prefix_and_too_large_ones_go_alone() -> None:
    from bench.codecs.motion_transport import RIDING_OPUS_BYTES, motion_wire_bytes, riding_wire_bytes
    from signaling.audio_motion import MAX_RIDE_BYTES, pack_riding

    assert riding_wire_bytes(0) == 0
    for size in (19, 127, 128, 600):  # the count byte, the varint length (1 B below 128, 2 from 128) and the message
        assert riding_wire_bytes(size) == len(pack_riding([bytes(size)], bytes(RIDING_OPUS_BYTES))) - RIDING_OPUS_BYTES
    biggest = MAX_RIDE_BYTES - RIDING_OPUS_BYTES - 3  # count + 2-byte length + message + Opus = MAX_RIDE_BYTES
    assert riding_wire_bytes(biggest) == biggest + 3
    assert riding_wire_bytes(biggest + 1) == motion_wire_bytes(biggest + 1)  # cannot ride: its own packet
    with pytest.raises(ValueError):
        riding_wire_bytes(-1)
