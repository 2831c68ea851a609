"""The enhancement branch of G: a low-resolution picture of the driving frame, when the sender sends one.

The enhancement layer (``codec.enhancement``) carries the driving face crop at E×E (E = 48 by default),
coded by a real video codec. This branch reads the decoded picture next to the reference warped by
the motion (both at S/4, where they can be compared) and adds residuals to G's features at S/4 and
S/2: the picture says what the warp got wrong (colour, shading, the mouth's and eyes' state, what
the reference does not show). Both heads are zero-initialised, so a model grown from motion-only
weights computes what it did; and a per-sample ``present`` flag turns the branch off, so one model
renders with or without the layer (training drops it at random).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codec.model.blocks import ResBlock
from codec.model.config import ModelConfig


class EnhancementBranch(nn.Module):
    def __init__(self, config: ModelConfig, skip_out_channels: int):
        super().__init__()
        c = config.enhancement_channels
        self.body = nn.Sequential(
            nn.Conv2d(6, c, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(c, c, 3, 1, 1), nn.SiLU(),
            ResBlock(c, depthwise=False),
        )
        self.to_features = nn.Conv2d(c, config.feature_channels, 1)  # residual to G's features at S/4
        self.to_skip = nn.Conv2d(c, skip_out_channels, 1)  # residual after G's first upsampling, at S/2
        for head in (self.to_features, self.to_skip):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, picture: torch.Tensor, warped_reference: torch.Tensor, feature_size: int,
                present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """picture (B, 3, E, E) in [0, 1]; warped_reference (B, 3, S, S); present (B,) 1/0 or None (all present)
        -> residuals (B, C, S/4, S/4) and (B, C2, S/2, S/2), zero where the picture is absent."""
        size = (feature_size, feature_size)
        picture = F.interpolate(picture.float(), size=size, mode="bilinear", align_corners=False)
        warped = F.interpolate(warped_reference.float(), size=size, mode="area")
        h = self.body(torch.cat([picture, warped], dim=1))  # (B, c, S/4, S/4)
        features = self.to_features(h)
        skip = self.to_skip(F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False))
        if present is not None:
            gate = present.to(features.dtype).view(-1, 1, 1, 1)
            features, skip = features * gate, skip * gate
        return features, skip
