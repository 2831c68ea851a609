"""The sender's keypoint calibration fit (codec/model/keypoint_calibration.py): one δ offset that brings G's render
of the frames closer to them, the model untouched; applying it to a frame's present rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.model import FaceVid2VidModel, ModelConfig
from codec.model.keypoint_calibration import MAX_OFFSET, OPENING_PAIRS, apply_offset, calibrate_keypoints, tying_matrix
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
    """Frames rendered by G with δ shifted by a hidden offset (each opening pair's two rows by the same): the fit lowers
    the error on them, its offset points the hidden one's way and moves each opening pair together; the model's weights
    and their grad flags are untouched."""
    torch.manual_seed(0)
    model = FaceVid2VidModel(ModelConfig.preset("tiny")).eval()
    k = model.config.num_keypoints
    rng = np.random.default_rng(0)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    hidden = rng.normal(0, 0.03, (k, 3)).astype(np.float32)
    hidden = (tying_matrix(k) @ torch.from_numpy(hidden)).numpy()  # an offset the fit can express
    motions = [_motion(k, rng) for _ in range(4)]
    frames = [_render(model, portrait, apply_offset(m, hidden)) for m in motions]
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    result = calibrate_keypoints(model, portrait, frames, motions, steps=30, learning_rate=0.004)
    assert result.improved and result.loss_after < 0.9 * result.loss_before
    assert result.offset.shape == (k, 3) and result.offset.dtype == np.float32 and result.frames == 4
    assert float(np.abs(result.offset).max()) <= MAX_OFFSET + 1e-6
    for upper, lower in OPENING_PAIRS:  # lips and eyelids move in pairs: the openings stay as sent
        np.testing.assert_array_equal(result.offset[upper], result.offset[lower])
    assert np.abs(result.offset[12:]).max() > 0  # the other rows move on their own
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


def test_the_tying_matrix_shares_one_offset_per_opening_pair() -> None:
    tie = tying_matrix(20)
    free = torch.arange(60, dtype=torch.float32).view(20, 3)
    offset = tie @ free
    for upper, lower in OPENING_PAIRS:
        assert torch.equal(offset[upper], offset[lower]) and torch.equal(offset[upper], (free[upper] + free[lower]) / 2)
    assert torch.equal(offset[[0, 1, 10, 11, 12, 19]], free[[0, 1, 10, 11, 12, 19]])
    small = tying_matrix(5)  # K = 5: only the outer lips' pair is whole
    assert small[2, 3] == 0.5 and small[4, 4] == 1.0


def test_an_opening_pair_half_present_keeps_its_opening() -> None:
    """A frame with the inner upper lip (row 4) sent but not the lower one (row 5): moving row 4 alone would open or
    close the mouth, so it stays as sent; the whole pairs and the single rows move."""
    rng = np.random.default_rng(4)
    motion = _motion(6, rng).with_present(np.array([True, True, True, True, True, False]))
    offset = np.full((6, 3), 0.01, np.float32)
    moved = apply_offset(motion, offset)
    np.testing.assert_array_equal(moved.expression[4], motion.expression[4])
    np.testing.assert_allclose(moved.expression[[0, 1, 2, 3]], motion.expression[[0, 1, 2, 3]] + 0.01, atol=1e-7)
