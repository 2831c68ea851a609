"""codec.synthetic_trace: seeded, smooth, in range, with talking, blinks and head turns."""

from __future__ import annotations

import numpy as np
import pytest

from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms


def arrays(trace: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    angles = np.array([[m.yaw, m.pitch, m.roll] for m in trace])  # (N, 3)
    translation = np.stack([m.translation for m in trace])  # (N, 3)
    expression = np.stack([m.expression for m in trace])  # (N, K, 3)
    return angles, translation, expression


def test_seeded_and_shaped() -> None:
    a = synthetic_trace(300, 30.0, num_keypoints=20, seed=3)
    b = synthetic_trace(300, 30.0, num_keypoints=20, seed=3)
    c = synthetic_trace(300, 30.0, num_keypoints=20, seed=4)
    assert len(a) == 300 and a[0].num_keypoints == 20 and a[0].present.all()
    assert all(x.max_abs_difference(y) == {"angles_deg": 0.0, "translation": 0.0, "expression": 0.0} for x, y in zip(a, b))
    assert any(x.max_abs_difference(y)["angles_deg"] > 1 for x, y in zip(a, c))
    assert synthetic_trace(5, 25.0, num_keypoints=0)[0].expression.shape == (0, 3)
    assert trace_timestamps_ms(4, 30.0, start_ms=10) == [10, 43, 77, 110]


def test_realistic_ranges_and_smoothness() -> None:
    angles, translation, expression = arrays(synthetic_trace(1500, 25.0, seed=0))
    assert np.abs(angles[:, :2]).max() < 90 and np.abs(angles[:, 2]).max() < 180
    assert angles[:, 0].max() - angles[:, 0].min() > 15  # the head turns
    assert np.abs(translation).max() < 1.0 and np.abs(expression).max() < 0.3
    # Smooth: frame-to-frame changes are small compared with the ranges covered.
    assert np.percentile(np.abs(np.diff(angles, axis=0)), 95) < 2.0
    assert np.percentile(np.abs(np.diff(expression, axis=0)), 95) < 0.01
    # Talking: the lower lip (keypoint 0) opens and closes at syllable rate (3-6 Hz band dominates).
    lip = expression[:, 0, 1] - expression[:, 0, 1].mean()
    spectrum = np.abs(np.fft.rfft(lip)) ** 2
    freqs = np.fft.rfftfreq(len(lip), 1 / 25.0)
    assert spectrum[(freqs > 2) & (freqs < 7)].sum() > spectrum[freqs > 7].sum()
    # Blinks: the eyelids (5, 6) close briefly several times in 60 s.
    lid = expression[:, 5, 1] - np.median(expression[:, 5, 1])
    closings = np.count_nonzero(np.diff((lid > 0.015).astype(int)) == 1)
    assert 6 <= closings <= 40


def test_argument_validation() -> None:
    with pytest.raises(ValueError, match="fps must be in"):
        synthetic_trace(10, 1.0)
    with pytest.raises(ValueError, match="num_keypoints must be in"):
        synthetic_trace(10, 25.0, num_keypoints=65)
