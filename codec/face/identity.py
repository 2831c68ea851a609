"""Identity distance: does the output still look like the person? dlib's face-recognition ResNet, offline.

A face becomes dlib's 128-d descriptor (``dlib_face_recognition_resnet_model_v1``): its 5-point shape
predictor places eye corners and nose in a face box, the face is aligned to a 150² chip, and the
ResNet maps the chip to a 128-d vector. Two faces of the same person lie within ``SAME_PERSON_DISTANCE``
(0.6, dlib's own threshold: 99.38% on LFW) in Euclidean distance; lower is more alike.

Where the face is: a box (left, top, right, bottom) or mediapipe landmarks given by the caller (no
detector runs), else dlib's HOG frontal face detector, the largest face. On this project's 256² crops
(face oval ≈ 60% of the side) HOG at no upsampling found the face in 184 of 184 prepared validation
frames (~13 ms each); smaller images are upsampled until their short side reaches ``HOG_MIN_SIDE``.
``central_fallback=True`` makes a crop whose face HOG misses (a blurred render, a profile) use the box
where the crop's framing rule puts the face (``CENTRAL_BOX``) instead of returning None; leave it off
where "no face" must stay "no face" (a cat photo gets a descriptor with it on).

Cost on the 2-core CPU here: ~100 ms per descriptor (97 ms best, 140 ms median with the cores shared;
dlib-bin 20.0.1.post1 has AVX but no BLAS); detection adds ~10 ms at 256² when no box or landmarks are given.

Models: the PyPI package ``face-recognition-models`` holds the .dat files. Its module's path
functions import ``pkg_resources``, which setuptools ≥ 81 no longer ships, so the files are found
through the package's location instead (the module is never imported).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from codec.face.landmarks import validate_image

logger = logging.getLogger(__name__)

DESCRIPTOR_SIZE = 128
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold: descriptors of one person are closer than this
INSTALL_HINT = "pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0 (both are in pyproject.toml: pip install -e .)"
SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
RECOGNITION_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
HOG_MIN_SIDE = 192  # the detector upsamples (×2 each time, at most twice) until the short side is at least this
# dlib-like box from the bounding box (x0, y0, w, h) of mediapipe's 478 landmarks, as fractions of w and h:
# left, top, right, bottom. Fitted to HOG's boxes on 184 prepared 256² frames; the descriptors from these
# boxes lie 0.035 (mean) from those of HOG's boxes.
LANDMARK_BOX = (-0.02, 0.07, 1.0, 0.94)
# where the crop's framing rule (codec.face.crop: side = 1.7 × the face) puts HOG's box, as fractions of
# the crop's side: left, top, right, bottom (HOG's box on most prepared 256² frames is (65, 79, 189, 203))
CENTRAL_BOX = (0.25, 0.30, 0.75, 0.80)

FaceBox = tuple[float, float, float, float]  # left, top, right, bottom in pixels


def models_folder() -> Path:
    """The folder of face-recognition-models' .dat files; ImportError with the install command if absent."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the identity metric needs dlib's face models (package face-recognition-models): {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    missing = [name for name in (SHAPE_PREDICTOR_FILE, RECOGNITION_MODEL_FILE) if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"face-recognition-models at {folder} lacks {', '.join(missing)}: reinstall it "
                           f"(pip install --force-reinstall face-recognition-models==0.3.0)")
    return folder


def box_from_landmarks(landmarks: np.ndarray) -> FaceBox:
    """mediapipe landmarks (478, >=2) in pixels -> the box dlib's detector would give (``LANDMARK_BOX``)."""
    points = np.asarray(landmarks, np.float64)
    if points.ndim != 2 or points.shape[1] < 2 or points.shape[0] < 2:
        raise ValueError(f"landmarks must be (N, >=2) pixel coordinates (mediapipe's 478), got shape {points.shape}")
    if not np.all(np.isfinite(points[:, :2])):
        raise ValueError("landmarks contain NaN or inf: pass landmarks=None where no face was found")
    (x0, y0), (x1, y1) = points[:, :2].min(0), points[:, :2].max(0)
    w, h = x1 - x0, y1 - y0
    left, top, right, bottom = LANDMARK_BOX
    return (float(x0 + left * w), float(y0 + top * h), float(x0 + right * w), float(y0 + bottom * h))


def central_box(height: int, width: int) -> FaceBox:
    """``CENTRAL_BOX`` of a square-ish crop (H, W) in pixels, on its shorter side, centred."""
    side = min(height, width)
    x_off, y_off = (width - side) / 2, (height - side) / 2
    left, top, right, bottom = CENTRAL_BOX
    return (x_off + left * side, y_off + top * side, x_off + right * side, y_off + bottom * side)


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two descriptors (128,); below ``SAME_PERSON_DISTANCE`` = same person."""
    va, vb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if va.shape != (DESCRIPTOR_SIZE,) or vb.shape != (DESCRIPTOR_SIZE,):
        raise ValueError(f"descriptors must be ({DESCRIPTOR_SIZE},) from IdentityEmbedder.describe, got {va.shape} and {vb.shape}")
    return float(np.linalg.norm(va - vb))


def optional_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """identity_distance, or NaN where either face was not found (None)."""
    return float("nan") if a is None or b is None else identity_distance(a, b)


@functools.lru_cache(maxsize=1)
def _load_models() -> tuple[Any, Any, Any]:
    """(HOG detector, 5-point shape predictor, recognition ResNet), loaded once per process (~2 s, 31 MB)."""
    try:
        import dlib
    except ImportError as exc:
        raise ImportError(f"the identity metric needs dlib (package dlib-bin): {INSTALL_HINT}") from exc
    folder = models_folder()
    models = (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(folder / SHAPE_PREDICTOR_FILE)),
              dlib.face_recognition_model_v1(str(folder / RECOGNITION_MODEL_FILE)))
    logger.debug("loaded dlib's face models from %s", folder)
    return models


class IdentityEmbedder:
    """RGB uint8 (H, W, 3) face image -> dlib's 128-d identity descriptor. Models load on first use."""

    def __init__(self, central_fallback: bool = False) -> None:
        self.central_fallback = central_fallback
        self._models: tuple[Any, Any, Any] | None = None  # (detector, shape predictor, recognition net)

    def _load(self) -> tuple[Any, Any, Any]:
        if self._models is None:
            self._models = _load_models()
        return self._models

    def find_face(self, image: np.ndarray) -> FaceBox | None:
        """The largest face HOG finds in (H, W, 3) uint8, else ``central_box`` with central_fallback, else None."""
        image = validate_image(image)
        detector, _, _ = self._load()
        short = min(image.shape[:2])
        upsample = 0 if short >= HOG_MIN_SIDE else min(2, math.ceil(math.log2(HOG_MIN_SIDE / short)))
        faces = list(detector(image, upsample))
        if faces:
            best = max(faces, key=lambda r: r.width() * r.height())
            return (float(best.left()), float(best.top()), float(best.right()), float(best.bottom()))
        return central_box(*image.shape[:2]) if self.central_fallback else None

    def describe(self, image: np.ndarray, box: FaceBox | None = None, landmarks: np.ndarray | None = None) -> np.ndarray | None:
        """(H, W, 3) uint8 RGB -> (128,) float64 descriptor of the face, or None when none is found.

        box: (left, top, right, bottom) pixels of the face, or landmarks: mediapipe's (478, >=2) pixels;
        with neither, ``find_face`` looks for it. A given box or landmarks skip the detector.
        """
        image = validate_image(image)
        if box is not None and landmarks is not None:
            raise ValueError("pass a face box or landmarks, not both")
        if landmarks is not None:
            box = box_from_landmarks(landmarks)
        elif box is None:
            box = self.find_face(image)
            if box is None:
                return None
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"face box must be finite (left, top, right, bottom) with right > left and bottom > top, got {box}")
        import dlib

        _, predictor, recognizer = self._load()
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        shape = predictor(image, rect)
        return np.asarray(recognizer.compute_face_descriptor(image, shape), np.float64)  # (128,)
