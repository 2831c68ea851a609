"""Quality of a reconstruction against the original frames: whole frame, face region, landmarks.

Per driving frame: PSNR and SSIM of the whole crop; the same inside the face region (the convex
hull of the *original* frame's landmarks, ``codec.face.face_hull_mask``); AKD, the mean distance in
pixels between the landmarks found on the reconstruction and on the original, over all 478
landmarks, the mouth and the eyes. Landmarks of both come from the same ``LandmarkDetector`` run on
single images (static mode), so tracking history favours neither. A reconstruction whose face is not
found has no AKD for that frame; ``detect_rate`` says how often that happened.

``identity``: the distance between dlib's face-recognition descriptors of the reconstruction and the
original (``codec.face.identity``; lower is better, < 0.6 reads as the same person). Both faces are read
without a detector: the original's at its landmarks, the reconstruction's at its own landmarks or, where
none were found on it, at the original's (a lost face counts as a large distance). It is the slowest
metric: ~0.1 s per descriptor on 2 cores; the originals' descriptors are kept (``IDENTITY_CACHE_FRAMES``)
so that each codec point pays for its reconstructions only.

A frame whose original has no face found has no face-region, AKD or identity values (NaN); the report's
means leave NaN out (``bench.report.pooled_means``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from bench.report import FRAME_METRICS
from codec.face.identity import IdentityEmbedder, optional_distance
from codec.face.landmarks import NUM_LANDMARKS, LandmarkDetector
from codec.face.metrics import landmark_metrics
from codec.face.regions import face_hull_mask
from codec.metrics import psnr, ssim

logger = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0  # PSNR of identical images (infinite) is counted as this
IDENTITY_CACHE_FRAMES = 20_000  # originals' identity descriptors kept (128 float64 each: ~20 MB)


@dataclass(frozen=True, eq=False)
class FrameScores:
    """Per-frame metrics of one clip's driving frames: each array (N-1,) float64, NaN where undefined."""

    values: dict[str, np.ndarray] = field(repr=False)
    face_found: np.ndarray = field(repr=False)  # (N-1,) bool: landmarks found on the reconstruction


def detect_landmarks(detector: LandmarkDetector, frames: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, 478, 3) float32 pixels of the largest face found, NaN where none."""
    out = np.full((frames.shape[0], NUM_LANDMARKS, 3), np.nan, np.float32)
    for i, frame in enumerate(frames):
        faces = detector.detect(frame)
        if faces:
            out[i] = np.asarray(faces[0].points, np.float32)
    return out


def score_frames(
    originals: np.ndarray,
    original_landmarks: np.ndarray,
    reconstruction: np.ndarray,
    detector: LandmarkDetector,
    embedder: IdentityEmbedder | None = None,
    identity_every: int = 1,
) -> FrameScores:
    """originals, reconstruction: (M, S, S, 3) uint8; original_landmarks (M, 478, 3) NaN where none.

    embedder: reads the identity descriptors (default: ``make_identity_embedder()``, one per process);
    identity_every: the identity distance only on every n-th frame (NaN on the others; it is the slow metric).
    """
    if identity_every < 1:
        raise ValueError(f"identity_every must be ≥ 1, got {identity_every}")
    if reconstruction.shape != originals.shape or reconstruction.dtype != np.uint8:
        raise ValueError(
            f"reconstruction must be uint8 {originals.shape} like the originals, got {reconstruction.dtype} {reconstruction.shape}"
        )
    count, size = originals.shape[0], originals.shape[1]
    values = {name: np.full(count, np.nan) for name in FRAME_METRICS}
    found = np.zeros(count, bool)
    recon_landmarks = detect_landmarks(detector, reconstruction)
    embedder = embedder or make_identity_embedder()
    for i in range(count):
        out, target = reconstruction[i], originals[i]
        values["psnr"][i] = min(psnr(out, target), PSNR_CAP_DB)
        values["ssim"][i] = ssim(out, target)
        target_points = original_landmarks[i]
        if not np.all(np.isfinite(target_points)):
            continue
        mask = face_hull_mask(target_points[:, :2], size)
        values["face_psnr"][i] = min(psnr(out, target, mask=mask), PSNR_CAP_DB)
        values["face_ssim"][i] = ssim(out, target, mask=mask)
        recon_found = bool(np.all(np.isfinite(recon_landmarks[i])))
        if recon_found:
            found[i] = True
            for name, value in landmark_metrics(recon_landmarks[i], target_points).items():
                values[name][i] = value
        if i % identity_every:
            continue
        at = recon_landmarks[i] if recon_found else target_points
        values["identity"][i] = optional_distance(embedder.describe(out, landmarks=at),
                                                  _original_descriptor(embedder, target, target_points))
    return FrameScores(values, found)


_original_descriptors: OrderedDict[str, np.ndarray | None] = OrderedDict()  # array_digest(frame, landmarks) -> (128,)


def _original_descriptor(embedder: IdentityEmbedder, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """The identity descriptor of an original frame (S, S, 3) uint8 at its landmarks (478, 3), computed once."""
    key = array_digest(frame) + array_digest(landmarks)
    if key in _original_descriptors:
        _original_descriptors.move_to_end(key)
        return _original_descriptors[key]
    descriptor = embedder.describe(frame, landmarks=landmarks)
    _original_descriptors[key] = descriptor
    if len(_original_descriptors) > IDENTITY_CACHE_FRAMES:
        _original_descriptors.popitem(last=False)
    return descriptor


def array_digest(array: np.ndarray) -> str:
    """A content hash of an image stack: identical reconstructions are scored once."""
    digest = hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16)
    digest.update(repr((array.shape, array.dtype.str)).encode())
    return digest.hexdigest()


def make_static_detector() -> LandmarkDetector:
    """The landmark detector in single-image mode (no tracking between calls)."""
    return LandmarkDetector(static_mode=True)


@functools.lru_cache(maxsize=1)
def make_identity_embedder() -> IdentityEmbedder:
    """The identity embedder (dlib's face-recognition net; models load on first use, once per process)."""
    return IdentityEmbedder()
