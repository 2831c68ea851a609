"""codec.bitstream / codec.range_coder: packet round trips, exact errors, golden packets, feedback."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.bitstream import (
    MAX_PACKET_BYTES,
    VERSION,
    CodedFrame,
    Feedback,
    Layout,
    PacketHeader,
    decode_packet,
    encode_packet,
    pack_feedback,
    pack_header,
    unpack_feedback,
    unpack_header,
)
from codec.exceptions import BitstreamError
from codec.quantize import PRESETS
from codec.range_coder import RangeDecoder, RangeEncoder, new_model
from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("KPCALL_REGEN_GOLDEN") == "1"


def grid_values(preset_id: int, motions: list, present: tuple[bool, ...] | None = None) -> list[tuple[int, ...]]:
    preset = PRESETS[preset_id]
    out = []
    for m in motions:
        if present is not None:
            m = m.with_present(np.array(present))
        q = preset.quantize(m)
        out.append(tuple(int(v) for v in np.concatenate([q.angles, q.translation, q.expression.ravel()])))
    return out


def encode_sequence(
    layout: Layout, values: list[tuple[int, ...]], stamps: list[int], fpp: int, stream_id: int = 3
) -> list[tuple[bytes, list[CodedFrame]]]:
    """KEY then DELTA packets each predicted from the previous packet's last frame."""
    out, reference = [], None
    for start in range(0, len(values), fpp):
        frames = [(values[i], stamps[i]) for i in range(start, min(start + fpp, len(values)))]
        packet, coded = encode_packet(stream_id, start, layout, frames, reference)
        out.append((packet, coded))
        reference = coded[-1]
    return out


def test_range_coder_round_trips_random_integers() -> None:
    rng = random.Random(5)
    for _ in range(200):
        n = rng.randint(0, 300)
        values = [int(rng.gauss(0, rng.choice([0.2, 3.0, 400.0, 1e6]))) for _ in range(n)]
        contexts = [rng.randrange(4) for _ in range(n)]
        model = new_model(4 * 14)
        enc = RangeEncoder()
        for v, c in zip(values, contexts):
            enc.encode_int(model, c * 14, c * 14 + 1, c * 14 + 2, v)
        data = enc.finish()
        assert not data.endswith(b"\0")
        model = new_model(4 * 14)
        dec = RangeDecoder(data)
        assert [dec.decode_int(model, c * 14, c * 14 + 1, c * 14 + 2, 1 << 40) for c in contexts] == values


def test_header_round_trip_and_layout_inheritance() -> None:
    layout = Layout(2, (True, False, True))
    key = PacketHeader(True, 3, 300, 65535, 0, 123456, layout, 0)
    h = unpack_header(pack_header(key))
    assert (h.key, h.num_frames, h.stream_id, h.seq, h.timestamp_ms, h.layout) == (True, 3, 300, 65535, 123456, layout)
    assert h.seqs == [65535, 0, 1]
    delta = PacketHeader(False, 1, 0, 5, 7, None, None, 0)
    raw = pack_header(delta)
    assert len(raw) == 5  # magic/version, flags with the reference distance, stream id, seq (2)
    h = unpack_header(raw)
    assert (h.key, h.reference_seq, h.layout) == (False, 65534, None)
    far = pack_header(PacketHeader(False, 2, 0, 5, 100, None, None, 0))
    assert len(far) == 6 and unpack_header(far).reference_distance == 100


@pytest.mark.parametrize(
    ("buf", "message"),
    [
        (b"", "truncated motion packet: 0 bytes"),
        (b"\xa1", "truncated motion packet: 1 bytes"),
        (b"\x51\x00\x00\x00\x00\x01", "not a motion packet: first byte 0x51"),
        (b"\xa2\x00\x00\x00\x00\x01", "unsupported motion packet version 2 (this build reads 1)"),
        (b"\xa1\x89\x00\x00\x00\x01", "KEY packet with reference-distance bits set in flags 0x89"),
        (b"\xa1\x80\x00\x00\x00\x00\x00\x00\x00", "KEY packet without a layout"),
        (b"\xa1\x00\x80\x00\x00\x00\x01", "non-minimal varint for stream id"),
        (b"\xa1\x00\xff\xff\xff\xff\xff\x01", "varint for stream id at byte 2 is longer than 5 bytes"),
        (b"\xa1\x00\x00\x00", "truncated motion packet: sequence number missing"),
        (b"\xa1\x00\x00\x00\x00\x00", "reference distance 0"),
        (b"\xa1\x00\x00\x00\x00\x81\x01", "reference distance 129 exceeds the maximum 128"),
        (b"\xa1\x88\x00\x00\x00\x00\x00\x00\x00\x09\x01", "unknown quantizer preset id 9"),
        (b"\xa1\x88\x00\x00\x00\x00\x00\x00\x00\x02\x41", "K = 65 exceeds the maximum of 64"),
        (b"\xa1\x88\x00\x00\x00\x00\x00\x00\x00\x02\x03\x08", "presence mask 0x8 has bits set beyond K = 3"),
        (b"\xa1\x88\x00\x00\x00\x00\x00\x00\x00\x02\x09\x01", "presence mask needs 2 bytes"),
        (b"\xa1\x00\x00\x00\x00\x05", "reference distance 5 in a varint (1..7 go in the flags byte)"),
        (b"\xa1\x01\x00\x00\x00\x05\x00", "body ends in 0x00"),
        (bytes(MAX_PACKET_BYTES + 1), f"oversize motion packet: {MAX_PACKET_BYTES + 1} bytes"),
    ],
)
def test_unpack_header_errors_are_precise(buf: bytes, message: str) -> None:
    with pytest.raises(BitstreamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        unpack_header(buf)


def test_unpack_header_rejects_non_bytes() -> None:
    with pytest.raises(BitstreamError, match="a motion packet must be bytes, got str"):
        unpack_header("abc")  # type: ignore[arg-type]


@pytest.mark.parametrize("fpp", [1, 3, 8])
def test_packets_round_trip_a_trace(fpp: int) -> None:
    motions = synthetic_trace(60, 30.0, num_keypoints=20, seed=4)
    stamps = trace_timestamps_ms(60, 30.0, start_ms=(1 << 32) - 500)  # wraps mod 2^32 mid-trace
    layout = Layout(2, (True,) * 20)
    values = grid_values(2, motions)
    history: dict[int, CodedFrame] = {}
    for packet, coded in encode_sequence(layout, values, stamps, fpp):
        header = unpack_header(packet)
        decoded = decode_packet(packet, header, history.get(header.reference_seq) if header.reference_seq is not None else None)
        assert [d.values for d in decoded] == [c.values for c in coded]
        assert [d.timestamp_ms for d in decoded] == [s % (1 << 32) for s in stamps[header.seq : header.seq + fpp]]
        for d in decoded:
            history[d.seq] = d


def test_delta_with_mask_change_carries_layout_and_k0_works() -> None:
    motions = synthetic_trace(3, 25.0, num_keypoints=4, seed=1)
    full = Layout(1, (True,) * 4)
    part = Layout(1, (False, True, False, True))
    none = Layout(1, (False,) * 4)
    v_full = grid_values(1, motions[:1])
    packet, coded = encode_packet(0, 10, full, [(v_full[0], 0)], None)
    v_part = grid_values(1, motions[1:2], part.present)
    p2, c2 = encode_packet(0, 11, part, [(v_part[0], 40)], coded[0])
    h2 = unpack_header(p2)
    assert h2.layout == part and not h2.key
    assert [d.values for d in decode_packet(p2, h2, coded[0])] == [c.values for c in c2]
    v_none = grid_values(1, motions[2:3], none.present)
    p3, c3 = encode_packet(0, 12, none, [(v_none[0], 80)], c2[0])
    h3 = unpack_header(p3)
    assert decode_packet(p3, h3, c2[0])[0].values == c3[0].values
    assert all(v == 0 for v in c3[0].values[6:])


def test_decode_rejects_values_outside_the_quantizer_range() -> None:
    values = (0, 0, 0, 0, 0, 0, 1000, 0, 0)  # δ_x = 2.0 on the fine grid; the coarse grid ends at ±200
    with pytest.raises(ValueError, match=r"frame 0 field 6 value 1000 is outside the preset's grid ±200"):
        encode_packet(0, 0, Layout(3, (True,)), [(values, 0)], None)
    packet, _ = encode_packet(0, 0, Layout(1, (True,)), [(values, 0)], None)
    relabelled = bytearray(packet)
    header = unpack_header(packet)
    relabelled[header.size - 3] = 3  # preset id byte: fine -> coarse
    with pytest.raises(BitstreamError, match=r"corrupt motion packet body \(seq 0\): decoded magnitude ≥ 2\^9 exceeds the bound 200"):
        decode_packet(bytes(relabelled), unpack_header(bytes(relabelled)), None)


def test_decode_rejects_trailing_garbage() -> None:
    layout = Layout(2, (True,) * 2)
    packet, _ = encode_packet(0, 0, layout, [((1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3), 0)], None)
    with pytest.raises(BitstreamError, match="bytes do not re-encode identically"):
        decode_packet(packet + b"\x17", unpack_header(packet + b"\x17"), None)


def test_feedback_round_trip_and_errors() -> None:
    fb = Feedback(7, 65535, 0b101, 12, 1000, 3, 2)
    assert unpack_feedback(pack_feedback(fb)) == fb == Feedback.unpack(fb.pack())
    assert fb.acked() == [65535, 65534, 65532]
    assert unpack_feedback(pack_feedback(Feedback(0, None))) == Feedback(0, None)
    import msgpack

    cases = [
        (b"\xc1", "feedback is not valid msgpack"),
        (msgpack.packb({"a": 1}), "feedback must be a 9-item msgpack array, got dict"),
        (msgpack.packb(["nope", VERSION, 0, None, 0, None, 0, 0, 0]), "not a feedback message: tag 'nope'"),
        (msgpack.packb(["kpfb", 9, 0, None, 0, None, 0, 0, 0]), "unsupported feedback version 9"),
        (msgpack.packb(["kpfb", VERSION, -1, None, 0, None, 0, 0, 0]), r"feedback stream_id must be an int in \[0, 4294967295\], got -1"),
        (msgpack.packb(["kpfb", VERSION, 0, 70000, 0, None, 0, 0, 0]), "feedback acked_seq must be an int in"),
        (msgpack.packb(["kpfb", VERSION, 0, None, 5, None, 0, 0, 0]), "acked_mask 0x5 without an acked_seq"),
        (msgpack.packb(["kpfb", VERSION, 0, 1, 0, "x", 0, 0, 0]), "feedback key_request_after must be an int"),
        (msgpack.packb(["kpfb", VERSION, 0, 1, 0, None, 1.5, 0, 0]), "feedback frames_received must be an int"),
        (bytes(300), "oversize feedback message: 300 bytes"),
    ]
    for buf, message in cases:
        with pytest.raises(BitstreamError, match=message):
            unpack_feedback(buf)


# ------------------------------------------------------------------------------------------------
# Golden packets: the format is byte-stable; a format change must bump VERSION and regenerate with
# KPCALL_REGEN_GOLDEN=1 python -m pytest tests/test_bitstream.py


def golden_inputs() -> dict[str, dict]:
    """The inputs of the golden packets (only used to regenerate them)."""
    motions = synthetic_trace(9, 25.0, num_keypoints=20, seed=11)
    stamps = trace_timestamps_ms(9, 25.0, start_ms=1000)
    half = tuple(k % 2 == 0 for k in range(20))
    return {
        "default_k20_fpp1": {"preset": 2, "present": [True] * 20, "stream": 3, "fpp": 1,
                             "values": grid_values(2, motions[:3]), "stamps": stamps[:3]},
        "default_k20_fpp3": {"preset": 2, "present": [True] * 20, "stream": 3, "fpp": 3,
                             "values": grid_values(2, motions), "stamps": stamps},
        "fine_k10_fpp2": {"preset": 1, "present": list(half), "stream": 200, "fpp": 2,
                          "values": grid_values(1, motions[:4], half), "stamps": stamps[:4]},
    }


def test_golden_packets_are_byte_stable() -> None:
    if REGEN:
        cases = golden_inputs()
        for name, case in cases.items():
            layout = Layout(case["preset"], tuple(case["present"]))
            for i, (packet, _) in enumerate(encode_sequence(layout, case["values"], case["stamps"], case["fpp"], case["stream"])):
                (GOLDEN / f"{name}_{i}.bin").write_bytes(packet)
            case["values"] = [list(v) for v in case["values"]]
        (GOLDEN / "motion_packets.json").write_text(json.dumps(cases))
    cases = json.loads((GOLDEN / "motion_packets.json").read_text())
    assert sorted(cases) == ["default_k20_fpp1", "default_k20_fpp3", "fine_k10_fpp2"]
    for name, case in cases.items():
        layout = Layout(case["preset"], tuple(case["present"]))
        values = [tuple(v) for v in case["values"]]
        encoded = encode_sequence(layout, values, case["stamps"], case["fpp"], case["stream"])
        history: dict[int, CodedFrame] = {}
        for i, (packet, _) in enumerate(encoded):
            golden = (GOLDEN / f"{name}_{i}.bin").read_bytes()
            assert packet == golden, f"{name}_{i}: the encoder's output changed; bump VERSION if the format changed"
            header = unpack_header(golden)
            assert golden[0] == 0xA0 | VERSION and header.stream_id == case["stream"]
            decoded = decode_packet(golden, header, history.get(header.reference_seq) if not header.key else None)
            lo = i * case["fpp"]
            assert [d.values for d in decoded] == values[lo : lo + case["fpp"]]
            assert [d.timestamp_ms for d in decoded] == case["stamps"][lo : lo + case["fpp"]]
            assert [d.seq for d in decoded] == list(range(lo, lo + len(decoded)))
            for d in decoded:
                history[d.seq] = d
        assert not (GOLDEN / f"{name}_{len(encoded)}.bin").exists()


@given(
    st.lists(st.integers(-40, 40), min_size=66, max_size=66),
    st.lists(st.integers(-3, 3), min_size=66, max_size=66),
    st.integers(0, 65535),
    st.integers(1, 128),
)
@settings(max_examples=100, deadline=None)
def test_key_then_delta_round_trip_random_values(first: list[int], step: list[int], seq: int, distance: int) -> None:
    layout = Layout(2, (True,) * 20)
    packet, coded = encode_packet(9, seq, layout, [(tuple(first), 77)], None)
    ref = decode_packet(packet, unpack_header(packet), None)[0]
    assert ref.values == coded[0].values == tuple(first)
    second = tuple(a + b for a, b in zip(first, step))
    p2, c2 = encode_packet(9, seq + distance, layout, [(second, 77 + 40 * distance)], ref)
    h2 = unpack_header(p2)
    assert h2.reference_seq == seq % 65536
    assert decode_packet(p2, h2, ref)[0].values == second


def test_golden_feedback_message() -> None:
    feedback = Feedback(3, 4660, 0xF0F0, 4650, 123456, 78, 9)
    path = GOLDEN / "feedback_v1.bin"
    if REGEN:
        path.write_bytes(pack_feedback(feedback))
    golden = path.read_bytes()
    assert pack_feedback(feedback) == golden
    assert unpack_feedback(golden) == feedback


def test_unwrap_seq_follows_the_wrap_both_ways() -> None:
    from codec.bitstream import SEQ_MODULUS, unwrap_seq

    assert unwrap_seq(7, None) == 7
    assert unwrap_seq(2, SEQ_MODULUS - 3) == SEQ_MODULUS + 2  # forward across the wrap
    assert unwrap_seq(SEQ_MODULUS - 1, SEQ_MODULUS + 2) == SEQ_MODULUS - 1  # a late one from before it
    assert unwrap_seq(100, 90) == 100 and unwrap_seq(80, 90) == 80
