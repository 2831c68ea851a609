"""python -m codec.train.ship end to end on a tiny model and dataset: fp16 weights that load, card, grids."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from codec.model import FaceVid2VidModel, ModelConfig
from codec.model import checkpoint
from codec.train.ship import main
from sender.portrait import default_portrait
from tests._train_fakes import write_fake_prepared


def test_ship_writes_half_weights_card_and_examples(tmp_path: Path) -> None:
    data = write_fake_prepared(tmp_path / "data", size=64)
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = FaceVid2VidModel(ModelConfig.preset("tiny"))
    checkpoint.save(model, run / "best.safetensors", metadata={"step": "7"})
    (run / "config.json").write_text(json.dumps({"train": {"batch_size": 2}}))
    (run / "log.jsonl").write_text(json.dumps({"kind": "val", "step": 7, "cpu_hours": 0.5, "wall_hours": 0.3}) + "\n")
    art = tmp_path / "astronaut.png"
    Image.fromarray(default_portrait()).save(art)
    out = tmp_path / "weights" / "tiny.safetensors"
    assert main(["--run", str(run), "--data", str(data), "--art", str(art), str(art), "--pairs", "4",
                 "--out", str(out), "--docs", str(tmp_path / "docs"), "--threads", "1",
                 "--history", "grown at step 5 from run a"]) == 0
    loaded, model_id = checkpoint.load(out)
    assert model_id.startswith("tiny-") and next(loaded.parameters()).dtype == torch.float32
    assert out.stat().st_size < 0.6 * sum(p.numel() * 4 for p in model.state_dict().values())  # fp16 on disk
    card = (out.parent / "MODEL_CARD.md").read_text()
    assert "7 steps of batch 2" in card and "0.50 CPU-hours" in card and "| overall |" in card
    assert "- History: grown at step 5 from run a" in card and "spatial head over its 4² deep map (4 channels)" in card
    cross = Image.open(tmp_path / "docs" / "cross_identity.jpg")
    assert cross.size == (6 * 64, 3 * 64)  # driver row + one row per portrait, 5 driving frames + 1
    assert (tmp_path / "docs" / "same_person.jpg").is_file()
    assert "Against the previous" not in card
    # identity: a column of the validation table, a goal, and per portrait its renders' distance to it and to the driver
    assert "| identity (model / no-motion / affine) |" in card
    assert "| the output still looks like the person: identity distance < 0.6" in card
    portrait_rows = [line for line in card.splitlines() if line.startswith("| `astronaut.png` |")]
    assert len(portrait_rows) == 2 and all(row.endswith((" yes |", " no |")) for row in portrait_rows)
    cross_identity = json.loads((tmp_path / "docs" / "validation.json").read_text())["cross_identity"]
    assert 0 <= cross_identity["astronaut.png"]["to_portrait"] < 2 and 0 <= cross_identity["astronaut.png"]["to_driver"] < 2


def test_ship_compares_with_the_previous_model_and_counts_earlier_wall_hours(tmp_path: Path) -> None:
    """--compare-to validates the previously shipped file (and any earlier ones) on the same pairs and puts each on the card;
    --wall-hours-before adds the hours a run's own count lacks; earlier training curves in the docs stay linked."""
    data = write_fake_prepared(tmp_path / "data", size=64)
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    checkpoint.save(FaceVid2VidModel(ModelConfig.preset("tiny")), run / "best.safetensors", metadata={"step": "9"})
    previous = tmp_path / "previous.safetensors"
    torch.manual_seed(1)
    checkpoint.save(FaceVid2VidModel(ModelConfig.preset("tiny")), previous, metadata={"step": "4"}, half=True)
    earlier = tmp_path / "earlier.safetensors"
    torch.manual_seed(2)
    checkpoint.save(FaceVid2VidModel(ModelConfig.preset("tiny")), earlier, metadata={"step": "2"}, half=True)
    (run / "config.json").write_text(json.dumps({"train": {"batch_size": 2}}))
    (run / "log.jsonl").write_text(json.dumps({"kind": "val", "step": 9, "cpu_hours": 0.5, "wall_hours": 0.25}) + "\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    Image.new("RGB", (8, 8)).save(docs / "training_curve_0-4.png")
    art = tmp_path / "astronaut.png"
    Image.fromarray(default_portrait()).save(art)
    out = tmp_path / "weights" / "tiny.safetensors"
    assert main(["--run", str(run), "--data", str(data), "--art", str(art), "--pairs", "4", "--out", str(out),
                 "--docs", str(docs), "--threads", "1", "--compare-to", str(previous), str(earlier), "--wall-hours-before", "2"]) == 0
    card = (out.parent / "MODEL_CARD.md").read_text()
    line = next(x for x in card.splitlines() if x.startswith("- Against the previous shipped model (step 4"))
    assert "the same 4 pairs" in line and "face-region PSNR" in line and "AKD" in line and " → " in line
    assert "identity distance" in line
    older = next(x for x in card.splitlines() if x.startswith("- Against an earlier shipped model (step 2"))
    assert card.index(line) < card.index(older) and older.split(": ", 1)[1] != line.split(": ", 1)[1]
    assert "(2.25 wall hours)" in card and checkpoint.read_metadata(out)["wall_hours"] == "2.250"
    assert "![earlier training curve](../../docs/model/training_curve_0-4.png)" in card
