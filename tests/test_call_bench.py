"""python -m bench call: a short real call in two processes (slow: process start-up dominates)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main as bench_main


@pytest.mark.slow
def test_bench_call_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "call.json"
    assert bench_main(["call", "--seconds", "3", "--renderer", "reference-copy", "--max-kbps", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    s = result["summary"]
    assert s["frames_output"] == 75 and s["frames_concealed"] <= 3
    assert s["output_fps"] == pytest.approx(25.0, rel=0.05)
    assert s["final_setting"] == {"keypoints": 20, "preset": "default", "frames_per_packet": 1}
    assert 0 < s["payload_kbps"] < s["wire_kbps"] < 40  # one 93-byte-overhead packet per frame: ~20 kbps
    assert 0 < s["latency_ms_median"] <= s["latency_ms_p95"] < 200
    assert result["conditions"]["renderer"] == "reference-copy"
