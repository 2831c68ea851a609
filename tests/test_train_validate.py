"""Checkpoint gates: a model ships only if its motion beats the no-motion floor and keypoints stay spread."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.face import eye_opening, mouth_opening
from codec.train.losses import landmark_motion_loss
from codec.train.validate import frame_metrics, keypoint_spread, passes_gates, replaces_best

FLOORS = {"no_motion": {"overall": {"akd": 8.0, "akd_mouth": 10.0, "mouth_open_error": 4.0}},
          "teacher_keypoints": {"kp_collapsed": 3.0}}


def _record(akd: float = 5.0, mouth: float = 7.0, collapsed: float = 3.5, detect: float = 1.0, opening: float = 2.0) -> dict:
    return {"overall": {"akd": akd, "akd_mouth": mouth, "kp_collapsed": collapsed, "detect_rate": detect,
                        "mouth_open_error": opening}}


def test_gates() -> None:
    assert passes_gates(_record(), FLOORS) == (True, "ok")
    ok, why = passes_gates(_record(mouth=10.5), FLOORS)
    assert not ok and "mouth AKD" in why
    ok, why = passes_gates(_record(collapsed=4.5), FLOORS)  # teacher 3.0 + 1 allowed
    assert not ok and "limit 4.0" in why
    ok, why = passes_gates(_record(opening=4.5), FLOORS)  # mouth AKD fine, but the mouth does not open and close
    assert not ok and "does not follow" in why
    ok, why = passes_gates(_record(detect=0.5, akd=9.0), FLOORS)
    assert not ok and "detect_rate" in why and "AKD 9.00" in why


def test_keypoint_spread_counts_collapsed_points() -> None:
    spread = torch.tensor([[[-0.5, -0.5], [0.5, 0.5], [0.0, 0.0], [0.5, -0.5]]])
    assert keypoint_spread(spread)["kp_collapsed"] == 0.0
    collapsed = torch.tensor([[[0.0, 0.0], [0.01, 0.0], [0.0, 0.01], [0.5, -0.5]]])
    assert keypoint_spread(collapsed)["kp_collapsed"] == 3.0


def test_mouth_opening_and_its_error_metric() -> None:
    landmarks = np.zeros((478, 3))
    landmarks[13, :2], landmarks[14, :2] = (100, 150), (100, 162)  # inner lips 12 px apart
    assert mouth_opening(landmarks) == pytest.approx(12.0)
    closed = landmarks.copy()
    closed[14, :2] = (100, 151)
    image = np.zeros((256, 256, 3), np.uint8)
    hull = np.array([[60, 60], [200, 60], [200, 200], [60, 200]], float)
    landmarks[:4, :2] = closed[:4, :2] = hull
    assert frame_metrics(image, image, landmarks, closed)["mouth_open_error"] == pytest.approx(11.0)
    assert frame_metrics(image, image, landmarks, landmarks)["mouth_open_error"] == 0.0
    with pytest.raises(ValueError, match="478"):
        mouth_opening(np.zeros((10, 2)))
    landmarks[[159, 386], 1], landmarks[[145, 374], 1] = 100, 108  # both eyes 8 px open
    assert eye_opening(landmarks) == pytest.approx(8.0)


def test_landmark_motion_loss_ignores_static_offsets() -> None:
    """Keypoints that sit off their landmarks by a fixed offset but move exactly as they do cost nothing;
    keypoints that stay still while the landmarks move (a mouth that does not open) do."""
    gen = torch.Generator().manual_seed(0)
    ref_lm = torch.rand(2, 478, 2, generator=gen) * 2 - 1
    drv_lm = ref_lm.clone()
    drv_lm[:, 14, 1] += 0.1  # the lower lip drops
    indices = torch.tensor([13, 14, 61])
    offset = torch.tensor([0.05, -0.03, 0.0])
    kp_ref = torch.cat([ref_lm[:, indices], torch.zeros(2, 3, 1)], -1) + offset
    kp_drv = torch.cat([drv_lm[:, indices], torch.zeros(2, 3, 1)], -1) + offset
    assert float(landmark_motion_loss(kp_drv, kp_ref, drv_lm, ref_lm, indices)) == pytest.approx(0.0, abs=1e-6)
    still = float(landmark_motion_loss(kp_ref, kp_ref, drv_lm, ref_lm, indices))
    assert still == pytest.approx(0.1 / 6, rel=1e-4)  # one of 3 keypoints × 2 coordinates off by 0.1


def test_a_best_saved_under_older_gates_does_not_block() -> None:
    new = {**_record(), "score": 20.0}
    assert replaces_best(new, None, FLOORS)
    assert not replaces_best(new, {**_record(), "score": 21.0}, FLOORS)  # a gated, better best stays
    assert replaces_best({**_record(), "score": 22.0}, {**_record(), "score": 21.0}, FLOORS)
    old = {"overall": {k: v for k, v in _record()["overall"].items() if k != "mouth_open_error"}, "score": 21.0}
    assert replaces_best(new, old, FLOORS)  # the old best never measured the mouth opening
