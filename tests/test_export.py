"""codec.export: the receiver's networks as ONNX, run by onnxruntime, against PyTorch on the same inputs.

Tiny random-init model: the files, the manifest and the exportable forms (pinned shapes, the antialias
matrices and rotation rewrite equal to the model's own ops). Shipped weights (pretrained): onnxruntime's
frames against the receiver's FrameSynthesizer render at ≥ 40 dB PSNR (measured 83.9 dB over 8 frames of
the synthetic trace, max abs error 1.2e-4 of full scale; the reference network's outputs within 3.4e-6).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from codec.export.__main__ import check_motions, main
from codec.export.networks import (
    REFERENCE_OUTPUTS,
    RENDER_INPUTS,
    ReferenceNetwork,
    antialias_matrix,
    rotation_from_degrees,
)
from codec.export.onnx_export import ExportedFiles, export_onnx
from codec.export.verify import verify_export
from codec.model import FaceVid2VidModel, ModelConfig
from codec.model.loading import ModelInfo, default_weights_path, load_model_for_inference
from codec.motion import angles_to_rotation_torch

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency: pip install -e '.[test]'")
pytest.importorskip("onnx", reason="onnx is a test dependency: pip install -e '.[test]'")
FIXTURE_REFERENCE = Path(__file__).resolve().parent / "fixtures" / "pretrained" / "reference.jpg"
MIN_PSNR_DB = 40.0
MAX_ABS_ERROR = 1e-3  # of full scale, float outputs in [0, 1]


@pytest.fixture(scope="module")
def tiny() -> tuple[FaceVid2VidModel, ModelInfo]:
    torch.manual_seed(0)
    model = FaceVid2VidModel(ModelConfig.preset("tiny")).eval()
    return model, ModelInfo("tiny-test", "1", "tiny", 64, model.config.num_keypoints, "random", False)


def test_rotation_matches_the_models() -> None:
    angles = torch.tensor([[0.0, 0.0, 0.0], [30.0, -12.5, 170.0], [-89.0, 45.0, -3.25]])
    want = angles_to_rotation_torch(angles[:, 0], angles[:, 1], angles[:, 2])
    assert torch.allclose(rotation_from_degrees(angles), want, atol=1e-6)


@pytest.mark.parametrize("size_in,size_out", [(256, 128), (256, 32), (64, 16), (64, 64)])
def test_antialias_matrix_is_the_torch_resize(size_in: int, size_out: int) -> None:
    image = torch.rand(2, 3, size_in, size_in, generator=torch.Generator().manual_seed(1))
    a = antialias_matrix(size_in, size_out)
    assert a.shape == (size_out, size_in)
    want = F.interpolate(image, size=(size_out, size_out), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(a @ image @ a.t(), want, atol=1e-5)


def test_tiny_export_runs_in_onnxruntime(tiny: tuple[FaceVid2VidModel, ModelInfo], tmp_path: Path) -> None:
    model, info = tiny
    files = export_onnx(model, info, tmp_path)
    manifest = json.loads(files.manifest.read_text())
    assert manifest["format"] == "kpcall-onnx" and manifest["opset"] == 17 and manifest["model_id"] == "tiny-test"
    k = model.config.num_keypoints
    render_inputs = {i["name"]: i["shape"] for i in manifest["render"]["inputs"]}
    assert list(render_inputs) == list(RENDER_INPUTS)
    assert render_inputs["features"] == [1, 16, 16, 16] and render_inputs["skip"] == [1, 8, 32, 32]
    assert render_inputs["expression"] == [1, k, 3] and render_inputs["angles"] == [1, 3]
    assert [o["name"] for o in manifest["reference"]["outputs"]] == list(REFERENCE_OUTPUTS)
    assert manifest["render"]["outputs"] == [{"name": "rendered", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    # the reference network is encode_reference; the render through onnxruntime is the model's render
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        outputs = ReferenceNetwork(model)(image)
        ref = model.encode_reference(image)
    for got, want in zip(outputs[:6], (ref.features, ref.skip, ref.image_small, ref.kp_canonical, ref.kp, ref.rotation)):
        assert torch.allclose(got, want, atol=1e-5)
    reference_rgb = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    check = verify_export(files, model, reference_rgb, check_motions(k, 3))
    assert check.min_psnr_db >= MIN_PSNR_DB and check.max_abs_error <= MAX_ABS_ERROR
    assert check.reference_max_abs_error <= 1e-4


def test_a_model_with_the_eyelid_branch_exports_and_matches_pytorch(tmp_path: Path) -> None:
    """The eyelid maps (codec/model/eyelid_branch.py) are part of the exported render; the branch given weights, so
    that it changes the picture."""
    torch.manual_seed(0)
    model = FaceVid2VidModel(ModelConfig.preset("tiny-eyes")).eval()
    with torch.no_grad():
        for conv in (model.generator.eyelids.to_features, model.generator.eyelids.to_upsampled):
            conv.weight.normal_(0.0, 0.5)
    files = export_onnx(model, ModelInfo("tiny-eyes-test", "1", "tiny-eyes", 64, 20, "random", False), tmp_path)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    reference_rgb = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    check = verify_export(files, model, reference_rgb, check_motions(model.config.num_keypoints, 3))
    assert check.min_psnr_db >= MIN_PSNR_DB and check.max_abs_error <= MAX_ABS_ERROR


@pytest.mark.pretrained
def test_shipped_weights_export_matches_pytorch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    weights = default_weights_path()
    if not weights.is_file():
        pytest.skip(f"no shipped weights at {weights}")
    caplog.set_level("INFO")
    assert main(["--weights", str(weights), "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    model, info = load_model_for_inference(weights, device="cpu")
    assert manifest["model_id"] == info.model_id and manifest["model_version"] == info.model_version
    assert manifest["render"]["bytes"] < 5_000_000  # fp16-stored weights (8 MB in fp32)
    files = ExportedFiles(tmp_path / "reference.onnx", tmp_path / "render.onnx", tmp_path / "manifest.json")
    reference = np.asarray(Image.open(FIXTURE_REFERENCE).convert("RGB").resize((256, 256)))
    check = verify_export(files, model, reference, check_motions(model.config.num_keypoints, 4))
    assert check.min_psnr_db >= MIN_PSNR_DB, check
    assert check.max_abs_error <= MAX_ABS_ERROR, check


def test_variants_export_to_folders_listed_best_first_and_must_read_one_motion(tmp_path: Path) -> None:
    import dataclasses

    from codec.model import checkpoint
    from codec.train.distill import student_from_teacher, student_metadata

    torch.manual_seed(0)
    teacher = FaceVid2VidModel(ModelConfig.preset("tiny")).eval()
    teacher_id = checkpoint.save(teacher, tmp_path / "teacher.safetensors")
    student = student_from_teacher(teacher, dataclasses.replace(ModelConfig.preset("tiny"), name="tiny-narrow",
                                                                feature_channels=8, motion_width=8, upsample_channels=8))
    checkpoint.save(student, tmp_path / "student.safetensors", metadata=student_metadata(teacher_id, teacher_id, 1))
    out = tmp_path / "models"
    assert main(["--weights", str(tmp_path / "teacher.safetensors"), "--weights", str(tmp_path / "student.safetensors"),
                 "--out", str(out)]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["format"] == "kpcall-onnx-variants" and index["motion_model_id"] == teacher_id
    assert [v["folder"] for v in index["variants"]] == ["tiny/", "tiny-narrow/"]
    for variant in index["variants"]:
        manifest = json.loads((out / variant["folder"] / "manifest.json").read_text())
        assert manifest["motion_model_id"] == teacher_id and manifest["model_id"] == variant["model_id"]
        assert variant["render_bytes"] == (out / variant["folder"] / "render.onnx").stat().st_size
    narrow = json.loads((out / "tiny-narrow" / "manifest.json").read_text())
    assert narrow["render"]["inputs"][0]["shape"] == [1, 8, 16, 16]  # the student's own narrower features
    torch.manual_seed(1)
    stranger = FaceVid2VidModel(dataclasses.replace(ModelConfig.preset("tiny"), name="tiny-other")).eval()
    checkpoint.save(stranger, tmp_path / "stranger.safetensors")
    with pytest.raises(ValueError, match="must read the same"):
        main(["--weights", str(tmp_path / "teacher.safetensors"), "--weights", str(tmp_path / "stranger.safetensors"),
              "--out", str(tmp_path / "bad")])


def test_a_model_with_the_eyelid_warp_exports_with_the_eyelid_rows_flag_and_matches_pytorch(tmp_path: Path) -> None:
    """The warp is part of the exported render; frames without the eyelid rows (every third of check_motions) render
    without it through a further input, as the receiver renders them."""
    import dataclasses

    from codec.export.networks import EYELID_INPUT
    from codec.model.eyelid_warp import WARP_KEYPOINTS

    torch.manual_seed(0)
    model = FaceVid2VidModel(dataclasses.replace(ModelConfig.preset("tiny-eyes"), eyelid_branch=False,
                                                 eyelid_warp=1.5)).eval()
    files = export_onnx(model, ModelInfo("tiny-warp-test", "1", "tiny-eyes", 64, 20, "random", False), tmp_path)
    manifest = json.loads(files.manifest.read_text())
    assert [i["name"] for i in manifest["render"]["inputs"]] == [*RENDER_INPUTS, EYELID_INPUT]
    assert manifest["render"]["eyelid_rows"] == list(WARP_KEYPOINTS)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    reference_rgb = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    motions = check_motions(model.config.num_keypoints, 6)
    check = verify_export(files, model, reference_rgb, motions)
    assert check.min_psnr_db >= MIN_PSNR_DB and check.max_abs_error <= MAX_ABS_ERROR
