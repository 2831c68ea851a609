"""G, the generator: warped reference features -> residual blocks -> upsampling -> RGB.

Paper Sec. 3.2: the warped appearance, multiplied by the occlusion mask, is decoded to the output
image. To stay sharp from the first training step on a CPU budget, the output blends the
reference's own pixels warped by the same flow with the decoded RGB, by a decoded per-pixel weight:
image = α · warp(reference) + (1 - α) · rgb.

With an enhancement branch (``enhancement_size`` > 0) G also reads the enhancement layer's low-resolution
picture of the driving frame when it is there (``codec/model/enhancement_branch.py``); a picture larger than E (the
ladder's top rungs) goes through a second correction when the model has one (``enhancement_large_correction``).
With an eyelid branch (``eyelid_branch``) G reads each eye's opening from the keypoints (``codec/model/eyelid_branch.py``);
with the eyelid warp (``eyelid_warp`` > 0) the reference's pixels and 2D features are sampled with the eyes opened or
closed to the driver's opening (``codec/model/eyelid_warp.py``).

In the 3D form (``volume_depth`` > 0) the features are a (Cv, D, S/4, S/4) volume warped by the 3D
flow, then projected to 2D as in the paper: depth folded into channels and a 1×1 conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codec.model.blocks import ResBlock, conv_layout
from codec.model.config import ModelConfig
from codec.model.enhancement_branch import EnhancementBranch, PictureCorrection
from codec.model.eyelid_branch import EyelidBranch
from codec.model.eyelid_warp import eyelid_offsets
from codec.model.motion_field_3d import warp_volume


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """flow (B, h, w, 2) -> (B, H, W, 2), bilinear."""
    # resized as a contiguous (B, 2, h, w): PyTorch's CPU kernel for the permuted (channels-last) view is ~3x slower
    return F.interpolate(flow.permute(0, 3, 1, 2).contiguous(), size=size, mode="bilinear",
                         align_corners=False).permute(0, 2, 3, 1)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) sampled at flow (B, h, w, 2) -> (B, C, h, w); flow resized to (H, W) if needed."""
    if flow.shape[1] != x.shape[-2]:
        flow = resize_flow(flow, x.shape[-2:])  # (B, H, W, 2)
    # sampled in fp32: under bf16 autocast the positions would be off by up to half a pixel
    return F.grid_sample(x.float(), flow.float(), mode="bilinear", padding_mode="border", align_corners=False)


class Generator(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c, cs, dw = config.feature_channels, config.skip_channels, config.depthwise
        up = config.upsample_channels or max(32, cs * 2)
        if config.volume_depth:
            self.project = nn.Sequential(nn.Conv2d(config.volume_channels * config.volume_depth, c, 1), nn.SiLU())
        self.blocks = nn.Sequential(*[ResBlock(c, dw) for _ in range(config.decoder_blocks)])
        self.up1 = nn.Sequential(nn.Conv2d(c, 4 * up, 1), nn.PixelShuffle(2), nn.SiLU())  # S/2
        self.fuse = nn.Sequential(nn.Conv2d(up + cs, up, 1), ResBlock(up, dw))
        self.up2 = nn.Sequential(nn.Conv2d(up, 4 * 4, 3, 1, 1), nn.PixelShuffle(2))  # S, 4 channels
        with torch.no_grad():
            self.up2[0].bias.view(4, 4)[3].fill_(2.0)  # α starts near 0.9: mostly warped reference pixels
        self.enhancement = EnhancementBranch(config, up) if config.enhancement_size else None
        self.correction = (PictureCorrection(config.enhancement_size, config.enhancement_channels)
                           if config.enhancement_size else None)
        self.correction_large = (PictureCorrection(config.enhancement_size, config.enhancement_channels)
                                 if config.enhancement_size and config.enhancement_large_correction else None)
        self.eyelids = EyelidBranch(c, up) if config.eyelid_branch else None
        self.eyelid_warp = config.eyelid_warp

    @staticmethod
    def _flow_at(flow: torch.Tensor, side: int, offsets: dict[int, torch.Tensor]) -> torch.Tensor:
        """flow (B, h, w, 2) at side × side, plus the eyelid warp's offset at that side when there is one."""
        resized = flow if flow.shape[1] == side else resize_flow(flow, (side, side))
        side = int(side)  # a traced shape is a tensor (ONNX export): the offsets are keyed by int
        return resized + offsets[side].to(resized.dtype) if side in offsets else resized

    def forward(self, features: torch.Tensor, skip: torch.Tensor, image: torch.Tensor, flow: torch.Tensor,
                occlusion: torch.Tensor, flow_3d: torch.Tensor | None = None, enhancement: torch.Tensor | None = None,
                enhancement_present: torch.Tensor | None = None, kp_ref: torch.Tensor | None = None,
                kp_drv: torch.Tensor | None = None, eyelids_present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """features (B, C, S/4, S/4) or a volume (B, Cv, D, S/4, S/4) with flow_3d (B, D, S/4, S/4, 3);
        skip (B, Cs, S/2, S/2), image (B, 3, S, S) reference; flow (B, S/4, S/4, 2); occlusion (B, 1, m, m);
        enhancement (B, 3, E, E) in [0, 1] or None, enhancement_present (B,) 1/0 or None (all present);
        kp_ref, kp_drv (B, K, 3): the keypoints, read by the eyelid branch and warp (a model with either needs them);
        eyelids_present (B,) 1/0 or None (all 1): 0 skips the eyelid warp for that sample (its eyelid rows were not
        transmitted: ``codec.model.eyelid_warp.eyelid_rows_present``)
        -> image (B, 3, S, S) in [0, 1], warped_reference (B, 3, S, S), alpha (B, 1, S, S)."""
        size = image.shape[-1]
        occ4 = F.interpolate(occlusion, size=features.shape[-2:], mode="bilinear", align_corners=False)
        occ2 = F.interpolate(occlusion, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        if (self.eyelid_warp > 0 or self.eyelids is not None) and (kp_ref is None or kp_drv is None):
            raise ValueError("this model reads the eyes' opening (eyelid warp or branch): pass kp_ref and kp_drv to G")
        offsets: dict[int, torch.Tensor] = {}
        if self.eyelid_warp > 0 and kp_ref is not None and kp_drv is not None:  # checked above
            sides = (int(features.shape[-1]), int(skip.shape[-1]), int(size))  # ints also when traced (static shapes)
            offsets = eyelid_offsets(kp_ref, kp_drv, sides, self.eyelid_warp, eyelids_present)
        if features.dim() == 5:
            if flow_3d is None:
                raise ValueError("a feature volume needs flow_3d (the 3D motion field's output)")
            warped = self.project(warp_volume(features, flow_3d).flatten(1, 2))  # (B, Cv·D, h, w) -> (B, C, h, w)
        else:
            warped = warp(features, self._flow_at(flow, features.shape[-1], offsets))  # (B, C, h, w)
        warped_image = warp(image, self._flow_at(flow, size, offsets))  # (B, 3, S, S)
        x = conv_layout(warped * occ4)  # (B, C, h, w)
        extra_skip = None
        if enhancement is not None:
            if self.enhancement is None:
                raise ValueError("this model has no enhancement branch (ModelConfig.enhancement_size = 0): "
                                 "render without the enhancement picture")
            extra, extra_skip = self.enhancement(enhancement, warped_image, x.shape[-1], enhancement_present)
            x = x + extra
        eyelids_up = None
        if self.eyelids is not None and kp_ref is not None and kp_drv is not None:  # checked above
            eyelids, eyelids_up = self.eyelids(kp_ref, kp_drv, x.shape[-1], skip.shape[-1])
            x = x + eyelids
        x = self.blocks(x)
        x = self.up1(x)  # (B, up, S/2, S/2)
        if extra_skip is not None:
            x = x + extra_skip
        if eyelids_up is not None:
            x = x + eyelids_up
        x = self.fuse(conv_layout(torch.cat([x, warp(skip, self._flow_at(flow, skip.shape[-1], offsets)) * occ2], dim=1)))
        out = self.up2(x)  # (B, 4, S, S)
        warped = warped_image
        alpha = torch.sigmoid(out[:, 3:4])
        rgb = torch.sigmoid(out[:, :3])
        assert out.shape[-1] == size
        result = alpha * warped + (1 - alpha) * rgb  # (B, 3, S, S)
        if enhancement is not None and self.correction is not None:
            correction = self.correction
            if self.correction_large is not None and enhancement.shape[-1] > self.correction.picture_size:
                correction = self.correction_large  # a top rung's larger picture: the correction fitted for those
            result = correction(result, enhancement, enhancement_present)
        return {"image": result, "warped_reference": warped, "alpha": alpha}
