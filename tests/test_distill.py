"""codec.train.distill: a narrower receiver learns the teacher's render, reads the teacher's motion, resumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.model import checkpoint
from codec.model.config import ModelConfig
from codec.model.face_model import FaceVid2VidModel
from codec.model.loading import ModelInfo, load_model_for_inference
from codec.train.dataset import PairBatch
from codec.train.distill import (
    SHARED_MODULES,
    DistillConfig,
    Distiller,
    learning_rate,
    student_from_teacher,
    student_metadata,
)

TINY = ModelConfig.preset("tiny")
STUDENT = dataclasses.replace(TINY, name="tiny-student", feature_channels=8, skip_channels=4, motion_width=8,
                              upsample_channels=8)


def teacher() -> FaceVid2VidModel:
    torch.manual_seed(0)
    return FaceVid2VidModel(TINY).eval()


def batch(n: int = 2, seed: int = 0) -> PairBatch:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(2 * n, 3, 64, 64, generator=g)
    landmarks = torch.rand(2 * n, 478, 2, generator=g) * 2 - 1
    return PairBatch(images[:n], images[n:], landmarks[:n], landmarks[n:], torch.zeros(n, 3), torch.zeros(n, 3))


def test_the_student_keeps_the_teachers_keypoint_networks_frozen_and_starts_the_rest_fresh() -> None:
    t = teacher()
    s = student_from_teacher(t, STUDENT)
    for name in SHARED_MODULES:
        for (key, a), b in zip(getattr(s, name).state_dict().items(), getattr(t, name).state_dict().values()):
            assert torch.equal(a, b), key
        assert not any(p.requires_grad for p in getattr(s, name).parameters())
    assert all(p.requires_grad for p in s.generator.parameters())
    assert s.generator.up1[0].out_channels == 4 * 8  # upsample_channels took effect
    img = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(s.keypoints(img), t.keypoints(img))  # the same motion from the same frame


def test_a_student_that_would_read_other_motion_is_refused() -> None:
    with pytest.raises(ValueError, match="pose_input_size"):
        student_from_teacher(teacher(), dataclasses.replace(STUDENT, pose_input_size=32))
    with pytest.raises(ValueError, match="num_keypoints"):
        student_from_teacher(teacher(), dataclasses.replace(STUDENT, num_keypoints=10))


def test_distillation_moves_the_student_towards_the_teachers_render() -> None:
    t = teacher()
    torch.manual_seed(1)
    s = student_from_teacher(t, STUDENT)
    distiller = Distiller(t, s, DistillConfig(batch_size=2, lr=3e-3, warmup_steps=1, max_steps=60))
    fixed = batch()
    first = distiller.step(fixed)
    for _ in range(59):
        last = distiller.step(fixed)
    assert last["l1"] < 0.7 * first["l1"] and last["flow"] < first["flow"]
    student_image, teacher_image = distiller.render_pair(fixed)
    assert student_image.shape == teacher_image.shape == (2, 3, 64, 64)
    for name in SHARED_MODULES:  # frozen through the updates
        assert all(torch.equal(a, b) for a, b in zip(getattr(s, name).state_dict().values(),
                                                     getattr(t, name).state_dict().values()))


def test_the_learning_rate_warms_up_then_decays_to_its_floor() -> None:
    config = DistillConfig(lr=1e-3, lr_final=1e-5, warmup_steps=10, max_steps=100)
    rates = [learning_rate(config, step) for step in range(120)]
    assert rates[0] < rates[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[100] == pytest.approx(1e-5) and rates[119] == pytest.approx(1e-5)


def test_a_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    t = teacher()
    torch.manual_seed(2)
    config = DistillConfig(batch_size=2, warmup_steps=1, max_steps=10)
    distiller = Distiller(t, student_from_teacher(t, STUDENT), config)
    rng = np.random.default_rng(5)
    for i in range(3):
        distiller.step(batch(seed=i))
    distiller.save(tmp_path / "state.safetensors", rng)
    after = distiller.step(batch(seed=9))
    resumed = Distiller(t, student_from_teacher(t, STUDENT), config)
    rng2 = np.random.default_rng(0)
    resumed.load(tmp_path / "state.safetensors", rng2)
    assert resumed.step_count == 3 and rng2.bit_generator.state == np.random.default_rng(5).bit_generator.state
    again = resumed.step(batch(seed=9))
    assert again["loss"] == pytest.approx(after["loss"], rel=1e-4)  # the same weights and Adam moments
    other = Distiller(t, student_from_teacher(t, dataclasses.replace(STUDENT, motion_width=16)), config)
    with pytest.raises(ValueError, match="another architecture"):
        other.load(tmp_path / "state.safetensors", rng2)


def test_a_saved_student_announces_its_teachers_motion(tmp_path: Path) -> None:
    t = teacher()
    teacher_id = checkpoint.save(t, tmp_path / "teacher.safetensors")
    s = student_from_teacher(t, STUDENT)
    student_id = checkpoint.save(s, tmp_path / "student.safetensors", metadata=student_metadata(teacher_id, teacher_id, 7), half=True)
    _, info = load_model_for_inference(tmp_path / "student.safetensors", device="cpu")
    assert info.model_id == student_id != teacher_id and info.motion_model_id == teacher_id
    _, own = load_model_for_inference(tmp_path / "teacher.safetensors", device="cpu")
    assert own.motion_model_id == own.model_id == teacher_id  # a model trained whole reads its own motion
    assert ModelInfo("a", "1", "cpu", 256, 20, "x", True).motion_model_id == "a"
    assert json.loads(checkpoint.read_metadata(tmp_path / "student.safetensors")["config"])["upsample_channels"] == 8


def test_the_targets_use_the_keypoints_a_sender_transmits() -> None:
    from codec.model.landmark_refinement import refine_keypoints
    from codec.train.distill import teacher_targets

    torch.manual_seed(0)
    refined_teacher = FaceVid2VidModel(dataclasses.replace(TINY, landmark_refinement=0.5)).eval()
    pairs = batch()
    _, kp, _, _ = teacher_targets(refined_teacher, pairs)
    with torch.no_grad():
        ref = refined_teacher.encode_reference(pairs.ref)
        raw, _ = refined_teacher.driving_keypoints(ref.kp_canonical, refined_teacher.estimate_motion(pairs.drv))
        anchor = ref.kp
    want = refine_keypoints(raw, anchor, pairs.ref_landmarks, pairs.drv_landmarks, 0.5)
    assert torch.allclose(kp, want, atol=1e-5) and not torch.allclose(kp, raw, atol=1e-3)
    assert student_from_teacher(refined_teacher, STUDENT).config.landmark_refinement == 0.5


@pytest.mark.pretrained
@pytest.mark.parametrize("preset", ["web", "web-small"])
def test_the_shipped_browser_models_read_the_shipped_models_motion(preset: str) -> None:
    from codec.model.loading import default_weights_path

    student_path, teacher_path = default_weights_path(preset), default_weights_path()
    if not (student_path.is_file() and teacher_path.is_file()):
        pytest.skip(f"{student_path} or {teacher_path} is not shipped")
    student, info = load_model_for_inference(student_path, device="cpu")
    teacher, teacher_info = load_model_for_inference(teacher_path, device="cpu")
    assert info.preset == preset and info.motion_model_id == teacher_info.motion_model_id  # a sender with cpu announces it
    for name in SHARED_MODULES:
        for (key, a), b in zip(getattr(student, name).state_dict().items(), getattr(teacher, name).state_dict().values()):
            assert torch.equal(a, b), key
    assert student_path.stat().st_size < 20_000_000
