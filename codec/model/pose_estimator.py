"""H, the head-pose and expression estimator: image -> yaw/pitch/roll, translation t, deformation δ.

Paper Sec. 3.1 / Eq. 2: angles by binned classification plus the expectation over bins (as in
Hopenet), t (3) and δ (K × 3) by regression. This is the sender's per-frame network, kept small.
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
        centres = (torch.arange(bins, dtype=torch.float32) - (bins - 1) / 2) * config.pose_bin_deg
        self.register_buffer("bin_centres_deg", centres, persistent=False)  # (bins,)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (B, 3, S, S) in [0, 1] -> yaw/pitch/roll_logits (B, bins), yaw/pitch/roll (B,) degrees,
        translation (B, 3), expression (B, K, 3)."""
        _, pooled = self.encoder(image)
        b, bins = image.shape[0], self.config.pose_bins
        logits = self.angles(pooled).float().view(b, 3, bins)  # (B, 3, bins); fp32 under autocast too
        angles = (F.softmax(logits, dim=-1) * self.bin_centres_deg).sum(-1)  # (B, 3) expectation
        return {
            "yaw_logits": logits[:, 0], "pitch_logits": logits[:, 1], "roll_logits": logits[:, 2],
            "yaw": angles[:, 0], "pitch": angles[:, 1], "roll": angles[:, 2],
            "translation": self.translation(pooled).float(),
            "expression": self.expression(pooled).float().view(b, self.config.num_keypoints, 3),  # (B, K, 3)
        }
