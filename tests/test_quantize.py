"""codec.quantize: preset ids are wire constants; round trips stay within step/2 per field."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from codec.motion import MotionParams
from codec.quantize import COARSE, DEFAULT, FINE, PRESETS, get_preset


def motion_strategy(max_k: int = 24) -> st.SearchStrategy[MotionParams]:
    @st.composite
    def build(draw: st.DrawFn) -> MotionParams:
        k = draw(st.integers(0, max_k))
        yaw = draw(st.floats(-90, 90))
        pitch = draw(st.floats(-90, 90))
        roll = draw(st.floats(-180, 180))
        t = draw(hnp.arrays(np.float32, 3, elements=st.floats(-4, 4, width=32)))
        e = draw(hnp.arrays(np.float32, (k, 3), elements=st.floats(-2, 2, width=32)))
        present = draw(hnp.arrays(bool, k))
        return MotionParams(yaw, pitch, roll, t, e, present)

    return build()


def test_preset_ids_are_wire_constants() -> None:
    assert {pid: p.name for pid, p in PRESETS.items()} == {1: "fine", 2: "default", 3: "coarse"}
    assert (FINE.preset_id, DEFAULT.preset_id, COARSE.preset_id) == (1, 2, 3)
    assert DEFAULT.error_bounds == {"angles_deg": 0.125, "translation": 0.0025, "expression": 0.0025}
    assert get_preset("default") is DEFAULT and get_preset(2) is DEFAULT
    with pytest.raises(ValueError, match=r"unknown quantizer preset 'medium'; choose one of 1=fine, 2=default, 3=coarse"):
        get_preset("medium")


@given(motion_strategy(), st.sampled_from(sorted(PRESETS)))
@settings(max_examples=300, deadline=None)
def test_round_trip_error_within_half_step(motion: MotionParams, preset_id: int) -> None:
    preset = PRESETS[preset_id]
    quantized = preset.quantize(motion)
    assert quantized.clipped == 0
    back = preset.dequantize(quantized)
    err = motion.max_abs_difference(back)
    bounds = preset.error_bounds
    # float32 storage of t and δ adds at most one rounding of a value ≤ 4 (2^-24 · 4).
    assert err["angles_deg"] <= bounds["angles_deg"] * (1 + 1e-9)
    assert err["translation"] <= bounds["translation"] + 4 * 2.0**-24
    assert err["expression"] <= bounds["expression"] + 2 * 2.0**-24
    assert np.array_equal(back.present, motion.present)
    assert np.all(quantized.expression[~motion.present] == 0)


def test_out_of_range_values_are_clamped_and_counted() -> None:
    m = MotionParams(120.0, -95.0, 0.0, np.array([5.0, 0, 0], np.float32), np.full((2, 3), 3.0, np.float32), np.ones(2, bool))
    q = DEFAULT.quantize(m)
    assert q.clipped == 2 + 1 + 6
    back = DEFAULT.dequantize(q)
    assert back.yaw == pytest.approx(90.0) and back.pitch == pytest.approx(-90.0)
    assert back.translation[0] == pytest.approx(4.0) and back.expression.max() == pytest.approx(2.0)


def test_dequantize_rejects_other_preset() -> None:
    q = FINE.quantize(MotionParams.neutral(3))
    with pytest.raises(ValueError, match="quantized motion is for preset 1, not 2 \\(default\\)"):
        DEFAULT.dequantize(q)
