"""Sender-side keypoint calibration: one δ offset per call, fitted so that G's render of the sender's own frames
comes closer to them (analysis by synthesis).

H reads a new person's keypoints with a bias that G then renders as a slightly wrong mouth, jaw or gaze; the sender
holds the receiver's generator and its own camera frames, so it can measure that error. From a few frames of the
call's first seconds (their transmitted motion, the portrait the receiver renders), one (K, 3) offset, shared by all
frames, is fitted by Adam on G's render against the frames (L1, the face weighted 1 + 0.2, the rest 0.2); the sender
adds it to every later frame's δ. Since x = R x_c + t + δ, the bitstream and the receiver are unchanged, and as a
constant it leaves the frame-to-frame differences (and so the rate) as they were.

Measured on the validation people (9 clips, reference = frame 0; offset fitted on 8 frames spread over the clip's
first half, 20 steps at lr 0.002; scored on 8 frames of its second half, never seen by the fit): a free offset on
all 20 keypoints raised face PSNR 25.43 → 26.05 dB but pulled the mouth and eyes toward their average (inner-lip gap
error 2.28 → 2.86 px, eyes' opening error 1.31 → 1.45; weighting the mouth box 3× did not help: 2.95); on the
keypoints of brows, nose, chin, jaw and forehead only it gave 25.76 dB with the openings as they were. What ships
moves every keypoint but ties each opening's two keypoints (upper and lower lip, upper and lower eyelid:
``OPENING_PAIRS``) to one shared offset, so the pair moves together and the opening stays as sent. On the 7
validation people's first clips (100 frames at 25 fps, fit on frames 1-43, scored on 50-92, 2026-12-07): none
25.62 dB, brows-to-forehead only 25.93, free on all 26.17 (inner-lip gap error 2.60 → 2.93 px), **tied 26.08** (AKD
1.71 → 1.54 px, inner-lip gap 2.60 → 2.61, eyes' opening 1.30 → 1.25). A per-call gain on each coordinate's
deviation (δ' = δ + o + g ⊙ (δ - mean δ)) overfitted the 8 frames (26.13, inner-lip gap 3.26). Fitting every frame
on its own instead (20 steps each, all rows, not affordable on a CPU sender at 25 fps) reached 27.00 on the 9 clips.
It only makes sense when the portrait is the sender's own face:
the caller checks that (``sender.calibration``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from codec.model.face_model import FaceVid2VidModel, ReferenceFeatures
from codec.motion import MotionParams, angles_to_rotation_torch, transform_keypoints_torch

STEPS = 20
LEARNING_RATE = 0.002  # normalised coordinates per Adam step (δ's quantizer step is 0.005)
BACKGROUND_WEIGHT = 0.2  # L1 weight outside the face (inside: 1 + this)
MAX_OFFSET = 0.05  # normalised (6.4 px at 256²): a larger fitted offset is clamped (validation: mean |offset| ≤ 0.012)
# Rows of codec.model.config KEYPOINT_LANDMARK_INDICES whose distance is an opening: upper/lower outer lip, upper/lower
# inner lip, right upper/lower eyelid, left upper/lower eyelid. Each pair shares one offset (see the module docstring).
OPENING_PAIRS: tuple[tuple[int, int], ...] = ((2, 3), (4, 5), (6, 7), (8, 9))


def tying_matrix(num_keypoints: int) -> torch.Tensor:
    """(K, K) T: offset = T @ free, every row its own free offset except each opening pair (both rows < K), whose
    two rows both get the mean of the pair's free offsets."""
    tie = torch.eye(num_keypoints)
    for upper, lower in OPENING_PAIRS:
        if lower < num_keypoints:
            tie[[upper, upper, lower, lower], [upper, lower, upper, lower]] = 0.5
    return tie


@dataclass(frozen=True)
class Calibration:
    """offset (K, 3) float32 to add to each frame's δ; the weighted L1 of G's render against the frames before and
    after (the same frames: a fit that did not lower it is not worth applying); frames used; seconds taken."""

    offset: np.ndarray
    loss_before: float
    loss_after: float
    frames: int
    seconds: float

    @property
    def improved(self) -> bool:
        return self.loss_after < self.loss_before


def _images(frames: Sequence[np.ndarray], size: int, device: torch.device) -> torch.Tensor:
    """(P, P, 3) uint8 square frames (one P) -> (N, 3, S, S) float in [0, 1], resized to the model's S if needed."""
    side = frames[0].shape[0]
    for frame in frames:
        if frame.shape != (side, side, 3) or frame.dtype != np.uint8:
            raise ValueError(f"calibration frames must be square uint8 face crops of one size, ({side}, {side}, 3) "
                             f"like the first, got {frame.shape} {frame.dtype}")
    images = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0
    if side != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    return images


def loss_weights(face_masks: Sequence[np.ndarray] | None, count: int, size: int, device: torch.device) -> torch.Tensor:
    """The fit's L1 weights (N, 1, S, S): 1 + ``BACKGROUND_WEIGHT`` inside each (P, P) bool face mask (resized to S),
    ``BACKGROUND_WEIGHT`` outside; no masks: the whole crop as face."""
    if face_masks is None:
        weight = torch.ones(count, 1, size, size, device=device)
    else:
        weight = torch.from_numpy(np.stack(face_masks).astype(np.float32)).to(device)[:, None]  # (N, 1, P, P)
        weight = F.interpolate(weight, size=(size, size), mode="nearest")  # (N, 1, S, S)
    return weight + BACKGROUND_WEIGHT


def driving_keypoints(kp_canonical: torch.Tensor, motions: Sequence[MotionParams]) -> tuple[torch.Tensor, torch.Tensor]:
    """kp_canonical (N or 1, K, 3) and the motions as sent -> driving keypoints (N, K, 3) and rotations (N, 3, 3)."""
    device = kp_canonical.device
    angles = torch.tensor([[m.yaw, m.pitch, m.roll] for m in motions], dtype=torch.float32, device=device)  # (N, 3)
    rotation = angles_to_rotation_torch(angles[:, 0], angles[:, 1], angles[:, 2])  # (N, 3, 3)
    translation = torch.tensor(np.stack([m.translation for m in motions]), dtype=torch.float32, device=device)  # (N, 3)
    expression = torch.tensor(np.stack([m.expression for m in motions]), dtype=torch.float32, device=device)  # (N, K, 3)
    return transform_keypoints_torch(kp_canonical, rotation, translation, expression), rotation


def calibrate_keypoints(model: FaceVid2VidModel, portrait: np.ndarray, frames: Sequence[np.ndarray],
                        motions: Sequence[MotionParams], face_masks: Sequence[np.ndarray] | None = None,
                        steps: int = STEPS, learning_rate: float = LEARNING_RATE,
                        start: np.ndarray | None = None) -> Calibration:
    """portrait (S, S, 3) uint8 as the receiver decodes it; frames (P, P, 3) uint8 face crops (resized to S if P
    differs) with the motions the sender transmits for them (every row present); face_masks (P, P) bool each, or None
    (the whole crop weighted as the face) -> Calibration. Runs G forward and backward ``steps`` times on all frames at
    once (the model's own weights are not changed), from ``start`` (K, 3) if given (tied as the fit ties), else zero."""
    if not frames or len(frames) != len(motions):
        raise ValueError(f"calibration needs frames and one motion each, got {len(frames)} frames, {len(motions)} motions")
    device = next(model.parameters()).device
    size = model.config.image_size
    targets = _images(frames, size, device)  # (N, 3, S, S)
    weight = loss_weights(face_masks, len(frames), size, device)  # (N, 1, S, S)
    started = time.perf_counter()
    with torch.no_grad():
        one = model.encode_reference(_images([portrait], size, device))
        count = len(frames)

        def batch(t: torch.Tensor) -> torch.Tensor:  # (1, ...) -> (N, ...)
            return t.expand(count, *t.shape[1:])

        reference = ReferenceFeatures(batch(one.features), batch(one.skip), batch(one.image), batch(one.image_small),
                                      batch(one.kp_canonical), {}, batch(one.kp), batch(one.rotation))
        kp, rotation = driving_keypoints(reference.kp_canonical, motions)  # (N, K, 3), (N, 3, 3)
    tie = tying_matrix(kp.shape[1]).to(device)  # (K, K)
    free = torch.zeros(kp.shape[1:], device=device)  # (K, 3)
    if start is not None:
        if start.shape != tuple(kp.shape[1:]):
            raise ValueError(f"start offset {start.shape} does not match the model's keypoints {tuple(kp.shape[1:])}")
        free = torch.from_numpy(np.asarray(start, np.float32)).to(device)
    free.requires_grad_(True)
    optimizer = torch.optim.Adam([free], lr=learning_rate)
    losses = []
    for step in range(steps + 1):  # the gradient goes to the offset alone: the model (perhaps shared with a thread
        with torch.set_grad_enabled(step < steps):  # encoding frames) is only read, never flagged or written
            rendered = model.synthesize(reference, kp + (tie @ free)[None], rotation)["image"]  # (N, 3, S, S)
            loss = ((rendered.float() - targets).abs() * weight).mean()
        losses.append(float(loss.detach()))
        if step < steps:
            optimizer.zero_grad()
            (free.grad,) = torch.autograd.grad(loss, [free])
            optimizer.step()
            with torch.no_grad():
                free.clamp_(-MAX_OFFSET, MAX_OFFSET)
    return Calibration((tie @ free).detach().cpu().numpy().astype(np.float32), losses[0], losses[-1], count,
                       time.perf_counter() - started)


def check_offset(model: FaceVid2VidModel, portrait: np.ndarray, frames: Sequence[np.ndarray],
                 motions: Sequence[MotionParams], offset: np.ndarray,
                 face_masks: Sequence[np.ndarray] | None = None) -> Calibration:
    """An offset fitted before (an earlier call's) on these frames, no fit: loss_before without it, loss_after with it
    (two forward passes of G); ``improved`` says whether it still helps."""
    without = calibrate_keypoints(model, portrait, frames, motions, face_masks, steps=0)
    kept = calibrate_keypoints(model, portrait, frames, motions, face_masks, steps=0, start=offset)
    return Calibration(kept.offset, without.loss_before, kept.loss_before, len(frames), without.seconds + kept.seconds)


def apply_offset(motion: MotionParams, offset: np.ndarray, fraction: float = 1.0) -> MotionParams:
    """motion with ``fraction`` × offset (K, 3) added to its δ on the present rows; absent rows stay as sent, and so
    does the present row of an opening pair whose other row is absent (moving it alone would change the opening)."""
    if offset.shape != motion.expression.shape:
        raise ValueError(f"offset {offset.shape} does not match the motion's δ {motion.expression.shape}")
    moved = motion.present.copy()
    for upper, lower in OPENING_PAIRS:
        if lower < len(moved) and moved[upper] != moved[lower]:
            moved[[upper, lower]] = False
    expression = np.asarray(motion.expression, np.float32) + np.float32(fraction) * offset * moved[:, None]
    return MotionParams(motion.yaw, motion.pitch, motion.roll, motion.translation, expression, motion.present)
