"""The training objective's terms (face-vid2vid, Wang et al. 2021, Sec. 3.3 and appendix), as functions.

Every function takes tensors and returns a scalar tensor; the training loop weights and logs them.
Without VGG19 weights (they cannot be downloaded here) the perceptual term is replaced by a
multi-scale L1 pyramid + (1 - SSIM) + discriminator feature matching.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def pyramid_l1(output: torch.Tensor, target: torch.Tensor, num_scales: int = 4) -> torch.Tensor:
    """Mean L1 over an image pyramid (full, 1/2, 1/4, ... resolution). output, target: (B, C, H, W)."""
    total = output.new_zeros(())
    for scale in range(num_scales):
        if scale:
            output, target = F.avg_pool2d(output, 2), F.avg_pool2d(target, 2)
        total = total + (output - target).abs().mean()
    return total / num_scales


def region_boxes(landmarks: torch.Tensor, regions: list[torch.Tensor], size: int, margin: float = 0.5) -> torch.Tensor:
    """Masks of the boxes around landmark regions (each eye, the mouth), enlarged by ``margin`` of their size.

    landmarks: (B, 478, 2) in [-1, 1]; regions: R tensors of landmark indices -> (B, 1, size, size) in {0, 1},
    the union of the R boxes (pixel centres inside a box)."""
    axis = (torch.arange(size, device=landmarks.device, dtype=torch.float32) + 0.5) / size * 2 - 1  # (S,)
    mask = landmarks.new_zeros((landmarks.shape[0], size, size), dtype=torch.bool)
    for indices in regions:
        points = landmarks[:, indices.to(landmarks.device)].float()  # (B, n, 2)
        low, high = points.amin(1), points.amax(1)  # (B, 2) x, y
        pad = margin * (high - low) + 2.0 / size  # at least a pixel each side
        low, high = low - pad, high + pad
        inside_x = (axis[None] >= low[:, :1]) & (axis[None] <= high[:, :1])  # (B, S)
        inside_y = (axis[None] >= low[:, 1:]) & (axis[None] <= high[:, 1:])  # (B, S)
        mask |= inside_y[:, :, None] & inside_x[:, None, :]
    return mask[:, None].float()


def region_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 inside a mask (the eyes and mouth, where the whole-frame mean dilutes the expression's pixels).

    output, target: (B, C, H, W); mask: (B, 1, H, W) in [0, 1]. Zero when the mask is empty."""
    weighted = ((output - target).abs() * mask).sum()
    return weighted / (mask.sum() * output.shape[1]).clamp_min(1.0)


def _gaussian_window(channels: int, size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()  # (C, 1, size, size)


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Differentiable SSIM map (Wang et al. 2004, Gaussian window). a, b: (B, C, H, W) in [0, 1] -> (B, C, H', W')."""
    c1, c2 = 0.01**2, 0.03**2
    channels = a.shape[1]
    w = _gaussian_window(channels, window, sigma, a)
    mu_a = F.conv2d(a, w, groups=channels)
    mu_b = F.conv2d(b, w, groups=channels)
    var_a = F.conv2d(a * a, w, groups=channels) - mu_a**2
    var_b = F.conv2d(b * b, w, groups=channels) - mu_b**2
    cov = F.conv2d(a * b, w, groups=channels) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def ssim_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM. output, target: (B, C, H, W) in [0, 1]."""
    return 1.0 - ssim_map(output, target).mean()


def hinge_d_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss for the discriminator, averaged over scales: relu(1 - D(real)) + relu(1 + D(fake))."""
    total = real_logits[0].new_zeros(())
    for real, fake in zip(real_logits, fake_logits, strict=True):
        total = total + F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return total / len(real_logits)


def hinge_g_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Hinge loss for the generator: -D(fake), averaged over scales."""
    return -sum((f.mean() for f in fake_logits), fake_logits[0].new_zeros(())) / len(fake_logits)


def feature_matching_loss(real_features: list[list[torch.Tensor]], fake_features: list[list[torch.Tensor]]) -> torch.Tensor:
    """Mean L1 between the discriminator's intermediate features on real and generated images.

    real_features, fake_features: per scale, a list of (B, C, h, w) maps; the real ones are detached.
    """
    total, count = None, 0
    for real_scale, fake_scale in zip(real_features, fake_features, strict=True):
        for real, fake in zip(real_scale, fake_scale, strict=True):
            term = (fake - real.detach()).abs().mean()
            total = term if total is None else total + term
            count += 1
    if total is None:
        raise ValueError("feature matching needs at least one discriminator feature map")
    return total / count


def keypoint_prior_loss(keypoints: torch.Tensor, min_distance_sq: float = 0.1, depth_target: float = 0.33) -> torch.Tensor:
    """Paper's keypoint prior: sum over pairs of max(0, D_t - ||x_i - x_j||^2) + |mean depth - z_t|.

    keypoints: (B, K, 3). The pair sum is divided by K so the term's scale does not grow with K².
    """
    k = keypoints.shape[1]
    diff = keypoints[:, :, None, :] - keypoints[:, None, :, :]  # (B, K, K, 3)
    dist_sq = (diff**2).sum(-1)  # (B, K, K)
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=keypoints.device)
    spread = F.relu(min_distance_sq - dist_sq)[:, off_diagonal].sum(-1) / k  # (B,)
    depth = (keypoints[..., 2].mean(-1) - depth_target).abs()  # (B,)
    return (spread + depth).mean()


def head_pose_loss(predicted_deg: torch.Tensor, teacher_deg: torch.Tensor) -> torch.Tensor:
    """Mean per-angle L1 in degrees. predicted_deg, teacher_deg: (B, 3) yaw/pitch/roll."""
    return (predicted_deg - teacher_deg).abs().mean()


def deformation_prior_loss(expression: torch.Tensor) -> torch.Tensor:
    """|δ|₁ averaged over keypoints. expression: (B, K, 3)."""
    return expression.abs().sum(-1).mean()


def landmark_guidance_loss(keypoints: torch.Tensor, landmarks: torch.Tensor, landmark_indices: torch.Tensor) -> torch.Tensor:
    """L1 between projected keypoints and the teacher's landmarks they are tied to.

    keypoints: (B, K, 3) normalised coordinates; landmarks: (B, 478, 2) in [-1, 1];
    landmark_indices: (K,) long, the mediapipe landmark for each keypoint.
    """
    target = landmarks[:, landmark_indices, :]  # (B, K, 2)
    return (keypoints[..., :2] - target).abs().mean()


def landmark_motion_loss(kp_drv: torch.Tensor, kp_ref: torch.Tensor, drv_landmarks: torch.Tensor,
                         ref_landmarks: torch.Tensor, landmark_indices: torch.Tensor) -> torch.Tensor:
    """L1 between the keypoints' motion from reference to driving frame and their landmarks' motion.

    The absolute guidance alone did not teach δ to open the mouth: each keypoint keeps a static offset
    from its landmark (a few pixels, shared by both frames) larger than the lips' motion, and under L1
    only the sign of the error pulls, so the pull never depended on the mouth. Differences cancel the
    offset. kp_*: (B, K, 3) normalised; *_landmarks: (B, 478, 2) in [-1, 1]; landmark_indices: (K,).
    """
    target = drv_landmarks[:, landmark_indices, :] - ref_landmarks[:, landmark_indices, :]  # (B, K, 2)
    return ((kp_drv[..., :2] - kp_ref[..., :2]) - target).abs().mean()


def random_affine(batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                  max_angle_deg: float = 10.0, max_scale: float = 0.1, max_shift: float = 0.1) -> torch.Tensor:
    """(B, 2, 3) random affine maps near the identity, in normalised coordinates."""
    u = torch.rand(batch, 5, generator=generator) * 2 - 1  # (B, 5) in [-1, 1]
    angle = u[:, 0] * math.radians(max_angle_deg)
    scale = 1 + u[:, 1] * max_scale
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([
        torch.stack([cos, -sin, u[:, 3] * max_shift], -1),
        torch.stack([sin, cos, u[:, 4] * max_shift], -1),
    ], 1)  # (B, 2, 3)
    return theta.to(device)


def warp_images(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Y(p) = X(A p + b): images (B, C, H, W), theta (B, 2, 3) -> warped (B, C, H, W), border padding."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def apply_affine(points: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """points (B, K, 2), theta (B, 2, 3) -> A p + b, (B, K, 2)."""
    return points @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]


def equivariance_loss(keypoints: torch.Tensor, keypoints_of_warped: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Keypoints must move with the image: for Y(p) = X(A p + b), A·kp(Y) + b ≈ kp(X) on projected x, y.

    keypoints: (B, K, 3) of the original image (detached by the caller if it wants a one-sided term);
    keypoints_of_warped: (B, K, 3) of the warped image; theta: (B, 2, 3) the warp used.
    """
    return (apply_affine(keypoints_of_warped[..., :2], theta) - keypoints[..., :2]).abs().mean()
