"""Image quality metrics on uint8 RGB frames: PSNR and SSIM, whole frame or inside a mask."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def _check(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> None:
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"images must both be (H, W, 3), got {a.shape} and {b.shape}")
    if mask is not None and mask.shape != a.shape[:2]:
        raise ValueError(f"mask must be (H, W) = {a.shape[:2]}, got {mask.shape}")


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of two (H, W, 3) uint8 images, over the pixels where ``mask`` (H, W) is True."""
    _check(a, b, mask)
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = float(err[mask].mean()) if mask is not None else float(err.mean())
    if mask is not None and not mask.any():
        raise ValueError("mask is empty")
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM (Gaussian window, sigma 1.5, as Wang et al. 2004) of two (H, W, 3) uint8 images,
    averaged over the pixels where ``mask`` (H, W) is True."""
    _check(a, b, mask)
    _, smap = structural_similarity(
        a, b, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    smap = smap.mean(axis=2)  # (H, W)
    if mask is not None:
        if not mask.any():
            raise ValueError("mask is empty")
        return float(smap[mask].mean())
    return float(smap.mean())
