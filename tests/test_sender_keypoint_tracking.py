"""sender/keypoint_tracking.py: per-frame corrections once the offset is on; off for the call when too slow, failing,
or where the calibrator did not apply an offset (another person's portrait)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.model import FaceVid2VidModel, ModelConfig
from codec.motion import MotionParams
from sender.calibration import FitProfile, KeypointCalibrator
from sender.keypoint_tracking import BUDGET_MS, JUDGED_FRAMES, WARMUP_FRAMES, TrackingHook, tracking_wanted


@pytest.fixture(scope="module")
def model() -> FaceVid2VidModel:
    torch.manual_seed(0)
    return FaceVid2VidModel(ModelConfig.preset("tiny")).eval()


def _motion(rng: np.random.Generator, k: int) -> MotionParams:
    return MotionParams(float(rng.normal(0, 3)), 0.0, 0.0, np.zeros(3, np.float32),
                        rng.normal(0, 0.02, (k, 3)).astype(np.float32), np.ones(k, bool))


def _landmarks(size: int = 64) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    return np.stack([size / 2 + size / 3 * np.cos(angles), size / 2 + size / 3 * np.sin(angles)], 1)  # (478, 2)


class _Clock:
    """A clock each tracked frame advances by the next of ``costs_ms``."""

    def __init__(self, costs_ms: list[float]) -> None:
        self.now, self.costs, self.started = 0.0, list(costs_ms), False

    def __call__(self) -> float:
        if self.started:
            self.now += self.costs.pop(0) / 1000.0
        self.started = not self.started
        return self.now


def test_a_fast_machine_keeps_tracking_a_slow_one_turns_it_off(model: FaceVid2VidModel) -> None:
    rng = np.random.default_rng(0)
    k = model.config.num_keypoints
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    fast = TrackingHook(model, portrait, steps=1, clock=_Clock([400.0] * WARMUP_FRAMES + [8.0] * 30))
    for _ in range(WARMUP_FRAMES + 20):
        motion = _motion(rng, k)
        tracked = fast(motion, portrait, _landmarks())
        assert tracked is not motion and tracked.expression.shape == motion.expression.shape
    assert fast.state == "on" and fast.frames == WARMUP_FRAMES + 20 and fast.stats()["ms_median"] == 8.0
    slow = TrackingHook(model, portrait, steps=1, clock=_Clock([400.0] * WARMUP_FRAMES + [BUDGET_MS * 1.5] * 30))
    for _ in range(WARMUP_FRAMES + JUDGED_FRAMES):
        slow(_motion(rng, k), portrait, _landmarks())
    assert slow.state.startswith("off: too slow here (median")
    motion = _motion(rng, k)
    assert slow(motion, portrait, _landmarks()) is motion  # off: the frame goes out as it came
    stall = TrackingHook(model, portrait, steps=1, clock=_Clock([400.0] * WARMUP_FRAMES + [BUDGET_MS * 6]))
    for _ in range(WARMUP_FRAMES + 1):  # one frame far over the budget after the warm-up: off at once
        stall(_motion(rng, k), portrait, None)
    assert stall.state.startswith("off: too slow here") and "for one frame" in stall.state


def test_tracking_takes_fewer_steps_before_it_gives_up(model: FaceVid2VidModel) -> None:
    rng = np.random.default_rng(3)
    k = model.config.num_keypoints
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    over, under = BUDGET_MS * 1.3, BUDGET_MS * 0.8
    hook = TrackingHook(model, portrait, steps=3, clock=_Clock([400.0] * WARMUP_FRAMES + [over] * JUDGED_FRAMES
                                                               + [under] * JUDGED_FRAMES))
    for _ in range(WARMUP_FRAMES + 2 * JUDGED_FRAMES):
        hook(_motion(rng, k), portrait, _landmarks())
    assert hook.state == "on" and hook.steps == 2 and hook._tracker is not None and hook._tracker.steps == 2


def test_a_failure_turns_tracking_off_and_the_frame_goes_out(model: FaceVid2VidModel) -> None:
    rng = np.random.default_rng(1)
    hook = TrackingHook(model, (rng.random((64, 64, 3)) * 255).astype(np.uint8))
    k = model.config.num_keypoints
    wrong = MotionParams(0.0, 0.0, 0.0, np.zeros(3, np.float32), np.zeros((k + 1, 3), np.float32), np.ones(k + 1, bool))
    assert hook(wrong, np.zeros((64, 64, 3), np.uint8), None) is wrong
    assert hook.state.startswith("off: ValueError")
    with pytest.raises(ValueError, match="positive number of ms"):
        TrackingHook(model, np.zeros((64, 64, 3), np.uint8), budget_ms=0)


def test_auto_tracks_with_a_gpu_only() -> None:
    assert tracking_wanted("auto", "cuda") and not tracking_wanted("auto", "cpu")
    assert tracking_wanted("on", "cpu") and not tracking_wanted("off", "cuda")
    with pytest.raises(ValueError, match="auto, on, off"):
        tracking_wanted("always", "cpu")


@pytest.mark.parametrize("distance", [0.1, 0.9])
def test_the_calibrator_tracks_only_after_its_offset(model: FaceVid2VidModel, distance: float) -> None:
    """Frames before the offset, and every frame when the portrait is another person, go out untracked."""
    rng = np.random.default_rng(2)
    k = model.config.num_keypoints
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    hook = TrackingHook(model, portrait, steps=1, budget_ms=1e6)  # about what runs when, not how fast
    calibrator = KeypointCalibrator(model, portrait, FitProfile(frames=2, spacing=1, steps=2, learning_rate=0.002),
                                    ramp=0, background=False, same_person=lambda *a: distance, tracking=hook)
    for _ in range(2):  # kept for the fit: not tracked
        calibrator(_motion(rng, k), portrait, _landmarks())
    assert hook.frames == 0
    for _ in range(3):
        calibrator(_motion(rng, k), portrait, _landmarks())
    if distance < 0.6:
        assert calibrator.state == "applied" and hook.state == "on"
        assert hook.frames == 3 and calibrator.stats()["tracking"]["frames"] == 3
    else:  # another person: no offset, no tracking
        assert calibrator.state.startswith("skipped: the portrait is not") and hook.frames == 0
