"""The sender's keypoint calibration fit (codec/model/keypoint_calibration.py): one δ offset that brings G's render
of the frames closer to them, the model untouched; applying it to a frame's present rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.model import FaceVid2VidModel, ModelConfig
from codec.model.keypoint_calibration import FIRST_ROW, MAX_OFFSET, apply_offset, calibrate_keypoints
from codec.motion import MotionParams


def _motion(k: int, rng: np.random.Generator) -> MotionParams:
    return MotionParams(float(rng.normal(0, 5)), float(rng.normal(0, 5)), float(rng.normal(0, 3)),
                        rng.normal(0, 0.02, 3).astype(np.float32), rng.normal(0, 0.02, (k, 3)).astype(np.float32),
                        np.ones(k, bool))


def _render(model: FaceVid2VidModel, portrait: np.ndarray, motion: MotionParams) -> np.ndarray:
    from codec.model.wrappers import FrameSynthesizer

    synth = FrameSynthesizer(model, device="cpu", precision="fp32")
    return synth.render(synth.prepare(portrait), motion)


def test_the_fit_finds_an_offset_the_frames_were_rendered_with() -> None:
    """Frames rendered by G with the δ of the fitted rows shifted by a hidden offset: the fit lowers the error on them and its offset
    points the hidden one's way; the model's weights and their grad flags are untouched."""
    torch.manual_seed(0)
    model = FaceVid2VidModel(ModelConfig.preset("tiny")).eval()
    k = model.config.num_keypoints
    rng = np.random.default_rng(0)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    hidden = rng.normal(0, 0.03, (k, 3)).astype(np.float32)
    hidden[:FIRST_ROW] = 0  # the mouth's and eyes' rows are not fitted
    motions = [_motion(k, rng) for _ in range(4)]
    frames = [_render(model, portrait, apply_offset(m, hidden)) for m in motions]
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    result = calibrate_keypoints(model, portrait, frames, motions, steps=30, learning_rate=0.004)
    assert result.improved and result.loss_after < 0.9 * result.loss_before
    assert result.offset.shape == (k, 3) and result.offset.dtype == np.float32 and result.frames == 4
    assert float(np.abs(result.offset).max()) <= MAX_OFFSET + 1e-6
    assert not result.offset[:FIRST_ROW].any()  # the openings' keypoints stay as sent
    cosine = float((result.offset * hidden).sum() / (np.linalg.norm(result.offset) * np.linalg.norm(hidden)))
    assert cosine > 0.3, cosine
    for name, p in model.named_parameters():
        assert torch.equal(p, weights[name]) and p.requires_grad == flags[name]


def test_a_face_mask_weights_the_face() -> None:
    torch.manual_seed(0)
    model = FaceVid2VidModel(ModelConfig.preset("tiny")).eval()
    rng = np.random.default_rng(1)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    motion = _motion(model.config.num_keypoints, rng)
    frame = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    plain = calibrate_keypoints(model, portrait, [frame], [motion], steps=1)
    masked = calibrate_keypoints(model, portrait, [frame], [motion], [mask], steps=1)
    assert masked.loss_before < plain.loss_before  # weight 0.2 outside the face instead of 1.2 everywhere


def test_bad_calibration_input_says_what_is_wrong() -> None:
    model = FaceVid2VidModel(ModelConfig.preset("tiny")).eval()
    rng = np.random.default_rng(2)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    motion = _motion(model.config.num_keypoints, rng)
    with pytest.raises(ValueError, match="one motion each"):
        calibrate_keypoints(model, portrait, [portrait, portrait], [motion])
    with pytest.raises(ValueError, match="square uint8 face crops of one size"):
        calibrate_keypoints(model, portrait, [np.zeros((32, 32, 3), np.uint8), portrait], [motion, motion])
    small = calibrate_keypoints(model, portrait, [np.zeros((32, 32, 3), np.uint8)], [motion], steps=1)  # resized
    assert small.frames == 1


def test_the_offset_goes_on_the_present_rows() -> None:
    rng = np.random.default_rng(3)
    motion = _motion(5, rng).with_present(np.array([True, True, False, True, False]))
    offset = np.full((5, 3), 0.01, np.float32)
    half = apply_offset(motion, offset, 0.5)
    np.testing.assert_allclose(half.expression[0], motion.expression[0] + 0.005, atol=1e-7)
    assert np.all(half.expression[[2, 4]] == 0) and half.yaw == motion.yaw
    with pytest.raises(ValueError, match="does not match"):
        apply_offset(motion, np.zeros((4, 3), np.float32))
