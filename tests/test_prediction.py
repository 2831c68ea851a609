"""codec.prediction: sender/receiver state machines under loss, reordering, duplication, restarts."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.bitstream import Feedback, pack_feedback, unpack_feedback, unpack_header
from codec.motion import MotionParams
from codec.prediction import DecodedFrame, MotionDepacketizer, MotionPacketizer
from codec.quantize import PRESETS
from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms
from tests.test_quantize import motion_strategy

TRACE = synthetic_trace(240, 25.0, num_keypoints=20, seed=2)
STAMPS = trace_timestamps_ms(240, 25.0)


def grid(motion: MotionParams, preset_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = PRESETS[preset_id].quantize(motion)
    return q.angles, q.translation, q.expression


def assert_exact(frame: DecodedFrame, sent: MotionParams, preset_id: int) -> None:
    """The decoded frame is the sender's quantized value, so within step/2 of what was sent."""
    want = grid(sent.with_present(frame.motion.present), preset_id)
    got = grid(frame.motion, preset_id)
    for a, b in zip(want, got):
        assert np.array_equal(a, b), f"frame {frame.seq} decodes to a different value"
    err = sent.with_present(frame.motion.present).max_abs_difference(frame.motion)
    bounds = PRESETS[preset_id].error_bounds
    for name, value in err.items():
        assert value <= bounds[name] + 1e-6, (name, value)


def simulate(
    seed: int,
    fpp: int,
    loss: float,
    max_delay: int,
    duplicate: float = 0.0,
    feedback_delay: int = 2,
    preset_id: int = 2,
    key_interval: int = 50,
    frames: int = 240,
    restart_receiver_at: int | None = None,
) -> tuple[MotionPacketizer, MotionDepacketizer, list[DecodedFrame], set[int]]:
    """Stream TRACE through a lossy, reordering, duplicating channel with delayed feedback."""
    rng = random.Random(seed)
    sender = MotionPacketizer(5, preset_id, fpp, key_interval)
    receiver = MotionDepacketizer()
    channel: list[tuple[int, float, bytes]] = []
    feedback: list[tuple[int, bytes]] = []
    out: list[DecodedFrame] = []
    delivered: set[int] = set()  # sequence numbers of frames in packets that arrived
    for i in range(frames):
        if i == restart_receiver_at:
            receiver = MotionDepacketizer()
        packet = sender.push(TRACE[i], STAMPS[i])
        if packet is not None:
            copies = 0 if rng.random() < loss else (2 if rng.random() < duplicate else 1)
            for _ in range(copies):
                channel.append((i + rng.randint(0, max_delay), rng.random(), packet))
        due = sorted(c for c in channel if c[0] <= i)
        for item in due:
            channel.remove(item)
            delivered.update(unpack_header(item[2]).seqs)
            out += receiver.receive(item[2])
            fb = receiver.feedback()
            assert fb is not None
            feedback.append((i + feedback_delay, pack_feedback(fb)))
        for item in [f for f in feedback if f[0] <= i]:
            feedback.remove(item)
            sender.on_feedback(unpack_feedback(item[1]))
    return sender, receiver, out, delivered


@given(
    st.integers(0, 10_000),
    st.sampled_from([1, 2, 3]),
    st.floats(0.0, 0.6),
    st.integers(0, 6),
    st.floats(0.0, 0.3),
    st.sampled_from(sorted(PRESETS)),
)
@settings(max_examples=50, deadline=None)
def test_every_output_frame_is_exact_under_loss_and_reordering(
    seed: int, fpp: int, loss: float, max_delay: int, duplicate: float, preset_id: int
) -> None:
    _, receiver, out, delivered = simulate(seed, fpp, loss, max_delay, duplicate, preset_id=preset_id, frames=120)
    seqs = [f.seq for f in out]
    assert seqs == sorted(set(seqs)), "frames come out once, in increasing order"
    for frame in out:
        assert frame.seq in delivered, "a frame that never arrived was output"
        assert frame.stream_id == 5 and frame.capture_ts_ms == STAMPS[frame.seq]
        assert_exact(frame, TRACE[frame.seq], preset_id)


@given(
    st.lists(motion_strategy(max_k=24), min_size=1, max_size=12),
    st.sampled_from(sorted(PRESETS)),
    st.integers(1, 4),
    st.integers(0, 65535),
)
@settings(max_examples=60, deadline=None)
def test_random_motion_round_trips_within_half_step(
    motions: list[MotionParams], preset_id: int, fpp: int, initial_seq: int
) -> None:
    """Arbitrary in-range MotionParams (K and present mask changing per frame) through both ends."""
    sender = MotionPacketizer(9, preset_id, fpp, key_interval_frames=5, initial_seq=initial_seq)
    receiver = MotionDepacketizer()
    out: list[DecodedFrame] = []
    for i, motion in enumerate(motions):
        packet = sender.push(motion, 1000 + 33 * i)
        if packet is not None:
            out += receiver.receive(packet)
            sender.on_feedback(receiver.feedback())  # type: ignore[arg-type]
    packet = sender.flush()
    if packet is not None:
        out += receiver.receive(packet)
    assert [f.seq for f in out] == [(initial_seq + i) % 65536 for i in range(len(motions))]
    bounds = PRESETS[preset_id].error_bounds
    for frame, sent in zip(out, motions):
        assert np.array_equal(frame.motion.present, sent.present)
        assert frame.capture_ts_ms == 1000 + 33 * ((frame.seq - initial_seq) % 65536)
        err = sent.max_abs_difference(frame.motion)
        assert err["angles_deg"] <= bounds["angles_deg"] * (1 + 1e-9)
        assert err["translation"] <= bounds["translation"] + 4 * 2.0**-24
        assert err["expression"] <= bounds["expression"] + 2 * 2.0**-24


def test_no_loss_decodes_everything_and_keys_follow_the_interval() -> None:
    sender, receiver, out, _ = simulate(1, 2, 0.0, 0, key_interval=50)
    assert [f.seq for f in out] == list(range(240))
    fb = receiver.feedback()
    assert fb is not None and fb.frames_lost == 0 and fb.frames_undecodable == 0 and fb.acked_seq == 239
    # KEYs until the first ack arrives (frames 0-1 and 2-3: feedback lags 2 frames), then one
    # 50 frames after the last KEY: at frames 52, 102, 152 and 202.
    assert sender.key_packets_sent == 6
    for frame in out:
        assert_exact(frame, TRACE[frame.seq], 2)


def test_heavy_loss_still_recovers_and_counts_losses() -> None:
    sender, receiver, out, delivered = simulate(3, 1, 0.5, 3, key_interval=0)
    assert len(out) > 60
    fb = receiver.feedback()
    assert fb is not None and fb.frames_lost > 0
    assert fb.frames_received == len(delivered)  # counted from the first frame seen, like RTCP
    assert fb.frames_received + fb.frames_lost == max(delivered) - min(delivered) + 1


def test_nothing_decodes_from_a_lost_reference() -> None:
    sender = MotionPacketizer(1, 2, 1, key_interval_frames=0)
    receiver = MotionDepacketizer()
    p0 = sender.push(TRACE[0], STAMPS[0])
    assert p0 is not None and receiver.receive(p0)[0].key
    fb = receiver.feedback()
    assert fb is not None and fb.acked_seq == 0
    sender.on_feedback(fb)
    p1 = sender.push(TRACE[1], STAMPS[1])  # DELTA from frame 0
    assert p1 is not None and unpack_header(p1).reference_seq == 0
    # A receiver that never saw frame 0 must not decode frame 1, and asks for a KEY.
    fresh = MotionDepacketizer()
    assert fresh.receive(p1) == []
    fb2 = fresh.feedback()
    assert fb2 is not None and fb2.key_request_after == 1 and fb2.frames_undecodable == 1 and fb2.acked_seq is None
    sender.on_feedback(fb2)
    p2 = sender.push(TRACE[2], STAMPS[2])
    assert p2 is not None and unpack_header(p2).key
    frames = fresh.receive(p2)
    assert [f.seq for f in frames] == [2]
    assert fresh.feedback() == Feedback(1, 2, 0, None, 2, 0, 1)


def test_key_request_is_not_repeated_while_a_key_is_in_flight() -> None:
    sender = MotionPacketizer(1, 2, 1, key_interval_frames=0)
    receiver = MotionDepacketizer()
    receiver.receive(sender.push(TRACE[0], STAMPS[0]) or b"")
    sender.on_feedback(receiver.feedback())  # type: ignore[arg-type]
    sender.on_feedback(Feedback(1, None, key_request_after=0))
    assert unpack_header(sender.push(TRACE[1], STAMPS[1]) or b"").key  # KEY at seq 1
    sender.on_feedback(Feedback(1, None, key_request_after=0))  # stale: the KEY at 1 is newer
    sender.on_feedback(Feedback(1, 1))
    assert not unpack_header(sender.push(TRACE[2], STAMPS[2]) or b"").key
    sender.on_feedback(Feedback(1, None, key_request_after=2))  # the KEY was lost: ask again
    assert unpack_header(sender.push(TRACE[3], STAMPS[3]) or b"").key


def test_acks_from_before_a_key_request_are_not_trusted() -> None:
    sender = MotionPacketizer(1, 2, 1, key_interval_frames=0)
    for i in range(3):
        sender.push(TRACE[i], STAMPS[i])
    sender.on_feedback(Feedback(1, 2, 0b11))
    sender.on_feedback(Feedback(1, None, key_request_after=2))
    sender.on_feedback(Feedback(1, 2, 0b11))  # late ack from the receiver's old state
    assert unpack_header(sender.push(TRACE[3], STAMPS[3]) or b"").key
    assert unpack_header(sender.push(TRACE[4], STAMPS[4]) or b"").key  # still nothing confirmed since
    sender.on_feedback(Feedback(1, 3))
    header = unpack_header(sender.push(TRACE[5], STAMPS[5]) or b"")
    assert not header.key and header.reference_seq == 3


def test_receiver_restart_recovers_via_key_request() -> None:
    _, receiver, out, _ = simulate(4, 1, 0.0, 0, key_interval=0, restart_receiver_at=100)
    assert [f.seq for f in out if f.seq >= 100][-1] == 239
    assert len([f for f in out if f.seq >= 100]) >= 130


def test_sequence_numbers_wrap() -> None:
    sender = MotionPacketizer(2, 2, 3, key_interval_frames=0, initial_seq=65530)
    receiver = MotionDepacketizer()
    out = []
    for i in range(30):
        packet = sender.push(TRACE[i], STAMPS[i])
        if packet:
            out += receiver.receive(packet)
            sender.on_feedback(receiver.feedback())  # type: ignore[arg-type]
    assert [f.seq for f in out] == [(65530 + i) % 65536 for i in range(30)]
    assert sender.key_packets_sent == 1


def test_duplicates_and_late_frames_are_not_output_twice() -> None:
    sender = MotionPacketizer(1, 2, 1, key_interval_frames=0)
    receiver = MotionDepacketizer()
    packets = [sender.push(TRACE[i], STAMPS[i]) for i in range(4)]
    assert all(p is not None and unpack_header(p).key for p in packets)  # no feedback: all KEY
    assert [f.seq for f in receiver.receive(packets[0])] == [0]
    assert receiver.receive(packets[0]) == []
    assert [f.seq for f in receiver.receive(packets[2])] == [2]
    assert receiver.receive(packets[1]) == []  # late: kept as a reference, not output
    fb = receiver.feedback()
    assert fb is not None and fb.acked_seq == 2 and fb.acked_mask == 0b11 and fb.frames_lost == 0
    assert receiver.packets_duplicate == 1


def test_present_mask_and_num_keypoints() -> None:
    sender = MotionPacketizer(1, 2, 1)
    receiver = MotionDepacketizer()
    sender.set_num_keypoints(3, order=[7, 2, 9, 1])
    frame = receiver.receive(sender.push(TRACE[0], STAMPS[0]) or b"")[0]
    assert np.flatnonzero(frame.motion.present).tolist() == [2, 7, 9]
    sender.set_present_mask([k < 2 for k in range(20)])
    sender.on_feedback(receiver.feedback())  # type: ignore[arg-type]
    packet = sender.push(TRACE[1], STAMPS[1]) or b""
    header = unpack_header(packet)
    assert not header.key and header.layout is not None  # a mask change is a DELTA with its layout
    frame = receiver.receive(packet)[0]
    assert np.flatnonzero(frame.motion.present).tolist() == [0, 1]
    assert_exact(frame, TRACE[1], 2)
    sender.set_num_keypoints(0)
    frame = receiver.receive(sender.push(TRACE[2], STAMPS[2]) or b"")[0]
    assert not frame.motion.present.any() and np.all(frame.motion.expression == 0)
    with pytest.raises(ValueError, match="present mask has 3 flags but the motion has K = 20"):
        sender.set_present_mask([True] * 3)
        sender.push(TRACE[3], STAMPS[3])


def test_preset_change_sends_a_key_and_layout_change_flushes_a_short_packet() -> None:
    sender = MotionPacketizer(1, 2, 3, key_interval_frames=0)
    receiver = MotionDepacketizer()
    assert sender.push(TRACE[0], STAMPS[0]) is None
    sender.set_preset(3)
    short = sender.push(TRACE[1], STAMPS[1])  # layout changed: the 1-frame packet goes out now
    assert short is not None and unpack_header(short).num_frames == 1
    assert [f.seq for f in receiver.receive(short)] == [0]
    sender.on_feedback(receiver.feedback())  # type: ignore[arg-type]
    assert sender.push(TRACE[2], STAMPS[2]) is None
    packet = sender.push(TRACE[3], STAMPS[3])
    header = unpack_header(packet or b"")
    assert header.key and header.layout is not None and header.layout.preset_id == 3  # cannot predict across presets
    frames = receiver.receive(packet or b"")
    assert [f.seq for f in frames] == [1, 2, 3]
    for f in frames:
        assert_exact(f, TRACE[f.seq], 3)
    assert sender.flush() is None


def test_layout_change_with_fewer_frames_per_packet_flushes_then_sends_the_rest_next() -> None:
    # the rate controller changes K and frames per packet in one decision while frames wait (it once failed an assert)
    sender = MotionPacketizer(1, 2, 4, key_interval_frames=0)
    receiver = MotionDepacketizer()
    assert sender.push(TRACE[0], STAMPS[0]) is None and sender.push(TRACE[1], STAMPS[1]) is None
    sender.set_num_keypoints(10)
    sender.frames_per_packet = 1
    flushed = sender.push(TRACE[2], STAMPS[2])  # the two old-layout frames; the new one waits for the next push
    assert flushed is not None and unpack_header(flushed).num_frames == 2
    rest = sender.push(TRACE[3], STAMPS[3])
    assert rest is not None and unpack_header(rest).num_frames == 2
    assert [f.seq for f in receiver.receive(flushed) + receiver.receive(rest)] == [0, 1, 2, 3]
    assert sender.flush() is None


def test_streams_are_kept_apart() -> None:
    a, b = MotionPacketizer(1), MotionPacketizer(2)
    receiver = MotionDepacketizer(max_streams=2)
    fa = receiver.receive(a.push(TRACE[0], STAMPS[0]) or b"")
    fb = receiver.receive(b.push(TRACE[1], STAMPS[1]) or b"")
    assert fa[0].stream_id == 1 and fb[0].stream_id == 2
    assert receiver.feedback() == receiver.feedback(2)
    feedback_1 = receiver.feedback(1)
    assert feedback_1 is not None and feedback_1.stream_id == 1
    b.on_feedback(feedback_1)  # other stream: ignored
    assert unpack_header(b.push(TRACE[2], STAMPS[2]) or b"").key
    receiver.receive(MotionPacketizer(3).push(TRACE[0], 0) or b"")
    assert receiver.stream_ids() == [2, 3] and receiver.feedback(1) is None


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match=r"frames_per_packet must be in \[1, 8\], got 9"):
        MotionPacketizer(0, frames_per_packet=9)
    with pytest.raises(ValueError, match="unknown quantizer preset 7"):
        MotionPacketizer(0, preset_id=7)
    with pytest.raises(ValueError, match="stream_id must be in"):
        MotionPacketizer(-1)
