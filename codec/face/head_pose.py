"""Head-pose teacher: yaw/pitch/roll from face-mesh landmarks, by a rigid fit to a 3D mean face.

The mean face (``mean_face.npy``, 478×3, shipped) was built by ``python -m codec.face.head_pose
build`` from mediapipe landmarks of frames of ../shared/data/clips: generalised Procrustes alignment
of the rigid landmarks, then oriented so that the face is frontal by definition: x from the subject's
right to left eye corners (image left to right), y from forehead to chin (down), z = x × y (into the
screen). A frame's rotation is the least-squares rotation (Kabsch/Umeyama, with scale) that maps the
mean face's rigid landmarks onto the frame's; its angles follow codec/motion.py's convention, so the
teacher's pose and the model's R are the same quantity.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from codec.face.regions import RIGID
from codec.motion import rotation_to_angles

log = logging.getLogger(__name__)

MEAN_FACE_PATH = Path(__file__).with_name("mean_face.npy")
# Symmetric landmark pairs (subject's right, subject's left) used to orient the mean face.
_SYMMETRIC_PAIRS = ((33, 263), (133, 362), (234, 454), (127, 356), (70, 300), (105, 334), (98, 327), (129, 358))
_FOREHEAD, _CHIN = 10, 152


def _umeyama(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Least-squares similarity target ≈ s · R · source + t. source, target: (N, 3) -> (R (3,3), s, t (3,))."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    xs, xt = source - mu_s, target - mu_t
    cov = xt.T @ xs / len(source)  # (3, 3)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / (xs**2).sum(1).mean())
    return rotation, scale, mu_t - scale * rotation @ mu_s


def _load_mean_face() -> np.ndarray:
    if not MEAN_FACE_PATH.is_file():
        raise FileNotFoundError(
            f"{MEAN_FACE_PATH} is missing; rebuild it with `python -m codec.face.head_pose build --clips ../shared/data/clips`"
        )
    face = np.load(MEAN_FACE_PATH).astype(np.float64)
    if face.shape != (478, 3):
        raise ValueError(f"{MEAN_FACE_PATH} has shape {face.shape}, expected (478, 3)")
    return face


_MEAN_FACE: np.ndarray | None = None


def mean_face() -> np.ndarray:
    """(478, 3) float64 frontal mean face, centred, unit RMS radius over the rigid landmarks."""
    global _MEAN_FACE
    if _MEAN_FACE is None:
        _MEAN_FACE = _load_mean_face()
    return _MEAN_FACE


def rotation_from_landmarks(points: np.ndarray) -> np.ndarray:
    """points: (478, 3) landmarks (pixels, z in the same scale) -> (3, 3) head rotation R."""
    pts = np.asarray(points, np.float64)
    if pts.shape != (478, 3) or not np.all(np.isfinite(pts)):
        raise ValueError(f"need finite (478, 3) landmarks, got shape {pts.shape}")
    rotation, _, _ = _umeyama(mean_face()[RIGID], pts[RIGID])
    return rotation


def head_pose_from_landmarks(points: np.ndarray) -> tuple[float, float, float]:
    """points: (478, 3) landmarks -> (yaw, pitch, roll) in degrees, codec/motion.py convention."""
    return rotation_to_angles(rotation_from_landmarks(points))


def _orient(face: np.ndarray) -> np.ndarray:
    """Rotate a (478, 3) face into the frontal frame defined in the module docstring."""
    x = np.mean([face[left] - face[right] for right, left in _SYMMETRIC_PAIRS], axis=0)
    x /= np.linalg.norm(x)
    y = face[_CHIN] - face[_FOREHEAD]
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    basis = np.stack([x, y, z], axis=1)  # (3, 3), columns are the face's axes in the input frame
    centred = face - face[RIGID].mean(0)
    oriented = centred @ basis
    return oriented / np.sqrt((oriented[RIGID] ** 2).sum(1).mean())


def build_mean_face(faces: list[np.ndarray], iterations: int = 5) -> np.ndarray:
    """Generalised Procrustes over (478, 3) landmark sets -> oriented (478, 3) mean face."""
    if len(faces) < 10:
        raise ValueError(f"need at least 10 faces to build a mean face, got {len(faces)}")
    mean = _orient(faces[0].astype(np.float64))
    for _ in range(iterations):
        aligned = []
        for face in faces:
            rotation, scale, shift = _umeyama(face[RIGID].astype(np.float64), mean[RIGID])
            aligned.append((scale * face @ rotation.T) + shift)
        mean = _orient(np.mean(aligned, axis=0))
    return mean


def _build_main(argv: list[str] | None) -> int:
    from codec.data.clips import iter_clip_frames, list_clips
    from codec.face.landmarks import LandmarkDetector

    parser = argparse.ArgumentParser(prog="python -m codec.face.head_pose build", description=__doc__)
    parser.add_argument("--clips", type=Path, default=Path("../shared/data/clips"), help="folder of face clips")
    parser.add_argument("--frames-per-clip", type=int, default=8)
    parser.add_argument("--out", type=Path, default=MEAN_FACE_PATH)
    args = parser.parse_args(argv)
    faces = []
    with LandmarkDetector(static_mode=True) as detector:
        for clip in list_clips(args.clips):
            for index, frame in enumerate(iter_clip_frames(clip)):
                if index % 15 == 0:
                    found = detector.detect(frame)
                    if found:
                        faces.append(found[0].points)
                if index >= 15 * args.frames_per_clip:
                    break
    mean = build_mean_face(faces)
    np.save(args.out, mean.astype(np.float32))
    log.info("mean face from %d frames written to %s", len(faces), args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "build":
        print("usage: python -m codec.face.head_pose build [--clips DIR] [--out FILE]", file=sys.stderr)
        return 2
    return _build_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
