"""Checkpoint gates: a model ships only if its motion beats the no-motion floor and keypoints stay spread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.face import eye_opening, mouth_opening
from codec.face.identity import FaceBox, IdentityEmbedder, box_from_landmarks
from codec.train.dataset import PreparedData, validation_pairs
from codec.train.losses import landmark_motion_loss
from codec.train.validate import Validator, frame_metrics, keypoint_spread, passes_gates, replaces_best
from tests._train_fakes import write_fake_prepared

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


class _MeanColourEmbedder(IdentityEmbedder):
    """A stand-in for dlib's net: the descriptor is the mean colour inside the face box, spread over 128 values;
    it records where it was asked to look."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[np.ndarray | None] = []

    def describe(self, image: np.ndarray, box: FaceBox | None = None, landmarks: np.ndarray | None = None) -> np.ndarray | None:
        self.calls.append(landmarks)
        left, top, right, bottom = (int(v) for v in box_from_landmarks(landmarks)) if landmarks is not None else (0, 0, 1, 1)
        mean = image[top:bottom, left:right].reshape(-1, 3).mean(0) / 255  # (3,)
        return np.resize(mean, 128) / np.sqrt(128 / 3)


def test_identity_is_nan_without_an_embedder_and_reads_the_output_at_its_own_face() -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 200
    target_lm = np.zeros((478, 3))
    target_lm[:, :2] = np.random.default_rng(0).uniform(16, 48, (478, 2))
    assert np.isnan(frame_metrics(image, image, target_lm, None)["identity"])
    embedder = _MeanColourEmbedder()
    assert frame_metrics(image, image, target_lm, target_lm, embedder)["identity"] == 0.0
    darker = image // 2
    lost = frame_metrics(darker, image, target_lm, None, embedder)["identity"]  # no face on the output: read at the target's
    assert lost > 0 and embedder.calls[-1] is target_lm
    elsewhere = target_lm.copy()
    elsewhere[:, :2] -= 14  # the output's face sits up-left: read there (half background)
    cached = embedder.describe(image, landmarks=target_lm)
    embedder.calls.clear()
    moved = frame_metrics(image, image, target_lm, elsewhere, embedder, target_descriptor=cached)["identity"]
    assert moved > 0 and len(embedder.calls) == 1 and embedder.calls[0] is elsewhere  # target not described again


def test_validator_measures_identity_on_floors_and_recomputes_floors_cached_without_it(tmp_path: Path) -> None:
    data = PreparedData(write_fake_prepared(tmp_path / "data", size=32), "val")
    pairs = validation_pairs(data, 3, seed=0)
    cache = tmp_path / "floors.json"
    plain = Validator(data, pairs, lambda image: None, cache_path=cache)
    assert np.isnan(plain.floors["no_motion"]["overall"]["identity"])
    embedder = _MeanColourEmbedder()
    measured = Validator(data, pairs, lambda image: None, cache_path=cache, embedder=embedder)
    for name in ("no_motion", "affine"):
        assert np.isfinite(measured.floors[name]["overall"]["identity"])
    assert len(embedder.calls) == 3 * len(pairs)  # each driving frame once, then one output per pair and floor
    reloaded = Validator(data, pairs, lambda image: None, cache_path=cache, embedder=embedder).floors  # from the cache
    assert json.dumps(reloaded) == json.dumps(measured.floors) and len(embedder.calls) == 3 * len(pairs)
    assert "identity" in json.loads(cache.read_text())["floors"]["affine"]["overall"]
