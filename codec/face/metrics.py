"""Landmark metrics between a generated and a real frame: AKD (overall, mouth, eyes) and the mouth's and eyes' opening."""

from __future__ import annotations

import numpy as np

from codec.face.regions import EYES, MOUTH


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
LANDMARK_METRICS = ("akd", "akd_mouth", "akd_eyes", "mouth_open_error", "eyes_open_error")


def _face_mesh(points: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[0] <= max(LOWER_INNER_LIP, *(i for pair in EYELIDS for i in pair)) or p.shape[1] < 2:
        raise ValueError(f"{name} needs mediapipe face-mesh landmarks (478, 2+), got {p.shape}")
    return p


def mouth_opening(points: np.ndarray) -> float:
    """Distance in pixels between the inner lips' midpoints (mediapipe 13 and 14): ~0 for a closed mouth.

    AKD on the mouth is dominated by head motion (the lips move with the head); whether the mouth opens
    and closes with the driver is this, compared between a generated and a real frame."""
    p = _face_mesh(points, "mouth_opening")
    return float(np.linalg.norm(p[LOWER_INNER_LIP, :2] - p[UPPER_INNER_LIP, :2]))


def eye_opening(points: np.ndarray) -> float:
    """Mean distance in pixels between upper and lower eyelid midpoints of both eyes: ~0 when they blink."""
    p = _face_mesh(points, "eye_opening")
    return float(np.mean([np.linalg.norm(p[lower, :2] - p[upper, :2]) for upper, lower in EYELIDS]))


def landmark_metrics(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """The LANDMARK_METRICS of a generated frame against the real one, both (478, 2+) landmarks in pixels:
    AKD overall, on the mouth and on the eyes, and the errors of the mouth's and the eyes' opening."""
    a, b = generated[:, :2], real[:, :2]
    return {
        "akd": akd(a, b), "akd_mouth": akd(a, b, subset=MOUTH), "akd_eyes": akd(a, b, subset=EYES),
        "mouth_open_error": abs(mouth_opening(a) - mouth_opening(b)),
        "eyes_open_error": abs(eye_opening(a) - eye_opening(b)),
    }
