"""Ship a trained generator: fp16 weights in the package, example grids and a model card.

    python -m codec.train.ship --run /work/runs/cpu1 --data /work/prepared/s256 \
        --art ../shared/data/stills/art/liveportrait_s9.jpg ../shared/data/stills/art/dreamtalk_zt12.png

Reads RUN/best.safetensors (the best checkpoint that passed the motion gates), validates it once more
on a larger fixed set of validation pairs (reference = a clip's first frame, same person), and writes

    codec/weights/cpu.safetensors   fp16 weights (the package default; ≤ 20 MB)
    codec/weights/MODEL_CARD.md     data, steps, CPU-hours, validation table next to both floors (identity
                                    distance included), each portrait's identity distance to itself and the driver
    docs/model/same_person.jpg      reference | driving | output | occlusion, keypoints drawn
    docs/model/cross_identity.jpg   a portrait from stills/art driven by a validation clip (relative)
    docs/model/training_curve.png   the run's metrics against steps and CPU-hours
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from codec.face.crop import crop_reference
from codec.face.identity import SAME_PERSON_DISTANCE, IdentityEmbedder, optional_distance
from codec.model import checkpoint
from codec.model.retarget import retarget_relative
from codec.model.wrappers import FrameSynthesizer, MotionEncoder
from codec.train import model_io
from codec.train.dataset import PreparedData, validation_pairs
from codec.train.validate import METRIC_KEYS, Validator, make_landmark_fn, passes_gates, summary_table

logger = logging.getLogger("codec.train.ship")
REPO = Path(__file__).resolve().parents[2]
MAX_SHIPPED_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class CrossIdentity:
    """The cross-identity example: grid ((1 + P) * S, (frames + 1) * S, 3) uint8, and per portrait (P,) the mean
    identity distance of its renders to the portrait and to the driving frames they follow (NaN: no face read).
    A render that keeps the portrait's identity is nearer the portrait than the driver."""

    grid: np.ndarray
    to_portrait: list[float]
    to_driver: list[float]


def cross_identity_grid(weights: Path, data: PreparedData, portraits: list[np.ndarray], frames: int = 5,
                        embedder: IdentityEmbedder | None = None) -> CrossIdentity:
    """Row 1: the driver's first frame then driving frames of a validation clip; then per portrait a row: the
    portrait, then it re-rendered with each frame's motion relative to the driver's first frame.

    embedder: measures the identity distances (None: NaN). A render's face is read where HOG finds it, else at
    the portrait crop's landmarks (the render keeps the portrait's framing); portrait and driver at their landmarks.
    """
    encoder = MotionEncoder(weights, device="cpu")
    synthesizer = FrameSynthesizer(weights, device="cpu")
    size = synthesizer.image_size
    # the validation clip whose inner lips open and close the most: the example shows the mouth following
    clip = max(data.clips, key=lambda c: float(np.ptp(c.landmarks[c.usable][:, 13, 1] - c.landmarks[c.usable][:, 14, 1])))
    picks = clip.usable[np.linspace(0, clip.usable.size - 1, frames + 1).round().astype(int)]
    driving = [np.asarray(clip.frames[i]) for i in picks]
    refine = encoder.landmark_refiner(driving[0])  # as the driver's sender: anchored at the first frame
    first, *motions = [refine(encoder.encode(frame), clip.landmarks[i]) for frame, i in zip(driving, picks)]
    rows = [np.concatenate(driving, 1)]
    drivers = ([embedder.describe(frame, landmarks=clip.landmarks[i]) for frame, i in zip(driving[1:], picks[1:])]
               if embedder is not None else [])
    to_portrait: list[float] = []
    to_driver: list[float] = []
    for portrait in portraits:
        crop = crop_reference(portrait, size)
        avatar = crop.image
        state = synthesizer.prepare(avatar)
        outputs = [synthesizer.render(state, retarget_relative(m, first, state.motion)) for m in motions]
        rows.append(np.concatenate([avatar, *outputs], 1))
        if embedder is None:
            to_portrait.append(float("nan"))
            to_driver.append(float("nan"))
            continue
        own = embedder.describe(avatar, landmarks=crop.landmarks)
        rendered = [_describe_render(embedder, out, crop.landmarks) for out in outputs]
        to_portrait.append(_nanmean([optional_distance(r, own) for r in rendered]))
        to_driver.append(_nanmean([optional_distance(r, d) for r, d in zip(rendered, drivers)]))
    return CrossIdentity(np.concatenate(rows, 0), to_portrait, to_driver)


def _describe_render(embedder: IdentityEmbedder, image: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray | None:
    """Descriptor of a render (S, S, 3) uint8: at the face HOG finds, else at the portrait crop's landmarks."""
    box = embedder.find_face(image)
    return embedder.describe(image, box=box) if box is not None else embedder.describe(image, landmarks=landmarks)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


COMPARED = (("psnr", "whole-frame PSNR", "dB"), ("face_psnr", "face-region PSNR", "dB"), ("ssim", "whole-frame SSIM", ""), ("akd", "AKD", "px"),
            ("akd_mouth", "mouth AKD", "px"), ("akd_eyes", "eyes AKD", "px"),
            ("mouth_open_error", "inner-lip gap error", "px"), ("eyes_open_error", "eyes' opening error", "px"),
            ("identity", "identity distance", ""))


def comparison_line(previous: dict[str, float], previous_step: str, current: dict[str, float], latest: bool = True) -> str:
    """One sentence: each metric of an earlier shipped model (``latest``: the one this replaces) → this one, on the
    same validation pairs."""
    def value(number: float, unit: str) -> str:
        return f"{number:.2f}" if unit else f"{number:.3f}"  # dB and px to 0.01, SSIM to 0.001

    parts = [f"{label} {value(previous[key], unit)} → {value(current[key], unit)}{(' ' + unit) if unit else ''}"
             for key, label, unit in COMPARED if key in previous and key in current]
    which = "the previous shipped model" if latest else "an earlier shipped model"
    return f"Against {which} (step {previous_step}, the same {int(current['count'])} pairs): " + ", ".join(parts) + "."


ENHANCED_KEYS = ("face_psnr", "psnr", "ssim", "akd", "eyes_open_error", "mouth_open_error", "identity")


def enhanced_records(model: Any, data: Path, pairs: list[tuple[int, int, int]], detect: Any,
                     embedder: IdentityEmbedder | None, floors_cache: Path | None = None) -> dict[int, dict[str, Any]]:
    """The validation record with the enhancement picture at each qp the prepared data holds (the same pairs
    as motion-only), plus that qp's mean coded bytes per picture on the validation people."""
    size = model.config.enhancement_size
    qps = sorted(int(p.stem.split("_qp")[1]) for p in (data / "clips").glob(f"*/enh{size}_qp*.npy"))
    out: dict[int, dict[str, Any]] = {}
    for qp in sorted(set(qps)):
        val = PreparedData(data, "val", enhancement_size=size, enhancement_qps=(qp,))
        validator = Validator(val, pairs, detect, cache_path=floors_cache, embedder=embedder)
        record, _ = validator.run(lambda batch: model_io.generate(model, batch, enhanced=True), "cpu")
        record["kbps_at_25fps"] = _enhancement_kbps(data, [c.clip_id for c in val.clips], size, qp)
        out[qp] = record
    return out


def _enhancement_kbps(data: Path, clip_ids: list[str], size: int, qp: int) -> float:
    """Mean inter-picture rate (kbps at 25 fps) of these clips' coded pictures at ``qp`` (codec.data enhance's
    clips/<id>/enh<E>_qp<Q>.json; each stream's first picture, the key frame, left out)."""
    sizes: list[int] = []
    for clip_id in clip_ids:
        path = data / "clips" / clip_id / f"enh{size}_qp{qp}.json"
        if path.is_file():
            sizes += json.loads(path.read_text())["frame_bytes"][1:]
    return float(np.mean(sizes) * 8 * 25 / 1000) if sizes else float("nan")


def enhanced_table(record: dict[str, Any], enhanced: dict[int, dict[str, Any]]) -> list[str]:
    """Markdown rows: motion only, then with the picture at each qp, on the same pairs."""
    head = ["| input | picture kbps (25 fps) | " + " | ".join(ENHANCED_KEYS) + " |", "|---|---:|" + "---:|" * len(ENHANCED_KEYS)]
    rows = ["| motion only | 0 | " + " | ".join(f"{record['overall'][k]:.3f}" for k in ENHANCED_KEYS) + " |"]
    for qp, r in sorted(enhanced.items()):
        rate = r.get("kbps_at_25fps", float("nan"))
        rows.append(f"| + picture at qp {qp} | {rate:.1f} | " + " | ".join(f"{r['overall'][k]:.3f}" for k in ENHANCED_KEYS) + " |")
    return head + rows


def model_card(meta: dict[str, Any], record: dict[str, Any], floors: dict[str, Any], gates: str, size_bytes: int,
               data_summary: dict[str, Any], art_names: list[str], cross: CrossIdentity | None = None,
               enhanced: dict[int, dict[str, Any]] | None = None) -> str:
    o, f0, f1 = record["overall"], floors["no_motion"]["overall"], floors["affine"]["overall"]
    goals = [
        ("AKD ≤ 35% of the no-motion floor's and ≤ 2 px", f"{o['akd']:.2f} px = {100 * o['akd'] / f0['akd']:.0f}% of {f0['akd']:.2f}",
         o["akd"] <= 0.35 * f0["akd"] and o["akd"] <= 2.0),
        ("face-region PSNR ≥ no-motion + 4 dB", f"{o['face_psnr']:.2f} vs {f0['face_psnr']:.2f} + 4", o["face_psnr"] >= f0["face_psnr"] + 4),
        ("whole-frame SSIM ≥ no-motion + 0.05", f"{o['ssim']:.3f} vs {f0['ssim']:.3f} + 0.05", o["ssim"] >= f0["ssim"] + 0.05),
        ("the mouth opens and closes with the driver: inner-lip gap error < no-motion's",
         f"{o['mouth_open_error']:.2f} px vs {f0['mouth_open_error']:.2f}", o["mouth_open_error"] < f0["mouth_open_error"]),
        *([(f"the output still looks like the person: identity distance < {SAME_PERSON_DISTANCE} (dlib's same-person threshold)",
            f"{o['identity']:.3f} (no-motion floor {f0['identity']:.3f})", o["identity"] < SAME_PERSON_DISTANCE)]
          if np.isfinite(o.get("identity", float("nan"))) else []),
    ]
    cross_rows = ([] if cross is None else
                  ["", "Identity distance of each portrait's renders (dlib face-recognition descriptors; < "
                   f"{SAME_PERSON_DISTANCE} reads as the same person): a render that keeps the portrait's identity is "
                   "nearer the portrait than the driver.", "",
                   "| portrait | to the portrait | to the driver | keeps the portrait's identity |", "|---|---|---|---|",
                   *[f"| `{name}` | {p:.3f} | {d:.3f} | {'yes' if p < d else 'no' if np.isfinite(p + d) else 'not measured'} |"
                     for name, p, d in zip(art_names, cross.to_portrait, cross.to_driver, strict=True)]])
    lines = [
        f"# Model card: `{meta.get('file_name', 'cpu.safetensors')}` (face-vid2vid, CPU preset)",
        "",
        f"- Model id `{meta['model_id']}`, preset `{meta.get('preset', 'cpu')}` (256² in and out, K = 20 keypoints"
        + (f"; reads the enhancement layer's {meta['enhancement_size']}² picture when it comes" if meta.get("enhancement_size") else "")
        + "), "
        f"{meta['params'] / 1e6:.2f} M parameters, fp16 on disk ({size_bytes / 1e6:.1f} MB); loaded as fp32; renders autocast to bf16 on CPUs with native bf16 kernels (fp16 on CUDA).",
        f"- Trained here from scratch on a 2-core CPU: {meta['step']} steps of batch {meta['batch_size']}, "
        f"{meta['cpu_hours']:.2f} CPU-hours ({meta['wall_hours']:.2f} wall hours). No pretrained networks "
        "(no VGG19 weights here: the reconstruction loss is multi-scale L1 + SSIM + discriminator feature matching).",
        *([f"- History: {meta['history']}"] if meta.get("history") else []),
        *[f"- {line}" for line in meta.get("comparisons", [])],
        "- δ (expression) from H's globally pooled features"
        + (f" plus a spatial head over its {meta['spatial_side']}² deep map ({meta['spatial_channels']} channels)."
           if meta.get("spatial_channels") else " only."),
        *([f"- Sender-side landmark refinement {meta['landmark_refinement']:g}: the sender moves each transmitted keypoint "
           f"{meta['landmark_refinement']:g} of the way to its face-mesh landmark's motion (codec/model/landmark_refinement.py); "
           "G was trained on such keypoints, and every figure below renders from them (reference = the anchor)."]
          if meta.get("landmark_refinement") else []),
        f"- Data: ../shared/data/clips prepared at 256² ({data_summary['train_frames']} training frames of "
        f"{data_summary['train_people']} people; validation {data_summary['val_frames']} frames of "
        f"{data_summary['val_people']} other people). The split is by person.",
        "- Objective: the paper's losses without the perceptual net: hinge GAN (multi-scale patch D), "
        "equivariance, keypoint prior, head-pose loss against the landmark teacher, deformation prior, plus "
        "decaying landmark guidance that keeps keypoints on mouth, eyes, brows and jaw"
        + (f", (weight {meta['w_landmark_motion']:g}) keypoint motion matched to the landmarks' motion"
           if float(meta.get("w_landmark_motion", 0)) > 0 else "")
        + (f", (weight {meta['w_region_l1']:g}) L1 inside boxes around the driving frame's eyes and mouth"
           if float(meta.get("w_region_l1", 0)) > 0 else "") + ".",
        "",
        f"## Validation ({int(o['count'])} pairs, same person, reference = the clip's first frame)",
        "",
        "Metrics at 256²; AKD in pixels on mediapipe landmarks of output vs real driving frame; identity is the "
        "distance between dlib's face-recognition descriptors of output and real driving frame (lower is better; "
        f"< {SAME_PERSON_DISTANCE} reads as the same person). Each cell is "
        "model / no-motion floor (output = reference) / affine floor (reference warped by the teacher's landmarks).",
        "",
        summary_table(record, floors, METRIC_KEYS),
        "",
        f"Keypoint spread: min pairwise distance {o['kp_min_distance']:.3f} (normalised), "
        f"{o['kp_collapsed']:.1f} keypoints collapsed per frame. Motion gates: {gates}.",
        "",
        *(["## With the enhancement layer (same pairs)", "",
            f"The driving crop area-downscaled to {meta.get('enhancement_size')}², coded by SVT-AV1 (rtc, one stream per clip, as "
            "`python -m codec.data enhance` codes it) and decoded, given to G beside the motion; the rate is the "
            "validation people's mean inter picture at 25 fps (payload only, no packet headers). Motion-only is the row above "
            "without the picture.", "",
            *enhanced_table(record, enhanced), ""] if enhanced else []),
        "## Goals of the issue",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        *[f"| {g} | {m} | {'yes' if ok else 'no'} |" for g, m, ok in goals],
        "",
        "## Examples",
        "",
        "Same person (reference with its keypoints | driving | output with the driving keypoints | occlusion):",
        "",
        "![same person](../../docs/model/same_person.jpg)",
        "",
        "Cross-identity, relative motion (top row: the driver, a validation person; below, each portrait — "
        + ", ".join(f"`stills/art/{n}`" for n in art_names) + " — then it re-rendered with the driver's motion):",
        "",
        "![cross identity](../../docs/model/cross_identity.jpg)",
        *cross_rows,
        "",
        "Training curve (validation metrics against steps and CPU-hours):",
        "",
        "![training curve](../../docs/model/training_curve.png)",
        "",
        *[line for name in meta.get("earlier_curves", [])
          for line in (f"Earlier steps (`{name}`):", "", f"![earlier training curve](../../docs/model/{name})", "")],
        "## Limits",
        "",
        f"Floors: no-motion face PSNR {f0['face_psnr']:.2f} dB, AKD {f0['akd']:.2f} px; affine face PSNR "
        f"{f1['face_psnr']:.2f} dB, AKD {f1['akd']:.2f} px. A CPU-only budget of hours (not the paper's GPU-weeks) "
        "on ~13k frames: expect blur in teeth and hair, and identity drift at large head turns.",
        "",
        f"Expression is the weakest part: the inner-lip gap error is {o['mouth_open_error']:.2f} px against "
        f"{f0['mouth_open_error']:.2f} for the no-motion floor and {f1['mouth_open_error']:.2f} for the affine one (which keeps "
        f"the reference's expression), the eyes' opening error {o['eyes_open_error']:.2f} px against {f0['eyes_open_error']:.2f} "
        f"and {f1['eyes_open_error']:.2f}. Head pose, position and the face's shape follow the driver; how far the mouth opens "
        "and the blinks follow it only as far as these numbers say. AKD on the mouth does not show this (head motion dominates it).",
        "",
    ]
    return "\n".join(lines)


MOTION_NETWORKS = ("canonical_keypoints", "pose_expression")  # L and H: what a sender runs, what the motion id names


def shared_motion_model_id(model: Any, source: Path) -> str:
    """The motion id of the model file ``source`` when ``model``'s L and H equal its own, tensor for tensor (a
    ``--freeze-motion`` fine-tune of it): ``model`` then reads and makes the same motion, and senders and receivers
    of either stay compatible. SystemExit naming the first tensor that differs otherwise."""
    reference, reference_id = checkpoint.load(source)
    for name in MOTION_NETWORKS:
        mine, theirs = getattr(model, name).state_dict(), getattr(reference, name).state_dict()
        for key, tensor in theirs.items():
            other = mine.get(key)
            if other is None or other.shape != tensor.shape or not torch.equal(other.float(), tensor.float()):
                raise SystemExit(f"{name}.{key} differs from {source}'s: this model's motion is not that model's "
                                 "(train with --freeze-motion from it, or ship without --motion-model-from)")
    return checkpoint.read_metadata(source).get("motion_model_id") or reference_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.train.ship", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="training run folder (uses RUN/best.safetensors)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="another generator checkpoint than RUN/best")
    parser.add_argument("--data", type=Path, required=True, help="the prepared dataset the run used")
    parser.add_argument("--art", type=Path, nargs="+", required=True, help="portraits for the cross-identity example")
    parser.add_argument("--pairs", type=int, default=300, help="validation pairs for the card")
    parser.add_argument("--out", type=Path, default=REPO / "codec" / "weights" / "cpu.safetensors")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--history", default="", help="how the run got here, for the model card (e.g. the step a "
                                                       "loss term was switched on, a run it grew from)")
    parser.add_argument("--compare-to", type=Path, nargs="+", default=[],
                        help="the previously shipped weights, then any earlier ones: each validated on the same pairs "
                             "and compared on the card "
                             "(copy codec/weights/cpu.safetensors aside first: --out overwrites it)")
    parser.add_argument("--wall-hours-before", type=float, default=0.0,
                        help="wall hours spent before the run's own count started (a run started with --from-model "
                             "from a file that recorded none); added to the recorded wall hours")
    parser.add_argument("--motion-model-from", type=Path, default=None,
                        help="a model file whose L and H this model kept (a --freeze-motion fine-tune of it): "
                             "checked tensor for tensor, then its motion id is recorded, so senders running it and the "
                             "receivers distilled from it stay compatible")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)

    source = args.checkpoint or args.run / "best.safetensors"
    if not source.is_file():
        raise SystemExit(f"{source} does not exist: no checkpoint passed the motion gates yet (see RUN/log.jsonl)")
    model, _ = checkpoint.load(source)
    source_meta = checkpoint.read_metadata(source)
    step = int(source_meta.get("step", "0"))
    log = [json.loads(line) for line in (args.run / "log.jsonl").read_text().splitlines()]
    at_step = [r for r in log if r.get("kind") == "val" and r["step"] == step]
    train_config = json.loads((args.run / "config.json").read_text())["train"]

    val = PreparedData(args.data, "val")
    train = PreparedData(args.data, "train")
    pairs = validation_pairs(val, args.pairs, seed=1)
    embedder = IdentityEmbedder()
    floors_cache = Path(tempfile.mkdtemp(prefix="kpcall-ship-")) / "floors.json"  # the same pairs' floors, once
    detect = make_landmark_fn()  # one face-mesh detector for every validation pass
    validator = Validator(val, pairs, detect, cache_path=floors_cache, embedder=embedder)
    record, grid = validator.run(lambda batch: model_io.generate(model, batch), "cpu")
    ok, gates = passes_gates(record, validator.floors)
    comparisons = []
    for index, earlier_path in enumerate(args.compare_to):
        earlier, _ = checkpoint.load(earlier_path)
        earlier_record, _ = validator.run(lambda batch, model=earlier: model_io.generate(model, batch), "cpu")
        earlier_step = checkpoint.read_metadata(earlier_path).get("step", "?")
        comparisons.append(comparison_line(earlier_record["overall"], earlier_step, record["overall"], latest=index == 0))
    wall_hours = at_step[0]["wall_hours"] + args.wall_hours_before if at_step else float("nan")
    enhanced = enhanced_records(model, args.data, pairs, detect, embedder, floors_cache) if model.config.enhancement_size else {}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"step": str(step), "cpu_hours": f"{at_step[0]['cpu_hours']:.3f}" if at_step else "",
            "wall_hours": f"{wall_hours:.3f}" if at_step else "",
            "trained_on": "../shared/data/clips (prepared 256²)", "validation": json.dumps(record["overall"])}
    if args.motion_model_from is not None:
        meta["motion_model_id"] = shared_motion_model_id(model, args.motion_model_from)
    model_id = checkpoint.save(model, args.out, metadata=meta, half=True)
    size_bytes = args.out.stat().st_size
    if size_bytes > MAX_SHIPPED_BYTES:
        raise SystemExit(f"{args.out} is {size_bytes / 1e6:.1f} MB, over the 20 MB budget")

    args.docs.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.docs / "same_person.jpg", quality=88)
    portraits = [np.asarray(Image.open(path).convert("RGB")) for path in args.art]
    cross = cross_identity_grid(args.out, val, portraits, embedder=embedder)
    Image.fromarray(cross.grid).save(args.docs / "cross_identity.jpg", quality=88)
    if (args.run / "metrics.png").is_file():
        shutil.copyfile(args.run / "metrics.png", args.docs / "training_curve.png")
    data_summary = {"train_frames": sum(len(c.usable) for c in train.clips), "train_people": len({c.person for c in train.clips}),
                    "val_frames": sum(len(c.usable) for c in val.clips), "val_people": len({c.person for c in val.clips})}
    card_meta = {"model_id": model_id, "params": sum(p.numel() for p in model.parameters()), "step": step,
                 "batch_size": train_config["batch_size"], "w_landmark_motion": train_config.get("w_landmark_motion", 0.0),
                 "w_region_l1": train_config.get("w_region_l1", 0.0),
                 "cpu_hours": at_step[0]["cpu_hours"] if at_step else float("nan"),
                 "wall_hours": wall_hours, "history": args.history, "comparisons": comparisons,
                 "spatial_channels": model.config.expression_spatial_channels,
                 "landmark_refinement": model.config.landmark_refinement,
                 "spatial_side": model.config.pose_input_size // 16,
                 "earlier_curves": sorted(p.name for p in args.docs.glob("training_curve_*.png")),
                 "preset": model.config.name, "enhancement_size": model.config.enhancement_size,
                 "file_name": args.out.name}
    card = model_card(card_meta, record, validator.floors, gates, size_bytes, data_summary, [p.name for p in args.art], cross,
                      enhanced)
    (args.out.parent / "MODEL_CARD.md").write_text(card)
    (args.docs / "validation.json").write_text(json.dumps(
        {"record": record, "floors": validator.floors, "enhanced": {str(q): r for q, r in enhanced.items()},
         "cross_identity": {name: {"to_portrait": p, "to_driver": d}
                            for name, p, d in zip([a.name for a in args.art], cross.to_portrait, cross.to_driver, strict=True)}},
        indent=1))
    print(card)
    if not ok:
        logger.warning("the shipped checkpoint does not pass the motion gates on the larger set: %s", gates)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
