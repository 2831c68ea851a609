"""receiver/call_report.py: where a frame's latency went, and the call's latency per window of capture time."""

from __future__ import annotations

import numpy as np

from receiver.call_report import OutputRecord, RenderRecord, _latency_by_window, _latency_parts


def test_latency_splits_into_arrival_playout_and_render() -> None:
    outputs = [OutputRecord(slot, 1, slot, False, 1000.0 * slot, 1000.0 * slot + 90, 1000.0 * slot + 40)
               for slot in range(5)]
    outputs.append(OutputRecord(5, 1, 5, True, 5000.0, 5090.0, None))  # concealed: no arrival, not counted
    renders = [RenderRecord(slot, False, 1000.0 * slot, 1000.0 * slot + 120, 25.0) for slot in range(5)]
    parts = _latency_parts(renders, outputs)
    assert parts["to_arrival"]["median"] == 40 and parts["arrival_to_due"]["median"] == 50
    assert parts["due_to_rendered"]["median"] == 30  # 40 + 50 + 30 = the frame's 120 ms


def test_latency_per_window_keeps_a_call_start_apart() -> None:
    renders = [RenderRecord(i, False, 100.0 * i, 100.0 * i + (400 if i < 20 else 200), 20.0) for i in range(60)]
    windows = _latency_by_window(renders, 2.0)
    assert [w["from_s"] for w in windows] == [0.0, 2.0, 4.0] and [w["frames"] for w in windows] == [20, 20, 20]
    assert windows[0]["p95"] == 400 and windows[1]["p95"] == 200 and _latency_by_window([], 2.0) == []
