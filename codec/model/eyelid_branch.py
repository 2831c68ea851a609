"""The eyelid branch: how far each driving eye is open, against the reference's, drawn where the eye is, for G.

Why: M predicts its masks at 32² (8 px cells at 256²) and each keypoint's heatmap spans ~13 px, so the upper and
lower eyelid keypoints (~7 px apart) move one blurred patch of the reference together: a blink cannot be warped.
Measured on the validation people (2026-12-07, the model shipped then, 100 pairs): the output's eye opening did not
follow the driver's at all (correlation of its change from the reference with the driver's: −0.15, slope −0.04), and
its error (1.83 px) was worse than showing the reference itself (1.63). The keypoints do carry the opening: the
eyelid keypoints are guided to face-mesh eyelids (``KEYPOINT_LANDMARK_INDICES``) and the sender moves them 75 % of
the way to the eyelids' own motion (``codec/model/landmark_refinement.py``).

So G reads the opening directly: from the reference's and the driving keypoints, each eye's opening (the gap between
its eyelid keypoints over the distance between the outer eye corners' keypoints: ~0.1 open, ~0.02 shut), and draws,
as a Gaussian at the driving eye, its change from the reference and its value (4 maps). Zero-initialised 1×1 convs
add them to G's features at S/4 and S/2, so a model grown with the branch renders exactly what it did before training.
Nothing crosses the network: the receiver has both sets of keypoints.
"""

from __future__ import annotations

import torch
from torch import nn

from codec.model.config import KEYPOINT_LANDMARK_INDICES

EYELID_LANDMARKS = ((159, 145), (386, 374))  # (upper, lower) eyelid midpoints: right eye, left eye (face mesh)
EYE_CORNER_LANDMARKS = (33, 263)  # outer eye corners: the scale an opening is measured in
OPENING_SCALE = 10.0  # opening × this puts the maps near ±1
SIGMA = 0.04  # of each eye's Gaussian, in normalised coordinates (~5 px at 256²)
MAPS = 4  # per eye: change of opening from the reference, opening


def _keypoint(landmark: int) -> int:
    return KEYPOINT_LANDMARK_INDICES.index(landmark)


EYELID_KEYPOINTS = tuple((_keypoint(u), _keypoint(low)) for u, low in EYELID_LANDMARKS)
EYE_CORNER_KEYPOINTS = tuple(_keypoint(c) for c in EYE_CORNER_LANDMARKS)
MIN_KEYPOINTS = 1 + max(max(pair) for pair in (*EYELID_KEYPOINTS, EYE_CORNER_KEYPOINTS))


def eye_openings(kp: torch.Tensor) -> torch.Tensor:
    """kp (B, K, 3) normalised -> (B, 2): each eye's eyelid gap over the outer eye corners' distance.

    Distances in 3D, so a rigid turn or move of the head does not change them (a head tilted down does not read as
    closing eyes). Eyelid rows that were not transmitted (the receiver renders them with the reference's own δ, e.g.
    at K = 5) change a little with the pose: x = R x_c + t + δ adds δ after the rotation."""
    points = kp.float()
    width = (points[:, EYE_CORNER_KEYPOINTS[1]] - points[:, EYE_CORNER_KEYPOINTS[0]]).norm(dim=-1).clamp_min(1e-3)  # (B,)
    gaps = [(points[:, upper] - points[:, lower]).norm(dim=-1) for upper, lower in EYELID_KEYPOINTS]  # each (B,)
    return torch.stack(gaps, dim=-1) / width[:, None]


def eyelid_maps(kp_ref: torch.Tensor, kp_drv: torch.Tensor, size: int) -> torch.Tensor:
    """kp_ref, kp_drv (B, K, 3) normalised -> (B, 4, size, size): per eye a Gaussian at the driving eye's centre
    times (opening − the reference's opening) and times the opening, both × OPENING_SCALE."""
    opening_drv, opening_ref = eye_openings(kp_drv), eye_openings(kp_ref)  # (B, 2) each
    axis = (torch.arange(size, device=kp_drv.device, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres
    maps = []
    for eye, (upper, lower) in enumerate(EYELID_KEYPOINTS):
        centre = 0.5 * (kp_drv[:, upper, :2] + kp_drv[:, lower, :2]).float()  # (B, 2) x, y
        dx = axis[None, None, :] - centre[:, 0, None, None]  # (B, 1, size)
        dy = axis[None, :, None] - centre[:, 1, None, None]  # (B, size, 1)
        gaussian = torch.exp(-(dx**2 + dy**2) / (2 * SIGMA**2))  # (B, size, size)
        change = OPENING_SCALE * (opening_drv[:, eye] - opening_ref[:, eye])  # (B,)
        maps += [gaussian * change[:, None, None], gaussian * OPENING_SCALE * opening_drv[:, eye, None, None]]
    return torch.stack(maps, dim=1)  # (B, 4, size, size)


class EyelidBranch(nn.Module):
    """The maps at G's two decoder resolutions, each through a zero-initialised 1×1 conv to that width."""

    def __init__(self, feature_channels: int, upsample_channels: int) -> None:
        super().__init__()
        self.to_features = nn.Conv2d(MAPS, feature_channels, 1)  # at S/4, added before G's residual blocks
        self.to_upsampled = nn.Conv2d(MAPS, upsample_channels, 1)  # at S/2, added after the first upsampling
        for conv in (self.to_features, self.to_upsampled):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, kp_ref: torch.Tensor, kp_drv: torch.Tensor, features_size: int,
                upsampled_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (B, C, S/4, S/4) and (B, up, S/2, S/2) to add to G's features."""
        if kp_drv.shape[1] < MIN_KEYPOINTS:
            raise ValueError(f"the eyelid branch reads keypoints up to index {MIN_KEYPOINTS - 1}; got K = {kp_drv.shape[1]}")
        dtype = self.to_features.weight.dtype
        small = eyelid_maps(kp_ref, kp_drv, features_size).to(dtype)
        large = eyelid_maps(kp_ref, kp_drv, upsampled_size).to(dtype)
        return self.to_features(small), self.to_upsampled(large)
