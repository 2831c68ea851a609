"""python -m codec.train end to end on a tiny synthetic dataset: steps, logs, grid, resume after a kill."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from codec.model import PRESETS
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
