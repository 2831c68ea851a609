"""What one keypoint calibration computes, start to end: is the portrait the person on camera, does an offset kept from
an earlier call still help, else a fit (``codec.model.keypoint_calibration``).

    outcome = run_job(model, CalibrationJob(portrait, faces, landmarks, kept=None, steps=10, learning_rate=0.004))

On a CPU the whole job runs in the idle-priority child process (``sender.calibration_worker``), the identity check
included: dlib holds Python's lock while it loads its models and describes faces (~0.85 s of CPU here), and on the
sender's own thread that stalled the frame thread and took the receiver's cycles at a call's start (``bench call``,
both ends on 2 cores: p95 latency of the first 10 s 442-469 ms with it, 233 ms without a calibration).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from codec.face.identity import SAME_PERSON_DISTANCE, IdentityEmbedder, identity_distance
from codec.face.regions import face_hull_mask
from codec.model.keypoint_calibration import Calibration, calibrate_keypoints, check_offset
from codec.motion import MotionParams

SamePerson = Callable[[np.ndarray, list[np.ndarray], list[np.ndarray]], float]


@dataclass(frozen=True)
class CalibrationJob:
    """The portrait (H, W, 3) uint8 the receiver renders; the kept face crops (P, P, 3) uint8, their transmitted motion
    and mediapipe landmarks (478, ≥ 2) px; an offset kept from an earlier call (K, 3) or None; the fit's settings;
    ``distance``: the identity distance when the caller already measured it (None: measured here, by dlib)."""

    portrait: np.ndarray
    faces: list[np.ndarray]
    motions: list[MotionParams]
    landmarks: list[np.ndarray]
    kept: np.ndarray | None
    steps: int
    learning_rate: float
    distance: float | None = None


@dataclass(frozen=True)
class CalibrationOutcome:
    """``distance``: portrait to the person on camera (≥ ``SAME_PERSON_DISTANCE``: nothing else was done); ``checked``:
    the kept offset's check, if there was one; ``fitted``: the fit, if one ran (not when the kept offset still helps)."""

    distance: float
    checked: Calibration | None = None
    fitted: Calibration | None = None

    @property
    def same_person(self) -> bool:
        return self.distance < SAME_PERSON_DISTANCE


def run_job(model: object, job: CalibrationJob, same_person: SamePerson | None = None) -> CalibrationOutcome:
    """The job on ``model`` (a ``FaceVid2VidModel``), here; ``same_person`` replaces dlib's distance (tests)."""
    distance = job.distance
    if distance is None:
        distance = (same_person or identity_distance_to_faces)(job.portrait, job.faces, job.landmarks)
    outcome = CalibrationOutcome(distance)
    if not outcome.same_person:
        return outcome
    size = job.faces[0].shape[0]
    masks = [face_hull_mask(lm[:, :2], size) for lm in job.landmarks]
    checked = None
    if job.kept is not None and job.kept.shape == job.motions[0].expression.shape:
        checked = check_offset(model, job.portrait, job.faces, job.motions, job.kept, masks)  # type: ignore[arg-type]
        if checked.improved:
            return CalibrationOutcome(distance, checked)
    fitted = calibrate_keypoints(model, job.portrait, job.faces, job.motions, masks, job.steps,  # type: ignore[arg-type]
                                 job.learning_rate)
    return CalibrationOutcome(distance, checked, fitted)


def identity_distance_to_faces(portrait: np.ndarray, faces: list[np.ndarray], landmarks: list[np.ndarray]) -> float:
    """dlib's distance between the portrait and the median descriptor of three kept frames (inf: no face found)."""
    embedder = IdentityEmbedder(central_fallback=True)
    reference = embedder.describe(portrait)
    picks = np.linspace(0, len(faces) - 1, min(3, len(faces))).astype(int)
    described = [embedder.describe(faces[i], landmarks=landmarks[i]) for i in picks]
    found = [d for d in described if d is not None]
    if reference is None or not found:
        return float("inf")
    return identity_distance(reference, np.median(np.stack(found), axis=0))
