"""The face crop: one square framing rule for reference photos and live frames, temporally smoothed.

Framing rule: the box is centred on the face oval's bounding box, moved up by
``HEAD_ROOM`` × the face size (to include the hair), and its side is ``MARGIN`` × the face size
(the larger side of the oval's box). The crop is resampled to the model's input size; outside the
frame the border pixels are replicated.

Live frames: the box is smoothed with a One-Euro filter (Casiez et al., CHI 2012), which stays
still at rest and follows fast motion with little lag. With no face, the last box is held and the
crop reports ``face_found=False``; with several faces, the one nearest the last box is kept (the
largest at the start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from codec.face.landmarks import FaceLandmarks, LandmarkDetector, NoFaceError, validate_image
from codec.face.regions import FACE_OVAL

MARGIN = 1.7
HEAD_ROOM = 0.08


@dataclass(frozen=True, eq=False)
class FaceCrop:
    """image: (S, S, 3) uint8 RGB; box: (x0, y0, side) in source pixels; landmarks: (478, 3) in crop
    pixels or None when no face was found in this frame; face_found: whether this frame had a face."""

    image: np.ndarray
    box: tuple[float, float, float]
    landmarks: np.ndarray | None
    face_found: bool


def framing_box(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(478, 3) landmarks in pixels -> the unsmoothed crop box (centre x, centre y, side)."""
    oval = landmarks[FACE_OVAL, :2]
    (x0, y0), (x1, y1) = oval.min(0), oval.max(0)
    size = float(max(x1 - x0, y1 - y0))
    return float((x0 + x1) / 2), float((y0 + y1) / 2 - HEAD_ROOM * size), MARGIN * size


def extract_crop(frame: np.ndarray, centre_x: float, centre_y: float, side: float, output_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample the square (centre, side) of ``frame`` to output_size². Returns (crop, 2×3 affine
    matrix mapping frame pixels to crop pixels)."""
    scale = output_size / side
    matrix = np.array(
        [[scale, 0.0, output_size / 2 - scale * centre_x], [0.0, scale, output_size / 2 - scale * centre_y]], np.float64
    )
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    if scale < 0.5:  # warpAffine does not area-average: pre-shrink so that downsampling does not alias
        shrink = 2 * scale
        small = cv2.resize(frame, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        matrix_small = matrix.copy()
        matrix_small[:, :2] /= shrink
        crop = cv2.warpAffine(small, matrix_small, (output_size, output_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    else:
        crop = cv2.warpAffine(frame, matrix, (output_size, output_size), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    return crop, matrix


def _landmarks_in_crop(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    out = points.astype(np.float32).copy()  # (478, 3)
    out[:, :2] = points[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    out[:, 2] = points[:, 2] * matrix[0, 0]
    return out


class OneEuroFilter:
    """One-Euro low-pass filter for a vector signal sampled at ``rate_hz``."""

    def __init__(self, rate_hz: float, min_cutoff_hz: float, beta: float, derivative_cutoff_hz: float = 1.0) -> None:
        self.rate_hz, self.min_cutoff_hz, self.beta, self.derivative_cutoff_hz = rate_hz, min_cutoff_hz, beta, derivative_cutoff_hz
        self._value: np.ndarray | None = None
        self._derivative: np.ndarray | None = None

    def _alpha(self, cutoff_hz: float | np.ndarray) -> float | np.ndarray:
        tau = 1.0 / (2 * math.pi * cutoff_hz)
        return 1.0 / (1.0 + tau * self.rate_hz)

    def reset(self) -> None:
        self._value = self._derivative = None

    def __call__(self, value: np.ndarray, scale: float) -> np.ndarray:
        """value: the new sample; scale: a size that makes speeds relative (the face size)."""
        if self._value is None or self._derivative is None:
            self._value, self._derivative = value.astype(np.float64), np.zeros_like(value, np.float64)
            return self._value.copy()
        derivative = (value - self._value) * self.rate_hz / max(scale, 1e-6)
        a_d = self._alpha(self.derivative_cutoff_hz)
        self._derivative = a_d * derivative + (1 - a_d) * self._derivative
        a = self._alpha(self.min_cutoff_hz + self.beta * np.abs(self._derivative))
        self._value = a * value + (1 - a) * self._value
        return self._value.copy()


class FaceCropper:
    """Stateful crop of consecutive video frames (see the module docstring)."""

    def __init__(self, output_size: int = 256, fps: float = 25.0, detector: LandmarkDetector | None = None) -> None:
        self.output_size = output_size
        self._detector = detector or LandmarkDetector(static_mode=False)
        self._filter = OneEuroFilter(rate_hz=fps, min_cutoff_hz=0.4, beta=0.8)
        self._box: np.ndarray | None = None  # (centre x, centre y, side) after smoothing
        self._raw_centre: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the tracked face (a new scene or a new source)."""
        self._filter.reset()
        self._box = self._raw_centre = None

    def _pick(self, faces: list[FaceLandmarks]) -> FaceLandmarks:
        if self._raw_centre is None or len(faces) == 1:
            return faces[0]  # the largest
        distances = [np.hypot(*(np.array(framing_box(f.points)[:2]) - self._raw_centre)) for f in faces]
        return faces[int(np.argmin(distances))]

    def crop(self, frame: np.ndarray) -> FaceCrop:
        """frame: (H, W, 3) uint8 RGB -> FaceCrop of output_size²."""
        frame = validate_image(frame, "frame")
        faces = self._detector.detect(frame)
        points = None
        if faces:
            face = self._pick(faces)
            raw = np.array(framing_box(face.points))
            self._raw_centre = raw[:2]
            self._box = self._filter(raw, scale=raw[2])
            points = face.points
        elif self._box is None:  # no face yet: the largest centred square
            h, w = frame.shape[:2]
            side = float(min(h, w))
            crop, _ = extract_crop(frame, w / 2, h / 2, side, self.output_size)
            return FaceCrop(crop, (w / 2 - side / 2, h / 2 - side / 2, side), None, False)
        cx, cy, side = (float(v) for v in self._box)
        crop, matrix = extract_crop(frame, cx, cy, side, self.output_size)
        landmarks = _landmarks_in_crop(points, matrix) if points is not None else None
        return FaceCrop(crop, (cx - side / 2, cy - side / 2, side), landmarks, points is not None)

    def close(self) -> None:
        self._detector.close()


def crop_reference(image: np.ndarray, output_size: int = 256, detector: LandmarkDetector | None = None) -> FaceCrop:
    """Crop a reference portrait with the live framing rule (no smoothing). Raises NoFaceError."""
    image = validate_image(image, "reference image")
    own = detector is None
    detector = detector or LandmarkDetector(static_mode=True)
    try:
        faces = detector.detect(image)
    finally:
        if own:
            detector.close()
    if not faces:
        raise NoFaceError("no face found in the reference image: use a portrait where the face is clearly visible")
    cx, cy, side = framing_box(faces[0].points)
    crop, matrix = extract_crop(image, cx, cy, side, output_size)
    return FaceCrop(crop, (cx - side / 2, cy - side / 2, side), _landmarks_in_crop(faces[0].points, matrix), True)
