"""The enhancement branch of G and its training: zero-initialised growth, per-sample presence, the data path
(coded pictures loaded, flipped and jittered with the driving frame) and a tiny training run that validates
with and without the picture."""

from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from codec.model import FaceVid2VidModel, ModelConfig, checkpoint
from codec.train.__main__ import main
from codec.train.dataset import PairSampler, PreparedData, SamplerConfig
from codec.train.state import read_metadata
from tests._train_fakes import write_fake_prepared

SIZE, E, QPS = 64, 16, (40, 55)


def _write_pictures(root: Path) -> None:
    """Stand-ins for ``python -m codec.data enhance`` output: the frames at E² (qp 55 a little coarser)."""
    for folder in (root / "clips").iterdir():
        frames = np.load(folder / "frames.npy")
        for qp in QPS:
            small = np.stack([cv2.resize(f, (E, E), interpolation=cv2.INTER_AREA) for f in frames])
            if qp == 55:
                small = (small // 8 * 8).astype(np.uint8)
            np.save(folder / f"enh{E}_qp{qp}.npy", small)
            sizes = [200] + [30 if qp == 55 else 60] * (len(frames) - 1)  # the key picture, then inter pictures
            (folder / f"enh{E}_qp{qp}.json").write_text(json.dumps({"size": E, "qp": qp, "frame_bytes": sizes}))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_fake_prepared(tmp_path_factory.mktemp("enh"), size=SIZE)
    _write_pictures(root)
    return root


def test_a_grown_branch_computes_what_the_motion_only_model_did() -> None:
    torch.manual_seed(0)
    plain = FaceVid2VidModel(ModelConfig.preset("tiny")).eval()
    grown = FaceVid2VidModel(ModelConfig.preset("tiny-enh")).eval()
    missing = grown.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith(("generator.enhancement.", "generator.correction.")) for k in missing)
    ref, drv, picture = torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 3, E, E)
    with torch.no_grad():
        before = plain(ref, drv)["image"]
        assert torch.equal(grown(ref, drv)["image"], before)
        assert torch.equal(grown(ref, drv, picture)["image"], before)  # zero-initialised heads
        for p in [*grown.generator.enhancement.parameters(), *grown.generator.correction.parameters()]:
            p.add_(0.05 * torch.randn_like(p))  # as after training
        with_picture = grown(ref, drv, picture, torch.tensor([1.0, 0.0]))["image"]
    assert not torch.allclose(with_picture[0], before[0], atol=1e-4)  # present: the picture counts
    assert torch.allclose(with_picture[1], before[1], atol=1e-6)  # absent: motion alone, as before
    with pytest.raises(ValueError, match="no enhancement branch"):
        plain(ref, drv, picture)


def test_pairs_carry_the_driving_frames_picture_flipped_and_jittered_with_it(data: Path) -> None:
    prepared = PreparedData(data, "train", enhancement_size=E, enhancement_qps=QPS)
    sampler = PairSampler(prepared, SamplerConfig(batch_size=6, enhancement_drop=0.5, flip_probability=1.0,
                                                  brightness=0.0, contrast=0.0, saturation=0.0))
    indices = sampler.draw_indices(np.random.default_rng(1))
    batch = sampler.make_batch(indices, np.random.default_rng(2), augment=True)
    assert batch.enhancement is not None and batch.enhancement.shape == (6, 3, E, E)
    assert batch.enhancement_present is not None and set(batch.enhancement_present.tolist()) <= {0.0, 1.0}
    small_drv = torch.nn.functional.interpolate(batch.drv, size=(E, E), mode="area")
    assert (batch.enhancement - small_drv).abs().mean() < 0.06  # the (flipped) driving frame, not the reference
    fixed = PairSampler(prepared, SamplerConfig(batch_size=6, enhancement_qp=40)).make_batch(indices)
    assert fixed.enhancement_present is not None and bool(fixed.enhancement_present.all())  # validation: all present
    assert fixed.without_enhancement().enhancement is None
    with pytest.raises(FileNotFoundError, match="python -m codec.data enhance"):
        PreparedData(data, "train", enhancement_size=E, enhancement_qps=(63,))


def test_stale_pairs_carry_the_picture_of_a_frame_one_or_two_before(data: Path) -> None:
    prepared = PreparedData(data, "train", enhancement_size=E, enhancement_qps=QPS)
    config = SamplerConfig(batch_size=6, enhancement_drop=0.0, flip_probability=0.0, brightness=0.0, contrast=0.0,
                           saturation=0.0, enhancement_qp=40, enhancement_stale=1.0)
    indices = [(c, 0, d) for c, d in ((0, 5), (0, 9), (1, 7), (1, 3), (0, 1), (1, 0))]
    batch = PairSampler(prepared, config).make_batch(indices, np.random.default_rng(3), augment=True)
    assert batch.enhancement is not None
    for row, (c, _, d) in enumerate(indices):
        pictures = prepared.clips[c].enhancement[40]
        got = (batch.enhancement[row].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        matches = [k for k in (1, 2) if d - k >= 0 and np.array_equal(got, pictures[d - k])]
        assert matches or (d == 0 and np.array_equal(got, pictures[0])), (row, d)  # frame 0 has none before it
    fresh = PairSampler(prepared, dataclasses.replace(config, enhancement_stale=0.0)).make_batch(indices, np.random.default_rng(3), augment=True)
    assert fresh.enhancement is not None
    assert np.array_equal((fresh.enhancement[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                          prepared.clips[0].enhancement[40][5])
    validation = PairSampler(prepared, config).make_batch(indices)  # no augmentation: always the driving frame's own
    assert validation.enhancement is not None and torch.equal(validation.enhancement, PairSampler(
        prepared, dataclasses.replace(config, enhancement_stale=0.0)).make_batch(indices).enhancement)


def test_tiny_enhancement_run_grows_from_a_model_file_and_validates_both_ways(data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = tmp_path / "tiny.safetensors"
    checkpoint.save(FaceVid2VidModel(ModelConfig.preset("tiny")), source, metadata={"step": "10"})
    run = tmp_path / "run"
    args = ["--run", str(run), "--from-model", str(source), "--preset", "tiny-enh", "--data", str(data),
            "--enhancement-qps", "40,55", "--enhancement-val-qp", "55", "--threads", "1", "--no-progress",
            "--validation-pairs", "4", "--validate-steps", "2", "--log-steps", "1", "--batch-size", "2",
            "--max-steps", "20", "--generator-frozen-until-step", "10", "--stop-after-steps", "2"]
    assert main(args) == 0
    assert read_metadata(run / "last.safetensors")["step"] == "12"
    val = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "val"]
    assert val and all(r["enhanced"]["qp"] == 55 and np.isfinite(r["enhanced"]["overall"]["psnr"]) for r in val)
    assert json.loads(read_metadata(run / "last.safetensors")["model_config"])["enhancement_size"] == E


def test_the_receivers_synthesizer_renders_with_the_picture_or_from_motion_alone() -> None:
    from codec.model.wrappers import FrameSynthesizer, MotionEncoder

    torch.manual_seed(0)
    model = FaceVid2VidModel(ModelConfig.preset("tiny-enh")).eval()
    with torch.no_grad():
        for p in model.generator.enhancement.parameters():
            p.add_(0.05 * torch.randn_like(p))
    synthesizer, encoder = FrameSynthesizer(model), MotionEncoder(model)
    face = (np.random.default_rng(0).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    state = synthesizer.prepare(face)
    motion = encoder.encode(face)
    picture = cv2.resize(face, (E, E), interpolation=cv2.INTER_AREA)
    plain, enhanced = synthesizer.render(state, motion), synthesizer.render(state, motion, enhancement=picture)
    assert synthesizer.enhancement_size == E and plain.shape == enhanced.shape == (SIZE, SIZE, 3)
    assert not np.array_equal(plain, enhanced)
    with pytest.raises(ValueError, match="enhancement picture must be"):
        synthesizer.render(state, motion, enhancement=picture.astype(np.float32))
    motion_only = FrameSynthesizer(FaceVid2VidModel(ModelConfig.preset("tiny")).eval())
    with pytest.raises(ValueError, match="no enhancement branch"):
        motion_only.render(motion_only.prepare(face), motion, enhancement=picture)


def test_ship_puts_the_enhanced_validation_on_the_card(data: Path, tmp_path: Path) -> None:
    """A model with the branch: the card has a table of motion only and with the picture at each prepared qp, on the
    same pairs, with the pictures' rate (inter pictures: 60 and 30 bytes -> 12 and 6 kbps at 25 fps)."""
    from PIL import Image

    from codec.train.ship import main as ship
    from sender.portrait import default_portrait

    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    checkpoint.save(FaceVid2VidModel(ModelConfig.preset("tiny-enh")), run / "best.safetensors", metadata={"step": "3"})
    (run / "config.json").write_text(json.dumps({"train": {"batch_size": 2}}))
    (run / "log.jsonl").write_text(json.dumps({"kind": "val", "step": 3, "cpu_hours": 0.1, "wall_hours": 0.1}) + "\n")
    art = tmp_path / "art.png"
    Image.fromarray(default_portrait()).save(art)
    out = tmp_path / "weights" / "tiny-enh.safetensors"
    assert ship(["--run", str(run), "--data", str(data), "--art", str(art), "--pairs", "4", "--out", str(out),
                 "--docs", str(tmp_path / "docs"), "--threads", "1"]) == 0
    card = (out.parent / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: `tiny-enh.safetensors`") and "preset `tiny-enh`" in card
    assert "## With the enhancement layer (same pairs)" in card
    rows = [line for line in card.splitlines() if line.startswith(("| motion only |", "| + picture at qp"))]
    assert [r.split(" | ")[0] for r in rows] == ["| motion only", "| + picture at qp 40", "| + picture at qp 55"]
    assert rows[1].split(" | ")[1] == "12.0" and rows[2].split(" | ")[1] == "6.0"
    enhanced = json.loads((tmp_path / "docs" / "validation.json").read_text())["enhanced"]
    assert sorted(enhanced) == ["40", "55"] and np.isfinite(enhanced["40"]["overall"]["face_psnr"])


def test_a_freeze_motion_fine_tune_keeps_l_and_h_and_ships_with_the_same_motion_id(data: Path, tmp_path: Path) -> None:
    """--freeze-motion trains F, M and G only: L's and H's tensors come out bit-identical (also in the weight
    average), so ship.py --motion-model-from records the source's motion id; a model whose H moved is refused."""
    from safetensors.torch import load_file

    from codec.train.ship import MOTION_NETWORKS, shared_motion_model_id

    torch.manual_seed(0)
    source = tmp_path / "tiny-enh.safetensors"
    source_id = checkpoint.save(FaceVid2VidModel(ModelConfig.preset("tiny-enh")), source, metadata={"step": "10"})
    run = tmp_path / "run"
    args = ["--run", str(run), "--from-model", str(source), "--preset", "tiny-enh", "--data", str(data),
            "--enhancement-qps", "40,55", "--enhancement-val-qp", "55", "--threads", "1", "--no-progress",
            "--validation-pairs", "4", "--validate-steps", "100", "--log-steps", "1", "--batch-size", "2",
            "--max-steps", "20", "--generator-frozen-until-step", "0", "--stop-after-steps", "3",
            "--ema-decay", "0.9", "--lr", "1e-3", "--freeze-motion"]
    assert main(args) == 0
    original, _ = checkpoint.load(source)
    state = load_file(str(run / "last.safetensors"))  # the training state: generator.*, ema.*, optimizers, ...
    trained, ema = FaceVid2VidModel(ModelConfig.preset("tiny-enh")), FaceVid2VidModel(ModelConfig.preset("tiny-enh"))
    for prefix, model in (("generator", trained), ("ema", ema)):
        model.load_state_dict({k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")})
    for model in (trained, ema):
        for name in MOTION_NETWORKS:
            for key, tensor in getattr(original, name).state_dict().items():
                assert torch.equal(getattr(model, name).state_dict()[key], tensor), f"{name}.{key} moved"
        assert not all(torch.equal(a, b) for a, b in zip(model.generator.parameters(), original.generator.parameters()))
    assert shared_motion_model_id(trained, source) == source_id  # the source names no other motion model: its own id
    with torch.no_grad():
        next(trained.pose_expression.parameters()).add_(1e-3)
    with pytest.raises(SystemExit, match=r"pose_expression\..* differs .*--freeze-motion"):
        shared_motion_model_id(trained, source)


def test_freeze_motion_flag_is_on_off_or_not_given() -> None:
    from codec.train.__main__ import parse_args

    assert parse_args(["--run", "r", "--freeze-motion"]).freeze_motion is True
    assert parse_args(["--run", "r", "--no-freeze-motion"]).freeze_motion is False
    assert parse_args(["--run", "r"]).freeze_motion is None  # not given: the run's saved config decides
    with pytest.raises(SystemExit):
        parse_args(["--run", "r", "--freeze-motion", "maybe"])
