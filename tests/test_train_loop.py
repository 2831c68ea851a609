"""python -m codec.train end to end on a tiny synthetic dataset: steps, logs, grid, resume after a kill."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from codec.model import PRESETS, FaceVid2VidModel, ModelConfig, checkpoint
from codec.train.__main__ import main
from codec.train.state import read_metadata
from safetensors import safe_open
from tests._train_fakes import write_fake_prepared


def _args(data: Path, run: Path, *extra: str) -> list[str]:
    return ["--run", str(run), "--threads", "1", "--no-progress", "--validation-pairs", "4", "--validate-steps", "3",
            "--log-steps", "1", *extra] + (["--preset", "tiny", "--data", str(data), "--batch-size", "2"] if "--resume" not in extra else [])


def test_tiny_training_run_logs_and_resumes(tmp_path: Path) -> None:
    data = write_fake_prepared(tmp_path / "data", size=64)
    run = tmp_path / "run"
    assert main(_args(data, run, "--stop-after-steps", "3")) == 0
    assert read_metadata(run / "last.safetensors")["step"] == "3"
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["kind"] == "train"]
    val = [r for r in lines if r["kind"] == "val"]
    assert [r["step"] for r in train] == [1, 2, 3]
    assert all(r["loss_g"] == r["loss_g"] for r in train)  # finite, not NaN
    assert [r["step"] for r in val] == [0, 3] and (run / "grid_0000003.png").is_file() and (run / "floors.json").is_file()
    with pytest.raises(FileExistsError, match="--resume"):
        main(_args(data, run, "--stop-after-steps", "1"))
    assert main(_args(data, run, "--resume", "--stop-after-steps", "2")) == 0  # a new process picks up at step 3
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "train"][-2:] == [4, 5]
    assert read_metadata(run / "last.safetensors")["step"] == "5"


def test_the_3d_volume_preset_trains(tmp_path: Path) -> None:
    """The paper's 3D pipeline (here its tiny form) goes through the same training loop and gates."""
    data = write_fake_prepared(tmp_path / "data", size=64)
    run = tmp_path / "run3d"
    args = ["--run", str(run), "--threads", "1", "--no-progress", "--validation-pairs", "2", "--validate-steps", "2",
            "--log-steps", "1", "--preset", "tiny-3d", "--data", str(data), "--batch-size", "2", "--stop-after-steps", "2"]
    assert main(args) == 0
    assert read_metadata(run / "last.safetensors")["step"] == "2"
    train = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in train if r["kind"] == "train"] == [1, 2]
    assert all(r["loss_g"] == r["loss_g"] for r in train if r["kind"] == "train")


def test_init_grows_a_run_into_a_model_with_new_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--init: a new run from another run's state for a preset that added the spatial δ head; step, CPU time and
    training config go on, the shared weights are the source's, the new head trains."""
    data = write_fake_prepared(tmp_path / "data", size=64)
    source = tmp_path / "source"
    with monkeypatch.context() as patch:
        patch.setitem(PRESETS, "tiny", dataclasses.replace(PRESETS["tiny"], expression_spatial_channels=0))
        assert main(_args(data, source, "--stop-after-steps", "3")) == 0
    source_state = read_metadata(source / "last.safetensors")
    grown = tmp_path / "grown"
    assert main(["--run", str(grown), "--init", str(source / "last.safetensors"), "--threads", "1", "--no-progress",
                 "--stop-after-steps", "2"]) == 0
    state = read_metadata(grown / "last.safetensors")
    assert state["step"] == "5" and float(state["cpu_seconds"]) > float(source_state["cpu_seconds"])
    assert json.loads(state["train_config"])["batch_size"] == 2  # the source's config, not the defaults
    assert json.loads(state["model_config"])["expression_spatial_channels"] == 4
    with safe_open(str(grown / "last.safetensors"), framework="pt") as handle:
        head = handle.get_tensor("generator.pose_expression.expression_spatial.3.weight")
    assert float(head.abs().sum()) > 0  # started at zero, trained
    log = [json.loads(line) for line in (grown / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4, 5]  # the source's history comes along
    assert [r["step"] for r in log if r["kind"] == "init"] == [3]
    with pytest.raises(ValueError, match="one"):
        main(["--run", str(tmp_path / "x"), "--init", str(source / "last.safetensors"), "--resume"])
    with monkeypatch.context() as patch:  # a model without the head cannot take a state that has it
        patch.setitem(PRESETS, "tiny", dataclasses.replace(PRESETS["tiny"], expression_spatial_channels=0))
        with pytest.raises(ValueError, match="only grows"):
            main(["--run", str(tmp_path / "shrunk"), "--init", str(grown / "last.safetensors"), "--threads", "1",
                  "--no-progress", "--stop-after-steps", "1"])


def test_init_grows_a_run_that_kept_its_motion_frozen_into_the_eyelid_branch(tmp_path: Path) -> None:
    """A --freeze-motion run's Adam state holds only F, M and G (L and H left out): growing it into the eyelid
    branch's preset maps each moment to its own parameter, keeps the motion frozen, and the branch trains."""
    data = write_fake_prepared(tmp_path / "data", size=64)
    source = tmp_path / "source"
    assert main(_args(data, source, "--stop-after-steps", "2", "--freeze-motion", "--eye-pair-fraction", "0.5")) == 0
    grown = tmp_path / "grown"
    assert main(["--run", str(grown), "--init", str(source / "last.safetensors"), "--preset", "tiny-eyes", "--threads", "1",
                 "--no-progress", "--stop-after-steps", "2"]) == 0
    config = json.loads(read_metadata(grown / "last.safetensors")["train_config"])
    assert config["preset"] == "tiny-eyes" and config["freeze_motion"] and config["eye_pair_fraction"] == 0.5
    with safe_open(str(source / "last.safetensors"), framework="pt") as before, \
            safe_open(str(grown / "last.safetensors"), framework="pt") as after:
        for name in before.keys():
            if name.startswith(("generator.canonical_keypoints.", "generator.pose_expression.")):
                torch.testing.assert_close(after.get_tensor(name), before.get_tensor(name))  # the motion: untouched
        assert float(after.get_tensor("generator.generator.eyelids.to_features.weight").abs().sum()) > 0  # from zero


def test_from_model_fine_tunes_a_model_file_with_a_fresh_discriminator(tmp_path: Path) -> None:
    """--from-model: a new run from a model file (the shipped fp16 format): its weights and counters, the generator
    frozen while the fresh discriminator catches up, then both train; the schedule restarts at the file's step."""
    from codec.train.__main__ import learning_rate_factor
    from codec.train.config import TrainConfig

    data = write_fake_prepared(tmp_path / "data", size=64)
    model_file = tmp_path / "model.safetensors"
    torch.manual_seed(0)
    checkpoint.save(FaceVid2VidModel(ModelConfig.preset("tiny")), model_file, metadata={"step": "3", "cpu_hours": "0.5"},
                    half=True)

    run = tmp_path / "ft"
    base = ["--run", str(run), "--from-model", str(model_file), "--data", str(data), "--threads", "1", "--no-progress",
            "--batch-size", "2", "--validation-pairs", "4", "--validate-steps", "100", "--log-steps", "1"]
    assert main([*base, "--max-steps", "10", "--generator-frozen-until-step", "5", "--stop-after-steps", "2"]) == 0
    state = read_metadata(run / "last.safetensors")
    assert state["step"] == "5" and float(state["cpu_seconds"]) > 0.5 * 3600
    config = json.loads(state["train_config"])
    assert config["schedule_start_step"] == 3 and config["preset"] == "tiny"
    with safe_open(str(run / "last.safetensors"), framework="pt") as handle:
        frozen = {k[len("generator."):]: handle.get_tensor(k) for k in handle.keys() if k.startswith("generator.")}
        assert not any(k.startswith("opt_g.state") for k in handle.keys())  # G took no step yet
        assert any(k.startswith("opt_d.state") for k in handle.keys())
    reference = {k: v.float() for k, v in checkpoint.load(model_file)[0].state_dict().items()}
    assert all(torch.equal(frozen[k].float(), reference[k]) for k in reference)  # fp16 file loaded, untouched
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "init"] == [3]
    assert all(r.get("generator_frozen") == 1.0 and "loss_g" not in r for r in log if r["kind"] == "train")

    assert main(["--run", str(run), "--resume", "--threads", "1", "--no-progress", "--stop-after-steps", "2"]) == 0
    with safe_open(str(run / "last.safetensors"), framework="pt") as handle:
        trained = {k[len("generator."):]: handle.get_tensor(k) for k in handle.keys() if k.startswith("generator.")}
    assert not all(torch.equal(trained[k], frozen[k]) for k in frozen)  # from step 5 on, G trains
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train" and "loss_g" in r] == [6, 7]

    restarted = TrainConfig(max_steps=1300, schedule_start_step=1000, warmup_steps=100)
    assert learning_rate_factor(1000, restarted) == pytest.approx(0.01)  # warm-up again from the start step
    assert learning_rate_factor(1100, restarted) == pytest.approx(1.0)
    assert learning_rate_factor(1300, restarted) == pytest.approx(restarted.min_lr_fraction)
    with pytest.raises(ValueError, match="--max-steps"):
        main(["--run", str(tmp_path / "ft2"), "--from-model", str(model_file), "--data", str(data), "--max-steps", "3"])
    with pytest.raises(ValueError, match="pass one"):
        main(["--run", str(tmp_path / "ft3"), "--from-model", str(model_file), "--init", str(model_file)])
    with pytest.raises(FileNotFoundError, match="--from-model"):
        main(["--run", str(tmp_path / "ft4"), "--from-model", str(tmp_path / "missing.safetensors"), "--data", str(data)])


def test_a_finished_run_validates_its_final_weights_once(tmp_path: Path) -> None:
    """A run that reaches --max-steps between validations still scores its last weights (they may be the best);
    resuming a finished run does not validate the same step again."""
    data = write_fake_prepared(tmp_path / "data", size=64)
    run = tmp_path / "run"
    assert main(_args(data, run, "--max-steps", "4", "--validate-steps", "100")) == 0

    def val_steps() -> list[int]:
        return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()
                if json.loads(line)["kind"] == "val"]

    assert val_steps() == [0, 4] and (run / "grid_0000004.png").is_file()
    assert main(["--run", str(run), "--resume", "--threads", "1", "--no-progress"]) == 0
    assert val_steps() == [0, 4]


def test_the_eye_and_mouth_term_is_off_by_default_and_can_be_turned_on_when_resuming(tmp_path: Path) -> None:
    """--w-region-l1 adds L1 inside boxes around the driving frame's eyes and mouth; a run saved without it resumes
    with it (it is one of the fields a resumed run may change)."""
    data = write_fake_prepared(tmp_path / "data", size=64)
    run = tmp_path / "run"
    assert main(_args(data, run, "--max-steps", "2", "--validate-steps", "100")) == 0

    def train_rows() -> list[dict]:
        return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "train"]

    assert all("region_l1" not in r for r in train_rows())
    assert main(["--run", str(run), "--resume", "--threads", "1", "--no-progress", "--max-steps", "4",
                 "--w-region-l1", "5", "--log-steps", "1"]) == 0
    rows = [r for r in train_rows() if r["step"] > 2]
    assert rows and all(r["region_l1"] > 0 for r in rows)
    assert json.loads(read_metadata(run / "last.safetensors")["train_config"])["w_region_l1"] == 5.0


def test_resume_with_a_new_schedule_continues_a_finished_run_warm(tmp_path: Path) -> None:
    """A finished run continues with a new learning-rate schedule (lr, restart step, warm-up): its discriminator and
    Adam state come along; fields outside RESUMABLE_OVERRIDES (here the batch size) still cannot change."""
    data = write_fake_prepared(tmp_path / "data", size=64)
    run = tmp_path / "run"
    assert main(_args(data, run, "--max-steps", "3", "--warmup-steps", "1", "--validate-steps", "100")) == 0
    with safe_open(str(run / "last.safetensors"), framework="pt") as handle:
        adam_steps = {k: float(handle.get_tensor(k)) for k in handle.keys() if k.startswith("opt_") and k.endswith(".step")}
    assert adam_steps and set(adam_steps.values()) == {3.0}

    assert main(["--run", str(run), "--resume", "--threads", "1", "--no-progress", "--max-steps", "7", "--lr", "1e-4",
                 "--schedule-start-step", "3", "--warmup-steps", "2"]) == 0
    state = read_metadata(run / "last.safetensors")
    config = json.loads(state["train_config"])
    assert state["step"] == "7" and config["lr"] == 1e-4 and config["schedule_start_step"] == 3
    with safe_open(str(run / "last.safetensors"), framework="pt") as handle:
        assert {float(handle.get_tensor(k)) for k in adam_steps} == {7.0}  # the same Adam moments, stepped on
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    factors = {r["step"]: r["lr_factor"] for r in log if r["kind"] == "train"}
    assert factors[3] == pytest.approx(0.55)  # the first schedule's cosine, half-way at its last step
    assert factors[4] == pytest.approx(0.5) and factors[5] == pytest.approx(1.0)  # warm-up again from step 3
    with pytest.raises(ValueError, match="cannot change"):
        main(["--run", str(run), "--resume", "--threads", "1", "--no-progress", "--batch-size", "4"])


def test_ema_keeps_a_weight_average_that_validation_and_best_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--ema-decay: the generator's weights are also kept as a moving average (saved in the training state, restored
    on resume); validation scores it and best.safetensors holds it, not the raw weights."""
    from codec.train import validate

    monkeypatch.setattr(validate, "passes_gates", lambda record, floors: (True, "ok"))  # a tiny model fails the gates
    data = write_fake_prepared(tmp_path / "data", size=64)
    run = tmp_path / "run"
    assert main(_args(data, run, "--stop-after-steps", "3", "--ema-decay", "0.5", "--warmup-steps", "1")) == 0
    with safe_open(str(run / "last.safetensors"), framework="pt") as handle:
        raw = {k[len("generator."):]: handle.get_tensor(k) for k in handle.keys() if k.startswith("generator.")}
        ema = {k[len("ema."):]: handle.get_tensor(k) for k in handle.keys() if k.startswith("ema.")}
    assert set(ema) == set(raw)
    assert not all(torch.equal(ema[k], raw[k]) for k in raw)  # an average lags the trained weights
    best = {k: v.float() for k, v in checkpoint.load(run / "best.safetensors")[0].state_dict().items()}
    assert all(torch.allclose(best[k], ema[k].float(), atol=1e-6) for k in ema if ema[k].is_floating_point())
    assert main(_args(data, run, "--resume", "--stop-after-steps", "1")) == 0  # restored and stepped on
    with safe_open(str(run / "last.safetensors"), framework="pt") as handle:
        ema_after = {k[len("ema."):]: handle.get_tensor(k) for k in handle.keys() if k.startswith("ema.")}
        raw_after = {k[len("generator."):]: handle.get_tensor(k) for k in handle.keys() if k.startswith("generator.")}
    name = next(k for k in ema if ema[k].is_floating_point() and not torch.equal(raw_after[k], raw[k]))
    assert torch.allclose(ema_after[name], 0.5 * ema[name] + 0.5 * raw_after[name], atol=1e-6)  # the decay rule


def test_a_run_without_a_weight_average_starts_one_at_its_weights_on_resume(tmp_path: Path) -> None:
    """Turning --ema-decay on when resuming a run that kept no average starts the average at the run's weights."""
    from codec.train.__main__ import Trainer
    from codec.train.config import TrainConfig
    from codec.train.state import load_state

    data = write_fake_prepared(tmp_path / "data", size=64)
    run = tmp_path / "run"
    assert main(_args(data, run, "--stop-after-steps", "2", "--validate-steps", "100")) == 0
    with safe_open(str(run / "last.safetensors"), framework="pt") as handle:
        assert not any(k.startswith("ema.") for k in handle.keys())
    trainer = Trainer(TrainConfig(preset="tiny", data=str(data), batch_size=2, ema_decay=0.9), run, torch.device("cpu"))
    assert trainer.ema is not None
    load_state(run / "last.safetensors", generator=trainer.model, discriminator=trainer.disc, opt_g=trainer.opt_g,
               opt_d=trainer.opt_d, rng=trainer.rng, ema=trainer.ema)
    weights, average = trainer.model.state_dict(), trainer.ema.state_dict()
    assert all(torch.equal(weights[k], average[k]) for k in weights)


def test_a_run_trained_for_landmark_refinement_renders_from_refined_keypoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--landmark-refinement A: training and validation render from the keypoints the sender will transmit (refined
    towards the landmarks' motion, reference = anchor), H's own keypoints feed its losses, and the model files
    record A so that senders refine by it."""
    from codec.model.landmark_refinement import refine_keypoints
    from codec.train import model_io
    from codec.train.dataset import PairBatch

    data = write_fake_prepared(tmp_path / "data", size=64)
    run = tmp_path / "run"
    monkeypatch.setattr("codec.train.validate.passes_gates", lambda record, floors: (True, "ok"))
    assert main(_args(data, run, "--stop-after-steps", "3", "--landmark-refinement", "0.5")) == 0
    assert json.loads(read_metadata(run / "last.safetensors")["model_config"])["landmark_refinement"] == 0.5
    model, _ = checkpoint.load(run / "best.safetensors")
    assert model.config.landmark_refinement == 0.5
    assert main(_args(data, run, "--resume", "--stop-after-steps", "1", "--landmark-refinement", "0.25")) == 0  # resumable
    assert json.loads(read_metadata(run / "last.safetensors")["model_config"])["landmark_refinement"] == 0.25

    torch.manual_seed(0)
    images = torch.rand(4, 3, 64, 64)
    landmarks = torch.rand(4, 478, 2) * 2 - 1
    batch = PairBatch(images[:2], images[2:], landmarks[:2], landmarks[2:] + 0.05, torch.zeros(2, 3), torch.zeros(2, 3))
    rendered: list[torch.Tensor] = []
    synthesize = model.synthesize
    monkeypatch.setattr(model, "synthesize", lambda ref, kp, rot: rendered.append(kp) or synthesize(ref, kp, rot))
    with torch.no_grad():
        out = model_io.forward(model, batch)
        generated = model_io.generate(model, batch)
    expected = refine_keypoints(out.kp_drv, out.kp_ref, batch.ref_landmarks, batch.drv_landmarks, 0.5)
    assert torch.allclose(rendered[0], expected) and not torch.allclose(rendered[0], out.kp_drv, atol=1e-3)
    assert torch.allclose(generated.kp_drv, expected)  # validation draws what was rendered
