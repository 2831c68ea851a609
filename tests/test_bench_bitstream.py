"""python -m bench bitstream: runs end to end on a short trace and writes the documented JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.__main__ import main
from bench.bitstream import WIRE_OVERHEAD_BYTES, load_trace, save_trace, wire_bytes
from codec.synthetic_trace import synthetic_trace


def test_wire_overhead_constant() -> None:
    assert WIRE_OVERHEAD_BYTES == 20 + 8 + 13 + 8 + 16 + 12 + 16
    assert wire_bytes(10) == 12 + 93 and wire_bytes(12) == 12 + 93


def r_key_fpp(r: dict, result: dict) -> str:
    """The frames per packet of a setting's result, from its key in the report."""
    key = next(k for k, v in result["settings"].items() if v is r)
    return key.split("fpp=")[1].split(",")[0]


def test_bench_bitstream_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bits.json"
    argv = ["bitstream", "--presets", "default", "--ks", "20", "0", "--fpps", "1", "3", "--fps", "25", "--seconds", "4", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result["settings"]) == {f"preset=default,K={k},fpp={f},fps=25" for k in (20, 0) for f in (1, 3)}
    for r in result["settings"].values():
        for name in ("payload_kbps", "wire_kbps", "entropy_kbps", "bytes_per_frame"):
            assert name in r
        assert r["within_bound"] and r["frames_decoded"] == 100
        assert r["wire_kbps"] > r["payload_kbps"] > 0 and r["entropy_kbps"] > 0
        packets_per_s = math.ceil(100 / int(r_key_fpp(r, result))) / 4.0  # 100 frames, 4 s
        # RTP: 50 B a packet on top of the payload; the data channel 93 B + padding
        assert r["wire_kbps"] == pytest.approx(r["payload_kbps"] + packets_per_s * 50 * 8 / 1000, rel=1e-6)
        assert r["wire_kbps_datachannel"] >= r["payload_kbps"] + packets_per_s * 93 * 8 / 1000 - 1e-9
        alt = r["alternatives_bytes_per_frame"]
        assert alt["range_coder"] < alt["zstd_dict"] < alt["float32"]
    k20 = result["settings"]["preset=default,K=20,fpp=1,fps=25"]
    k0 = result["settings"]["preset=default,K=0,fpp=1,fps=25"]
    assert k0["payload_kbps"] < k20["payload_kbps"]
    assert k20["bytes_per_frame"]["key"] > k20["bytes_per_frame"]["delta"]
    assert "payload" in capsys.readouterr().out


def test_trace_file_round_trip(tmp_path: Path) -> None:
    motions = synthetic_trace(30, 30.0, num_keypoints=6, seed=1)
    path = tmp_path / "t.npz"
    save_trace(path, motions, 30.0)
    trace = load_trace(path)
    assert trace.fps == 30.0 and len(trace.motions) == 30 and trace.timestamps_ms[1] == 33
    assert np.allclose(trace.motions[5].expression, motions[5].expression)
    out = tmp_path / "r.json"
    assert main(["bitstream", "--trace", str(path), "--presets", "coarse", "--ks", "6", "--fpps", "2", "--no-alternatives", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["settings"]["preset=coarse,K=6,fpp=2,fps=30"]
    assert r["within_bound"]
    np.savez(tmp_path / "bad.npz", yaw=np.zeros(3))
    with pytest.raises(ValueError, match="lacks arrays"):
        load_trace(tmp_path / "bad.npz")


def test_zstd_alternative_round_trips_without_frame_overhead() -> None:
    from codec.baseline_coders import load_dictionary, msgpack_body, zstd_body, zstd_unbody
    from codec.bitstream import Layout

    layout = Layout(2, (True,) * 2)
    frames = [(1, 2, 3, 4, 5, 6, 0, 1, 0, -1, 0, 2), (1, 2, 4, 4, 5, 6, 0, 1, 0, -1, 0, 2)]
    payload = msgpack_body(layout, frames, [40, 40], None)
    assert len(load_dictionary().as_bytes()) == 4096
    for use_dictionary in (False, True):
        body = zstd_body(payload, use_dictionary)
        assert not body.startswith(b"\x28\xb5\x2f\xfd")  # magicless
        assert zstd_unbody(body, use_dictionary) == payload


def test_real_clip_trace_through_the_motion_encoder(tmp_path: Path) -> None:
    """--clips: frames -> face crop -> MotionEncoder -> a trace the benchmark codes (here a JPEG folder of the
    embedded synthetic clip and the random-weight model, so only the plumbing is checked)."""
    import cv2

    from bench.bitstream import BenchConfig, run_bitstream, trace_from_clips
    from bench.synthetic_clip import synthetic_talking_head

    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(synthetic_talking_head(12, 256)):
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    trace = trace_from_clips([folder, folder], max_frames=10)
    assert len(trace.motions) == 20 and trace.timestamps_ms == sorted(trace.timestamps_ms)
    assert trace.fps == 25.0 and trace.expression_baseline is not None and trace.expression_baseline.shape == (20, 3)
    assert "clip" in trace.source and trace.motions[0].num_keypoints == 20
    result = run_bitstream(BenchConfig(presets=("default",), ks=(20,), fpps=(2,), alternatives=False, clips=(folder,)))
    (setting,) = result["settings"].values()
    assert setting["within_bound"] and setting["payload_kbps"] > 0


def test_low_k_sends_the_senders_causal_choice_and_decodes_within_bounds() -> None:
    """K < 20: the keypoints sent follow the sender's own choice as the trace goes (re-chosen while K holds);
    every frame decodes within the preset's error bounds on the keypoints it was sent with."""
    from bench.bitstream import BenchConfig, run_bitstream

    result = run_bitstream(BenchConfig(presets=("default",), ks=(5,), fpps=(1, 3), fpss=(25.0,), seconds=20,
                                       alternatives=False))
    for r in result["settings"].values():
        assert r["within_bound"] and r["frames_decoded"] == 500
    assert "causal" in result["conditions"]["keypoint_choice"]
