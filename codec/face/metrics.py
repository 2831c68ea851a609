"""AKD: average keypoint distance between the landmarks of a generated and a real frame; mouth opening."""

from __future__ import annotations

import numpy as np


def akd(points_a: np.ndarray, points_b: np.ndarray, subset: np.ndarray | tuple[int, ...] | None = None) -> float:
    """Mean 2D L2 distance in pixels between corresponding landmarks.

    points_a, points_b: (N, 2+) in pixels of the same image size (256² for the reported metric);
    subset: optional landmark indices (e.g. codec.face.regions.MOUTH).
    """
    a, b = np.asarray(points_a, np.float64), np.asarray(points_b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"landmark arrays must both be (N, 2+), got {a.shape} and {b.shape}")
    if subset is not None:
        index = np.asarray(subset, dtype=np.int64)
        a, b = a[index], b[index]
    return float(np.linalg.norm(a[:, :2] - b[:, :2], axis=1).mean())


UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14  # mediapipe face-mesh indices
EYELIDS = ((159, 145), (386, 374))  # (upper, lower) eyelid midpoints: right eye, left eye


def mouth_opening(points: np.ndarray) -> float:
    """Distance in pixels between the inner lips' midpoints (mediapipe 13 and 14): ~0 for a closed mouth.

    AKD on the mouth is dominated by head motion (the lips move with the head); whether the mouth opens
    and closes with the driver is this, compared between a generated and a real frame."""
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[0] <= LOWER_INNER_LIP or p.shape[1] < 2:
        raise ValueError(f"mouth_opening needs mediapipe face-mesh landmarks (478, 2+), got {p.shape}")
    return float(np.linalg.norm(p[LOWER_INNER_LIP, :2] - p[UPPER_INNER_LIP, :2]))


def eye_opening(points: np.ndarray) -> float:
    """Mean distance in pixels between upper and lower eyelid midpoints of both eyes: ~0 when they blink."""
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[0] <= max(max(pair) for pair in EYELIDS) or p.shape[1] < 2:
        raise ValueError(f"eye_opening needs mediapipe face-mesh landmarks (478, 2+), got {p.shape}")
    return float(np.mean([np.linalg.norm(p[lower, :2] - p[upper, :2]) for upper, lower in EYELIDS]))
