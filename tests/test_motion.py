"""codec.motion: rotation convention, inverses, keypoint transform (numpy and torch agree)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from codec.motion import (
    MotionParams,
    angles_to_rotation,
    angles_to_rotation_torch,
    motion_keypoints,
    rotation_to_angles,
    transform_keypoints,
    transform_keypoints_torch,
)

angle = st.floats(-89.0, 89.0)


@given(angle, angle, st.floats(-179.0, 179.0))
@settings(max_examples=200, deadline=None)
def test_angles_round_trip(yaw: float, pitch: float, roll: float) -> None:
    r = angles_to_rotation(yaw, pitch, roll)
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-5)
    assert np.isclose(np.linalg.det(r), 1.0, atol=1e-5)
    back = rotation_to_angles(r)
    assert np.allclose(back, (yaw, pitch, roll), atol=1e-2)


def test_sign_convention_matches_docstring() -> None:
    nose = np.array([0.0, 0.0, -1.0])  # towards the viewer
    assert (angles_to_rotation(30, 0, 0) @ nose)[0] < 0  # positive yaw: nose to the image's left
    assert (angles_to_rotation(0, 30, 0) @ nose)[1] > 0  # positive pitch: nose down
    assert (angles_to_rotation(0, 0, 30) @ np.array([1.0, 0, 0]))[1] > 0  # roll: +x towards +y


def test_numpy_and_torch_agree() -> None:
    rng = np.random.default_rng(0)
    angles = rng.uniform(-60, 60, size=(4, 3))
    canonical = rng.normal(size=(4, 20, 3)).astype(np.float32)
    t = rng.normal(size=(4, 3)).astype(np.float32)
    delta = rng.normal(size=(4, 20, 3)).astype(np.float32) * 0.1
    rot_t = angles_to_rotation_torch(*(torch.tensor(angles[:, i]) for i in range(3)))
    out_t = transform_keypoints_torch(torch.tensor(canonical), rot_t.float(), torch.tensor(t), torch.tensor(delta))
    for b in range(4):
        r = angles_to_rotation(*angles[b])
        assert np.allclose(rot_t[b].numpy(), r, atol=1e-5)
        assert np.allclose(out_t[b].numpy(), transform_keypoints(canonical[b], r, t[b], delta[b]), atol=1e-5)


def test_motion_params_validates_and_masks_absent_rows() -> None:
    delta = np.ones((5, 3), np.float32)
    present = np.array([True, False, True, False, True])
    m = MotionParams(1.0, 2.0, 3.0, np.zeros(3), delta, present)
    assert m.num_keypoints == 5
    assert np.all(m.expression[~present] == 0) and np.all(m.expression[present] == 1)
    with pytest.raises(ValueError, match="translation must have 3 values"):
        MotionParams(0, 0, 0, np.zeros(2), delta, present)
    with pytest.raises(ValueError, match="finite"):
        MotionParams(float("nan"), 0, 0, np.zeros(3), delta, present)
    with pytest.raises(ValueError, match="present must be"):
        MotionParams(0, 0, 0, np.zeros(3), delta, present[:3])


def test_motion_keypoints_neutral_is_identity() -> None:
    canonical = np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32)
    assert np.allclose(motion_keypoints(canonical, MotionParams.neutral(20)), canonical)
