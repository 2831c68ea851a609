"""Convolution blocks shared by the networks (depthwise-separable or dense, per the config)."""

from __future__ import annotations

import torch
from torch import nn


def conv(cin: int, cout: int, depthwise: bool, stride: int = 1) -> nn.Module:
    """3x3 conv (dense) or depthwise 3x3 + pointwise 1x1 (depthwise-separable)."""
    if not depthwise:
        return nn.Conv2d(cin, cout, 3, stride, 1)
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.Conv2d(cin, cout, 1))


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, depthwise: bool, stride: int = 1):
        super().__init__(conv(cin, cout, depthwise, stride), nn.GroupNorm(min(8, cout // 4) or 1, cout), nn.SiLU())


class ResBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x))))))."""

    def __init__(self, channels: int, depthwise: bool):
        super().__init__()
        groups = min(8, channels // 4) or 1
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), conv(channels, channels, depthwise),
            nn.GroupNorm(groups, channels), nn.SiLU(), conv(channels, channels, depthwise),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def conv_layout(x: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) in the memory layout the render path's convolutions run fastest on at inference:
    channels-last on a CPU when autograd is off (oneDNN's native layout: 1.7-8x faster per conv of M and G
    measured here in bf16, and the output stays channels-last for the next conv), unchanged otherwise (training's
    backward pass was not measured in it; the fp32 estimators L and H measured 1.15x slower in it, so they do not
    use it). Only the strides change, not the values (a sum's order may: float rounding)."""
    if x.device.type == "cpu" and not torch.is_grad_enabled():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def make_coordinate_grid(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(h, w, 2) grid of normalised (x, y) pixel-centre coordinates in [-1, 1] (grid_sample order)."""
    ys = (torch.arange(h, dtype=like.dtype, device=like.device) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=like.dtype, device=like.device) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)  # (h, w, 2)


class ConvNormAct3d(nn.Sequential):
    """3x3x3 conv (stride applies to H and W only: the volume's depth is short) + GroupNorm + SiLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv3d(cin, cout, 3, (1, stride, stride), 1), nn.GroupNorm(min(8, cout // 4) or 1, cout), nn.SiLU())


class ResBlock3d(nn.Module):
    """x + conv3d(act(norm(conv3d(act(norm(x)))))) on a (B, C, D, H, W) volume."""

    def __init__(self, channels: int):
        super().__init__()
        groups = min(8, channels // 4) or 1
        self.body = nn.Sequential(
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv3d(channels, channels, 3, 1, 1),
            nn.GroupNorm(groups, channels), nn.SiLU(), nn.Conv3d(channels, channels, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def make_coordinate_volume(d: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(d, h, w, 3) grid of normalised (x, y, z) voxel-centre coordinates in [-1, 1] (grid_sample order)."""
    zs = (torch.arange(d, dtype=like.dtype, device=like.device) * 2 + 1) / d - 1
    plane = make_coordinate_grid(h, w, like)  # (h, w, 2)
    return torch.cat([plane[None].expand(d, h, w, 2), zs[:, None, None, None].expand(d, h, w, 1)], dim=-1)
