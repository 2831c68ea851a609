"""M in 3D (the paper's form): reference feature volume + reference/driving keypoints -> 3D flow.

Paper Sec. 3.2, Eq. 3-4: K first-order flows over the volume, one per keypoint,
w_k(p) = R_s R_d^-1 (p - x_d,k) + x_s,k for 3D points p, plus the identity for the background;
a 3D hourglass sees the reference volume (compressed to a few channels) deformed by each flow and
the keypoints' Gaussian heatmap differences, and predicts softmax masks over the K+1 flows and an
occlusion mask; the occlusion's depth is folded into channels (reshape) and a 2D conv makes it.

The generator also warps 2D features (the skip at S/2) and the reference's own pixels; for those
this module collapses the 3D flow along depth with a predicted per-pixel softmax over depth (where
the visible surface lies), giving a 2D flow. The paper's generator has no such 2D path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codec.model.blocks import ConvNormAct3d, ResBlock3d, make_coordinate_volume
from codec.model.config import ModelConfig

COMPRESSED_CHANNELS = 4  # the reference volume is compressed to this many channels before the K+1 warps


def sparse_motions_3d(grid: torch.Tensor, kp_ref: torch.Tensor, kp_drv: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
    """grid (d, h, w, 3); kp_* (B, K, 3); jacobian (B, 3, 3) = R_s R_d^-1 -> (B, K+1, d, h, w, 3) sampling
    positions in the reference volume for each driving voxel; index 0 is the identity (background)."""
    b = kp_ref.shape[0]
    rel = grid[None, None] - kp_drv[:, :, None, None, None, :]  # (B, K, d, h, w, 3)
    # J @ rel as a product-sum: stays fp32 under autocast
    moved = (jacobian[:, None, None, None, None] * rel[..., None, :]).sum(-1) + kp_ref[:, :, None, None, None, :]
    identity = grid[None, None].expand(b, 1, *grid.shape)  # (B, 1, d, h, w, 3)
    return torch.cat([identity, moved], dim=1)  # (B, K+1, d, h, w, 3)


def keypoint_heatmaps_3d(grid: torch.Tensor, keypoints: torch.Tensor, variance: float) -> torch.Tensor:
    """grid (d, h, w, 3); keypoints (B, K, 3) -> (B, K, d, h, w) Gaussians at the keypoints."""
    d2 = ((grid[None, None] - keypoints[:, :, None, None, None, :]) ** 2).sum(-1)  # (B, K, d, h, w)
    return torch.exp(-0.5 * d2 / variance)


def warp_volume(volume: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """volume (B, C, D, H, W) sampled at flow (B, d, h, w, 3) -> (B, C, d, h, w), in fp32."""
    return F.grid_sample(volume.float(), flow.float(), mode="bilinear", padding_mode="border", align_corners=False)


class VolumeMotionFieldEstimator(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        k, w, depth = config.num_keypoints, config.motion_width, config.volume_depth
        self.config = config
        self.compress = nn.Conv3d(config.volume_channels, COMPRESSED_CHANNELS, 1)
        cin = (k + 1) * (COMPRESSED_CHANNELS + 1)
        self.enc1 = ConvNormAct3d(cin, w)  # (D, m, m)
        self.enc2 = nn.Sequential(ConvNormAct3d(w, 2 * w, stride=2), ResBlock3d(2 * w))  # (D, m/2, m/2)
        self.enc3 = nn.Sequential(ConvNormAct3d(2 * w, 2 * w, stride=2), ResBlock3d(2 * w))  # (D, m/4, m/4)
        self.dec2 = nn.Sequential(ConvNormAct3d(4 * w, 2 * w), ResBlock3d(2 * w))  # (D, m/2, m/2)
        self.dec1 = nn.Sequential(ConvNormAct3d(3 * w, w), ResBlock3d(w))  # (D, m, m)
        self.masks = nn.Conv3d(w, k + 1, 3, 1, 1)
        self.surface = nn.Conv3d(w, 1, 3, 1, 1)  # logits over depth for the 2D flow
        self.occlusion = nn.Conv2d(w * depth, 1, 3, 1, 1)  # paper: depth folded into channels
        nn.init.constant_(self.occlusion.bias, 2.0)  # start mostly "visible"

    def forward(self, volume: torch.Tensor, kp_ref: torch.Tensor, kp_drv: torch.Tensor, jacobian: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """volume (B, Cv, D, h, w) reference features; kp_* (B, K, 3); jacobian (B, 3, 3) ->
        flow_3d (B, D, h, w, 3) and flow (B, h, w, 2) grid_sample positions, masks (B, K+1, D, m, m),
        occlusion (B, 1, m, m)."""
        b, k = kp_ref.shape[:2]
        depth, h, w = volume.shape[-3:]
        m = self.config.motion_size
        small = self.compress(volume)  # (B, 4, D, h, w)
        if (h, w) != (m, m):
            small = F.interpolate(small, size=(depth, m, m), mode="trilinear", align_corners=False)
        grid = make_coordinate_volume(depth, m, m, kp_ref.float())  # (D, m, m, 3), fp32 under autocast too
        motions = sparse_motions_3d(grid, kp_ref, kp_drv, jacobian)  # (B, K+1, D, m, m, 3)
        variance = self.config.heatmap_variance
        heat = keypoint_heatmaps_3d(grid, kp_drv, variance) - keypoint_heatmaps_3d(grid, kp_ref, variance)  # (B, K, D, m, m)
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1)  # (B, K+1, D, m, m)
        deformed = warp_volume(small.repeat_interleave(k + 1, dim=0), motions.flatten(0, 1)).to(heat.dtype)
        deformed = deformed.view(b, (k + 1) * COMPRESSED_CHANNELS, depth, m, m)  # (B, 4(K+1), D, m, m)
        x1 = self.enc1(torch.cat([heat, deformed], dim=1))
        x2 = self.enc2(x1)
        x3 = self.enc3(x2)
        y2 = self.dec2(torch.cat([F.interpolate(x3, scale_factor=(1.0, 2.0, 2.0), mode="nearest"), x2], dim=1))
        y1 = self.dec1(torch.cat([F.interpolate(y2, scale_factor=(1.0, 2.0, 2.0), mode="nearest"), x1], dim=1))
        masks = F.softmax(self.masks(y1).float(), dim=1)  # (B, K+1, D, m, m)
        surface = self.surface(y1).float()  # (B, 1, D, m, m)
        occlusion = torch.sigmoid(self.occlusion(y1.flatten(1, 2)))  # (B, w·D, m, m) -> (B, 1, m, m)
        if (h, w) != (m, m):
            masks_out = F.interpolate(masks, size=(depth, h, w), mode="trilinear", align_corners=False)
            surface = F.interpolate(surface, size=(depth, h, w), mode="trilinear", align_corners=False)
            motions = sparse_motions_3d(make_coordinate_volume(depth, h, w, kp_ref.float()), kp_ref, kp_drv, jacobian)
        else:
            masks_out = masks
        flow_3d = (masks_out[..., None] * motions).sum(dim=1)  # (B, D, h, w, 3)
        surface = F.softmax(surface[:, 0], dim=1)  # (B, D, h, w): where along depth the visible surface is
        flow = (surface[..., None] * flow_3d[..., :2]).sum(dim=1)  # (B, h, w, 2)
        return {"flow_3d": flow_3d, "flow": flow, "masks": masks, "occlusion": occlusion}
