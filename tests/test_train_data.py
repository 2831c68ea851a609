"""Training data, floors, loss terms and the resumable state, on synthetic data (no model needed)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from codec.train import losses
from codec.train.dataset import PairSampler, PreparedData, SamplerConfig, eye_openness, validation_pairs
from codec.train.flip import MIRROR_LANDMARK_INDEX
from codec.train.floors import STABLE_LANDMARKS, affine_floor, affine_transform, no_motion_floor
from codec.train.state import Counters, load_state, read_metadata, save_state
from tests._train_fakes import write_fake_prepared


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_prepared(tmp_path_factory.mktemp("prepared"))


def test_prepared_data_splits_by_person_and_skips_frames_without_face(fake_root: Path) -> None:
    train, val = PreparedData(fake_root, "train"), PreparedData(fake_root, "val")
    assert train.people == ["a", "b"] and val.people == ["c", "d"]
    assert train.size == 32
    first = train.clips[0]
    assert 1 not in first.usable and first.first_usable == 0
    assert isinstance(first.frames, np.memmap)


def test_prepared_data_errors_name_the_problem(tmp_path: Path, fake_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        PreparedData(tmp_path, "train")
    with pytest.raises(ValueError, match="'holdout'"):
        PreparedData(fake_root, "holdout")
    with pytest.raises(ValueError, match="no usable 'test' clips"):
        PreparedData(fake_root, "test")
    bad = write_fake_prepared(tmp_path / "bad")
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["size"] = 64
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"frames has shape \(12, 32, 32, 3\), expected \(12, 64, 64, 3\)"):
        PreparedData(bad, "train")


def test_a_manifest_from_before_the_test_group_is_refused(tmp_path: Path) -> None:
    """A test-group person marked 'train' (a manifest written before the split had it) is never trained on."""
    root = write_fake_prepared(tmp_path / "old", people=(("a", "train", 1), ("spectre-M003_x", "train", 1),
                                                         ("c", "val", 1)))
    with pytest.raises(ValueError, match="re-run python -m codec.data prepare"):
        PreparedData(root, "train")


def test_sampler_batch_shapes_ranges_and_same_clip(fake_root: Path) -> None:
    data = PreparedData(fake_root, "train")
    sampler = PairSampler(data, SamplerConfig(batch_size=6, first_frame_fraction=0.5))
    rng = np.random.default_rng(0)
    indices = sampler.draw_indices(rng)
    assert len(indices) == 6
    for clip, ref, drv in indices:
        assert ref in data.clips[clip].usable and drv in data.clips[clip].usable
    batch = sampler.sample(rng)
    assert batch.ref.shape == batch.drv.shape == (6, 3, 32, 32)
    assert batch.ref_landmarks.shape == (6, 478, 2) and batch.drv_pose.shape == (6, 3)
    assert 0.0 <= float(batch.ref.min()) and float(batch.ref.max()) <= 1.0
    assert batch.ref_landmarks.abs().max() < 1.5


def test_flip_augmentation_keeps_image_landmarks_and_pose_consistent(fake_root: Path) -> None:
    data = PreparedData(fake_root, "train")
    plain = PairSampler(data, SamplerConfig(batch_size=1, flip_probability=0.0, brightness=0, contrast=0, saturation=0))
    flipped = PairSampler(data, SamplerConfig(batch_size=1, flip_probability=1.0, brightness=0, contrast=0, saturation=0))
    triple = [(0, 0, 5)]
    a = plain.make_batch(triple)
    b = flipped.make_batch(triple, np.random.default_rng(0), augment=True)
    torch.testing.assert_close(b.drv, a.drv.flip(-1))
    mirror = list(MIRROR_LANDMARK_INDEX)
    torch.testing.assert_close(b.drv_landmarks[0, :, 0], -a.drv_landmarks[0, mirror, 0])
    torch.testing.assert_close(b.drv_landmarks[0, :, 1], a.drv_landmarks[0, mirror, 1])
    torch.testing.assert_close(b.drv_pose, a.drv_pose * torch.tensor([-1.0, 1.0, -1.0]))


def test_color_jitter_is_identical_for_both_frames(fake_root: Path) -> None:
    data = PreparedData(fake_root, "train")
    sampler = PairSampler(data, SamplerConfig(batch_size=4, flip_probability=0.0, brightness=0.3))
    rng = np.random.default_rng(3)
    same = [(0, 2, 2)] * 4
    batch = sampler.make_batch(same, rng, augment=True)
    torch.testing.assert_close(batch.ref, batch.drv)
    assert not torch.allclose(batch.ref[0], batch.ref[1])


def test_validation_pairs_are_fixed_and_use_first_frame(fake_root: Path) -> None:
    data = PreparedData(fake_root, "val")
    pairs = validation_pairs(data, 10, seed=1)
    assert pairs == validation_pairs(data, 10, seed=1)
    assert len(pairs) == 10
    for clip, ref, drv in pairs:
        assert ref == data.clips[clip].first_usable and drv != ref
    assert {data.clips[c].person for c, _, _ in pairs} == {"c", "d"}


def test_no_motion_floor_is_the_reference_exactly() -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = no_motion_floor(image)
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_affine_floor_recovers_a_known_similarity() -> None:
    rng = np.random.default_rng(0)
    size = 128
    image = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (0, 0), 3)
    landmarks = rng.uniform(30, 98, (478, 2))
    matrix = cv2.getRotationMatrix2D((64, 64), 8.0, 1.05)
    matrix[:, 2] += (3.0, -2.0)
    # continuous coordinates (0 at the left edge) -> pixel centres, transform, back
    moved = (landmarks - 0.5) @ matrix[:, :2].T + matrix[:, 2] + 0.5
    np.testing.assert_allclose(affine_transform(landmarks, moved), matrix, atol=1e-4)
    target = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = affine_floor(image, landmarks, moved)
    inner = slice(20, 108)
    assert np.abs(out[inner, inner].astype(int) - target[inner, inner]).max() <= 1
    assert len(set(STABLE_LANDMARKS)) == len(STABLE_LANDMARKS)


def test_pyramid_l1_and_ssim_loss() -> None:
    x = torch.rand(2, 3, 32, 32)
    assert float(losses.pyramid_l1(x, x)) == 0.0
    assert float(losses.ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert float(losses.ssim_loss(x, y)) > 0.1
    assert float(losses.pyramid_l1(x, y)) > 0.01


def test_region_l1_scores_only_the_boxes_around_the_regions() -> None:
    """The eye/mouth term: boxes around each region's landmarks (enlarged by the margin); a difference outside
    every box costs nothing, one inside costs its mean over the box."""
    landmarks = torch.zeros(1, 478, 2)
    landmarks[0, :, 0], landmarks[0, :, 1] = -0.9, -0.9  # every other landmark in a corner
    eye, mouth = torch.tensor([3, 4]), torch.tensor([5, 6])
    landmarks[0, 3], landmarks[0, 4] = torch.tensor([-0.5, -0.5]), torch.tensor([-0.25, -0.25])  # an "eye" box
    landmarks[0, 5], landmarks[0, 6] = torch.tensor([0.25, 0.25]), torch.tensor([0.5, 0.5])  # a "mouth" box
    mask = losses.region_boxes(landmarks, [eye, mouth], 32, margin=0.0)  # (1, 1, 32, 32)
    assert mask.shape == (1, 1, 32, 32)
    assert mask[0, 0, 10, 10] == 1 and mask[0, 0, 22, 22] == 1  # pixel centres (-0.34, -0.34), (0.41, 0.41)
    assert mask[0, 0, 16, 16] == 0 and mask[0, 0, 10, 22] == 0  # between the boxes, and across
    assert 2 * 4 * 4 <= int(mask.sum()) <= 2 * 7 * 7  # two boxes of 0.25 (4 px) plus a pixel each side
    assert int(losses.region_boxes(landmarks, [eye], 32, margin=0.5).sum()) > int(mask[:, :, :16, :16].sum())

    x = torch.rand(1, 3, 32, 32)
    outside = x.clone()
    outside[..., 14:18, 14:18] += 0.5  # between the boxes
    assert float(losses.region_l1(outside, x, mask)) == 0.0
    inside = x.clone()
    inside[..., 22, 22] += 0.5
    assert float(losses.region_l1(inside, x, mask)) == pytest.approx(0.5 / float(mask.sum()), rel=1e-4)
    assert float(losses.region_l1(inside, x, torch.zeros_like(mask))) == 0.0  # an empty mask


def test_keypoint_prior_penalises_collapse_only() -> None:
    spread = torch.tensor([[[-0.6, -0.6, 0.33], [0.6, -0.6, 0.33], [-0.6, 0.6, 0.33], [0.6, 0.6, 0.33]]])
    collapsed = torch.full((1, 4, 3), 0.33)
    assert float(losses.keypoint_prior_loss(spread)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.keypoint_prior_loss(collapsed)) == pytest.approx(0.1 * 3, abs=1e-6)  # 12 pairs × 0.1 / K


def test_equivariance_is_zero_for_keypoints_that_move_with_the_image() -> None:
    gen = torch.Generator().manual_seed(0)
    theta = losses.random_affine(3, gen)
    kp = torch.rand(3, 5, 3) * 1.2 - 0.6
    # a keypoint at x in X appears at A^-1 (x - b) in Y(p) = X(A p + b)
    inverse = torch.linalg.inv(theta[:, :, :2])
    kp_warped = kp.clone()
    kp_warped[..., :2] = (kp[..., :2] - theta[:, None, :, 2]) @ inverse.transpose(1, 2)
    assert float(losses.equivariance_loss(kp, kp_warped, theta)) == pytest.approx(0.0, abs=1e-5)
    assert float(losses.equivariance_loss(kp, kp, theta)) > 1e-3


def test_warp_images_moves_a_dot_where_apply_affine_says() -> None:
    image = torch.zeros(1, 1, 64, 64)
    image[0, 0, 40, 20] = 1.0
    theta = torch.tensor([[[0.9, -0.1, 0.05], [0.1, 0.9, -0.08]]])
    warped = losses.warp_images(image, theta)
    peak = torch.nonzero(warped[0, 0] == warped.max())[0]
    p = torch.tensor([[[(float(peak[1]) + 0.5) / 64 * 2 - 1, (float(peak[0]) + 0.5) / 64 * 2 - 1]]])
    src = losses.apply_affine(p, theta)[0, 0]
    assert abs(float(src[0]) - ((20 + 0.5) / 64 * 2 - 1)) < 2.5 / 32
    assert abs(float(src[1]) - ((40 + 0.5) / 64 * 2 - 1)) < 2.5 / 32


def test_gan_terms() -> None:
    real, fake = [torch.full((2, 1, 4, 4), 2.0)], [torch.full((2, 1, 4, 4), -2.0)]
    assert float(losses.hinge_d_loss(real, fake)) == 0.0
    assert float(losses.hinge_g_loss(fake)) == 2.0
    feats = [[torch.ones(1, 2, 4, 4)]]
    assert float(losses.feature_matching_loss(feats, [[torch.zeros(1, 2, 4, 4)]])) == 1.0


def test_training_state_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    gen, disc = torch.nn.Linear(3, 2), torch.nn.Conv2d(3, 1, 3)
    opt_g, opt_d = torch.optim.Adam(gen.parameters(), lr=1e-3), torch.optim.Adam(disc.parameters(), lr=2e-3)
    gen(torch.randn(4, 3)).sum().backward()
    opt_g.step()
    rng = np.random.default_rng(5)
    rng.random(3)
    path = tmp_path / "last.safetensors"
    save_state(path, generator=gen, discriminator=disc, opt_g=opt_g, opt_d=opt_d, counters=Counters(7, 1.5, 2.5),
               rng=rng, model_config={"k": 1}, train_config={"lr": 1e-3})
    expected_next = rng.random()
    expected_torch = torch.rand(1)
    gen2, disc2 = torch.nn.Linear(3, 2), torch.nn.Conv2d(3, 1, 3)
    opt_g2, opt_d2 = torch.optim.Adam(gen2.parameters(), lr=1.0), torch.optim.Adam(disc2.parameters(), lr=1.0)
    rng2 = np.random.default_rng(99)
    counters = load_state(path, generator=gen2, discriminator=disc2, opt_g=opt_g2, opt_d=opt_d2, rng=rng2)
    assert counters == Counters(7, 1.5, 2.5)
    assert rng2.random() == expected_next
    torch.testing.assert_close(torch.rand(1), expected_torch)
    torch.testing.assert_close(gen2.weight, gen.weight)
    assert opt_g2.param_groups[0]["lr"] == 1e-3
    torch.testing.assert_close(opt_g2.state[gen2.weight]["exp_avg"], opt_g.state[gen.weight]["exp_avg"])
    assert json.loads(read_metadata(path)["model_config"]) == {"k": 1}
    assert not (tmp_path / "last.safetensors.tmp").exists()


def test_eye_openness_is_the_eyelid_gap_over_the_eye_corners_distance() -> None:
    landmarks = np.zeros((2, 478, 3), np.float32)
    landmarks[:, 33, 0], landmarks[:, 263, 0] = 100, 200  # outer eye corners 100 px apart
    landmarks[0, [159, 386], 1], landmarks[0, [145, 374], 1] = 50, 60  # open: 10 px
    landmarks[1, [159, 386], 1], landmarks[1, [145, 374], 1] = 50, 51  # a blink: 1 px
    np.testing.assert_allclose(eye_openness(landmarks), [0.10, 0.01], rtol=1e-5)
    np.testing.assert_allclose(eye_openness(landmarks * 3), [0.10, 0.01], rtol=1e-5)  # scale-free


def test_eye_pairs_draw_the_driving_frames_whose_eyes_differ_from_the_reference(fake_root: Path) -> None:
    """With --eye-pair-fraction 1 every driving frame is drawn by its eyes' difference from the reference: in a clip
    where only one frame blinks and the reference is open-eyed, that frame is every pair's driving frame."""
    data = PreparedData(fake_root, "train")
    for clip in data.clips:
        clip.landmarks[:, 33, :2], clip.landmarks[:, 263, :2] = (8, 10), (24, 10)
        clip.landmarks[:, [159, 386, 145, 374], 0] = 12
        clip.landmarks[:, [159, 386], 1], clip.landmarks[:, [145, 374], 1] = 9, 11
        clip.landmarks[5, [145, 374], 1] = 9  # frame 5 of every clip blinks
    config = SamplerConfig(batch_size=40, first_frame_fraction=1.0)
    indices = PairSampler(data, dataclasses.replace(config, eye_pair_fraction=1.0)).draw_indices(np.random.default_rng(0))
    assert {drv for _, _, drv in indices} == {5}
    uniform = PairSampler(data, config).draw_indices(np.random.default_rng(0))
    assert len({drv for _, _, drv in uniform}) > 3
    # a clip whose every frame's eyes are as open as the reference's keeps the uniformly drawn frame
    for clip in data.clips:
        clip.landmarks[5, [145, 374], 1] = 11
    same = PairSampler(data, dataclasses.replace(config, eye_pair_fraction=1.0)).draw_indices(np.random.default_rng(0))
    assert len({drv for _, _, drv in same}) > 3
