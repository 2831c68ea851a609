"""Named landmark subsets of the 478-point face mesh, and the face-region mask used by the metrics."""

from __future__ import annotations

import cv2
import numpy as np


def _indices(connections: frozenset[tuple[int, int]]) -> np.ndarray:
    return np.array(sorted({i for edge in connections for i in edge}), dtype=np.int64)


def _load() -> dict[str, np.ndarray]:
    from mediapipe.python.solutions import face_mesh_connections as c  # the mesh's own topology

    return {
        "MOUTH": _indices(c.FACEMESH_LIPS),
        "LEFT_EYE": _indices(c.FACEMESH_LEFT_EYE | c.FACEMESH_LEFT_IRIS),
        "RIGHT_EYE": _indices(c.FACEMESH_RIGHT_EYE | c.FACEMESH_RIGHT_IRIS),
        "LEFT_EYEBROW": _indices(c.FACEMESH_LEFT_EYEBROW),
        "RIGHT_EYEBROW": _indices(c.FACEMESH_RIGHT_EYEBROW),
        "FACE_OVAL": _indices(c.FACEMESH_FACE_OVAL),
        "NOSE": _indices(c.FACEMESH_NOSE),
    }


_REGIONS = _load()
MOUTH: np.ndarray = _REGIONS["MOUTH"]  # lips, outer and inner contour
LEFT_EYE: np.ndarray = _REGIONS["LEFT_EYE"]  # the subject's left eye (image right), lids and iris
RIGHT_EYE: np.ndarray = _REGIONS["RIGHT_EYE"]
EYES: np.ndarray = np.concatenate([LEFT_EYE, RIGHT_EYE])
LEFT_EYEBROW: np.ndarray = _REGIONS["LEFT_EYEBROW"]
RIGHT_EYEBROW: np.ndarray = _REGIONS["RIGHT_EYEBROW"]
FACE_OVAL: np.ndarray = _REGIONS["FACE_OVAL"]
NOSE: np.ndarray = _REGIONS["NOSE"]

# Landmarks that move with the skull, not with expression: forehead, nose bridge and tip, eye
# corners, temples, cheekbones. Used for the head-pose fit.
RIGID: np.ndarray = np.array(
    [10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94,  # midline: forehead to nose tip
     33, 133, 263, 362,  # eye corners
     127, 356, 234, 454, 93, 323,  # temples and cheek sides
     116, 345, 117, 346, 50, 280,  # cheekbones
     98, 327, 129, 358, 64, 294,  # nose wings
     70, 300, 105, 334, 107, 336],  # brows (move little)
    dtype=np.int64,
)


def face_hull_mask(points: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """points: (N, 2+) pixels -> (H, W) bool mask of the landmarks' convex hull."""
    h, w = (size, size) if isinstance(size, int) else size
    mask = np.zeros((h, w), np.uint8)
    pts = np.asarray(points)[:, :2]
    if not np.all(np.isfinite(pts)):
        raise ValueError("landmark points must be finite to build a face mask")
    hull = cv2.convexHull(np.round(pts).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)
