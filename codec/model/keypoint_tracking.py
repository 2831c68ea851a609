"""A per-frame correction of the transmitted δ, tracked over the call (analysis by synthesis, frame by frame).

    tracker = KeypointTracker(model, portrait, steps=2)
    motion = tracker(motion, face, face_mask)    # per frame, after the call's offset (``keypoint_calibration``)

The call's offset (``codec.model.keypoint_calibration``) corrects the bias H has for this person; what is left is
each frame's own error. Here every frame gets a (K, 3) correction that starts where the previous frame's ended (the
face moves little between frames) and takes ``steps`` Adam steps on G's render of that frame against the camera's
(the calibration's weighted L1; Adam's moments carry over from frame to frame). Each opening's two keypoints share
one correction as in the calibration (``OPENING_PAIRS``), and the mouth's rows keep the sent δ (``FROZEN_ROWS``).
Nothing changes in the bitstream or at the receiver.

Measured on the validation people (7 clips, 100 frames at 25 fps; call offset fitted on the first half, tracked over
every frame of the second half, scored on every 6th: ``python -m bench calibration --tracked-steps N``; 2026-12-08,
experiment script in issue 20's notes), face PSNR / mouth opening error: call offset alone 26.23 dB / 2.64 px; 1 step
a frame, openings free 26.60 / 3.29; 2 steps free 26.85 / 3.43; 2 steps tied 26.71 / 3.03; **2 steps tied, the
mouth's rows left as sent 26.69 / 2.78** (no calibration: 25.73 / 2.62). The picture gains about 1 dB over no
calibration; fitted per frame, the mouth's rows follow G's L1 rather than the opening that was sent, so they are left
out. Cost: ``steps`` forward and backward passes of G per frame (0.11 s each on 2 CPU cores at 256²): a GPU sender's
tool (``sender.keypoint_tracking``).
"""

from __future__ import annotations

import numpy as np
import torch

from codec.model.face_model import FaceVid2VidModel
from codec.model.keypoint_calibration import (
    MAX_OFFSET,
    _images,
    apply_offset,
    driving_keypoints,
    loss_weights,
    tying_matrix,
)
from codec.motion import MotionParams

TRACKING_STEPS = 2
TRACKING_LEARNING_RATE = 0.002
# Rows of codec.model.config KEYPOINT_LANDMARK_INDICES left as sent (plus the call's offset): the mouth's corners and
# lips. Fitted per frame they follow G's L1 rather than the sent opening (validation: mouth opening error 2.64 -> 3.03 px
# tied, 2.78 with these rows frozen, for 26.71 / 26.69 dB).
FROZEN_ROWS: tuple[int, ...] = (0, 1, 2, 3, 4, 5)


class KeypointTracker:
    """Per-frame δ corrections for one portrait and call (see the module docstring). Not thread-safe: one frame at a
    time, in order."""

    def __init__(self, model: FaceVid2VidModel, portrait: np.ndarray, steps: int = TRACKING_STEPS,
                 learning_rate: float = TRACKING_LEARNING_RATE, frozen_rows: tuple[int, ...] = FROZEN_ROWS) -> None:
        if steps < 1 or not learning_rate > 0:
            raise ValueError(f"tracking needs steps ≥ 1 and a positive learning rate, got {steps} and {learning_rate}")
        self._model = model
        self._device = next(model.parameters()).device
        self._size = model.config.image_size
        self.steps = steps
        with torch.no_grad():
            self._reference = model.encode_reference(_images([np.ascontiguousarray(portrait)], self._size, self._device))
        k = self._reference.kp_canonical.shape[1]
        self._tie = tying_matrix(k).to(self._device)  # (K, K)
        self._moving = torch.ones(k, 1, device=self._device)  # (K, 1): 0 on the rows left as sent
        self._moving[[row for row in frozen_rows if row < k]] = 0
        self._free = torch.zeros(k, 3, device=self._device, requires_grad=True)  # the last frame's correction, untied
        self._optimizer = torch.optim.Adam([self._free], lr=learning_rate)  # its moments carry over from frame to frame
        self.correction = np.zeros((k, 3), np.float32)  # the last frame's (K, 3), tied

    def __call__(self, motion: MotionParams, face: np.ndarray, face_mask: np.ndarray | None = None) -> MotionParams:
        """motion as sent for ``face`` (P, P, 3) uint8, the camera's face crop; face_mask (P, P) bool or None (the
        whole crop as face) -> the motion with this frame's correction on its present rows (``apply_offset``)."""
        if motion.expression.shape != tuple(self._free.shape):
            raise ValueError(f"motion δ {motion.expression.shape} does not match the model's keypoints "
                             f"{tuple(self._free.shape)}")
        target = _images([face], self._size, self._device)  # (1, 3, S, S)
        weight = loss_weights(None if face_mask is None else [face_mask], 1, self._size, self._device)  # (1, 1, S, S)
        with torch.no_grad():
            kp, rotation = driving_keypoints(self._reference.kp_canonical, [motion])  # (1, K, 3), (1, 3, 3)
        for _ in range(self.steps):  # the gradient goes to the correction alone; the model is only read
            rendered = self._model.synthesize(self._reference, kp + (self._tie @ self._free)[None], rotation)["image"]
            loss = ((rendered.float() - target).abs() * weight).mean()
            (grad,) = torch.autograd.grad(loss, [self._free])
            self._free.grad = grad * self._moving
            self._optimizer.step()
            with torch.no_grad():
                self._free.clamp_(-MAX_OFFSET, MAX_OFFSET)
        with torch.no_grad():
            self.correction = (self._tie @ self._free).cpu().numpy().astype(np.float32)
        return apply_offset(motion, self.correction)
