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

Openings come from 3D keypoint distances (``eye_openings``): a head turn does not read as closing eyes. A frame whose
eyelid rows the sender did not transmit (the ladder's K = 5 rungs: rendered with the reference's own δ, which under
another pose changes their 3D distances a little) renders without the warp (``eyelid_rows_present``; G's
``eyelids_present``, an input of the exported render too). The offset is computed once per frame, at the output's
side, and area-averaged for G's smaller flows (``eyelid_offsets``). Chosen on the validation
people (gains 1 and 1.5, 2D openings, a narrower fade tried; a variant that shifted the eye up instead of scaling it
moved the iris and cost 0.2 px of eye AKD): the shipped file's gain 1.5 brings the eyes' opening error from 1.83 to
1.45 px, under the no-motion floor's 1.63, for −0.017 dB face PSNR and +0.036 px AKD (model card).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from codec.model.eyelid_branch import EYE_CORNER_KEYPOINTS, EYELID_KEYPOINTS, MIN_KEYPOINTS, eye_openings

FADE = 1.0  # beyond the lids the shift fades over this × the reference's gap (Gaussian σ)
ACROSS = 0.2  # σ of the window along the eye, × the outer eye corners' distance
MIN_GAP, MAX_GAP = 0.15, 2.0  # the target gap, as a fraction of the reference's own
WARP_KEYPOINTS = tuple(sorted({*(k for pair in EYELID_KEYPOINTS for k in pair), *EYE_CORNER_KEYPOINTS}))  # rows it reads


def eyelid_rows_present(present: np.ndarray) -> bool:
    """Whether a frame's transmitted δ rows (``MotionParams.present``, (K,) bool) include every row the warp reads.
    Without them (the ladder's K = 5 rungs send the mouth's) the receiver renders those rows with the reference's δ:
    under another head pose their 3D distances change a little (δ is added after the rotation), which the warp would
    read as the eyes opening or closing; so the frame renders without it (G's ``eyelids_present`` 0)."""
    return len(present) >= MIN_KEYPOINTS and bool(np.asarray(present)[list(WARP_KEYPOINTS)].all())


def eyelid_offset(kp_ref: torch.Tensor, kp_drv: torch.Tensor, size: int, gain: float) -> torch.Tensor:
    """kp_ref, kp_drv (B, K, 3) normalised -> (B, size, size, 2): what to add to the positions (x, y, normalised)
    at which each output pixel samples the reference, so that its eyes open as far as the driver's."""
    if kp_drv.shape[1] < MIN_KEYPOINTS:
        raise ValueError(f"the eyelid warp reads keypoints up to index {MIN_KEYPOINTS - 1}; got K = {kp_drv.shape[1]}")
    axis = (torch.arange(size, device=kp_drv.device, dtype=torch.float32) + 0.5) / size * 2 - 1  # (S,) pixel centres
    opening_ref, opening_drv = eye_openings(kp_ref), eye_openings(kp_drv)  # (B, 2) each: per eye
    xy_ref, xy_drv = kp_ref[..., :2].float(), kp_drv[..., :2].float()
    corners_ref = (xy_ref[:, EYE_CORNER_KEYPOINTS[1]] - xy_ref[:, EYE_CORNER_KEYPOINTS[0]]).norm(dim=-1)  # (B,)
    corners_drv = (xy_drv[:, EYE_CORNER_KEYPOINTS[1]] - xy_drv[:, EYE_CORNER_KEYPOINTS[0]]).norm(dim=-1)  # (B,)
    upper = xy_drv[:, [pair[0] for pair in EYELID_KEYPOINTS]]  # (B, 2 eyes, 2)
    lower = xy_drv[:, [pair[1] for pair in EYELID_KEYPOINTS]]  # (B, 2 eyes, 2)
    centre = 0.5 * (upper + lower)  # (B, E, 2)
    down = F.normalize(lower - upper + torch.tensor([0.0, 1e-4], device=centre.device), dim=-1)  # (B, E, 2)
    along = torch.stack([-down[..., 1], down[..., 0]], dim=-1)  # (B, E, 2)
    gap_ref = (opening_ref * corners_ref[:, None]).clamp_min(1e-3)  # (B, E)
    target = gap_ref - gain * (opening_ref - opening_drv) * corners_ref[:, None]
    target = torch.minimum(torch.maximum(target, MIN_GAP * gap_ref), MAX_GAP * gap_ref)
    gap_ref, target = gap_ref[..., None, None], target[..., None, None]  # (B, E, 1, 1)

    def project(direction: torch.Tensor) -> torch.Tensor:  # (B, E, 2) -> (B, E, S, S): (pixel − centre) · direction
        origin = (centre * direction).sum(-1)[..., None, None]  # (B, E, 1, 1)
        return (axis * direction[..., 1:2])[..., :, None] + (axis * direction[..., 0:1])[..., None, :] - origin

    t, s = project(down), project(along)  # (B, E, S, S): across the lids, along the eye
    half = target / 2
    between = t * (gap_ref / target - 1)  # rows scaled about the centre line: the gap becomes the target
    beyond = torch.sign(t) * ((gap_ref - target) / 2) * torch.exp((t.abs() - half).square() * (-0.5 / (FADE * gap_ref) ** 2))
    shift = torch.where(t.abs() <= half, between, beyond)  # (B, E, S, S)
    window = torch.exp(s.square() * (-0.5 / (ACROSS * corners_drv[:, None, None, None]) ** 2))
    weight = shift * window  # (B, E, S, S): how far along each eye's axis
    # summed per component (not an einsum: under autocast that would run in bf16)
    return torch.stack([(weight * down[..., i, None, None]).sum(1) for i in range(2)], dim=-1)  # (B, S, S, 2)


def eyelid_offsets(kp_ref: torch.Tensor, kp_drv: torch.Tensor, sides: tuple[int, ...], gain: float,
                   gate: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """The offset at each of ``sides`` (each dividing the largest): computed once at the largest side, the others its
    area average (what a pixel there covers), so G's three flows cost one evaluation. gate (B,) 1/0 or None (all 1):
    0 leaves a sample's eyes as the reference has them -> {side: (B, side, side, 2)}."""
    largest = max(sides)
    if any(largest % side for side in sides):
        raise ValueError(f"the eyelid warp's sides must divide the largest, got {sides}")
    offset = eyelid_offset(kp_ref, kp_drv, largest, gain)  # (B, S, S, 2)
    if gate is not None:
        offset = offset * gate.to(offset.dtype)[:, None, None, None]
    planes = offset.permute(0, 3, 1, 2)  # (B, 2, S, S)
    return {side: offset if side == largest else
            F.avg_pool2d(planes, largest // side).permute(0, 2, 3, 1) for side in set(sides)}
