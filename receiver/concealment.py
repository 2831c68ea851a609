"""Motion for frames that never arrived: interpolation between known frames, damped extrapolation after.

Interpolation (a later frame is already buffered): every field linearly between the two neighbours.
Extrapolation (nothing later yet): head angles and translation continue at the last observed
velocity, damped geometrically (``DAMPING`` per frame, so the total excursion stays below
``DAMPING / (1 - DAMPING)`` frames' worth of motion), and the expression δ holds its last value, which
keeps a mouth or eye from drifting open while packets are missing.
"""

from __future__ import annotations

import numpy as np

from codec.motion import MotionParams

DAMPING = 0.8


def _common_present(a: MotionParams, b: MotionParams) -> np.ndarray:
    return a.present & b.present


def interpolate(a: MotionParams, b: MotionParams, alpha: float) -> MotionParams:
    """(1 - alpha)·a + alpha·b per field; alpha in [0, 1]. Keypoints missing in either side keep the nearer one's δ."""
    if a.num_keypoints != b.num_keypoints:
        return a if alpha < 0.5 else b
    alpha = float(np.clip(alpha, 0.0, 1.0))
    both = _common_present(a, b)
    nearer = a if alpha < 0.5 else b
    expression = np.where(both[:, None], (1 - alpha) * a.expression + alpha * b.expression, nearer.expression)  # (K, 3)
    present = both | nearer.present
    return MotionParams(
        (1 - alpha) * a.yaw + alpha * b.yaw,
        (1 - alpha) * a.pitch + alpha * b.pitch,
        (1 - alpha) * a.roll + alpha * b.roll,
        (1 - alpha) * a.translation + alpha * b.translation,
        expression.astype(np.float32),
        present,
    )


def damped_steps(frames_ahead: int, damping: float = DAMPING) -> float:
    """Σ_{i=1..h} damping^i: how many frames' worth of velocity to add h frames after the last known one."""
    if frames_ahead <= 0:
        return 0.0
    return damping * (1 - damping**frames_ahead) / (1 - damping)


def extrapolate(previous: MotionParams | None, last: MotionParams, frames_between: int, frames_ahead: int) -> MotionParams:
    """Continue the pose from ``previous`` -> ``last`` (``frames_between`` frames apart) ``frames_ahead`` frames on."""
    if previous is None or frames_between <= 0 or previous.num_keypoints != last.num_keypoints:
        return last
    steps = damped_steps(frames_ahead) / frames_between
    return MotionParams(
        last.yaw + (last.yaw - previous.yaw) * steps,
        last.pitch + (last.pitch - previous.pitch) * steps,
        last.roll + (last.roll - previous.roll) * steps,
        last.translation + (last.translation - previous.translation) * steps,
        last.expression,
        last.present,
    )
