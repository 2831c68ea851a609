"""Receiver jitter buffer and concealment, with simulated arrival times (no network, no sleeping)."""

from __future__ import annotations

import numpy as np
import pytest

from codec.motion import MotionParams
from codec.prediction import DecodedFrame
from codec.synthetic_trace import synthetic_trace
from receiver.concealment import damped_steps, extrapolate, interpolate
from receiver.playout import PlayoutBuffer, unwrap_timestamp_ms

FPS = 25.0
INTERVAL = 40.0
T0 = 1_800_000_000_000.0  # a wall-clock ms value (2027) beyond 2^32, to exercise timestamp unwrapping


def motion(yaw: float, k: int = 4) -> MotionParams:
    return MotionParams(yaw, yaw / 2, 0.0, np.full(3, yaw / 100, np.float32), np.full((k, 3), yaw / 1000, np.float32), np.ones(k, bool))


def decoded(seq: int, capture_ms: float, yaw: float | None = None, stream_id: int = 7) -> DecodedFrame:
    return DecodedFrame(stream_id, seq % 65536, int(capture_ms) % (1 << 32), motion(float(seq) if yaw is None else yaw), key=False)


def run(buffer: PlayoutBuffer, arrivals: list[tuple[float, DecodedFrame]], until_ms: float, step_ms: float = 1.0) -> list:
    """Feed arrivals in time order and poll pop_due every step_ms; returns the output frames."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    out, i, now = [], 0, arrivals[0][0]
    while now <= until_ms:
        while i < len(arrivals) and arrivals[i][0] <= now:
            buffer.push(arrivals[i][1], arrivals[i][0])
            i += 1
        out.extend(buffer.pop_due(now))
        now += step_ms
    return out


def test_unwrap_timestamp() -> None:
    assert unwrap_timestamp_ms(int(T0) % (1 << 32), T0 + 30) == int(T0)
    assert unwrap_timestamp_ms(int(T0 + 5) % (1 << 32), T0) == int(T0 + 5)  # sender clock slightly ahead
    assert unwrap_timestamp_ms(5, float(1 << 32) + 3) == float((1 << 32) + 5)  # across the 2^32 wrap


def test_steady_stream_plays_every_frame_once_at_constant_pace() -> None:
    buffer = PlayoutBuffer(FPS)
    arrivals = [(T0 + i * INTERVAL + 12.0, decoded(i, T0 + i * INTERVAL)) for i in range(50)]
    out = run(buffer, arrivals, T0 + 50 * INTERVAL)
    assert [f.seq for f in out] == list(range(len(out))) and len(out) >= 49
    assert [f.slot for f in out] == list(range(len(out)))
    assert not any(f.concealed for f in out)
    assert np.allclose(np.diff([f.due_ms for f in out]), INTERVAL)
    # Delay = the path (12 ms) plus the guard; no jitter to absorb.
    assert out[-1].due_ms - out[-1].capture_ms == pytest.approx(12.0 + buffer.guard_ms, abs=0.5)


def test_several_frames_per_packet_are_spread_out_again() -> None:
    buffer = PlayoutBuffer(FPS)
    arrivals = []
    for p in range(20):  # 3 frames per packet: a packet leaves when its last frame is captured
        sent = T0 + (3 * p + 2) * INTERVAL
        arrivals += [(sent + 5.0, decoded(3 * p + j, T0 + (3 * p + j) * INTERVAL)) for j in range(3)]
    out = run(buffer, arrivals, T0 + 62 * INTERVAL)
    late_start = [f for f in out if f.seq >= 15]  # after the delay estimate settled
    assert not any(f.concealed for f in late_start)
    assert np.allclose(np.diff([f.due_ms for f in late_start]), INTERVAL)
    assert buffer.target_delay_ms == pytest.approx(2 * INTERVAL + buffer.guard_ms, abs=1.0)


def test_lost_frames_are_concealed_and_late_ones_dropped() -> None:
    buffer = PlayoutBuffer(FPS)
    lost = {5, 6, 12}
    late = 20
    arrivals = [(T0 + i * INTERVAL + 10.0, decoded(i, T0 + i * INTERVAL)) for i in range(40) if i not in lost | {late}]
    arrivals.append((T0 + late * INTERVAL + 300.0, decoded(late, T0 + late * INTERVAL)))
    out = run(buffer, arrivals, T0 + 40 * INTERVAL)
    by_seq = {f.seq: f for f in out}
    assert [f.seq for f in out] == list(range(len(out)))
    assert {s for s, f in by_seq.items() if f.concealed} == lost | {late}
    assert buffer.frames_late == 1 and buffer.frames_concealed == 4
    # Extrapolated yaw continues the trend (yaw = seq here), damped; it never jumps backwards.
    assert 4.0 < by_seq[5].motion.yaw <= 5.0 and by_seq[6].motion.yaw > by_seq[5].motion.yaw


def test_interpolates_when_a_later_frame_is_already_buffered() -> None:
    buffer = PlayoutBuffer(FPS, min_delay_ms=100.0)  # a deep buffer: frame 6 is there when 5 is due
    arrivals = [(T0 + i * INTERVAL + 1.0, decoded(i, T0 + i * INTERVAL, yaw=float(i) * 2)) for i in range(12) if i != 5]
    out = run(buffer, arrivals, T0 + 12 * INTERVAL + 200)
    frame5 = next(f for f in out if f.seq == 5)
    assert frame5.concealed and frame5.motion.yaw == pytest.approx(10.0)
    assert buffer.frames_interpolated == 1


def test_stalls_when_the_sender_stops_and_reanchors_on_a_new_stream() -> None:
    buffer = PlayoutBuffer(FPS, max_conceal_ms=200.0)
    arrivals = [(T0 + i * INTERVAL + 5, decoded(i, T0 + i * INTERVAL)) for i in range(10)]
    out = run(buffer, arrivals, T0 + 40 * INTERVAL)
    assert len(out) == 10 + 5  # 200 ms of concealment, then silence
    assert buffer.stalled and buffer.next_due_ms() is None and buffer.stalls == 1
    restart = T0 + 60 * INTERVAL
    arrivals = [(restart + i * INTERVAL + 5, decoded(1000 + i, restart + i * INTERVAL, stream_id=9)) for i in range(10)]
    more = run(buffer, arrivals, restart + 10 * INTERVAL)
    assert [f.slot for f in more] == list(range(15, 15 + len(more))) and len(more) >= 9
    assert {f.stream_id for f in more} == {9} and not any(f.concealed for f in more)


def test_sequence_numbers_wrap() -> None:
    buffer = PlayoutBuffer(FPS)
    arrivals = [(T0 + i * INTERVAL + 5, decoded(65530 + i, T0 + i * INTERVAL)) for i in range(12)]
    out = run(buffer, arrivals, T0 + 12 * INTERVAL)
    assert [f.seq for f in out] == list(range(65530, 65530 + len(out))) and len(out) >= 11
    assert not any(f.concealed for f in out)


def test_duplicates_are_ignored() -> None:
    buffer = PlayoutBuffer(FPS)
    frame = decoded(0, T0)
    assert buffer.push(frame, T0 + 5) and not buffer.push(frame, T0 + 6)
    assert buffer.frames_duplicate == 1


def test_interpolate_and_extrapolate() -> None:
    trace = synthetic_trace(3, FPS, num_keypoints=6, seed=1)
    a, b = trace[0], trace[2]
    mid = interpolate(a, b, 0.5)
    assert mid.yaw == pytest.approx((a.yaw + b.yaw) / 2)
    np.testing.assert_allclose(mid.expression, (a.expression + b.expression) / 2, atol=1e-6)
    partial = b.with_present(np.array([True, False, True, True, True, True]))
    mixed = interpolate(a, partial, 0.25)
    np.testing.assert_allclose(mixed.expression[1], a.expression[1])  # missing in one side: the nearer one's δ
    assert interpolate(a, MotionParams.neutral(3), 0.7).num_keypoints == 3  # K changed: the nearer frame
    assert damped_steps(0) == 0 and damped_steps(1) == pytest.approx(0.8) and damped_steps(100) < 4.0 + 1e-9
    ext = extrapolate(a, b, 2, 1)
    assert ext.yaw == pytest.approx(b.yaw + (b.yaw - a.yaw) / 2 * 0.8)
    np.testing.assert_array_equal(ext.expression, b.expression)  # δ holds
    assert extrapolate(None, b, 1, 3) is b
