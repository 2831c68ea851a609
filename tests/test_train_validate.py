"""Checkpoint gates: a model ships only if its motion beats the no-motion floor and keypoints stay spread."""

from __future__ import annotations

import torch

from codec.train.validate import keypoint_spread, passes_gates

FLOORS = {"no_motion": {"overall": {"akd": 8.0, "akd_mouth": 10.0}}, "teacher_keypoints": {"kp_collapsed": 3.0}}


def _record(akd: float = 5.0, mouth: float = 7.0, collapsed: float = 3.5, detect: float = 1.0) -> dict:
    return {"overall": {"akd": akd, "akd_mouth": mouth, "kp_collapsed": collapsed, "detect_rate": detect}}


def test_gates() -> None:
    assert passes_gates(_record(), FLOORS) == (True, "ok")
    ok, why = passes_gates(_record(mouth=10.5), FLOORS)
    assert not ok and "mouth AKD" in why
    ok, why = passes_gates(_record(collapsed=4.5), FLOORS)  # teacher 3.0 + 1 allowed
    assert not ok and "limit 4.0" in why
    ok, why = passes_gates(_record(detect=0.5, akd=9.0), FLOORS)
    assert not ok and "detect_rate" in why and "AKD 9.00" in why


def test_keypoint_spread_counts_collapsed_points() -> None:
    spread = torch.tensor([[[-0.5, -0.5], [0.5, 0.5], [0.0, 0.0], [0.5, -0.5]]])
    assert keypoint_spread(spread)["kp_collapsed"] == 0.0
    collapsed = torch.tensor([[[0.0, 0.0], [0.01, 0.0], [0.0, 0.01], [0.5, -0.5]]])
    assert keypoint_spread(collapsed)["kp_collapsed"] == 3.0
