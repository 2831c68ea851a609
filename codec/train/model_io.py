"""The training code's only contact with codec/model: build, run, and save the networks.

Everything the loop needs from a forward pass is gathered into ``TrainOutputs`` so that the loss code
does not depend on the model's dict keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from codec.model import KEYPOINT_LANDMARK_INDICES, FaceVid2VidModel, ModelConfig, MultiScaleDiscriminator
from codec.model import checkpoint as model_checkpoint
from codec.model.landmark_refinement import refine_keypoints
from codec.train.dataset import PairBatch
from codec.train.validate import GeneratedBatch


@dataclass(frozen=True, eq=False)
class TrainOutputs:
    """One forward pass. image: (B, 3, S, S) [0, 1]; occlusion: (B, 1, h, w) or None; kp_*: (B, K, 3);
    pose_*_deg: (B, 3) yaw/pitch/roll; expression_*: (B, K, 3)."""

    image: torch.Tensor
    occlusion: torch.Tensor | None
    kp_canonical: torch.Tensor
    kp_ref: torch.Tensor
    kp_drv: torch.Tensor
    pose_ref_deg: torch.Tensor
    pose_drv_deg: torch.Tensor
    expression_ref: torch.Tensor
    expression_drv: torch.Tensor


def build_generator(preset: str, image_size: int, landmark_refinement: float = 0.0) -> FaceVid2VidModel:
    config = dataclasses.replace(ModelConfig.preset(preset), landmark_refinement=landmark_refinement)
    if config.image_size != image_size:
        raise ValueError(f"preset {preset!r} makes {config.image_size}² images but the data is {image_size}²: "
                         f"pass --data prepared at {config.image_size} or another preset")
    return FaceVid2VidModel(config)


def build_discriminator(model: FaceVid2VidModel) -> MultiScaleDiscriminator:
    return MultiScaleDiscriminator()


def generator_config_dict(model: FaceVid2VidModel) -> dict[str, Any]:
    return dataclasses.asdict(model.config)


def landmark_indices(model: FaceVid2VidModel) -> torch.Tensor:
    indices = torch.as_tensor(KEYPOINT_LANDMARK_INDICES, dtype=torch.long)
    if indices.shape != (model.config.num_keypoints,):
        raise ValueError(f"KEYPOINT_LANDMARK_INDICES has {indices.shape[0]} entries for K = {model.config.num_keypoints}")
    return indices


def _pose_deg(motion: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([motion["yaw"], motion["pitch"], motion["roll"]], -1)  # (B, 3)


def _forward(model: FaceVid2VidModel, batch: PairBatch) -> dict[str, Any]:
    """The model's forward pass, rendered from the keypoints the sender would transmit: refined towards the
    landmarks' motion (reference frame = anchor) when the model is trained for it. ``kp_drv`` stays H's own."""
    fraction = model.config.landmark_refinement
    extra: dict[str, Any] = {}  # the enhancement picture, for a model with the branch and a batch with pictures
    if model.config.enhancement_size and batch.enhancement is not None:
        extra = {"enhancement": batch.enhancement, "enhancement_present": batch.enhancement_present}
    if fraction <= 0:
        return model(batch.ref, batch.drv, **extra)
    reference = model.encode_reference(batch.ref)
    motion_drv = model.estimate_motion(batch.drv)
    kp_drv, rotation_drv = model.driving_keypoints(reference.kp_canonical, motion_drv)
    kp_render = refine_keypoints(kp_drv, reference.kp, batch.ref_landmarks, batch.drv_landmarks, fraction)
    out = model.synthesize(reference, kp_render, rotation_drv, **extra)
    return {**out, "kp_canonical": reference.kp_canonical, "kp_ref": reference.kp, "kp_drv": kp_drv,
            "kp_render": kp_render, "motion_ref": reference.motion, "motion_drv": motion_drv}


def forward(model: FaceVid2VidModel, batch: PairBatch) -> TrainOutputs:
    out = _forward(model, batch)
    occlusion = out.get("occlusion")
    return TrainOutputs(  # fp32 for the losses, also when the forward pass ran under bf16 autocast
        image=out["image"].float(), occlusion=None if occlusion is None else occlusion.float(), kp_canonical=out["kp_canonical"],
        kp_ref=out["kp_ref"], kp_drv=out["kp_drv"],
        pose_ref_deg=_pose_deg(out["motion_ref"]), pose_drv_deg=_pose_deg(out["motion_drv"]),
        expression_ref=out["motion_ref"]["expression"], expression_drv=out["motion_drv"]["expression"],
    )


def image_keypoints(model: FaceVid2VidModel, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) -> the image's own driving keypoints x = R x_c + t + δ, (B, K, 3)."""
    return model.keypoints(images).float()


def generate(model: FaceVid2VidModel, batch: PairBatch, enhanced: bool = False) -> GeneratedBatch:
    """Validation's forward pass: as the receiver renders what the sender transmits (refined keypoints drawn);
    from motion alone unless ``enhanced`` (then with the batch's enhancement pictures, every sample)."""
    out = _forward(model, batch if enhanced else batch.without_enhancement())
    return GeneratedBatch(image=out["image"], occlusion=out.get("occlusion"), kp_ref=out["kp_ref"],
                          kp_drv=out.get("kp_render", out["kp_drv"]))


def discriminate(disc: MultiScaleDiscriminator, images: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """-> per-scale logits, per-scale lists of intermediate features."""
    results = disc(images)
    return [r[-1].float() for r in results], [[f.float() for f in r[:-1]] for r in results]


def save_generator(model: FaceVid2VidModel, path: Path, metadata: dict[str, str] | None = None) -> None:
    model_checkpoint.save(model, path, metadata=metadata)
