"""Sender-side landmark refinement: the batched form (training) and the per-frame form (sender) agree, the anchor,
the fraction, the no-op cases and bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from codec.model import PRESETS, FaceVid2VidModel, MotionEncoder
from codec.model.config import KEYPOINT_LANDMARK_INDICES
from codec.model.landmark_refinement import LandmarkRefiner, refine_keypoints
from codec.motion import MotionParams, angles_to_rotation_torch, transform_keypoints_torch

K, S = 20, 256


def _motion(rng: np.random.Generator, scale: float = 1.0) -> MotionParams:
    return MotionParams(*(rng.normal(0, 10 * scale, 3)), rng.normal(0, 0.05 * scale, 3), rng.normal(0, 0.03 * scale, (K, 3)),
                        np.ones(K, bool))


def _landmarks(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(60, 200, (478, 3)).astype(np.float32)  # crop pixels


def _kp(motion: MotionParams, kp_canonical: np.ndarray) -> torch.Tensor:
    """x = R x_c + t + δ with the model's own torch code -> (1, K, 3)."""
    angles = torch.tensor([motion.yaw, motion.pitch, motion.roll], dtype=torch.float64)[:, None]
    rotation = angles_to_rotation_torch(angles[0], angles[1], angles[2])
    return transform_keypoints_torch(torch.from_numpy(kp_canonical)[None], rotation,
                                     torch.tensor(motion.translation, dtype=torch.float64)[None],
                                     torch.tensor(motion.expression, dtype=torch.float64)[None])


def test_the_sender_refines_as_training_renders() -> None:
    """The per-frame refiner's keypoints equal the batched training form's on the same frames: the generator is
    trained on exactly what the sender transmits."""
    rng = np.random.default_rng(0)
    kp_canonical = rng.uniform(-0.6, 0.6, (K, 3))
    refiner = LandmarkRefiner(kp_canonical, 0.5, S)
    anchor_motion, anchor_landmarks = _motion(rng), _landmarks(rng)
    assert refiner(anchor_motion, anchor_landmarks) is anchor_motion and refiner.anchored  # the anchor goes as it is
    motion, landmarks = _motion(rng), _landmarks(rng)
    refined = refiner(motion, landmarks)

    def norm(points: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(points[:, :2].astype(np.float64) / S * 2 - 1)[None]

    expected = refine_keypoints(_kp(motion, kp_canonical), _kp(anchor_motion, kp_canonical), norm(anchor_landmarks),
                                norm(landmarks), 0.5)
    assert torch.allclose(_kp(refined, kp_canonical), expected, atol=1e-5)
    assert not torch.allclose(_kp(motion, kp_canonical), expected, atol=1e-3)  # it did change something
    assert np.array_equal(refined.expression[:, 2], motion.expression[:, 2])  # depth is not touched
    assert (refined.yaw, refined.pitch, refined.roll) == (motion.yaw, motion.pitch, motion.roll)
    assert np.array_equal(refined.translation, motion.translation)


def test_keypoints_move_the_fraction_of_the_way_to_the_landmarks_motion() -> None:
    rng = np.random.default_rng(1)
    kp_canonical = rng.uniform(-0.6, 0.6, (K, 3))
    still = _motion(rng)
    landmarks = _landmarks(rng)
    for fraction in (0.25, 1.0):
        refiner = LandmarkRefiner(kp_canonical, fraction, S)
        refiner(still, landmarks)
        moved = landmarks.copy()
        moved[KEYPOINT_LANDMARK_INDICES[0], 1] += 12.8  # the right mouth corner drops 12.8 px = 0.1 normalised
        refined = refiner(still, moved)  # H saw no motion at all
        shift = refined.expression - still.expression
        assert shift[0, 1] == pytest.approx(fraction * 0.1, abs=1e-6)
        assert np.abs(np.delete(shift, 0, axis=0)).max() < 1e-6  # every other keypoint followed its landmark already
        assert refiner(still, landmarks).max_abs_difference(still)["expression"] < 1e-6  # back at the anchor


def test_nothing_changes_without_landmarks_or_training_for_it() -> None:
    rng = np.random.default_rng(2)
    kp_canonical = rng.uniform(-0.6, 0.6, (K, 3))
    motion = _motion(rng)
    off = LandmarkRefiner(kp_canonical, 0.0, S)
    assert not off.active
    other = _motion(rng)
    assert off(motion, _landmarks(rng)) is motion and off(other, _landmarks(rng)) is other
    on = LandmarkRefiner(kp_canonical, 0.5, S)
    assert on(motion, None) is motion and not on.anchored  # a frame without a face is not an anchor
    on(motion, _landmarks(rng))
    assert on(other, None) is other
    on.reset()
    assert not on.anchored


def test_bad_input_is_refused_with_a_reason() -> None:
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        LandmarkRefiner(np.zeros((K, 2)), 0.5, S)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LandmarkRefiner(np.zeros((K, 3)), 1.5, S)
    with pytest.raises(ValueError, match="at most"):
        LandmarkRefiner(np.zeros((len(KEYPOINT_LANDMARK_INDICES) + 1, 3)), 0.5, S)
    refiner = LandmarkRefiner(np.zeros((K, 3)), 0.5, S)
    with pytest.raises(ValueError, match="478"):
        refiner(_motion(rng), np.zeros((68, 2)))
    with pytest.raises(ValueError, match="K = 8"):
        refiner(MotionParams(0, 0, 0, np.zeros(3), np.zeros((8, 3)), np.ones(8, bool)), _landmarks(rng))


def test_the_batched_correction_is_a_constant_to_autograd() -> None:
    kp_drv = torch.zeros(2, 4, 3, requires_grad=True)
    landmarks = torch.rand(2, 478, 2)
    out = refine_keypoints(kp_drv, torch.rand(2, 4, 3), landmarks, landmarks + 0.1, 0.5)
    out.sum().backward()
    assert kp_drv.grad is not None and torch.equal(kp_drv.grad, torch.ones_like(kp_drv))  # H learns from its own loss only
    assert torch.allclose(out.detach()[..., 2], torch.zeros(2, 4))


def test_the_motion_encoder_refines_by_its_models_training() -> None:
    rng = np.random.default_rng(5)
    config = dataclasses.replace(PRESETS["tiny"], landmark_refinement=0.5)
    encoder = MotionEncoder(FaceVid2VidModel(config))
    portrait = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    refiner = encoder.landmark_refiner(portrait)
    assert refiner.active and refiner.fraction == 0.5 and refiner.image_size == 64
    assert refiner.kp_canonical.shape == (config.num_keypoints, 3)
    assert not MotionEncoder(FaceVid2VidModel(PRESETS["tiny"])).landmark_refiner(portrait).active
