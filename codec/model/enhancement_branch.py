"""The enhancement branch of G: a low-resolution picture of the driving frame, when the sender sends one.

The enhancement layer (``codec.enhancement``) carries the driving face crop at E×E (E = 48 by default),
coded by a real video codec. This branch reads the decoded picture next to the reference warped by
the motion (both at S/4, where they can be compared) and adds residuals to G's features at S/4 and
S/2: the picture says what the warp got wrong (colour, shading, the mouth's and eyes' state, what
the reference does not show). Both heads are zero-initialised, so a model grown from motion-only
weights computes what it did; and a per-sample ``present`` flag turns the branch off, so one model
renders with or without the layer (training drops it at random).

``PictureCorrection`` then works at the picture's own scale, on G's output: it area-downscales the
output to E×E exactly as the sender downscaled the crop (OpenCV's INTER_AREA, as a matrix), compares
it with the decoded picture and adds back, upscaled, the share of the difference it trusts
(a gate per pixel, from a small net that sees both, zero-initialised like the heads; the coded picture's artefacts at a high qp are
worth less than G's own low frequencies). A learned feature residual alone (the two heads above)
learnt almost nothing in 23k steps (+0.02 dB face PSNR on the validation people at qp 55), while
this back-projection, untrained, gives +1.9 dB at qp 40 (docs/model-card.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from codec.model.blocks import ResBlock, conv_layout
from codec.model.config import ModelConfig


def area_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) float32 A with A @ x the area average of a 1-D signal x, as cv2.INTER_AREA downscales
    (each output sample averages its 1/scale-wide window, partly covered input samples weighted by their cover)."""
    if not 0 < size_out <= size_in:
        raise ValueError(f"area downscale needs 0 < size_out <= size_in, got {size_in} -> {size_out}")
    scale = size_in / size_out
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    for j in range(size_out):
        start, end = j * scale, (j + 1) * scale
        for i in range(int(start), min(size_in, math.ceil(end))):
            cover = min(end, i + 1) - max(start, i)
            if cover > 1e-9:
                matrix[j, i] = cover / scale
    return matrix.float()


def bicubic_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) float32 U with U @ x the 1-D upsampling of x that ``F.interpolate(mode="bicubic",
    align_corners=False)`` applies along each axis (that interpolation is separable: the 2-D one is U X Uᵀ)."""
    basis = torch.eye(size_in, dtype=torch.float64).view(size_in, 1, size_in, 1)  # one impulse per sample
    columns = F.interpolate(basis, size=(size_out, 1), mode="bicubic", align_corners=False)  # (in, 1, out, 1)
    return columns[:, 0, :, 0].t().float().contiguous()  # (out, in)


class PictureCorrection(nn.Module):
    """G's output pulled towards the decoded picture where the picture is trusted, at the picture's scale."""

    def __init__(self, picture_size: int, channels: int):
        super().__init__()
        self.picture_size = picture_size
        self.net = nn.Sequential(
            nn.Conv2d(9, channels, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(channels, 4, 3, 1, 1),  # gate logit, then a colour residual
        )
        nn.init.zeros_(self.net[-1].weight)  # gate 0, residual 0: untrained, the picture changes nothing
        nn.init.zeros_(self.net[-1].bias)
        self._matrices: dict[tuple[str, int, torch.device], torch.Tensor] = {}

    def _matrix(self, kind: str, picture_size: int, size: int, device: torch.device) -> torch.Tensor:
        key = (kind, picture_size, size, device)
        if key not in self._matrices:
            e = picture_size
            matrix = area_matrix(size, e) if kind == "area" else bicubic_matrix(e, size)
            self._matrices[key] = matrix.to(device)
        return self._matrices[key]

    def downscale(self, image: torch.Tensor, picture_size: int) -> torch.Tensor:
        """(B, C, S, S) -> (B, C, E, E) float32 (E = ``picture_size``), area-averaged like the sender's
        cv2.INTER_AREA (in fp32 under any autocast: at an integer ratio the mean of each block, else the area
        matrix on both axes)."""
        size, e = image.shape[-1], picture_size
        image = image.float()
        if size % e == 0:
            return F.avg_pool2d(image, size // e)
        area = self._matrix("area", e, size, image.device)  # (E, S)
        with torch.autocast(image.device.type, enabled=False):
            return area @ image @ area.t()

    def upscale(self, correction: torch.Tensor, size: int) -> torch.Tensor:
        """(B, C, E, E) -> (B, C, size, size) float32, what ``F.interpolate(mode="bicubic", align_corners=False)``
        gives, as two small matmuls (U X Uᵀ, U precomputed; the interpolation itself is ~8x slower on a CPU)."""
        up = self._matrix("bicubic", correction.shape[-1], size, correction.device)  # (size, E)
        with torch.autocast(correction.device.type, enabled=False):
            return up @ correction.float() @ up.t()

    def forward(self, image: torch.Tensor, picture: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """image (B, 3, S, S) G's output in [0, 1]; picture (B, 3, E, E) in [0, 1]; present (B,) 1/0 or None
        -> (B, 3, S, S) in [0, 1], equal to ``image`` where the picture is absent."""
        size = image.shape[-1]
        picture = picture.float()
        down = self.downscale(image, picture.shape[-1])  # (B, 3, E, E)
        difference = picture - down
        out = self.net(conv_layout(torch.cat([picture, down, difference], dim=1))).float()  # (B, 4, E, E)
        correction = torch.tanh(out[:, :1]) * difference + out[:, 1:]  # (B, 3, E, E); tanh: gate 0 still learns
        if present is not None:
            correction = correction * present.to(correction.dtype).view(-1, 1, 1, 1)
        up = self.upscale(correction, size)  # (B, 3, S, S)
        return (image.float() + up).clamp(0.0, 1.0).to(image.dtype)


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
        picture = picture.float()
        if picture.shape[-1] < feature_size:  # a smaller picture (the trained one, 48² or 64², at S/4 = 64)
            picture = F.interpolate(picture, size=size, mode="bilinear", align_corners=False)
        elif picture.shape[-1] > feature_size:  # a larger one (a top rung): area-averaged down, no aliasing
            picture = F.interpolate(picture, size=size, mode="area")
        warped = warped_reference.float()
        if warped.shape[-1] % feature_size == 0:  # "area" at an integer ratio: the mean of each block
            warped = F.avg_pool2d(warped, warped.shape[-1] // feature_size)
        else:
            warped = F.interpolate(warped, size=size, mode="area")
        h = self.body(conv_layout(torch.cat([picture, warped], dim=1)))  # (B, c, S/4, S/4)
        features = self.to_features(h)
        # to_skip (1×1) before the bilinear ×2 rather than after: both are linear and the resize's weights sum
        # to 1, so they commute (the bias too), and the conv runs on a quarter of the pixels
        skip = F.interpolate(self.to_skip(h), scale_factor=2, mode="bilinear", align_corners=False)
        if present is not None:
            gate = present.to(features.dtype).view(-1, 1, 1, 1)
            features, skip = features * gate, skip * gate
        return features, skip
