"""The whole face-vid2vid model: F, L, H, M, G, and the keypoint transform between them.

Contract (used by training, by the inference wrappers and by the tests):
    encode_reference(img (B,3,S,S) in [0,1]) -> ReferenceFeatures: everything derived from the
        reference alone (cached by the receiver): features, skip, image, image_small, kp_canonical
        (B,K,3), motion (H's output on the reference), kp (B,K,3) and rotation (B,3,3) of the reference.
    estimate_motion(img) -> dict: yaw/pitch/roll_logits (B,bins), yaw/pitch/roll (B,) degrees,
        translation (B,3), expression (B,K,3).
    driving_keypoints(kp_canonical, motion) -> (kp (B,K,3), rotation (B,3,3)):  x = R x_c + t + δ (Eq. 2)
    synthesize(ref, kp_drv, rotation_drv, enhancement=None, enhancement_present=None, eyelids_present=None) -> dict: image (B,3,S,S) [0,1], occlusion (B,1,m,m),
        masks (B,K+1,m,m) (3D form: (B,K+1,D,m,m)), warped_reference (B,3,S,S), alpha (B,1,S,S)
    forward(ref_img, drv_img) -> the synthesize dict plus kp_canonical, kp_ref, kp_drv, motion_ref, motion_drv.
    keypoints(img) -> the image's own x = R x_c + t + δ with x_c from the same image (equivariance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from codec.model.appearance_encoder import AppearanceEncoder
from codec.model.config import ModelConfig
from codec.model.generator import Generator
from codec.model.keypoint_detector import CanonicalKeypointDetector
from codec.model.motion_field import MotionFieldEstimator
from codec.model.motion_field_3d import VolumeMotionFieldEstimator
from codec.model.pose_estimator import PoseExpressionEstimator
from codec.motion import angles_to_rotation_torch, matmul_exact, transform_keypoints_torch


@dataclass(frozen=True, eq=False)
class ReferenceFeatures:
    """Everything the per-frame path needs from the reference (see the module docstring)."""

    features: torch.Tensor  # (B, C, S/4, S/4); the 3D form: a volume (B, Cv, D, S/4, S/4)
    skip: torch.Tensor  # (B, Cs, S/2, S/2)
    image: torch.Tensor  # (B, 3, S, S) in [0, 1]
    image_small: torch.Tensor  # (B, 3, m, m)
    kp_canonical: torch.Tensor  # (B, K, 3)
    motion: dict[str, torch.Tensor]
    kp: torch.Tensor  # (B, K, 3)
    rotation: torch.Tensor  # (B, 3, 3)


class FaceVid2VidModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.appearance = AppearanceEncoder(config)  # F
        self.canonical_keypoints = CanonicalKeypointDetector(config)  # L
        self.pose_expression = PoseExpressionEstimator(config)  # H
        self.motion_field = VolumeMotionFieldEstimator(config) if config.volume_depth else MotionFieldEstimator(config)  # M
        self.generator = Generator(config)  # G

    def estimate_motion(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.pose_expression(image)

    @staticmethod
    def driving_keypoints(kp_canonical: torch.Tensor, motion: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """x = R x_c + t + δ (paper Eq. 2) -> (kp (B, K, 3), R (B, 3, 3))."""
        rotation = angles_to_rotation_torch(motion["yaw"], motion["pitch"], motion["roll"])  # (B, 3, 3)
        return transform_keypoints_torch(kp_canonical, rotation, motion["translation"], motion["expression"]), rotation

    def encode_reference(self, image: torch.Tensor) -> ReferenceFeatures:
        features, skip = self.appearance(image)
        kp_canonical = self.canonical_keypoints(image)
        motion = self.estimate_motion(image)
        kp, rotation = self.driving_keypoints(kp_canonical, motion)
        m = self.config.motion_size
        small = F.interpolate(image, size=(m, m), mode="bilinear", align_corners=False, antialias=True)
        return ReferenceFeatures(features, skip, image, small, kp_canonical, motion, kp, rotation)

    def synthesize(self, ref: ReferenceFeatures, kp_drv: torch.Tensor, rotation_drv: torch.Tensor,
                   enhancement: torch.Tensor | None = None,
                   enhancement_present: torch.Tensor | None = None,
                   eyelids_present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """enhancement: (B, 3, E, E) in [0, 1], the enhancement layer's picture of the driving frame (None: motion
        only); enhancement_present: (B,) 1/0 per sample (None: all present); eyelids_present: (B,) 1/0 per sample,
        0 renders without the eyelid warp (the frame's eyelid rows were not transmitted; None: all 1)."""
        jacobian = matmul_exact(ref.rotation, rotation_drv.transpose(1, 2))  # (B, 3, 3) = R_s R_d^-1
        if self.config.volume_depth:
            motion = self.motion_field(ref.features, ref.kp, kp_drv, jacobian)
        else:  # the 2D form uses the projected Jacobian
            motion = self.motion_field(ref.image_small, ref.kp, kp_drv, jacobian[:, :2, :2], out_size=ref.features.shape[-1])
        out = self.generator(ref.features, ref.skip, ref.image, motion["flow"], motion["occlusion"], motion.get("flow_3d"),
                             enhancement, enhancement_present, kp_ref=ref.kp, kp_drv=kp_drv,
                             eyelids_present=eyelids_present)
        return {**out, "occlusion": motion["occlusion"], "masks": motion["masks"], "flow": motion["flow"]}

    def keypoints(self, image: torch.Tensor) -> torch.Tensor:
        kp, _ = self.driving_keypoints(self.canonical_keypoints(image), self.estimate_motion(image))
        return kp

    def forward(self, ref_img: torch.Tensor, drv_img: torch.Tensor, enhancement: torch.Tensor | None = None,
                enhancement_present: torch.Tensor | None = None) -> dict:
        ref = self.encode_reference(ref_img)
        motion_drv = self.estimate_motion(drv_img)
        kp_drv, rotation_drv = self.driving_keypoints(ref.kp_canonical, motion_drv)
        out = self.synthesize(ref, kp_drv, rotation_drv, enhancement, enhancement_present)
        return {**out, "kp_canonical": ref.kp_canonical, "kp_ref": ref.kp, "kp_drv": kp_drv,
                "motion_ref": ref.motion, "motion_drv": motion_drv}
