"""H, the head-pose and expression estimator: image -> yaw/pitch/roll, translation t, deformation δ.

Paper Sec. 3.1 / Eq. 2: angles by binned classification plus the expectation over bins (as in
Hopenet), t (3) and δ (K × 3) by regression. This is the sender's per-frame network, kept small.

δ from globally pooled features alone hardly followed the mouth and eyelids (pooling throws away where
a feature fired, and lips and lids are small and local), so with ``expression_spatial_channels`` > 0 a
second, residual head reads the deep feature map with its layout kept: a 1×1 conv down to that many
channels, flattened, one linear layer. Its last layer starts at zero, so a model grown from weights
without it (``python -m codec.train --init``) starts out computing exactly what it computed before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codec.model.config import ModelConfig
from codec.model.keypoint_detector import Estimator


class PoseExpressionEstimator(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Estimator(config)
        c, k, bins = self.encoder.out_channels, config.num_keypoints, config.pose_bins
        self.angles = nn.Linear(c, 3 * bins)
        self.translation = nn.Linear(c, 3)
        self.expression = nn.Linear(c, 3 * k)
        nn.init.zeros_(self.expression.weight)
        nn.init.zeros_(self.expression.bias)
        nn.init.zeros_(self.translation.weight)
        nn.init.zeros_(self.translation.bias)
        self.expression_spatial: nn.Sequential | None = None
        if config.expression_spatial_channels > 0:
            if config.pose_input_size % 16:
                raise ValueError(f"expression_spatial_channels needs pose_input_size divisible by 16, "
                                 f"got {config.pose_input_size}")
            side = config.pose_input_size // 16
            c_s = config.expression_spatial_channels
            self.expression_spatial = nn.Sequential(
                nn.Conv2d(c, c_s, 1), nn.SiLU(), nn.Flatten(), nn.Linear(c_s * side * side, 3 * k))
            nn.init.zeros_(self.expression_spatial[-1].weight)
            nn.init.zeros_(self.expression_spatial[-1].bias)
        centres = (torch.arange(bins, dtype=torch.float32) - (bins - 1) / 2) * config.pose_bin_deg
        self.register_buffer("bin_centres_deg", centres, persistent=False)  # (bins,)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (B, 3, S, S) in [0, 1] -> yaw/pitch/roll_logits (B, bins), yaw/pitch/roll (B,) degrees,
        translation (B, 3), expression (B, K, 3)."""
        _, deep = self.encoder(image)  # (B, C, s/16, s/16)
        pooled = deep.mean(dim=(2, 3))  # (B, C)
        b, bins = image.shape[0], self.config.pose_bins
        expression = self.expression(pooled)  # (B, 3K)
        if self.expression_spatial is not None:
            expression = expression + self.expression_spatial(deep)
        logits = self.angles(pooled).float().view(b, 3, bins)  # (B, 3, bins); fp32 under autocast too
        angles = (F.softmax(logits, dim=-1) * self.bin_centres_deg).sum(-1)  # (B, 3) expectation
        return {
            "yaw_logits": logits[:, 0], "pitch_logits": logits[:, 1], "roll_logits": logits[:, 2],
            "yaw": angles[:, 0], "pitch": angles[:, 1], "roll": angles[:, 2],
            "translation": self.translation(pooled).float(),
            "expression": expression.float().view(b, self.config.num_keypoints, 3),  # (B, K, 3)
        }
