"""The sender's motion smoothing: still at rest, follows real motion with a short lag."""

from __future__ import annotations

import numpy as np

from codec.motion import MotionParams
from sender.motion_filter import MotionSmoother

K = 20


def _motion(yaw: float, delta: np.ndarray) -> MotionParams:
    return MotionParams(yaw, 0.0, 0.0, np.zeros(3, np.float32), delta.astype(np.float32), np.ones(K, bool))


def test_jitter_at_rest_is_removed() -> None:
    rng = np.random.default_rng(0)
    smoother = MotionSmoother(25.0)
    outputs = [smoother(_motion(5.0 + rng.normal(0, 0.3), rng.normal(0, 0.004, (K, 3)))) for _ in range(200)]
    yaw = np.array([m.yaw for m in outputs[25:]])
    delta = np.stack([m.expression for m in outputs[25:]])
    assert np.std(np.diff(yaw)) < 0.3 * np.sqrt(2) / 1.3  # frame-to-frame jitter cut by > 1.3x (measured ~1.5x)
    assert np.std(np.diff(delta, axis=0)) < 0.004 * np.sqrt(2) / 1.3
    assert abs(yaw.mean() - 5.0) < 0.1


def test_fast_motion_is_followed_within_a_few_frames() -> None:
    smoother = MotionSmoother(25.0)
    zero = np.zeros((K, 3))
    for _ in range(25):
        smoother(_motion(0.0, zero))
    open_mouth = np.zeros((K, 3))
    open_mouth[3, 1] = 0.08  # lower lip drops by 0.08 (a wide-open mouth)
    outputs = [smoother(_motion(20.0, open_mouth)) for _ in range(5)]  # a 20° turn in one frame
    assert outputs[0].yaw > 18.0 and outputs[1].yaw > 19.5  # measured 99 % after one frame
    assert outputs[0].expression[3, 1] > 0.07 and outputs[1].expression[3, 1] > 0.078  # 95 %, then all


def test_keypoint_count_change_restarts_the_filter() -> None:
    smoother = MotionSmoother(25.0)
    smoother(_motion(1.0, np.zeros((K, 3))))
    other = MotionParams(3.0, 0.0, 0.0, np.zeros(3, np.float32), np.zeros((5, 3), np.float32), np.ones(5, bool))
    assert smoother(other).yaw == 3.0
