"""The eyelid branch (codec/model/eyelid_branch.py): openings from keypoints, maps at the driving eyes, and a grown
model that renders exactly what it did until the branch trains."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from codec.model import FaceVid2VidModel, ModelConfig
from codec.model.eyelid_branch import (EYE_CORNER_KEYPOINTS, EYELID_KEYPOINTS, OPENING_SCALE, EyelidBranch, eye_openings,
                                       eyelid_maps)


EYE_X, EYE_Y = -9 / 32, -7 / 32  # the centre of pixel (row 12, column 11) of a 32² map


def _keypoints(opening: float, centre_x: float = EYE_X, k: int = 20) -> torch.Tensor:
    """(1, K, 3): both eyes' corners 0.4 apart, each eye's lids ``opening`` × 0.4 apart around y = EYE_Y."""
    kp = torch.zeros(1, k, 3)
    kp[0, EYE_CORNER_KEYPOINTS[0], :2] = torch.tensor([-0.2, -0.2])
    kp[0, EYE_CORNER_KEYPOINTS[1], :2] = torch.tensor([0.2, -0.2])
    for eye, (upper, lower) in enumerate(EYELID_KEYPOINTS):
        x = centre_x if eye == 0 else -centre_x
        kp[0, upper, :2] = torch.tensor([x, EYE_Y - 0.2 * opening])
        kp[0, lower, :2] = torch.tensor([x, EYE_Y + 0.2 * opening])
    return kp


def test_openings_are_the_lid_gap_over_the_eye_corners_distance_and_ignore_scale() -> None:
    torch.testing.assert_close(eye_openings(_keypoints(0.1)), torch.tensor([[0.1, 0.1]]))
    torch.testing.assert_close(eye_openings(_keypoints(0.1) * 1.5), torch.tensor([[0.1, 0.1]]))
    torch.testing.assert_close(eye_openings(_keypoints(0.02)), torch.tensor([[0.02, 0.02]]))


def test_maps_peak_at_the_driving_eyes_with_the_change_of_opening() -> None:
    size = 32
    maps = eyelid_maps(_keypoints(0.1), _keypoints(0.02), size)  # (1, 4, 32, 32): a blink
    assert maps.shape == (1, 4, size, size)
    change_right = maps[0, 0]
    row, col = divmod(int(change_right.abs().argmax()), size)
    x, y = (col + 0.5) / size * 2 - 1, (row + 0.5) / size * 2 - 1
    assert (x, y) == pytest.approx((EYE_X, EYE_Y))  # at the right eye's centre
    assert float(change_right.min()) == pytest.approx(OPENING_SCALE * (0.02 - 0.1), rel=1e-4)  # closing: negative
    assert float(maps[0, 1].max()) == pytest.approx(OPENING_SCALE * 0.02, rel=1e-4)  # its opening
    assert float(maps[0, 0, :, size // 2 + 4:].abs().max()) < 1e-3  # nothing at the other eye
    assert float(eyelid_maps(_keypoints(0.1), _keypoints(0.1), size)[:, ::2].abs().max()) == 0.0  # no change, no map


def test_a_model_grown_with_the_branch_renders_as_before_and_the_branch_learns() -> None:
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny")
    plain = FaceVid2VidModel(config).eval()
    grown = FaceVid2VidModel(dataclasses.replace(config, eyelid_branch=True)).eval()
    missing = grown.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(f"generator.eyelids.{name}" for name, _ in grown.generator.eyelids.named_parameters())
    ref, drv = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grown(ref, drv)["image"], plain(ref, drv)["image"])
    grown.train()
    grown(ref, drv)["image"].mean().backward()
    assert float(grown.generator.eyelids.to_features.weight.grad.abs().sum()) > 0
    assert float(grown.generator.eyelids.to_upsampled.weight.grad.abs().sum()) > 0


def test_the_branch_needs_the_keypoints_it_reads() -> None:
    branch = EyelidBranch(8, 8)
    with pytest.raises(ValueError, match="K = 5"):
        branch(_keypoints(0.1)[:, :5], _keypoints(0.1)[:, :5], 16, 32)
    generator = FaceVid2VidModel(ModelConfig.preset("tiny-eyes")).generator
    features, skip, image = torch.rand(1, 16, 16, 16), torch.rand(1, 8, 32, 32), torch.rand(1, 3, 64, 64)
    flow = torch.zeros(1, 16, 16, 2)
    with pytest.raises(ValueError, match="pass kp_ref and kp_drv"):
        generator(features, skip, image, flow, torch.ones(1, 1, 16, 16))
