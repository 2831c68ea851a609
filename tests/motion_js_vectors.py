"""Golden vectors for the browser's motion decoder (signaling/static/codec/*.js), written by the Python codec.

    python -m tests.motion_js_vectors /tmp/vectors.json
    KPCALL_MOTION_VECTORS=/tmp/vectors.json node --test tests/js/    # tests/test_motion_js.py does both

Each scenario is a list of events fed in order to one receiver (``MotionDepacketizer``): a packet (hex)
and what the Python receiver made of it: the frames it returned (grid values, dequantized motion,
seq, timestamp, KEY) or the exact BitstreamError message, then its feedback (fields and msgpack bytes).
Scenarios: streams of the seeded synthetic trace (``codec.synthetic_trace``) through ``MotionPacketizer``
with loss, delayed feedback, far references, KEY requests, layout, K and preset changes, wrapping
sequence numbers and timestamps; hand-made malformed packets; and seeded random mutations of valid ones.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from codec.bitstream import Feedback, pack_feedback
from codec.exceptions import BitstreamError
from codec.motion import MotionParams
from codec.prediction import DecodedFrame, MotionDepacketizer, MotionPacketizer
from codec.quantize import PRESETS
from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms
from receiver.playout import PlayoutBuffer, PlayoutFrame

Event = dict[str, Any]
Action = Callable[[MotionPacketizer], None]


def _f32(x: float) -> float:
    """The shortest decimal that is this float32 (JS: Math.fround of it is the same float32)."""
    return float(str(np.float32(x)))


def _frame_json(frame: DecodedFrame, values: Sequence[int]) -> dict[str, Any]:
    m = frame.motion
    return {
        "stream_id": frame.stream_id, "seq": frame.seq, "capture_ts_ms": frame.capture_ts_ms, "key": frame.key,
        "values": [int(v) for v in values],
        "motion": {"yaw": m.yaw, "pitch": m.pitch, "roll": m.roll,
                   "translation": [_f32(v) for v in m.translation],
                   "expression": [_f32(v) for v in m.expression.ravel()], "present": [bool(p) for p in m.present]},
    }


def _feedback_json(feedback: Feedback | None) -> dict[str, Any] | None:
    if feedback is None:
        return None
    return {"stream_id": feedback.stream_id, "acked_seq": feedback.acked_seq, "acked_mask": feedback.acked_mask,
            "key_request_after": feedback.key_request_after, "frames_received": feedback.frames_received,
            "frames_lost": feedback.frames_lost, "frames_undecodable": feedback.frames_undecodable,
            "bytes": pack_feedback(feedback).hex()}


class RecordingDepacketizer(MotionDepacketizer):
    """A MotionDepacketizer that also keeps the grid values of the last packet's frames (``last_values``)."""

    def __init__(self, max_streams: int = 4) -> None:
        super().__init__(max_streams)
        self.last_values: dict[int, tuple[int, ...]] = {}

    def _prune(self, state: Any) -> None:  # type: ignore[override]
        self.last_values = {seq: frame.values for seq, frame in state.history.items()}
        MotionDepacketizer._prune(state)


def feed(receiver: RecordingDepacketizer, packet: bytes) -> tuple[Event, list[DecodedFrame]]:
    """One event: the packet and the Python receiver's outcome."""
    event: Event = {"packet": packet.hex()}
    frames: list[DecodedFrame] = []
    try:
        frames = receiver.receive(packet)
        event["frames"] = [_frame_json(f, receiver.last_values[f.seq]) for f in frames]
    except BitstreamError as exc:
        event["error"] = str(exc)
    event["feedback"] = _feedback_json(receiver.feedback())
    return event, frames


def stream_events(
    motions: Sequence[MotionParams], timestamps: Sequence[int], *, stream_id: int = 1, preset_id: int = 2,
    frames_per_packet: int = 1, key_interval_frames: int = 250, initial_seq: int = 0, lose: frozenset[int] = frozenset(),
    feedback_delay: int = 1, actions: dict[int, Action] | None = None,
) -> tuple[list[Event], list[bytes]]:
    """Packets of ``motions`` from a MotionPacketizer to a MotionDepacketizer: packet i is lost when i is in
    ``lose``; the feedback after each delivered packet reaches the sender ``feedback_delay`` packets later;
    ``actions[frame index]`` reconfigures the sender before that frame -> (events, every packet sent)."""
    sender = MotionPacketizer(stream_id, preset_id, frames_per_packet, key_interval_frames, initial_seq)
    receiver = RecordingDepacketizer()
    events: list[Event] = []
    sent: list[bytes] = []
    in_flight: list[tuple[int, Feedback]] = []
    for i, (motion, ts) in enumerate(zip(motions, timestamps)):
        if actions and i in actions:
            actions[i](sender)
        packet = sender.push(motion, ts)
        if packet is None:
            continue
        index = len(sent)
        sent.append(packet)
        while in_flight and in_flight[0][0] <= index:
            sender.on_feedback(in_flight.pop(0)[1])
        if index in lose:
            continue
        event, _ = feed(receiver, packet)
        events.append(event)
        feedback = receiver.feedback()
        if feedback is not None:
            in_flight.append((index + feedback_delay, feedback))
    return events, sent


def _jittered(timestamps: Sequence[int], seed: int, start_ms: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [(start_ms + t + rng.randint(-4, 4)) % (1 << 32) for t in timestamps]


def _mask(k: int, *kept: int) -> np.ndarray:
    mask = np.zeros(k, bool)
    mask[list(kept)] = True
    return mask


def scenarios() -> dict[str, list[Event]]:
    """The valid-stream scenarios (some with packets the receiver cannot decode: lost references)."""
    out: dict[str, list[Event]] = {}
    trace = synthetic_trace(90, 25.0, seed=0)
    stamps = trace_timestamps_ms(90, 25.0, start_ms=1000)
    out["default_k20_fpp1_loss"] = stream_events(trace[:60], stamps, lose=frozenset({5, 6, 20, 33}), feedback_delay=2)[0]
    out["fine_fpp3_keypoints_and_mask"] = stream_events(
        trace, _jittered(stamps, 1), preset_id=1, frames_per_packet=3, lose=frozenset({4, 12}),
        actions={30: lambda s: s.set_num_keypoints(8), 54: lambda s: s.set_present_mask(_mask(20, 0, 3, 7, 19)),
                 72: lambda s: s.set_present_mask(None)})[0]
    out["coarse_fpp8_far_references"] = stream_events(
        trace, stamps, preset_id=3, frames_per_packet=8, feedback_delay=3, lose=frozenset({3}))[0]
    out["preset_switch_and_key_interval"] = stream_events(
        trace[:70], stamps, frames_per_packet=2, key_interval_frames=20,
        actions={25: lambda s: s.set_preset(1), 50: lambda s: s.set_preset(3)})[0]
    out["wrapping_seq_and_timestamp"] = stream_events(
        trace[:50], _jittered(stamps, 2, start_ms=(1 << 32) - 1500), stream_id=200, frames_per_packet=2,
        initial_seq=65520, lose=frozenset({9}))[0]
    k5 = synthetic_trace(40, 30.0, num_keypoints=5, seed=3)
    out["k5_fpp4_key_request"] = stream_events(
        k5, trace_timestamps_ms(40, 30.0), stream_id=7, frames_per_packet=4, lose=frozenset({1, 2, 3}), feedback_delay=1)[0]
    k64 = synthetic_trace(12, 25.0, num_keypoints=64, seed=4)
    out["k64_fpp2"] = stream_events(k64, trace_timestamps_ms(12, 25.0), stream_id=300_000, frames_per_packet=2)[0]
    # two streams interleaved into one receiver, and a duplicate
    _, a = stream_events(trace[:16], stamps, stream_id=1, frames_per_packet=2, feedback_delay=1)
    _, b = stream_events(trace[20:36], stamps, stream_id=2, frames_per_packet=2, feedback_delay=1)
    receiver = RecordingDepacketizer(max_streams=2)
    mixed = [p for pair in zip(a, b) for p in pair] + [a[-1]]
    out["two_streams_and_duplicate"] = [feed(receiver, p)[0] for p in mixed]
    return out


def _key_packet() -> bytes:
    sender = MotionPacketizer(1, 2, 1)
    packet = sender.push(synthetic_trace(1, 25.0, seed=5)[0], 1234)
    assert packet is not None
    return packet


def malformed() -> dict[str, list[Event]]:
    """Hand-made bad packets, each after a valid KEY of stream 1 (so DELTA references can resolve)."""
    key = _key_packet()
    trace = synthetic_trace(3, 25.0, seed=5)
    sender = MotionPacketizer(1, 2, 1)
    sender.push(trace[0], 0)
    sender.on_feedback(Feedback(1, 0))
    delta = sender.push(trace[1], 40)  # DELTA of seq 1 from seq 0, inherits the layout
    assert delta is not None and not delta[1] & 0x80
    body = key[14:]  # after the header: 0xA1, flags, id, seq (2), ts (4), preset, K, 3 mask bytes
    cases: dict[str, bytes] = {
        "empty": b"",
        "one_byte": b"\xa1",
        "bad_magic": b"\x51" + key[1:],
        "bad_version": b"\xa2" + key[1:],
        "key_with_distance_bits": key[:1] + bytes([key[1] | 0x03]) + key[2:],
        "key_without_layout": key[:1] + bytes([key[1] & ~0x08]) + key[2:],
        "stream_id_truncated": b"\xa1\x88\x80",
        "stream_id_non_minimal": b"\xa1\x88\x81\x00" + key[3:],
        "stream_id_too_long": b"\xa1\x88\x80\x80\x80\x80\x80\x01",
        "stream_id_too_large": b"\xa1\x88\xff\xff\xff\xff\x7f" + key[3:],
        "seq_missing": key[:4],
        "timestamp_missing": key[:7],
        "distance_varint_small": delta[:1] + bytes([delta[1] & ~0x07]) + delta[2:5] + b"\x05" + delta[5:],
        "distance_varint_large": delta[:1] + bytes([delta[1] & ~0x07]) + delta[2:5] + b"\x81\x01" + delta[5:],
        "distance_varint_truncated": delta[:1] + bytes([delta[1] & ~0x07]) + delta[2:5],
        "layout_missing": key[:9] + b"\x02",
        "unknown_preset": key[:9] + b"\x09" + key[10:],
        "too_many_keypoints": key[:9] + b"\x02\x41" + bytes(9) + body,
        "mask_truncated": key[:9] + b"\x02\x14\xff",
        "mask_beyond_k": key[:9] + b"\x02\x14\xff\xff\x1f" + body,
        "body_ends_in_zero": key + b"\x00",
        "oversize": key + b"\x01" * 8200,
        "body_truncated": key[:-1],
        "body_extended": key + b"\x5a",
        "body_byte_flipped": key[:20] + bytes([key[20] ^ 0x40]) + key[21:],
        "huge_magnitudes": key[:14] + b"\xff" * 40,
        "delta_incompatible_layout": delta[:1] + bytes([delta[1] | 0x08]) + delta[2:5] + b"\x02\x05\x1f" + delta[5:],
        "delta_other_preset": delta[:1] + bytes([delta[1] | 0x08]) + delta[2:5] + b"\x03\x14\xff\xff\x0f" + delta[5:],
        "delta_missing_reference": delta[:3] + b"\x00\x30" + delta[5:],
    }
    out: dict[str, list[Event]] = {}
    for name, packet in cases.items():
        receiver = RecordingDepacketizer()
        # a DELTA needs its reference (the KEY's frame, seq 0); a KEY decodes alone (after the valid KEY it
        # would be a duplicate of seq 0, never decoded)
        prefix = [key] if packet[1:2] and not packet[1] & 0x80 else []
        out[name] = [feed(receiver, p)[0] for p in [*prefix, packet]]
    return out


def _mutate(packet: bytes, rng: random.Random) -> bytes:
    data = bytearray(packet)
    kind = rng.randrange(5)
    if kind == 0 and data:  # flip one bit
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    elif kind == 1 and data:  # replace one byte
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 2 and len(data) > 1:  # truncate
        del data[rng.randrange(1, len(data)):]
    elif kind == 3:  # insert a byte
        data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
    else:  # replace the body by random bytes
        cut = min(len(data), rng.randrange(2, 14))
        data[cut:] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    return bytes(data)


def fuzz(mutations_per_packet: int = 5, seed: int = 24) -> list[Event]:
    """The packets of a lossless fine-preset stream in order, each followed by random mutations of the next one,
    each fed to a copy of the receiver (an event with "probe": the receiver's state before it, unchanged after).
    Most mutations of a body still decode (nearly every byte string is some canonical body); the decoded
    values must then agree too."""
    trace = synthetic_trace(120, 25.0, seed=6)
    _, packets = stream_events(trace, trace_timestamps_ms(120, 25.0), preset_id=1, frames_per_packet=2,
                               feedback_delay=1, actions={60: lambda s: s.set_num_keypoints(10)})
    rng = random.Random(seed)
    receiver = RecordingDepacketizer()
    events: list[Event] = []
    for valid, following in zip(packets, packets[1:]):
        events.append(feed(receiver, valid)[0])
        for _ in range(mutations_per_packet):  # each on a copy of the receiver ("probe"): the stream goes on
            event, _ = feed(copy.deepcopy(receiver), _mutate(following, rng))
            events.append({**event, "probe": True})
    return events


def _playout_frame_json(frame: PlayoutFrame) -> dict[str, Any]:
    m = frame.motion
    return {
        "slot": frame.slot, "stream_id": frame.stream_id, "seq": frame.seq, "due_ms": frame.due_ms,
        "capture_ms": frame.capture_ms, "concealed": frame.concealed, "arrival_ms": frame.arrival_ms,
        "motion": {"yaw": m.yaw, "pitch": m.pitch, "roll": m.roll, "translation": [_f32(v) for v in m.translation],
                   "expression": [_f32(v) for v in m.expression.ravel()], "present": [bool(p) for p in m.present]},
    }


def playout_scenario(seed: int, *, seconds: float = 8.0, fps: float = 25.0, frames_per_packet: int = 1,
                     loss: float = 0.0, jitter_ms: float = 30.0, pause: tuple[float, float] | None = None,
                     restart_at: float | None = None, keypoints: int | None = None) -> dict[str, Any]:
    """A call through the jitter buffer, simulated on one wall clock starting at 1.7e12 ms (so the 32-bit
    timestamps need unwrapping): a frame is captured every 1/fps; a packet arrives 30 ms + U(0, jitter_ms)
    after it is sent unless lost (probability ``loss``); the receiver's feedback reaches the sender 30 ms
    after each packet; the receiver pops due frames every 10 ms. ``pause`` (start s, end s): the sender
    captures nothing then; ``restart_at`` s: a new sender (stream 2) from then on.
    -> {"fps", "events", "counters"}: an event is {"t": ms, "packet": hex} (decode, push every frame) or
    {"t": ms} (pop_due) with "pop": [frames] when that returned any."""
    rng = random.Random(seed)
    n = int(seconds * fps)
    trace = synthetic_trace(n, fps, seed=seed)
    start_ms = 1.7e12 + rng.random() * 1000
    senders = {1: MotionPacketizer(1, 2, frames_per_packet)}
    if keypoints is not None:
        senders[1].set_num_keypoints(keypoints)
    queue: list[tuple[float, int, str, Any]] = []
    order = itertools.count()
    for i in range(n):
        heapq.heappush(queue, (start_ms + i * 1000.0 / fps, next(order), "capture", i))
    tick = start_ms
    while tick < start_ms + seconds * 1000 + 1500:
        heapq.heappush(queue, (tick, next(order), "tick", None))
        tick += 10.0
    receiver = MotionDepacketizer()
    playout = PlayoutBuffer(fps=fps)
    events: list[Event] = []
    while queue:
        t, _, kind, payload = heapq.heappop(queue)
        if kind == "capture":
            elapsed_s = (t - start_ms) / 1000
            if pause is not None and pause[0] <= elapsed_s < pause[1]:
                continue
            if restart_at is not None and elapsed_s >= restart_at and 2 not in senders:
                senders[2] = MotionPacketizer(2, 2, frames_per_packet)
            sender = senders[max(senders)]
            packet = sender.push(trace[payload], int(t) % (1 << 32))
            if packet is not None and rng.random() >= loss:
                heapq.heappush(queue, (t + 30.0 + rng.random() * jitter_ms, next(order), "arrive", packet))
        elif kind == "arrive":
            for frame in receiver.receive(payload):
                playout.push(frame, t)
            events.append({"t": t, "packet": payload.hex()})
            feedback = receiver.feedback()
            if feedback is not None:
                heapq.heappush(queue, (t + 30.0, next(order), "feedback", feedback))
        elif kind == "feedback":
            for sender in senders.values():
                sender.on_feedback(payload)
        else:
            out = playout.pop_due(t)
            events.append({"t": t, "pop": [_playout_frame_json(f) for f in out]} if out else {"t": t})
    counters = {"frames_late": playout.frames_late, "frames_concealed": playout.frames_concealed,
                "frames_interpolated": playout.frames_interpolated, "frames_duplicate": playout.frames_duplicate,
                "stalls": playout.stalls, "target_delay_ms": playout.target_delay_ms, "next_slot": playout.next_slot,
                "jitter_ms": playout.jitter_ms}
    return {"fps": fps, "events": events, "counters": counters}


def playout_scenarios() -> dict[str, dict[str, Any]]:
    """Jitter-buffer cases: clean, lossy with jitter, several frames per packet with a sender pause (a
    stall), a sender restart, 30 fps with fewer keypoints."""
    return {
        "clean": playout_scenario(1, seconds=4.0, jitter_ms=2.0),
        "loss_and_jitter": playout_scenario(2, loss=0.15, jitter_ms=60.0),
        "fpp3_pause_stall": playout_scenario(3, frames_per_packet=3, loss=0.05, pause=(3.0, 5.0)),
        "restart": playout_scenario(4, loss=0.05, restart_at=4.0),
        "fps30_k8": playout_scenario(5, seconds=5.0, fps=30.0, loss=0.1, jitter_ms=40.0, keypoints=8),
    }


def build_vectors() -> dict[str, Any]:
    """Everything the JS test checks: the presets' bounds, and cases {name: {max_streams, events}}, each fed to
    one fresh receiver."""
    cases = {name: {"max_streams": 4, "events": events} for name, events in scenarios().items()}
    cases["two_streams_and_duplicate"]["max_streams"] = 2
    cases.update({f"malformed_{name}": {"max_streams": 4, "events": events} for name, events in malformed().items()})
    cases["fuzz"] = {"max_streams": 4, "events": fuzz()}
    return {
        "about": "written by tests/motion_js_vectors.py; checked by tests/js/motion_decoder.test.mjs",
        "presets": {str(p.preset_id): {"angle_qmax": list(p.angle_qmax), "translation_qmax": p.translation_qmax,
                                       "expression_qmax": p.expression_qmax} for p in PRESETS.values()},
        "cases": cases,
        "playout": playout_scenarios(),
    }


if __name__ == "__main__":  # python -m tests.motion_js_vectors OUT.json (then KPCALL_MOTION_VECTORS=OUT.json node --test tests/js)
    import json
    import sys

    with open(sys.argv[1], "w") as out:
        json.dump(build_vectors(), out)
