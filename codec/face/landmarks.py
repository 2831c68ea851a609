"""Face landmarks: mediapipe's 478-point face mesh (bundled in the mediapipe 0.10.21 wheel, offline).

The mesh's own detector only finds faces that fill a good part of the picture (a "short range"
model). For wide and vertical shots, where the face is small, a full-range face detector finds the
face box first and the mesh runs on an enlarged crop around it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from types import TracebackType

import cv2
import numpy as np

log = logging.getLogger(__name__)

NUM_LANDMARKS = 478
MAX_INPUT_PIXELS = 50_000_000  # larger inputs are refused (a 50 MP photo is far beyond any camera frame)
DETECTION_MAX_SIDE = 1280  # frames are downscaled to this longest side before detection
TILED_SEARCH_EVERY = 10  # in video mode, the slower tiled search for small faces runs every this many misses


class FaceInputError(ValueError):
    """An image given to the face pipeline is not usable (wrong type, shape, or size)."""


class NoFaceError(FaceInputError):
    """No face was found in an image that must contain one (a reference portrait)."""


@dataclass(frozen=True, eq=False)
class FaceLandmarks:
    """One face's 478 mesh landmarks.

    points: (478, 3) float32; x, y in pixels of the image they were detected in, z (depth, into the
    screen, relative to the head's centre) in the same pixel scale as x.
    """

    points: np.ndarray

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) bounding box of the landmarks, in pixels."""
        x0, y0 = self.points[:, :2].min(0)
        x1, y1 = self.points[:, :2].max(0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def size(self) -> float:
        """The larger side of the landmarks' bounding box, in pixels."""
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0)


def validate_image(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Check that ``image`` is an (H, W, 3) uint8 RGB array of a sane size; returns it contiguous."""
    if not isinstance(image, np.ndarray):
        raise FaceInputError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise FaceInputError(f"{what} must be (H, W, 3) RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise FaceInputError(f"{what} must be uint8, got {image.dtype} (convert with np.clip(x, 0, 255).astype(np.uint8))")
    h, w = image.shape[:2]
    if h < 16 or w < 16:
        raise FaceInputError(f"{what} is too small ({w}x{h}); need at least 16x16 pixels")
    if h * w > MAX_INPUT_PIXELS:
        raise FaceInputError(f"{what} has {w}x{h} = {w * h:,} pixels, over the limit of {MAX_INPUT_PIXELS:,}; downscale it first")
    return np.ascontiguousarray(image)


def _quiet_mediapipe() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class LandmarkDetector:
    """Detects faces and their 478 landmarks in RGB images.

    static_mode=True treats every image independently (photos, evaluation); False tracks faces
    across consecutive video frames (faster and steadier). Faces are returned largest first.
    """

    def __init__(self, static_mode: bool = False, max_faces: int = 3, min_confidence: float = 0.5) -> None:
        _quiet_mediapipe()
        import mediapipe as mp  # imported here: it is slow to import and only the face pipeline needs it

        self.static_mode = static_mode
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static_mode,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )
        self._crop_mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3
        )
        self._detector = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_confidence)
        self._misses = 0

    def detect(self, image: np.ndarray) -> list[FaceLandmarks]:
        """image: (H, W, 3) uint8 RGB -> faces, largest first (empty when there is none)."""
        image = validate_image(image)
        h, w = image.shape[:2]
        scale = min(1.0, DETECTION_MAX_SIDE / max(h, w))
        small = image if scale == 1.0 else cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        faces = self._mesh_faces(self._mesh, small)
        if not faces:
            faces = self._faces_via_detector(small, tiled=self.static_mode or self._misses % TILED_SEARCH_EVERY == 0)
        self._misses = 0 if faces else self._misses + 1
        faces = [FaceLandmarks((f / scale).astype(np.float32)) for f in faces]
        return sorted(faces, key=lambda f: -f.size)

    @staticmethod
    def _mesh_faces(mesh: object, image: np.ndarray) -> list[np.ndarray]:
        result = mesh.process(image)  # type: ignore[attr-defined]
        if not result.multi_face_landmarks:
            return []
        h, w = image.shape[:2]
        faces = []
        for face in result.multi_face_landmarks:
            pts = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)  # (478, 3) normalised
            faces.append(pts * np.array([w, h, w], dtype=np.float32))  # (478, 3) pixels
        return faces

    def _detect_boxes(self, image: np.ndarray, tiled: bool) -> list[tuple[float, float, float]]:
        """Face boxes (centre x, centre y, side) in pixels of ``image``: the whole frame first, then
        (when ``tiled``) overlapping square tiles of half the short side, for small faces."""
        h, w = image.shape[:2]
        windows = [(0, 0, w, h)]
        if tiled:
            side = min(h, w) // 2
            step = side // 2
            windows += [(x, y, side, side) for y in range(0, h - side + 1, step) for x in range(0, w - side + 1, step)]
        boxes: list[tuple[float, float, float]] = []
        for x0, y0, ww, hh in windows:
            result = self._detector.process(np.ascontiguousarray(image[y0:y0 + hh, x0:x0 + ww]))
            for detection in result.detections or []:
                box = detection.location_data.relative_bounding_box
                cx, cy = x0 + (box.xmin + box.width / 2) * ww, y0 + (box.ymin + box.height / 2) * hh
                size = max(box.width * ww, box.height * hh)
                if all(np.hypot(cx - bx, cy - by) > 0.5 * max(size, bs) for bx, by, bs in boxes):
                    boxes.append((cx, cy, size))
            if boxes:
                break
        return boxes

    def _faces_via_detector(self, image: np.ndarray, tiled: bool) -> list[np.ndarray]:
        """Full-range detection, then the mesh on an enlarged square crop around each face."""
        faces = []
        for cx, cy, size in self._detect_boxes(image, tiled):
            side = 2.2 * size
            x0, y0 = cx - side / 2, cy - side / 2
            crop_size = 256
            m = cv2.getAffineTransform(
                np.float32([[x0, y0], [x0 + side, y0], [x0, y0 + side]]),
                np.float32([[0, 0], [crop_size, 0], [0, crop_size]]),
            )
            crop = cv2.warpAffine(image, m, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            for pts in self._mesh_faces(self._crop_mesh, crop):
                pts = pts * (side / crop_size)
                pts[:, 0] += x0
                pts[:, 1] += y0
                faces.append(pts)
        return faces

    def close(self) -> None:
        for model in (self._mesh, self._crop_mesh, self._detector):
            model.close()

    def __enter__(self) -> LandmarkDetector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
