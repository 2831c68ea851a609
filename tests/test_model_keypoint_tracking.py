"""codec/model/keypoint_tracking.py: each frame's correction starts from the last one and lowers G's error on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.model import FaceVid2VidModel, ModelConfig
from codec.model.keypoint_calibration import OPENING_PAIRS, apply_offset
from codec.model.keypoint_tracking import FROZEN_ROWS, KeypointTracker
from codec.model.wrappers import FrameSynthesizer
from codec.motion import MotionParams


@pytest.fixture(scope="module")
def model() -> FaceVid2VidModel:
    torch.manual_seed(0)
    return FaceVid2VidModel(ModelConfig.preset("tiny")).eval()


def test_tracking_follows_a_hidden_error_and_keeps_openings(model: FaceVid2VidModel) -> None:
    """Frames rendered with a hidden δ error: the tracked frames' render comes closer to them than the sent motion's,
    the model's weights are untouched, each opening pair moves as one and the mouth's rows not at all."""
    rng = np.random.default_rng(0)
    k = model.config.num_keypoints
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    hidden = rng.normal(0, 0.03, (k, 3)).astype(np.float32)
    synth = FrameSynthesizer(model, device="cpu", precision="fp32")
    state = synth.prepare(portrait)
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    tracker = KeypointTracker(model, portrait, steps=3, learning_rate=0.004)
    errors_sent, errors_tracked = [], []
    for _ in range(8):
        motion = MotionParams(float(rng.normal(0, 3)), 0.0, 0.0, np.zeros(3, np.float32),
                              rng.normal(0, 0.02, (k, 3)).astype(np.float32), np.ones(k, bool))
        frame = synth.render(state, apply_offset(motion, hidden))
        tracked = tracker(motion, frame)
        errors_sent.append(np.abs(synth.render(state, motion).astype(float) - frame).mean())
        errors_tracked.append(np.abs(synth.render(state, tracked).astype(float) - frame).mean())
    assert np.mean(errors_tracked[4:]) < np.mean(errors_sent[4:])  # once it has followed for a few frames
    for upper, lower in OPENING_PAIRS:
        if lower < k:
            np.testing.assert_allclose(tracker.correction[upper], tracker.correction[lower], atol=1e-6)
    assert not tracker.correction[list(FROZEN_ROWS)].any()  # the mouth's rows as sent
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())


def test_tracking_refuses_what_it_cannot_use(model: FaceVid2VidModel) -> None:
    portrait = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="steps ≥ 1"):
        KeypointTracker(model, portrait, steps=0)
    tracker = KeypointTracker(model, portrait)
    k = model.config.num_keypoints
    wrong = MotionParams(0.0, 0.0, 0.0, np.zeros(3, np.float32), np.zeros((k + 1, 3), np.float32), np.ones(k + 1, bool))
    with pytest.raises(ValueError, match="does not match the model's keypoints"):
        tracker(wrong, portrait)
