"""F, the appearance feature extractor: reference image -> features the motion field warps.

The paper lifts the image to a 3D feature volume (C × D × H × W). On a CPU the warp runs in 2D on
features at S/4 (and a skip at S/2), moved by flows that come from 3D keypoints and rotations
(codec/model/motion_field.py); depth is carried by the keypoints, not by the volume.
"""

from __future__ import annotations

import torch
from torch import nn

from codec.model.blocks import ConvNormAct, ResBlock
from codec.model.config import ModelConfig


class AppearanceEncoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c, dw = config.feature_channels, config.depthwise
        self.stem = nn.Sequential(nn.Conv2d(3, config.skip_channels, 3, 2, 1), nn.SiLU())  # S/2
        self.down = ConvNormAct(config.skip_channels, c, depthwise=False, stride=2)  # S/4
        self.blocks = nn.Sequential(ResBlock(c, dw), ResBlock(c, dw))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image: (B, 3, S, S) in [0, 1] -> features (B, C, S/4, S/4), skip (B, Cs, S/2, S/2)."""
        skip = self.stem(image * 2 - 1)  # (B, Cs, S/2, S/2)
        return self.blocks(self.down(skip)), skip
