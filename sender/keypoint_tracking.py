"""The sender's per-frame keypoint tracking in a call: once the calibration's offset is on, each frame's δ gets its own
small correction (``codec.model.keypoint_tracking``), where the machine is fast enough for it.

    tracking = TrackingHook(encoder.model, portrait)              # given to the KeypointCalibrator
    motion = tracking(motion, face, landmarks)                     # per frame, on the frame thread

Each frame costs ``steps`` forward and backward passes of G on the frame thread: a few milliseconds on a GPU, ~0.11 s
each on 2 CPU cores. So the hook times itself: it starts at ``MAX_STEPS`` a frame, takes one step fewer whenever the
median over the last ``JUDGED_FRAMES`` frames is over the budget, and turns itself off for the rest of the call when one
step is still too slow, or at once after ``WARMUP_FRAMES`` (a GPU's first passes pick kernels) for any frame over
``HARD_LIMIT_FACTOR`` × the budget. The calibrator only calls it when the portrait is the person on
camera and its offset is on: fitting G's render to the camera would otherwise pull another person's portrait toward the
caller. ``--keypoint-tracking auto`` (the sender's default) runs it with a GPU only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from codec.face.regions import face_hull_mask
from codec.model.keypoint_tracking import KeypointTracker
from codec.motion import MotionParams

logger = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
MAX_STEPS = 3  # steps a frame to start with (validation, held-out frames: none 25.73 dB, 2 steps 26.69, 3 steps 26.86)
BUDGET_MS = 15.0  # a frame's tracking may take this long (median); the motion encoder's own target is 15 ms too
WARMUP_FRAMES = 2  # not judged by the budget (a GPU's first passes), only by WARMUP_LIMIT_MS
JUDGED_FRAMES = 10  # the median over the last this many frames (after the warm-up) decides
HARD_LIMIT_FACTOR = 5.0  # after the warm-up, one frame over this × the budget turns tracking off at once
WARMUP_LIMIT_MS = 2000.0


class TrackingHook:
    """Per-frame tracking for one call (see the module docstring): motion in, motion out, on the frame thread."""

    def __init__(self, model: Any, portrait: np.ndarray, steps: int = MAX_STEPS, budget_ms: float = BUDGET_MS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not budget_ms > 0:
            raise ValueError(f"the tracking budget must be a positive number of ms, got {budget_ms}")
        self._model, self._portrait, self.steps, self.budget_ms = model, portrait, steps, budget_ms
        self._clock = clock
        self._tracker: KeypointTracker | None = None  # built on the first frame (it encodes the portrait)
        self._times_ms: list[float] = []  # the last JUDGED_FRAMES frames' ms, after the warm-up
        self._timed = 0
        self.frames = 0
        self.state = "on"  # on | off: <why>

    def __call__(self, motion: MotionParams, face: np.ndarray | None, landmarks: np.ndarray | None) -> MotionParams:
        if self.state != "on" or face is None:
            return motion
        try:
            if self._tracker is None:  # encodes the portrait once: not timed
                self._tracker = KeypointTracker(self._model, self._portrait, steps=self.steps)
            started = self._clock()
            mask = None
            if landmarks is not None and np.all(np.isfinite(landmarks)):
                mask = face_hull_mask(np.asarray(landmarks)[:, :2], face.shape[0])
            tracked = self._tracker(motion, face, mask)
        except Exception as exc:  # noqa: BLE001 - tracking is an extra: the frame goes out as it came
            self.state = f"off: {type(exc).__name__}: {exc}"
            logger.warning("keypoint tracking failed, off for this call: %s", exc)
            return motion
        self._judge((self._clock() - started) * 1000.0)
        self.frames += 1
        return tracked

    def _judge(self, elapsed_ms: float) -> None:
        self._timed += 1
        if self._timed <= WARMUP_FRAMES:
            if elapsed_ms > WARMUP_LIMIT_MS:
                self._off(f"{elapsed_ms:.0f} ms for one frame")
            return
        if elapsed_ms > HARD_LIMIT_FACTOR * self.budget_ms:
            self._off(f"{elapsed_ms:.0f} ms for one frame")
            return
        self._times_ms.append(elapsed_ms)
        del self._times_ms[:-JUDGED_FRAMES]  # the last JUDGED_FRAMES: a machine that gets busy later is caught too
        if len(self._times_ms) == JUDGED_FRAMES:
            median = float(np.median(self._times_ms))
            if median <= self.budget_ms:
                return
            if self.steps > 1:  # one step fewer, judged afresh
                self.steps -= 1
                if self._tracker is not None:
                    self._tracker.steps = self.steps
                self._times_ms.clear()
                logger.info("keypoint tracking: %.1f ms a frame, over %g ms: %d steps a frame from now", median,
                            self.budget_ms, self.steps)
            else:
                self._off(f"median {median:.1f} ms a frame")

    def _off(self, why: str) -> None:
        self.state = f"off: too slow here ({why}; budget {self.budget_ms:g} ms)"
        logger.info("keypoint tracking %s", self.state)

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {"state": self.state, "frames": self.frames, "steps": self.steps}
        if self._times_ms:
            out["ms_median"] = round(float(np.median(self._times_ms)), 2)
        return out


def tracking_wanted(mode: str, device_type: str) -> bool:
    """``--keypoint-tracking``: ``auto`` on a GPU only, ``on`` anywhere (it turns itself off when too slow), ``off``."""
    if mode not in MODES:
        raise ValueError(f"--keypoint-tracking must be one of {', '.join(MODES)}, got {mode!r}")
    return mode == "on" or (mode == "auto" and device_type != "cpu")
