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


def build_generator(preset: str, image_size: int) -> FaceVid2VidModel:
    config = ModelConfig.preset(preset)
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


def forward(model: FaceVid2VidModel, ref: torch.Tensor, drv: torch.Tensor) -> TrainOutputs:
    out = model(ref, drv)
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


def generate(model: FaceVid2VidModel, ref: torch.Tensor, drv: torch.Tensor) -> GeneratedBatch:
    out = model(ref, drv)
    return GeneratedBatch(image=out["image"], occlusion=out.get("occlusion"), kp_ref=out["kp_ref"], kp_drv=out["kp_drv"])


def discriminate(disc: MultiScaleDiscriminator, images: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """-> per-scale logits, per-scale lists of intermediate features."""
    results = disc(images)
    return [r[-1].float() for r in results], [[f.float() for f in r[:-1]] for r in results]


def save_generator(model: FaceVid2VidModel, path: Path, metadata: dict[str, str] | None = None) -> None:
    model_checkpoint.save(model, path, metadata=metadata)
