"""Fitting a second picture correction for larger pictures (``codec.train.fit_correction``): the cache, a fit that
helps on held-out people, and a model file whose every other tensor and whose motion id are the source's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from codec.enhancement.lowres_codec import codecs_available
from codec.model import FaceVid2VidModel, ModelConfig, checkpoint
from codec.train.fit_correction import FitConfig, build_cache, fit
from tests._train_fakes import write_fake_prepared

pytestmark = pytest.mark.skipif(not codecs_available(), reason="this PyAV build has no libsvtav1/libdav1d")

PEOPLE = tuple((f"p{i}", "train", 1) for i in range(6)) + (("v", "val", 1),)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_only_the_correction_changes_and_the_motion_id_stays(tmp_path: Path) -> None:
    data = write_fake_prepared(tmp_path / "data", size=64, frames_per_clip=12, people=PEOPLE)
    torch.manual_seed(0)
    source = tmp_path / "source.safetensors"
    source_id = checkpoint.save(FaceVid2VidModel(ModelConfig.preset("tiny-enh")).eval(), source)
    config = FitConfig(source, data, tmp_path / "cache", tmp_path / "fitted.safetensors", people=6, frames=4, steps=40,
                       lr=3e-3, batch=4, combos=((16, 55), (64, 48)))
    build_cache(config)
    index = np.load(config.cache / "index.npy")
    assert index.shape == (6 * 4 * 2, 3) and set(index[:, 0]) == {16, 64} and set(index[:, 2]) == set(range(6))
    assert np.load(config.cache / "pictures64_age2.npy").shape == (6 * 4, 64, 64, 3)
    assert (config.cache / "pre.npy").exists() and not (config.cache / "pre.npy.part").exists()

    result = fit(config)
    assert np.mean(list(result["after"].values())) > np.mean(list(result["before"].values()))  # held-out people
    before, after = _tensors(source), _tensors(config.out)
    assert all(torch.equal(before[k], after[k]) for k in before)  # E² pictures, no picture, the motion: as before
    added = set(after) - set(before)
    assert added and all(k.startswith("generator.correction_large.") for k in added)
    fitted, _ = checkpoint.load(config.out)
    assert fitted.config.enhancement_large_correction and fitted.generator.correction_large is not None
    meta = checkpoint.read_metadata(config.out)
    assert meta["motion_model_id"] == source_id and meta["model_id"] == result["model_id"] != source_id
    assert "held_out_psnr_after" in meta["correction_fit"]


def test_a_model_without_the_branch_is_refused(tmp_path: Path) -> None:
    data = write_fake_prepared(tmp_path / "data", size=64, frames_per_clip=6, people=PEOPLE)
    source = tmp_path / "plain.safetensors"
    checkpoint.save(FaceVid2VidModel(ModelConfig.preset("tiny")).eval(), source)
    with pytest.raises(ValueError, match="no enhancement branch"):
        build_cache(FitConfig(source, data, tmp_path / "cache", tmp_path / "out.safetensors", people=6, frames=2))


def test_the_second_correction_serves_only_pictures_larger_than_e() -> None:
    torch.manual_seed(0)
    one = FaceVid2VidModel(ModelConfig.preset("tiny-enh")).eval()
    two = FaceVid2VidModel(dataclasses.replace(one.config, enhancement_large_correction=True)).eval()
    assert two.load_state_dict(one.state_dict(), strict=False).missing_keys
    with torch.no_grad():
        for p in two.generator.correction_large.parameters():  # type: ignore[union-attr]
            p.add_(0.1 * torch.randn_like(p))
        ref, drv = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
        small, large = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 32, 32)
        assert torch.equal(two(ref, drv, small)["image"], one(ref, drv, small)["image"])  # E²: the first correction
        assert not torch.allclose(two(ref, drv, large)["image"], one(ref, drv, large)["image"])  # larger: the second
