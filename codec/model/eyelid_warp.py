"""The eyelid warp: the reference's eyes opened or closed to the driver's opening, by geometry alone (no weights).

Why: M predicts its masks at 32² (8 px cells at 256²) and each keypoint's heatmap spans ~13 px, so the upper and
lower eyelid keypoints (~7 px apart) move one blurred patch of the reference together: a blink cannot be warped, and
G (which mostly shows the warped reference's pixels) does not draw one. Measured on the validation people (the model
shipped 2026-12-07, 100 pairs, eyes' opening by the face mesh on the output): the output's eye opening did not follow
the driver's at all (correlation of its change from the reference with the driver's −0.15), and its error (1.83 px)
was worse than showing the reference itself (1.63). The keypoints carry the opening: the eyelid keypoints are
guided to face-mesh eyelids (``KEYPOINT_LANDMARK_INDICES``) and the sender moves them 75 % of the way to the eyelids'
own motion (``codec/model/landmark_refinement.py``); their gap's change follows the landmarks' (correlation 0.63).

So the receiver moves the pixels itself. For each eye, from the reference's and the driving keypoints: the opening
(eyelid gap over the outer eye corners' distance, ``eye_openings``), the gap the reference must be brought to
(its own gap minus ``gain`` × the change of opening × its corners' distance; kept within 0.15–2× its own), and in
the driving frame the eye's centre and axis (upper → lower lid). Along that axis, the reference's rows between the
lids are scaled about the centre line so that its gap becomes the target (a closing eye: the lids come together
over the eyeball); beyond the lids the shift fades out over one reference gap, and across the eye over a Gaussian
of 0.2 × the corners' distance. G adds the offset to each flow that samples the reference (its features at S/4 and
S/2, its pixels at S). Nothing crosses the network, and without an opening change the offset is zero.

Openings come from 3D keypoint distances (``eye_openings``): a head turn does not read as closing eyes. Eyelid rows
the sender did not transmit (rendered with the reference's own δ) still move a little with the pose (README). Chosen on the validation
people (gains 1 and 1.5, 2D openings, a narrower fade tried; a variant that shifted the eye up instead of scaling it
moved the iris and cost 0.2 px of eye AKD): the shipped file's gain 1.5 brings the eyes' opening error from 1.83 to
1.45 px, under the no-motion floor's 1.63, for −0.017 dB face PSNR and +0.036 px AKD (model card).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from codec.model.eyelid_branch import EYE_CORNER_KEYPOINTS, EYELID_KEYPOINTS, MIN_KEYPOINTS, eye_openings

FADE = 1.0  # beyond the lids the shift fades over this × the reference's gap (Gaussian σ)
ACROSS = 0.2  # σ of the window along the eye, × the outer eye corners' distance
MIN_GAP, MAX_GAP = 0.15, 2.0  # the target gap, as a fraction of the reference's own


def eyelid_offset(kp_ref: torch.Tensor, kp_drv: torch.Tensor, size: int, gain: float) -> torch.Tensor:
    """kp_ref, kp_drv (B, K, 3) normalised -> (B, size, size, 2): what to add to the positions (x, y, normalised)
    at which each output pixel samples the reference, so that its eyes open as far as the driver's."""
    if kp_drv.shape[1] < MIN_KEYPOINTS:
        raise ValueError(f"the eyelid warp reads keypoints up to index {MIN_KEYPOINTS - 1}; got K = {kp_drv.shape[1]}")
    axis = (torch.arange(size, device=kp_drv.device, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres
    grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
    pixels = torch.stack([grid_x, grid_y], dim=-1)[None]  # (1, S, S, 2)
    opening_ref, opening_drv = eye_openings(kp_ref), eye_openings(kp_drv)  # (B, 2) each
    xy_ref, xy_drv = kp_ref[..., :2].float(), kp_drv[..., :2].float()
    corners_ref = (xy_ref[:, EYE_CORNER_KEYPOINTS[1]] - xy_ref[:, EYE_CORNER_KEYPOINTS[0]]).norm(dim=-1)  # (B,)
    corners_drv = (xy_drv[:, EYE_CORNER_KEYPOINTS[1]] - xy_drv[:, EYE_CORNER_KEYPOINTS[0]]).norm(dim=-1)  # (B,)
    offset = torch.zeros(kp_drv.shape[0], size, size, 2, device=kp_drv.device)
    for eye, (upper, lower) in enumerate(EYELID_KEYPOINTS):
        centre = 0.5 * (xy_drv[:, upper] + xy_drv[:, lower])  # (B, 2)
        down = F.normalize(xy_drv[:, lower] - xy_drv[:, upper] + torch.tensor([0.0, 1e-4], device=centre.device), dim=-1)
        along = torch.stack([-down[:, 1], down[:, 0]], dim=-1)  # (B, 2)
        gap_ref = (opening_ref[:, eye] * corners_ref).clamp_min(1e-3)  # (B,)
        target = gap_ref - gain * (opening_ref[:, eye] - opening_drv[:, eye]) * corners_ref
        target = torch.minimum(torch.maximum(target, MIN_GAP * gap_ref), MAX_GAP * gap_ref)
        gap_ref, target = gap_ref[:, None, None], target[:, None, None]  # (B, 1, 1)
        relative = pixels - centre[:, None, None]  # (B, S, S, 2)
        t = (relative * down[:, None, None]).sum(-1)  # (B, S, S) across the lids
        s = (relative * along[:, None, None]).sum(-1)  # (B, S, S) along the eye
        between = t * (gap_ref / target - 1)  # rows scaled about the centre line: the gap becomes the target
        beyond = torch.sign(t) * (gap_ref - target) / 2 * torch.exp(
            -((t.abs() - target / 2) ** 2) / (2 * (FADE * gap_ref) ** 2))
        shift = torch.where(t.abs() <= target / 2, between, beyond)
        window = torch.exp(-(s**2) / (2 * (ACROSS * corners_drv[:, None, None]) ** 2))
        offset = offset + (shift * window)[..., None] * down[:, None, None]
    return offset
