"""Sender-side landmark refinement: the driving keypoints follow the face's own landmark motion more closely.

H (the pose/expression estimator) follows a new person's motion only part of the way: on validation
people its keypoints' motion misses the mediapipe landmarks' motion by ~3.3 px at 256². The sender
already runs the face mesh on every frame for the crop, so it can correct what it transmits: each
driving keypoint k (guided during training by landmark ``KEYPOINT_LANDMARK_INDICES[k]``) is moved, in
x and y, the fraction ``a`` of the way to where the landmark's motion says it should be:

    target_k   = kp_anchor,k + (landmark_k(frame) - landmark_k(anchor))       (x, y; normalised coords)
    kp_frame,k += a · (target_k - kp_frame,k)                                  (z unchanged)

The anchor is a frame of the same face whose keypoints are known: in training the reference frame
itself, in a call the first live frame with a face (so the reference portrait may be anyone: only the
sender's own motion since the anchor is measured). Since x = R x_c + t + δ, the correction is added to
δ: the bitstream and the receiver are unchanged. The generator is trained for the fraction it will see
(``ModelConfig.landmark_refinement``; 0 = the model was not, and nothing is refined).
"""

from __future__ import annotations

import numpy as np
import torch

from codec.model.config import KEYPOINT_LANDMARK_INDICES
from codec.motion import MotionParams, angles_to_rotation


def _indices(num_keypoints: int) -> np.ndarray:
    if num_keypoints > len(KEYPOINT_LANDMARK_INDICES):
        raise ValueError(f"landmark refinement guides at most {len(KEYPOINT_LANDMARK_INDICES)} keypoints, got K = {num_keypoints}")
    return np.asarray(KEYPOINT_LANDMARK_INDICES[:num_keypoints], dtype=np.int64)


def refine_keypoints(kp_drv: torch.Tensor, kp_anchor: torch.Tensor, landmarks_anchor: torch.Tensor,
                     landmarks_drv: torch.Tensor, fraction: float) -> torch.Tensor:
    """Batched refinement (training and validation).

    kp_drv, kp_anchor: (B, K, 3) normalised coordinates; landmarks_*: (B, 478, 2) in the same normalised
    coordinates (``codec.train.dataset.normalize_landmarks``) -> refined kp_drv (B, K, 3). The correction is
    a constant to autograd (detached): H is still trained by its own losses only."""
    indices = torch.as_tensor(_indices(kp_drv.shape[1]), device=kp_drv.device)
    target = kp_anchor[..., :2].float() + (landmarks_drv[:, indices] - landmarks_anchor[:, indices]).float()  # (B, K, 2)
    correction = fraction * (target - kp_drv[..., :2].float()).detach()  # (B, K, 2)
    return kp_drv + torch.nn.functional.pad(correction, (0, 1)).to(kp_drv.dtype)


def _keypoints(motion: MotionParams, kp_canonical: np.ndarray) -> np.ndarray:
    """x = R x_c + t + δ for one frame -> (K, 3) float64."""
    rotation = angles_to_rotation(motion.yaw, motion.pitch, motion.roll)  # (3, 3)
    return kp_canonical @ rotation.T + motion.translation + motion.expression


class LandmarkRefiner:
    """Per-frame refinement of transmitted motion on the sender (see the module docstring).

        refiner = LandmarkRefiner(kp_canonical, fraction=0.5, image_size=256)
        motion = refiner(encoder.encode(crop.image), crop.landmarks)   # the first frame becomes the anchor

    kp_canonical: (K, 3) canonical keypoints of the reference portrait the receiver renders (x_c; the motion
    error is nearly the same for any x_c, so a receiver's own avatar is served as well); landmarks: (478, >=2)
    in crop pixels of an image_size² crop, or None (the frame passes unchanged)."""

    def __init__(self, kp_canonical: np.ndarray, fraction: float, image_size: int) -> None:
        kp_canonical = np.asarray(kp_canonical, dtype=np.float64)
        if kp_canonical.ndim != 2 or kp_canonical.shape[1] != 3:
            raise ValueError(f"kp_canonical must be (K, 3), got {kp_canonical.shape}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"the refinement fraction must be in [0, 1], got {fraction}")
        self.kp_canonical = kp_canonical
        self.fraction = float(fraction)
        self.image_size = int(image_size)
        self._indices = _indices(kp_canonical.shape[0])
        self._anchor: tuple[np.ndarray, np.ndarray] | None = None  # (kp (K, 3), landmarks (K, 2) normalised)

    def reset(self) -> None:
        """Forget the anchor (a new source or scene): the next frame with landmarks becomes it."""
        self._anchor = None

    @property
    def active(self) -> bool:
        """Whether frames are changed at all (a model trained for refinement)."""
        return self.fraction > 0.0

    @property
    def anchored(self) -> bool:
        return self._anchor is not None

    def _normalised(self, landmarks_px: np.ndarray) -> np.ndarray:
        landmarks_px = np.asarray(landmarks_px, dtype=np.float64)
        if landmarks_px.ndim != 2 or landmarks_px.shape[1] < 2 or landmarks_px.shape[0] <= int(self._indices.max()):
            raise ValueError(f"landmarks must be (478, 2 or 3) face-mesh points in crop pixels, got {landmarks_px.shape}")
        return landmarks_px[self._indices, :2] / self.image_size * 2.0 - 1.0  # (K, 2)

    def __call__(self, motion: MotionParams, landmarks_px: np.ndarray | None) -> MotionParams:
        if landmarks_px is None or not self.active:
            return motion
        if motion.num_keypoints != self.kp_canonical.shape[0]:
            raise ValueError(f"motion has K = {motion.num_keypoints}, the refiner K = {self.kp_canonical.shape[0]}")
        landmarks = self._normalised(landmarks_px)
        if not np.all(np.isfinite(landmarks)):
            return motion
        kp = _keypoints(motion, self.kp_canonical)
        if self._anchor is None:
            self._anchor = (kp, landmarks)
            return motion  # the anchor's own keypoints are its target
        kp_anchor, landmarks_anchor = self._anchor
        target = kp_anchor[:, :2] + (landmarks - landmarks_anchor)  # (K, 2)
        expression = np.array(motion.expression, dtype=np.float64)
        expression[:, :2] += self.fraction * (target - kp[:, :2])
        return MotionParams(motion.yaw, motion.pitch, motion.roll, motion.translation, expression, motion.present)
