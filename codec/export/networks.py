"""The receiver's two networks in an exportable form: reference preparation (once) and the per-frame render.

They compute what ``FrameSynthesizer.prepare`` and ``FrameSynthesizer.render`` compute (motion only, no
enhancement picture), from the same modules and weights, with three rewrites that ONNX opset 17 needs:

- degrees to radians as a multiplication by π/180 (``torch.deg2rad`` has no ONNX symbolic);
- the antialiased bilinear downscales of the reference (to H/L's 128² input and to M's 32²) as fixed
  separable matrices, ``A @ image @ Aᵀ`` (opset 17's Resize has no antialias; the matrix is the torch
  resize applied to unit impulses, so it is the same linear map);
- the reference state as plain tensors in and out, in a fixed order (``REFERENCE_OUTPUTS``,
  ``RENDER_INPUTS``, plus ``eyelids_present`` for a model with the eyelid warp: ``render_inputs``), so a browser keeps the reference network's outputs and feeds them back each frame.

Shapes for the shipped ``cpu`` model (S = 256, K = 20, C = 64, Cs = 16, m = 32) are in the docstrings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from codec.model.face_model import FaceVid2VidModel, ReferenceFeatures
from codec.motion import matmul_exact, transform_keypoints_torch

REFERENCE_INPUTS = ("image",)
REFERENCE_OUTPUTS = ("features", "skip", "image_small", "kp_canonical", "kp_ref", "rotation_ref",
                     "angles_ref", "translation_ref", "expression_ref")
RENDER_INPUTS = ("features", "skip", "image", "image_small", "kp_canonical", "kp_ref", "rotation_ref",
                 "angles", "translation", "expression")
EYELID_INPUT = "eyelids_present"  # (1,) 1/0: a further render input of models with the eyelid warp (``render_inputs``)
RENDER_OUTPUTS = ("rendered",)
DEG_TO_RAD = math.pi / 180.0


def rotation_from_degrees(angles: torch.Tensor) -> torch.Tensor:
    """angles (B, 3) yaw, pitch, roll in degrees -> (B, 3, 3) R = R_x(pitch) R_y(yaw) R_z(roll), as
    ``codec.motion.angles_to_rotation_torch`` with the radians from a multiplication."""
    rad = angles * DEG_TO_RAD  # (B, 3)
    y, p, r = rad[:, 0], rad[:, 1], rad[:, 2]
    zeros, ones = torch.zeros_like(p), torch.ones_like(p)
    rx = torch.stack([ones, zeros, zeros, zeros, p.cos(), -p.sin(), zeros, p.sin(), p.cos()], -1)
    ry = torch.stack([y.cos(), zeros, y.sin(), zeros, ones, zeros, -y.sin(), zeros, y.cos()], -1)
    rz = torch.stack([r.cos(), -r.sin(), zeros, r.sin(), r.cos(), zeros, zeros, zeros, ones], -1)
    shape = (-1, 3, 3)
    return matmul_exact(matmul_exact(rx.view(shape), ry.view(shape)), rz.view(shape))  # (B, 3, 3)


def antialias_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) float32 A such that A @ x @ Aᵀ is F.interpolate(x, bilinear, antialias=True,
    align_corners=False) of a (size_in, size_in) image: the 1-D resize applied to each unit impulse."""
    impulses = torch.eye(size_in, dtype=torch.float64).view(size_in, 1, 1, size_in)  # (in, 1, 1, in)
    resized = F.interpolate(impulses, size=(1, size_out), mode="bilinear", align_corners=False, antialias=True)
    return resized.view(size_in, size_out).t().contiguous().float()  # (out, in)


class _Downscale(nn.Module):
    """(B, C, S, S) -> (B, C, s, s) by a fixed separable matrix (an antialiased bilinear resize)."""

    def __init__(self, size_in: int, size_out: int):
        super().__init__()
        self.register_buffer("matrix", antialias_matrix(size_in, size_out), persistent=False)  # (s, S)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        rows = torch.matmul(self.matrix, image)  # (B, C, s, S)
        return torch.matmul(rows, self.matrix.t())  # (B, C, s, s)


class ReferenceNetwork(nn.Module):
    """The one-time reference preparation: F, L, H on the reference portrait (``encode_reference``)."""

    def __init__(self, model: FaceVid2VidModel):
        super().__init__()
        config = model.config
        if config.volume_depth:
            raise ValueError(f"preset {config.name!r} is the 3D pipeline: only the 2D (cpu) form exports")
        self.model = model
        self.to_estimator = _Downscale(config.image_size, config.pose_input_size)
        self.to_motion = _Downscale(config.image_size, config.motion_size)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """image (1, 3, S, S) in [0, 1] -> features (1, C, S/4, S/4), skip (1, Cs, S/2, S/2),
        image_small (1, 3, m, m), kp_canonical (1, K, 3), kp_ref (1, K, 3), rotation_ref (1, 3, 3),
        angles_ref (1, 3) degrees, translation_ref (1, 3), expression_ref (1, K, 3)."""
        model = self.model
        features, skip = model.appearance(image)
        small_input = self.to_estimator(image)  # (1, 3, s, s): the estimators skip their own resize
        kp_canonical = model.canonical_keypoints(small_input)
        motion = model.estimate_motion(small_input)
        angles = torch.stack([motion["yaw"], motion["pitch"], motion["roll"]], dim=-1)  # (1, 3)
        rotation = rotation_from_degrees(angles)
        kp_ref = transform_keypoints_torch(kp_canonical, rotation, motion["translation"], motion["expression"])
        image_small = self.to_motion(image)
        return (features, skip, image_small, kp_canonical, kp_ref, rotation, angles, motion["translation"],
                motion["expression"])


class RenderNetwork(nn.Module):
    """The per-frame render: driving keypoints from the motion, M, G (``synthesize`` without the picture)."""

    def __init__(self, model: FaceVid2VidModel):
        super().__init__()
        if model.config.volume_depth:
            raise ValueError(f"preset {model.config.name!r} is the 3D pipeline: only the 2D (cpu) form exports")
        self.model = model

    def forward(self, features: torch.Tensor, skip: torch.Tensor, image: torch.Tensor, image_small: torch.Tensor,
                kp_canonical: torch.Tensor, kp_ref: torch.Tensor, rotation_ref: torch.Tensor, angles: torch.Tensor,
                translation: torch.Tensor, expression: torch.Tensor,
                eyelids_present: torch.Tensor | None = None) -> torch.Tensor:
        """The reference state (``ReferenceNetwork``'s outputs and the image (1, 3, S, S)) and one frame's
        motion: angles (1, 3) yaw/pitch/roll degrees, translation (1, 3), expression (1, K, 3) with absent
        rows already replaced by the reference's own δ; for a model with the eyelid warp eyelids_present (1,)
        1 when the frame's δ rows include ``WARP_KEYPOINTS`` (the manifest's ``eyelid_rows``), else 0
        -> rendered (1, 3, S, S) in [0, 1]."""
        rotation = rotation_from_degrees(angles)  # (1, 3, 3)
        kp_drv = transform_keypoints_torch(kp_canonical, rotation, translation, expression)  # (1, K, 3)
        ref = ReferenceFeatures(features, skip, image, image_small, kp_canonical, {}, kp_ref, rotation_ref)
        out = self.model.synthesize(ref, kp_drv, rotation, eyelids_present=eyelids_present)
        return out["image"].clamp(0.0, 1.0)


def render_inputs(model: FaceVid2VidModel) -> tuple[str, ...]:
    """The render network's input names, in order: ``RENDER_INPUTS``, and ``EYELID_INPUT`` for a model with the
    eyelid warp."""
    return RENDER_INPUTS + ((EYELID_INPUT,) if model.config.eyelid_warp > 0 else ())
