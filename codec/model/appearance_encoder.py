"""F, the appearance feature extractor: reference image -> features the motion field warps.

Two forms, chosen by ``ModelConfig.volume_depth``:
- 3D (paper Sec. 3.1, the ``paper-256`` preset): 2D down-sampling to S/4, a 1×1 conv to
  volume_channels × volume_depth channels reshaped to a (Cv, D, S/4, S/4) feature volume, then 3D
  residual blocks.
- 2D (the ``cpu`` preset): features at S/4 that the warp moves in 2D, by flows that come from the 3D
  keypoints and rotations (codec/model/motion_field.py); depth is carried by the keypoints, not by
  the volume, so that it renders in real time on 2 CPU cores (README, "Speed").
Both also return a 2D skip at S/2 for the generator's upsampling path.
"""

from __future__ import annotations

import torch
from torch import nn

from codec.model.blocks import ConvNormAct, ResBlock, ResBlock3d
from codec.model.config import ModelConfig


class AppearanceEncoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c, dw = config.feature_channels, config.depthwise
        self.config = config
        self.stem = nn.Sequential(nn.Conv2d(3, config.skip_channels, 3, 2, 1), nn.SiLU())  # S/2
        self.down = ConvNormAct(config.skip_channels, c, depthwise=False, stride=2)  # S/4
        self.blocks = nn.Sequential(ResBlock(c, dw), ResBlock(c, dw))
        if config.volume_depth:
            self.lift = nn.Conv2d(c, config.volume_channels * config.volume_depth, 1)  # paper: 1×1 conv, then reshape
            self.volume_blocks = nn.Sequential(ResBlock3d(config.volume_channels), ResBlock3d(config.volume_channels))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image: (B, 3, S, S) in [0, 1] -> features, skip (B, Cs, S/2, S/2). features are
        (B, C, S/4, S/4) in 2D form, (B, Cv, D, S/4, S/4) in 3D form."""
        skip = self.stem(image * 2 - 1)  # (B, Cs, S/2, S/2)
        features = self.blocks(self.down(skip))  # (B, C, S/4, S/4)
        if not self.config.volume_depth:
            return features, skip
        b, _, h, w = features.shape
        volume = self.lift(features).view(b, self.config.volume_channels, self.config.volume_depth, h, w)  # (B, Cv, D, h, w)
        return self.volume_blocks(volume), skip
