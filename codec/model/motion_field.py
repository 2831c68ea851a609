"""M, the motion-field estimator: reference + reference/driving keypoints -> dense flow and occlusion.

Paper Sec. 3.2 / Eq. 3-4: K first-order flows, one per keypoint, w_k(p) = R_s R_d^-1 (p - x_d,k)
+ x_s,k, combined by softmax masks that a network predicts, plus an occlusion mask. On a CPU the
flows are the keypoints' projections onto the image plane: p is a 2D point, x_·,k[:2] the
projected keypoints and J = (R_s R_d^-1)[:2, :2] the projected Jacobian; depth still acts through
the 3D keypoints (a turned head moves their projections). The mask network runs at
``motion_size``² (FOMM-style inputs: keypoint heatmap differences and the reference deformed by
each flow); masks are then upsampled and the flows evaluated analytically at S/4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codec.model.blocks import ConvNormAct, ResBlock, conv_layout, make_coordinate_grid
from codec.model.config import ModelConfig


def sparse_motions(grid: torch.Tensor, kp_ref: torch.Tensor, kp_drv: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
    """grid (h, w, 2); kp_* (B, K, 3); jacobian (B, 2, 2) -> (B, K+1, h, w, 2) sampling positions in the
    reference for each driving pixel; index 0 is the identity (background)."""
    b = kp_ref.shape[0]
    gx, gy = grid[..., 0], grid[..., 1]  # (h, w) each
    rx = gx - kp_drv[:, :, 0, None, None]  # (B, K, h, w)
    ry = gy - kp_drv[:, :, 1, None, None]
    j = jacobian[:, None, :, :, None, None]  # (B, 1, 2, 2, 1, 1)
    # J @ rel written out (a matmul would run in bf16 under autocast; these stay fp32)
    mx = j[:, :, 0, 0] * rx + j[:, :, 0, 1] * ry + kp_ref[:, :, 0, None, None]  # (B, K, h, w)
    my = j[:, :, 1, 0] * rx + j[:, :, 1, 1] * ry + kp_ref[:, :, 1, None, None]
    moved = torch.stack([mx, my], dim=-1)  # (B, K, h, w, 2)
    identity = grid[None, None].expand(b, 1, *grid.shape)  # (B, 1, h, w, 2)
    return torch.cat([identity, moved], dim=1)


def keypoint_heatmaps(grid: torch.Tensor, keypoints: torch.Tensor, variance: float) -> torch.Tensor:
    """grid (h, w, 2); keypoints (B, K, 3) -> (B, K, h, w) Gaussians at the projected keypoints."""
    dx = grid[..., 0] - keypoints[:, :, 0, None, None]  # (B, K, h, w)
    dy = grid[..., 1] - keypoints[:, :, 1, None, None]
    return torch.exp(-0.5 * (dx * dx + dy * dy) / variance)


def combined_flow(masks: torch.Tensor, kp_ref: torch.Tensor, kp_drv: torch.Tensor, jacobian: torch.Tensor,
                  out_size: int) -> torch.Tensor:
    """The flow Σ_k up(m_k)(p) · w_k(p) at out_size², for masks (B, K+1, m, m) (softmax over K+1) upsampled
    bilinearly from m to out_size, w_0(p) = p and w_k(p) = J (p - x_d,k) + x_s,k -> (B, out, out, 2).

    Every w_k is affine in p with the same J, so the sum is up(m_0) p + up(Σ_k≥1 m_k) J p + up(Σ_k≥1 m_k c_k)
    with c_k = x_s,k - J x_d,k: four channels upsampled instead of K+1, and no (B, K+1, out, out, 2) tensor.
    Equal to the per-keypoint sum up to float rounding (the upsampling is linear and its weights do not
    depend on the channel)."""
    m = masks.shape[-1]
    j = jacobian.float()  # (B, 2, 2)
    # c_k = x_s,k - J x_d,k written out, in fp32 whatever the autocast
    cx = kp_ref[..., 0] - (j[:, 0, 0, None] * kp_drv[..., 0] + j[:, 0, 1, None] * kp_drv[..., 1])  # (B, K)
    cy = kp_ref[..., 1] - (j[:, 1, 0, None] * kp_drv[..., 0] + j[:, 1, 1, None] * kp_drv[..., 1])
    rest = masks[:, 1:].float()  # (B, K, m, m)
    coefficients = torch.stack([
        masks[:, 0].float(),  # weight of the identity
        rest.sum(1),  # weight of J p
        (rest * cx[:, :, None, None]).sum(1),  # the constant parts, x
        (rest * cy[:, :, None, None]).sum(1),  # and y
    ], dim=1)  # (B, 4, m, m)
    if out_size != m:
        coefficients = F.interpolate(coefficients, size=(out_size, out_size), mode="bilinear", align_corners=False)
    grid = make_coordinate_grid(out_size, out_size, coefficients)  # (out, out, 2)
    px, py = grid[..., 0], grid[..., 1]  # (out, out)
    a, s, tx, ty = coefficients.unbind(1)  # (B, out, out) each
    jx = j[:, 0, 0, None, None] * px + j[:, 0, 1, None, None] * py  # (B, out, out): J p
    jy = j[:, 1, 0, None, None] * px + j[:, 1, 1, None, None] * py
    return torch.stack([a * px + s * jx + tx, a * py + s * jy + ty], dim=-1)  # (B, out, out, 2)


class MotionFieldEstimator(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        k, w, dw = config.num_keypoints, config.motion_width, config.depthwise
        self.config = config
        cin = (k + 1) * 4
        self.enc1 = ConvNormAct(cin, w, depthwise=False)  # m
        self.enc2 = nn.Sequential(ConvNormAct(w, 2 * w, dw, stride=2), ResBlock(2 * w, dw))  # m/2
        self.enc3 = nn.Sequential(ConvNormAct(2 * w, 2 * w, dw, stride=2), ResBlock(2 * w, dw))  # m/4
        self.dec2 = nn.Sequential(ConvNormAct(4 * w, 2 * w, dw), ResBlock(2 * w, dw))  # m/2
        self.dec1 = nn.Sequential(ConvNormAct(3 * w, w, dw), ResBlock(w, dw))  # m
        self.masks = nn.Conv2d(w, k + 1, 3, 1, 1)
        self.occlusion = nn.Conv2d(w, 1, 3, 1, 1)
        nn.init.constant_(self.occlusion.bias, 2.0)  # start mostly "visible"

    def forward(self, ref_small: torch.Tensor, kp_ref: torch.Tensor, kp_drv: torch.Tensor, jacobian: torch.Tensor,
                out_size: int) -> dict[str, torch.Tensor]:
        """ref_small (B, 3, m, m) reference at motion_size; kp_* (B, K, 3); jacobian (B, 2, 2) ->
        flow (B, out, out, 2) grid_sample positions, masks (B, K+1, m, m), occlusion (B, 1, m, m)."""
        b, k = kp_ref.shape[:2]
        m = ref_small.shape[-1]
        grid = make_coordinate_grid(m, m, ref_small)  # (m, m, 2)
        motions = sparse_motions(grid, kp_ref, kp_drv, jacobian)  # (B, K+1, m, m, 2)
        heat = keypoint_heatmaps(grid, kp_drv, self.config.heatmap_variance) - keypoint_heatmaps(
            grid, kp_ref, self.config.heatmap_variance)  # (B, K, m, m)
        heat = torch.cat([torch.zeros_like(heat[:, :1]), heat], dim=1)  # (B, K+1, m, m)
        deformed = F.grid_sample(
            ref_small.repeat_interleave(k + 1, dim=0), motions.flatten(0, 1), align_corners=False, padding_mode="border"
        ).view(b, (k + 1) * 3, m, m)  # (B, 3(K+1), m, m)
        x1 = self.enc1(conv_layout(torch.cat([heat, deformed], dim=1)))
        x2 = self.enc2(x1)
        x3 = self.enc3(x2)
        y2 = self.dec2(torch.cat([F.interpolate(x3, scale_factor=2.0, mode="nearest"), x2], dim=1))
        y1 = self.dec1(torch.cat([F.interpolate(y2, scale_factor=2.0, mode="nearest"), x1], dim=1))
        masks = F.softmax(self.masks(y1), dim=1)  # (B, K+1, m, m)
        occlusion = torch.sigmoid(self.occlusion(y1))  # (B, 1, m, m)
        flow = combined_flow(masks, kp_ref, kp_drv, jacobian, out_size)  # (B, out, out, 2)
        return {"flow": flow, "masks": masks, "occlusion": occlusion}
