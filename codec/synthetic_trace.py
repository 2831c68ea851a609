"""Seeded synthetic head-motion traces: turns, nods, talking mouth, blinks, brows as MotionParams.

The benchmark's motion source until real traces exist, and the sender's built-in demo source::

    from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms
    frames = synthetic_trace(num_frames=750, fps=25.0, num_keypoints=20, seed=0)  # 30 s
    timestamps = trace_timestamps_ms(len(frames), 25.0)

What it models (all smooth, in seconds, so any fps gives the same motion):
- head turns: the pose holds for 0.8-6 s then moves to a new target along a minimum-jerk path
  (0.3-1.2 s); targets yaw σ 15° (±45°), pitch σ 5° (±20°), roll σ 4° (±15°); plus a slow sway;
- nods: pitch dips of 3-8° over 0.35-0.7 s, more often while talking;
- translation: slow drifts (σ 0.04 / 0.03 / 0.02 for x / y / z), coupled to yaw and nods;
- talking: speech spans of 1.5-7 s with pauses of 0.4-2.5 s; syllables at ~3-6 Hz open the mouth
  (lower lip up to δ_y ≈ 0.06, chin, lip corners, jaw), a slow smile factor, brow raises on emphasis;
- blinks every 1.5-8 s (0.12-0.3 s, closing faster than opening), both eyes, sometimes one;
- δ per keypoint k: a constant rest offset (σ 0.02) + a role-specific response to those factors
  (keypoints 0-11: lower lip, upper lip, lip corners, chin, eyelids, brows, jaw sides, nose) + a small
  random coupling of every keypoint to mouth and smile (keypoints 12+ are face-contour-like points);
- estimator jitter: white noise σ 0.05° on angles and 0.0003 on translation and δ, times
  ``estimator_noise`` (0 gives perfectly smooth motion). Real keypoint estimators jitter too.
"""

from __future__ import annotations

import numpy as np

from codec.motion import DEFAULT_NUM_KEYPOINTS, MAX_NUM_KEYPOINTS, MotionParams

ANGLE_NOISE_DEG = 0.05
LINEAR_NOISE = 0.0003

# Role responses (dx, dy, dz) per unit factor, for keypoints 0..11; columns: mouth, smile, blink_l,
# blink_r, brow.
_ROLES: tuple[dict[str, tuple[float, float, float]], ...] = (
    {"mouth": (0.0, 0.06, 0.01)},  # 0 lower lip
    {"mouth": (0.0, -0.015, 0.0), "smile": (0.0, -0.005, 0.0)},  # 1 upper lip
    {"mouth": (0.006, 0.02, 0.0), "smile": (-0.03, -0.012, 0.004)},  # 2 left lip corner
    {"mouth": (-0.006, 0.02, 0.0), "smile": (0.03, -0.012, 0.004)},  # 3 right lip corner
    {"mouth": (0.0, 0.045, 0.006)},  # 4 chin
    {"blink_l": (0.0, 0.03, 0.0), "smile": (0.0, -0.004, 0.0)},  # 5 left eyelid
    {"blink_r": (0.0, 0.03, 0.0), "smile": (0.0, -0.004, 0.0)},  # 6 right eyelid
    {"brow": (0.0, -0.022, 0.0)},  # 7 left brow
    {"brow": (0.0, -0.022, 0.0)},  # 8 right brow
    {"mouth": (0.005, 0.022, 0.0)},  # 9 left jaw
    {"mouth": (-0.005, 0.022, 0.0)},  # 10 right jaw
    {"mouth": (0.0, 0.005, 0.0), "smile": (0.0, -0.003, 0.0)},  # 11 nose
)
_FACTORS = ("mouth", "smile", "blink_l", "blink_r", "brow")


def trace_timestamps_ms(num_frames: int, fps: float, start_ms: int = 0) -> list[int]:
    """Capture timestamps of a constant-rate trace: round(start + i · 1000 / fps) ms."""
    return [int(round(start_ms + i * 1000.0 / fps)) for i in range(num_frames)]


def synthetic_trace(
    num_frames: int,
    fps: float,
    num_keypoints: int = DEFAULT_NUM_KEYPOINTS,
    seed: int = 0,
    estimator_noise: float = 1.0,
) -> list[MotionParams]:
    """A seeded, smooth, talking-head motion trace of ``num_frames`` frames at ``fps``.

    Deterministic for a given (num_frames, fps, num_keypoints, seed, estimator_noise); a longer trace
    with the same seed does not extend a shorter one (event draws depend on the duration).
    """
    if num_frames < 0:
        raise ValueError(f"num_frames must be ≥ 0, got {num_frames}")
    if not (5.0 <= fps <= 120.0):
        raise ValueError(f"fps must be in [5, 120], got {fps}")
    if not (0 <= num_keypoints <= MAX_NUM_KEYPOINTS):
        raise ValueError(f"num_keypoints must be in [0, {MAX_NUM_KEYPOINTS}], got {num_keypoints}")
    if not (estimator_noise >= 0.0):
        raise ValueError(f"estimator_noise must be ≥ 0, got {estimator_noise}")
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / fps  # (N,) seconds
    duration = num_frames / fps + 1.0

    talking = _speech_spans(rng, t, duration)  # (N,) 0/1, smoothed
    mouth = _syllables(rng, t, duration) * talking  # (N,) in [0, ~1]
    nods = _nods(rng, t, duration, talking)  # (N,) degrees, ≥ 0
    yaw = _turns(rng, t, duration, 15.0, 45.0) + _sway(rng, t, 2.0, 0.15)
    pitch = _turns(rng, t, duration, 5.0, 20.0) + _sway(rng, t, 1.5, 0.2) + nods
    roll = _turns(rng, t, duration, 4.0, 15.0) + _sway(rng, t, 1.0, 0.1)
    tx = _turns(rng, t, duration, 0.04, 0.15) - 0.0015 * yaw
    ty = _turns(rng, t, duration, 0.03, 0.1) + 0.002 * nods
    tz = _turns(rng, t, duration, 0.02, 0.08)
    factors = {
        "mouth": mouth,
        "smile": np.clip(_turns(rng, t, duration, 0.35, 1.0), 0.0, 1.0),
        "brow": _bumps(rng, t, duration, rate_hz=0.25, width_s=(0.5, 1.4), amplitude=(0.3, 1.0)) * (0.3 + talking),
    }
    blink_l, blink_r = _blinks(rng, t, duration)
    factors["blink_l"], factors["blink_r"] = blink_l, blink_r

    response = np.zeros((num_keypoints, len(_FACTORS), 3))  # (K, F, 3)
    for k in range(num_keypoints):
        for f, name in enumerate(_FACTORS):
            if k < len(_ROLES) and name in _ROLES[k]:
                response[k, f] = _ROLES[k][name]
        response[k, 0] += rng.normal(0.0, 0.003, 3)  # every keypoint follows the jaw a little
        response[k, 1] += rng.normal(0.0, 0.002, 3)
    rest = rng.normal(0.0, 0.02, (num_keypoints, 3))  # (K, 3)
    factor_values = np.stack([factors[name] for name in _FACTORS], axis=1)  # (N, F)
    expression = rest[None] + np.einsum("nf,kfc->nkc", factor_values, response)  # (N, K, 3)

    noise = estimator_noise
    angles = np.stack([yaw, pitch, roll], axis=1) + rng.normal(0.0, ANGLE_NOISE_DEG * noise, (num_frames, 3))
    translation = np.stack([tx, ty, tz], axis=1) + rng.normal(0.0, LINEAR_NOISE * noise, (num_frames, 3))
    expression = expression + rng.normal(0.0, LINEAR_NOISE * noise, expression.shape)
    present = np.ones(num_keypoints, bool)
    return [
        MotionParams(
            float(angles[i, 0]),
            float(angles[i, 1]),
            float(angles[i, 2]),
            translation[i].astype(np.float32),
            expression[i].astype(np.float32),
            present,
        )
        for i in range(num_frames)
    ]


def _min_jerk(u: np.ndarray) -> np.ndarray:
    """Minimum-jerk profile 10u³ - 15u⁴ + 6u⁵ for u in [0, 1]."""
    u = np.clip(u, 0.0, 1.0)
    return u**3 * (10.0 - 15.0 * u + 6.0 * u * u)


def _turns(rng: np.random.Generator, t: np.ndarray, duration: float, sigma: float, limit: float) -> np.ndarray:
    """Hold a value 0.8-6 s, then move to a new N(0, sigma) target (clipped) in 0.3-1.2 s."""
    out = np.zeros_like(t)
    value = float(np.clip(rng.normal(0.0, sigma), -limit, limit))
    out[:] = value
    start = float(rng.uniform(0.0, 3.0))
    while start < duration:
        move_s = float(rng.uniform(0.3, 1.2))
        target = float(np.clip(rng.normal(0.0, sigma), -limit, limit))
        after = t >= start
        out[after] = value + (target - value) * _min_jerk((t[after] - start) / move_s)
        value = target
        start += move_s + float(np.clip(rng.exponential(2.5), 0.8, 6.0))
    return out


def _sway(rng: np.random.Generator, t: np.ndarray, amplitude: float, freq_hz: float) -> np.ndarray:
    phase, f = rng.uniform(0.0, 2 * np.pi), freq_hz * rng.uniform(0.7, 1.3)
    return amplitude * np.sin(2 * np.pi * f * t + phase)


def _bump(t: np.ndarray, start: float, rise_s: float, fall_s: float) -> np.ndarray:
    """A smooth 0 → 1 → 0 pulse: minimum-jerk rise over rise_s, then fall over fall_s."""
    rise = _min_jerk((t - start) / rise_s)
    fall = 1.0 - _min_jerk((t - start - rise_s) / fall_s)
    return np.where(t < start + rise_s, rise, fall)


def _bumps(
    rng: np.random.Generator,
    t: np.ndarray,
    duration: float,
    rate_hz: float,
    width_s: tuple[float, float],
    amplitude: tuple[float, float],
) -> np.ndarray:
    out = np.zeros_like(t)
    start = float(rng.exponential(1.0 / rate_hz))
    while start < duration:
        width = float(rng.uniform(*width_s))
        out = np.maximum(out, float(rng.uniform(*amplitude)) * _bump(t, start, width * 0.4, width * 0.6))
        start += width + float(rng.exponential(1.0 / rate_hz))
    return out


def _speech_spans(rng: np.random.Generator, t: np.ndarray, duration: float) -> np.ndarray:
    """1 while talking (1.5-7 s spans), 0 in pauses (0.4-2.5 s), with 0.15 s smooth edges."""
    out = np.zeros_like(t)
    start = float(rng.uniform(0.0, 1.0))
    while start < duration:
        length = float(rng.uniform(1.5, 7.0))
        edge = 0.15
        on = _min_jerk((t - start) / edge) * (1.0 - _min_jerk((t - start - length) / edge))
        out = np.maximum(out, on)
        start += length + float(rng.uniform(0.4, 2.5))
    return out


def _syllables(rng: np.random.Generator, t: np.ndarray, duration: float) -> np.ndarray:
    """Mouth opening in [0, 1]: one smooth opening per syllable at ~3-6 Hz."""
    out = np.zeros_like(t)
    start = 0.0
    while start < duration:
        period = float(rng.uniform(1.0 / 6.0, 1.0 / 3.0))
        amp = float(rng.uniform(0.25, 1.0))
        out = np.maximum(out, amp * _bump(t, start, period * 0.45, period * 0.55))
        start += period
    return out


def _nods(rng: np.random.Generator, t: np.ndarray, duration: float, talking: np.ndarray) -> np.ndarray:
    out = np.zeros_like(t)
    start = float(rng.exponential(4.0))
    while start < duration:
        width = float(rng.uniform(0.35, 0.7))
        out = out + float(rng.uniform(3.0, 8.0)) * _bump(t, start, width * 0.5, width * 0.5)
        talking_now = talking[min(int(np.searchsorted(t, start)), len(t) - 1)] if len(t) else 0.0
        start += width + float(rng.exponential(2.0 if talking_now > 0.5 else 6.0))
    return out


def _blinks(rng: np.random.Generator, t: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    left, right = np.zeros_like(t), np.zeros_like(t)
    start = float(rng.uniform(0.5, 3.0))
    while start < duration:
        width = float(rng.uniform(0.12, 0.3))
        pulse = _bump(t, start, width * 0.35, width * 0.65)
        wink = rng.uniform() < 0.05
        left = np.maximum(left, pulse)
        if not wink:
            right = np.maximum(right, pulse)
        start += width + float(np.clip(rng.exponential(3.5), 1.5, 8.0))
    return left, right
