"""codec.model: shapes per network and preset, keypoint transform equivariance, overfit, checkpoints."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import torch

from codec.model import FaceVid2VidModel, ModelConfig, MultiScaleDiscriminator, PRESETS, KEYPOINT_LANDMARK_INDICES
from codec.model import checkpoint
from codec.model.checkpoint import CheckpointError
from codec.motion import angles_to_rotation_torch, transform_keypoints_torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("preset", ["tiny", "cpu", "tiny-3d"])
def test_forward_shapes(preset: str) -> None:
    config = ModelConfig.preset(preset)
    model = FaceVid2VidModel(config)
    s, k, b = config.image_size, config.num_keypoints, 2
    ref, drv = torch.rand(b, 3, s, s), torch.rand(b, 3, s, s)
    out = model(ref, drv)
    assert out["image"].shape == (b, 3, s, s)
    assert 0 <= float(out["image"].min()) and float(out["image"].max()) <= 1
    assert out["warped_reference"].shape == (b, 3, s, s)
    m, depth = config.motion_size, config.volume_depth
    volume = (depth,) if depth else ()
    assert out["occlusion"].shape == (b, 1, m, m) and out["masks"].shape == (b, k + 1, *volume, m, m)
    assert torch.allclose(out["masks"].sum(1), torch.ones(b, *volume, m, m), atol=1e-5)
    assert out["flow"].shape == (b, s // 4, s // 4, 2)
    features = model.encode_reference(ref).features
    assert features.shape == ((b, config.volume_channels, depth, s // 4, s // 4) if depth else (b, config.feature_channels, s // 4, s // 4))
    for name in ("kp_canonical", "kp_ref", "kp_drv"):
        assert out[name].shape == (b, k, 3)
    motion = out["motion_drv"]
    assert motion["yaw_logits"].shape == (b, config.pose_bins) and motion["yaw"].shape == (b,)
    assert motion["translation"].shape == (b, 3) and motion["expression"].shape == (b, k, 3)
    disc = MultiScaleDiscriminator()
    results = disc(out["image"])
    assert len(results) == 2 and results[0][-1].shape[1] == 1


def test_paper_preset_builds_and_runs_small_batch() -> None:
    """paper-256 is the paper's 3D pipeline: a 32 × 16 × 64 × 64 volume, 3D masks, 2D occlusion."""
    config = PRESETS["paper-256"]
    model = FaceVid2VidModel(config)
    with torch.inference_mode():
        ref = model.encode_reference(torch.rand(1, 3, 256, 256))
        assert ref.features.shape == (1, 32, 16, 64, 64)
        motion = model.estimate_motion(torch.rand(1, 3, 256, 256))
        kp_drv, rotation = model.driving_keypoints(ref.kp_canonical, motion)
        out = model.synthesize(ref, kp_drv, rotation)
    assert out["image"].shape == (1, 3, 256, 256)
    assert out["masks"].shape == (1, 21, 16, 64, 64) and out["occlusion"].shape == (1, 1, 64, 64)
    assert sum(p.numel() for p in model.parameters()) > 5 * sum(p.numel() for p in FaceVid2VidModel(PRESETS["cpu"]).parameters())


def test_landmark_map_covers_default_k() -> None:
    assert len(KEYPOINT_LANDMARK_INDICES) == PRESETS["cpu"].num_keypoints
    assert len(set(KEYPOINT_LANDMARK_INDICES)) == len(KEYPOINT_LANDMARK_INDICES)
    assert all(0 <= i < 478 for i in KEYPOINT_LANDMARK_INDICES)


def test_a_grown_spatial_expression_head_starts_as_the_model_it_grew_from() -> None:
    """Weights without the spatial δ head load into a model with it and compute the same δ; the head still learns."""
    torch.manual_seed(0)
    old = FaceVid2VidModel(dataclasses.replace(PRESETS["tiny"], expression_spatial_channels=0)).eval()
    torch.nn.init.normal_(old.pose_expression.expression.weight, std=0.1)  # a trained-looking, non-zero δ head
    grown = FaceVid2VidModel(PRESETS["tiny"]).eval()
    missing, unexpected = grown.load_state_dict(old.state_dict(), strict=False)
    assert unexpected == [] and missing and all(".expression_spatial." in key for key in missing)
    images = torch.rand(2, 3, 64, 64)
    before = old.pose_expression(images)["expression"]  # (2, K, 3)
    after = grown.pose_expression(images)["expression"]
    assert float(before.abs().max()) > 0 and torch.equal(before, after)
    after.square().sum().backward()
    assert float(grown.pose_expression.expression_spatial[-1].weight.grad.abs().sum()) > 0


def test_spatial_expression_head_needs_a_pose_input_divisible_by_16() -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        FaceVid2VidModel(dataclasses.replace(PRESETS["tiny"], pose_input_size=72))


def test_keypoint_transform_equivariance() -> None:
    """Rotating the canonical keypoints' result by an extra rotation equals composing rotations."""
    kp_c = torch.randn(3, 20, 3)
    yaw, pitch, roll = (torch.randn(3) * 20 for _ in range(3))
    rot = angles_to_rotation_torch(yaw, pitch, roll)
    extra = angles_to_rotation_torch(torch.full((3,), 10.0), torch.zeros(3), torch.zeros(3))
    zeros = torch.zeros(3, 3)
    a = transform_keypoints_torch(kp_c, rot, zeros, torch.zeros_like(kp_c)) @ extra.transpose(1, 2)
    b = transform_keypoints_torch(kp_c, extra @ rot, zeros, torch.zeros_like(kp_c))
    assert torch.allclose(a, b, atol=1e-5)


def test_rigid_rotation_makes_every_keypoint_flow_the_same_3d_rotation() -> None:
    """Eq. 3 in 3D: if the driving keypoints are the reference's rotated by R_d R_s^-1 (no translation or
    expression), every per-keypoint flow w_k(p) = J (p - x_d,k) + x_s,k reduces to J p, J = R_s R_d^-1."""
    from codec.model.blocks import make_coordinate_volume
    from codec.model.motion_field_3d import sparse_motions_3d

    rot_s = angles_to_rotation_torch(torch.tensor([10.0]), torch.tensor([-5.0]), torch.tensor([3.0]))  # (1, 3, 3)
    rot_d = angles_to_rotation_torch(torch.tensor([-20.0]), torch.tensor([8.0]), torch.tensor([0.0]))
    jacobian = rot_s @ rot_d.transpose(1, 2)
    kp_ref = torch.rand(1, 5, 3) * 1.2 - 0.6
    kp_drv = kp_ref @ jacobian  # x_d = J^-1 x_s = J^T x_s (row vectors)
    grid = make_coordinate_volume(4, 6, 6, kp_ref)  # (4, 6, 6, 3)
    motions = sparse_motions_3d(grid, kp_ref, kp_drv, jacobian)  # (1, 6, 4, 6, 6, 3)
    rigid = grid @ jacobian[0].T  # J p
    assert torch.allclose(motions[0, 0], grid)  # background: identity
    for k in range(1, 6):
        assert torch.allclose(motions[0, k], rigid, atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "tiny-3d"])
def test_identity_motion_reproduces_warped_reference_geometry(preset: str) -> None:
    """With driving = reference keypoints every per-keypoint flow is the identity, so the warped
    reference equals the reference (inside the frame; the coarse flow is clamped at the border)."""
    model = FaceVid2VidModel(PRESETS[preset]).eval()
    img = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        ref = model.encode_reference(img)
        out = model.synthesize(ref, ref.kp, ref.rotation)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    assert torch.allclose(out["warped_reference"][inner], img[inner], atol=1e-4)


@pytest.mark.parametrize("preset", ["tiny", "tiny-3d"])
def test_tiny_overfit_one_pair(preset: str) -> None:
    """Loss on one image pair falls by at least 2x within a minute on CPU (measured: 0.158 -> 0.065)."""
    torch.manual_seed(0)
    model = FaceVid2VidModel(PRESETS[preset])
    y, x = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    ref = torch.stack([(x > 0).float(), (y > 0).float(), ((x * y) > 0).float()])[None] * 0.8 + 0.1
    drv = torch.roll(ref, shifts=(3, 5), dims=(2, 3))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start, first, last = time.monotonic(), None, None
    for _ in range(150):
        loss = (model(ref, drv)["image"] - drv).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss)
        last = float(loss)
        if time.monotonic() - start > 60:
            break
    assert last < first / 2, (first, last)


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    three_d = FaceVid2VidModel(PRESETS["tiny-3d"])
    checkpoint.save(three_d, tmp_path / "3d.safetensors")
    loaded_3d, _ = checkpoint.load(tmp_path / "3d.safetensors")
    assert loaded_3d.config.volume_depth == 4
    for (name, a), (_, b) in zip(three_d.state_dict().items(), loaded_3d.state_dict().items()):
        assert torch.equal(a, b), name
    model = FaceVid2VidModel(PRESETS["tiny"])
    path = tmp_path / "m.safetensors"
    model_id = checkpoint.save(model, path)
    loaded, loaded_id = checkpoint.load(path)
    assert loaded_id == model_id and model_id.startswith("tiny-")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    half_id = checkpoint.save(model, tmp_path / "h.safetensors", half=True)
    assert half_id.startswith("tiny-")
    with pytest.raises(CheckpointError, match="not the requested 'cpu'"):
        checkpoint.load(path, expected_preset="cpu")
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError):
        checkpoint.load(corrupt)
    # a checkpoint whose config disagrees with its tensors
    from safetensors.torch import save_file
    import json

    wrong = tmp_path / "wrong.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(wrong), metadata={"format": "kpcall-model", "format_version": "1",
                                           "config": json.dumps(PRESETS["cpu"].to_dict()), "model_id": "x"})
    with pytest.raises(CheckpointError, match="does not match|has shape"):
        checkpoint.load(wrong)
