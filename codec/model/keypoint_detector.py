"""L, the canonical keypoint detector: image -> K canonical 3D keypoints x_c (identity-specific).

Paper Sec. 3.1: x_c,k in a canonical, pose- and expression-free frame. Here: a small encoder,
per-keypoint 2D heatmaps at 32² with soft-argmax for (x, y), and a per-keypoint depth map
averaged under the heatmap for z. Coordinates are normalised to [-1, 1] (x right, y down, z into
the screen).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codec.model.blocks import ConvNormAct, ResBlock, make_coordinate_grid
from codec.model.config import ModelConfig


def soft_argmax(logits: torch.Tensor, depth: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """logits, depth: (B, K, h, w) -> (B, K, 3) expected (x, y) under softmax(logits/T), and z."""
    b, k, h, w = logits.shape
    logits, depth = logits.float(), depth.float()  # keypoints in fp32 also under bf16/fp16 autocast
    prob = F.softmax(logits.flatten(2) / temperature, dim=-1).view(b, k, h, w)  # (B, K, h, w)
    grid = make_coordinate_grid(h, w, logits)  # (h, w, 2)
    xy = (prob[..., None] * grid).sum(dim=(2, 3))  # (B, K, 2); a product-sum stays fp32 under autocast
    z = (prob * depth).sum(dim=(2, 3))[..., None]  # (B, K, 1)
    return torch.cat([xy, z], dim=-1)


class Estimator(nn.Module):
    """Shared encoder shape of L and H: image at pose_input_size -> features at pose_input_size/4 and
    deep features at pose_input_size/16."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        w, dw = config.estimator_width, config.depthwise
        self.input_size = config.pose_input_size
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1), nn.SiLU(),  # /2
            ConvNormAct(w, 2 * w, dw, stride=2), ResBlock(2 * w, dw),  # /4
        )
        self.deep = nn.Sequential(
            ConvNormAct(2 * w, 4 * w, dw, stride=2), ResBlock(4 * w, dw),  # /8
            ConvNormAct(4 * w, 8 * w, dw, stride=2), ResBlock(8 * w, dw),  # /16
        )
        self.out_channels = 8 * w

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B, 3, S, S) -> (features (B, 2w, s/4, s/4), deep (B, 8w, s/16, s/16)), s = pose_input_size."""
        if image.shape[-1] != self.input_size:
            image = F.interpolate(image, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        feat = self.features(image * 2 - 1)
        return feat, self.deep(feat)


class CanonicalKeypointDetector(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_keypoints = config.num_keypoints
        self.encoder = Estimator(config)
        w = config.estimator_width
        self.head = nn.Sequential(ResBlock(2 * w, config.depthwise), nn.Conv2d(2 * w, 2 * config.num_keypoints, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, S, S) in [0, 1] -> x_c (B, K, 3)."""
        feat, _ = self.encoder(image)
        out = self.head(feat)  # (B, 2K, s/4, s/4)
        logits, depth = out.split(self.num_keypoints, dim=1)  # (B, K, h, w) each
        return soft_argmax(logits, torch.tanh(depth))
