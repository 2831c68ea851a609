"""Baselines that a trained model must beat: "no motion" and "the reference warped by a plain affine".

no-motion floor: output = the reference frame.
affine floor: output = the reference warped by the similarity transform (rotation, uniform scale,
translation) that best maps the reference's stable landmarks (eyes, brows, nose, forehead, temples;
not the mouth or jaw) onto the driving frame's, estimated robustly with cv2.estimateAffinePartial2D.
"""

from __future__ import annotations

import cv2
import numpy as np

# mediapipe face-mesh indices that move with the skull, not with expression (eye corners, brows,
# nose bridge and tip, nose wings, forehead, temples).
STABLE_LANDMARKS: tuple[int, ...] = (
    33, 133, 362, 263,  # eye corners
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows
    168, 6, 197, 195, 5, 4, 1, 98, 327,  # nose
    10, 151, 9, 8,  # forehead
    234, 454, 127, 356,  # temples
)


def no_motion_floor(reference: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 reference -> the floor's output: the reference itself (a copy)."""
    return np.array(reference, copy=True)


def affine_transform(ref_landmarks: np.ndarray, drv_landmarks: np.ndarray) -> np.ndarray:
    """(478, >=2) crop pixels of reference and driving -> (2, 3) float64 similarity map ref -> drv.

    Landmarks are continuous pixel coordinates (0 at the left edge); the map is returned in OpenCV's
    pixel-centre convention (centre of pixel 0 at 0), ready for cv2.warpAffine. Falls back to the identity when the estimate fails (degenerate landmarks).
    """
    src = np.asarray(ref_landmarks, np.float64)[list(STABLE_LANDMARKS), :2] - 0.5
    dst = np.asarray(drv_landmarks, np.float64)[list(STABLE_LANDMARKS), :2] - 0.5
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("affine floor needs finite landmarks (got NaN or inf)")
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None:
        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return matrix


def affine_floor(reference: np.ndarray, ref_landmarks: np.ndarray, drv_landmarks: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 reference warped by ``affine_transform`` (edge pixels replicated) -> (H, W, 3) uint8."""
    h, w = reference.shape[:2]
    matrix = affine_transform(ref_landmarks, drv_landmarks)
    return cv2.warpAffine(
        np.ascontiguousarray(reference), matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
