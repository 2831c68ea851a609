"""Inference wrappers: encoder/synthesizer contracts, view control, retargeting, the reference cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codec.model import FaceVid2VidModel, FrameSynthesizer, MotionEncoder, PRESETS, ViewControl, retarget_relative
from codec.metrics import psnr
from codec.motion import MotionParams


@pytest.fixture(scope="module", params=["tiny", "tiny-3d"])
def tiny_model(request: pytest.FixtureRequest) -> FaceVid2VidModel:
    """Both model forms: the 2D-projected pipeline and the paper's 3D volume."""
    torch.manual_seed(0)
    return FaceVid2VidModel(PRESETS[request.param]).eval()


def _image(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_encode_and_render_contract(tiny_model: FaceVid2VidModel, tmp_path: Path) -> None:
    enc = MotionEncoder(tiny_model)
    synth = FrameSynthesizer(tiny_model, cache_dir=tmp_path)
    motion = enc.encode(_image(1))
    assert motion.num_keypoints == 20 and enc.model_id == synth.model_id
    state = synth.prepare(_image(2))
    frame = synth.render(state, motion)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    # any input size is resized; bad inputs are refused clearly
    assert synth.render(synth.prepare(_image(2, 100)), motion).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="uint8 RGB"):
        enc.encode(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="K = 5"):
        synth.render(state, MotionParams.neutral(5))


def test_reference_cache_round_trip(tiny_model: FaceVid2VidModel, tmp_path: Path) -> None:
    synth = FrameSynthesizer(tiny_model, cache_dir=tmp_path)
    img, motion = _image(3), MotionParams.neutral(20)
    first = synth.render(synth.prepare(img), motion)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and synth.model_id in files[0].name
    again = FrameSynthesizer(tiny_model, cache_dir=tmp_path).prepare(img)  # from disk
    assert np.array_equal(FrameSynthesizer(tiny_model).render(again, motion), first)
    files[0].write_bytes(b"garbage")  # corrupt entries are ignored and rebuilt
    assert np.array_equal(FrameSynthesizer(tiny_model, cache_dir=tmp_path).render(synth.prepare(img), motion), first)


def test_keypoints_not_sent_keep_the_references_own_expression(tiny_model: FaceVid2VidModel) -> None:
    """A low K sends δ of some keypoints only: the others render with the reference's own δ (its expression),
    not δ = 0 (which pulls them to the canonical face)."""
    import dataclasses

    synth = FrameSynthesizer(tiny_model)
    state = synth.prepare(_image(6))
    own = np.random.default_rng(0).normal(0, 0.05, (20, 3)).astype(np.float32)  # a reference with an expression
    state = dataclasses.replace(state, motion=dataclasses.replace(state.motion, expression=own))
    sent = np.zeros((20, 3), np.float32)
    sent[:5] = 0.03
    present = np.zeros(20, bool)
    present[:5] = True
    partial = MotionParams(4, -2, 1, np.zeros(3), sent, present)
    filled = MotionParams(4, -2, 1, np.zeros(3), np.where(present[:, None], sent, own), np.ones(20, bool))
    zeros = MotionParams(4, -2, 1, np.zeros(3), sent, np.ones(20, bool))
    assert np.array_equal(synth.render(state, partial), synth.render(state, filled))
    assert not np.array_equal(synth.render(state, partial), synth.render(state, zeros))


def test_view_control_parse_and_apply() -> None:
    m = MotionParams(10, 5, -3, np.zeros(3), np.zeros((20, 3)), np.ones(20, bool))
    assert ViewControl.parse("frontal").apply(m).yaw == 0
    v = ViewControl.parse("yaw=20,pitch=-5")
    assert (v.apply(m).yaw, v.apply(m).pitch, v.apply(m).roll) == (20, -5, 0)
    o = ViewControl.parse("offset:yaw=5")
    assert o.apply(m).yaw == 15 and o.apply(m).pitch == 5
    for bad in ("sideways", "yaw=abc", "yaw=200", "tilt=3", ""):
        with pytest.raises(ValueError):
            ViewControl.parse(bad)


def test_view_changes_render(tiny_model: FaceVid2VidModel) -> None:
    synth = FrameSynthesizer(tiny_model)
    state = synth.prepare(_image(4))
    m = MotionParams.neutral(20)
    assert not np.array_equal(synth.render(state, m), synth.render(state, m, ViewControl.parse("yaw=40")))


def test_retarget_relative() -> None:
    k = 20
    src = MotionParams(5, 0, 0, np.zeros(3), np.full((k, 3), 0.1), np.ones(k, bool))
    avatar = MotionParams(-10, 2, 1, np.ones(3) * 0.1, np.zeros((k, 3)), np.ones(k, bool))
    present = np.arange(k) < 10
    drv = MotionParams(15, 3, 0, np.full(3, 0.05), np.full((k, 3), 0.3), present)
    out = retarget_relative(drv, src, avatar)
    assert out.yaw == pytest.approx(0) and out.pitch == pytest.approx(5) and out.roll == pytest.approx(1)
    assert np.allclose(out.translation, 0.15)
    assert np.allclose(out.expression[:10], 0.2) and np.allclose(out.expression[10:], 0.0)
    assert out.present.all()


def test_precision_choice_and_bf16_render_matches_fp32(tiny_model: FaceVid2VidModel) -> None:
    from codec.model.loading import cpu_supports_bf16, pick_precision

    cpu = torch.device("cpu")
    assert pick_precision("auto", torch.device("cuda")) == "fp16"
    assert pick_precision("auto", cpu) == ("bf16" if cpu_supports_bf16() else "fp32")
    assert pick_precision("fp32", cpu) == "fp32"
    with pytest.raises(ValueError, match="CUDA"):
        pick_precision("fp16", cpu)
    with pytest.raises(ValueError, match="one of"):
        pick_precision("int4", cpu)
    assert MotionEncoder(tiny_model).precision == "fp32"  # motion is never rounded to bf16 on a CPU
    if not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16 kernels")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    fp32, bf16 = FrameSynthesizer(tiny_model, precision="fp32"), FrameSynthesizer(tiny_model, precision="bf16")
    state = fp32.prepare(img)
    motion = MotionEncoder(tiny_model).encode(img)
    assert psnr(fp32.render(state, motion), bf16.render(state, motion)) > 35.0


def test_the_motion_encoder_stays_fp32_on_every_device_unless_told() -> None:
    """Rounding in the encoder would be transmitted as motion noise: 'auto' is fp32 on a CPU and on CUDA alike."""
    import torch

    from codec.model.wrappers import encoder_precision

    assert encoder_precision("auto", torch.device("cpu")) == "fp32"
    assert encoder_precision("auto", torch.device("cuda")) == "fp32"
    assert encoder_precision("fp16", torch.device("cuda")) == "fp16"
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        encoder_precision("fp16", torch.device("cpu"))
