"""D, the multi-scale patch discriminator (training only; pix2pixHD / the paper's Sec. 3.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    def __init__(self, width: int = 32, layers: int = 4):
        super().__init__()
        blocks, cin = [], 3
        for i in range(layers):
            cout = width * 2**i
            blocks.append(nn.Sequential(nn.utils.spectral_norm(nn.Conv2d(cin, cout, 4, 2 if i < layers - 1 else 1, 1)),
                                        nn.LeakyReLU(0.2)))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.logits = nn.Conv2d(cin, 1, 4, 1, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W) in [0, 1] -> [feature_1, …, feature_L, logits (B, 1, h, w)]."""
        out, x = [], x * 2 - 1
        for block in self.blocks:
            x = block(x)
            out.append(x)
        out.append(self.logits(x))
        return out


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, scales: int = 2, width: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList([PatchDiscriminator(width) for _ in range(scales)])

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """x (B, 3, S, S) -> per scale (S, S/2, …): [features…, logits]."""
        results = []
        for i, disc in enumerate(self.discriminators):
            results.append(disc(x if i == 0 else F.avg_pool2d(x, 2**i)))
        return results
