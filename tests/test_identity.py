"""Identity distance (dlib's face-recognition ResNet) on scikit-image's astronaut photo cropped like our 256² crops."""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
import pytest
from skimage import data

from bench.quality import score_frames
from codec.face.identity import (
    DESCRIPTOR_SIZE,
    SAME_PERSON_DISTANCE,
    IdentityEmbedder,
    box_from_landmarks,
    identity_distance,
    optional_distance,
)
from codec.face.landmarks import LandmarkDetector

SIZE = 256


def _astronaut_crop(dx: int = 0, dy: int = 0) -> np.ndarray:
    """(256, 256, 3) uint8: a 180² square around the face (framed as codec.face.crop frames it), moved by (dx, dy)."""
    x0, y0, side = 134 + dx, 27 + dy, 180
    return cv2.resize(data.astronaut()[y0:y0 + side, x0:x0 + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def embedder() -> IdentityEmbedder:
    return IdentityEmbedder()


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return _astronaut_crop()


@pytest.fixture(scope="module")
def descriptor(embedder: IdentityEmbedder, face: np.ndarray) -> np.ndarray:
    found = embedder.describe(face)
    assert found is not None, "HOG found no face in the astronaut crop"
    return found


def test_descriptor_is_128_d_and_stable_under_small_changes(embedder: IdentityEmbedder, descriptor: np.ndarray) -> None:
    assert descriptor.shape == (DESCRIPTOR_SIZE,) and descriptor.dtype == np.float64
    assert 0.5 < np.linalg.norm(descriptor) < 1.5  # dlib's descriptors have norms near 1
    moved = np.clip(_astronaut_crop(dx=-6, dy=6).astype(np.float32) * 1.2 + 15, 0, 255).astype(np.uint8)
    other = embedder.describe(moved)
    assert other is not None
    assert identity_distance(descriptor, other) < 0.25 < SAME_PERSON_DISTANCE  # measured 0.15
    assert identity_distance(descriptor, descriptor) == 0.0


def test_heavy_distortion_loses_the_identity(embedder: IdentityEmbedder, face: np.ndarray, descriptor: np.ndarray) -> None:
    """A 12² mosaic of the face, read at the same box, is no longer recognisably the person (measured 0.76)."""
    box = embedder.find_face(face)
    assert box is not None
    mosaic = cv2.resize(cv2.resize(face, (12, 12), interpolation=cv2.INTER_AREA), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
    blocky = embedder.describe(mosaic, box=box)
    assert blocky is not None and identity_distance(descriptor, blocky) > SAME_PERSON_DISTANCE


def test_no_face_gives_none_and_nan(embedder: IdentityEmbedder, descriptor: np.ndarray) -> None:
    cat = cv2.resize(data.chelsea(), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    assert embedder.describe(cat) is None
    assert embedder.describe(np.full((SIZE, SIZE, 3), 128, np.uint8)) is None
    assert np.isnan(optional_distance(descriptor, None))


def test_central_fallback_reads_a_face_hog_misses(face: np.ndarray, descriptor: np.ndarray) -> None:
    """HOG misses a strongly blurred crop; with central_fallback the crop's usual face box is used."""
    blurred = cv2.GaussianBlur(face, (0, 0), 6)
    assert IdentityEmbedder().find_face(blurred) is None
    fallback = IdentityEmbedder(central_fallback=True)
    soft = fallback.describe(blurred)
    assert soft is not None and identity_distance(descriptor, soft) < 0.7  # measured 0.52 at HOG's own box


def test_landmarks_place_the_face_without_the_detector(embedder: IdentityEmbedder, face: np.ndarray, descriptor: np.ndarray) -> None:
    """A mediapipe-like point cloud spanning the face oval gives the box HOG finds (to a few pixels)."""
    box = embedder.find_face(face)
    assert box == (65.0, 79.0, 189.0, 203.0)
    oval = np.array([[67.5, 61.0], [189.0, 61.0], [189.0, 191.0], [67.5, 191.0], [128.0, 120.0]])  # (5, 2) pixels
    left, top, right, bottom = box_from_landmarks(oval)
    assert abs(left - 65) < 3 and abs(top - 70) < 3 and right == 189 and abs(bottom - 183) < 3
    placed = embedder.describe(face, landmarks=oval)
    assert placed is not None and identity_distance(descriptor, placed) < 0.15


def test_bad_input_raises_clear_errors(embedder: IdentityEmbedder, face: np.ndarray, descriptor: np.ndarray) -> None:
    with pytest.raises(ValueError, match="must be uint8, got float32"):
        embedder.describe(face.astype(np.float32))
    with pytest.raises(ValueError, match=r"must be \(H, W, 3\) RGB, got shape \(256, 256\)"):
        embedder.describe(face[..., 0])
    with pytest.raises(ValueError, match="right > left"):
        embedder.describe(face, box=(100.0, 100.0, 50.0, 150.0))
    with pytest.raises(ValueError, match="not both"):
        embedder.describe(face, box=(65.0, 79.0, 189.0, 203.0), landmarks=np.zeros((478, 2)))
    with pytest.raises(ValueError, match="NaN"):
        embedder.describe(face, landmarks=np.full((478, 2), np.nan))
    with pytest.raises(ValueError, match=r"\(128,\)"):
        identity_distance(descriptor, descriptor[:64])


def test_missing_dlib_or_models_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    from codec.face import identity

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ImportError, match="pip install dlib-bin==.* face-recognition-models=="):
        identity.models_folder()
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(ImportError, match="needs dlib .*pip install dlib-bin"):
        identity._load_models.__wrapped__()


class _NoFaces:
    """A landmark detector that finds nothing (the reconstruction's face is then read at the original's landmarks)."""

    def detect(self, image: np.ndarray) -> list[object]:
        return []


def test_bench_scores_identity_per_frame(embedder: IdentityEmbedder, face: np.ndarray) -> None:
    """bench rd's per-frame ``identity``: 0 for an exact copy, > 0.6 for a mosaic, NaN where the original has no face."""
    corners = np.array([[67.5, 61.0], [189.0, 61.0], [189.0, 191.0], [67.5, 191.0]])  # the face oval's box, pixels
    points = np.random.default_rng(0).uniform(corners[0], corners[2], (478, 2))
    points[:4] = corners
    landmarks = np.concatenate([points, np.zeros((478, 1))], 1)[None].repeat(3, 0)  # (3, 478, 3)
    landmarks[2] = np.nan  # no face found on the third original
    mosaic = cv2.resize(cv2.resize(face, (12, 12), interpolation=cv2.INTER_AREA), (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
    originals = np.stack([face, face, face])  # (3, S, S, 3)
    scores = score_frames(originals, landmarks, np.stack([face, mosaic, mosaic]), cast(LandmarkDetector, _NoFaces()), embedder)
    identity = scores.values["identity"]  # (3,)
    assert identity.shape == (3,) and identity[0] == 0.0 and identity[1] > SAME_PERSON_DISTANCE and np.isnan(identity[2])
