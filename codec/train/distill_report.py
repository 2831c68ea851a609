"""Distilled models against their teacher on the model card's validation pairs, for the card.

    python -m codec.train.distill_report --data /work/prepared/s256 \\
        --models codec/weights/cpu.safetensors codec/weights/web.safetensors codec/weights/web-small.safetensors \\
        --pairs 100 --json docs/model/distilled_validation.json

Every model renders the same pairs (validation people, reference = the clip's first frame, ``validation_pairs(val,
pairs, seed=1)`` as ``codec.train.ship``) from its own keypoints (a distilled model's L and H are its teacher's, so
these are the teacher's) and is scored by ``codec.train.validate.Validator`` (face PSNR, AKD, eyes' and mouth's
opening errors, identity distance). Prints a markdown table, one row per model, next to the no-motion floor.
``--split test`` scores the same way on the data README's test group (people never trained on nor used to pick a
checkpoint: the figures to report); ``val`` (the default) is what checkpoints are picked on.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from codec.face.identity import IdentityEmbedder
from codec.model import checkpoint
from codec.train import model_io
from codec.train.dataset import PreparedData, validation_pairs
from codec.train.validate import Validator, make_landmark_fn

COLUMNS = ("face_psnr", "psnr", "ssim", "face_ssim", "akd", "akd_mouth", "akd_eyes", "mouth_open_error", "eyes_open_error",
           "identity")


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[k]:.3f}" for k in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.train.distill_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder")
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="model files, the teacher first")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--split", choices=("val", "test"), default="val", help="whose pairs (default %(default)s)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    val = PreparedData(args.data, args.split)
    pairs = validation_pairs(val, args.pairs, seed=1)
    cache = Path(tempfile.mkdtemp(prefix="kpcall-distill-report-")) / "floors.json"
    validator = Validator(val, pairs, make_landmark_fn(), cache_path=cache, embedder=IdentityEmbedder())
    rows: dict[str, dict[str, float]] = {"no-motion floor": validator.floors["no_motion"]["overall"]}
    records: dict[str, Any] = {}
    for path in args.models:
        model, model_id = checkpoint.load(path)
        record, _ = validator.run(lambda batch, model=model: model_io.generate(model, batch), "cpu")
        rows[f"{path.name} ({model_id})"] = record["overall"]
        records[str(path)] = {"model_id": model_id, "overall": record["overall"], "per_person": record["per_person"]}
    text = table(rows)
    print(f"{len(pairs)} pairs of the {args.split} split ({len(val.people)} people)\n\n{text}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"split": args.split, "pairs": len(pairs), "people": val.people, "floors": validator.floors, "models": records}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
