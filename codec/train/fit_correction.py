"""Fit a second picture correction of G for the ladder's larger pictures (96²–256²), everything else frozen.

    python -m codec.train.fit_correction --model codec/weights/cpu.safetensors --data /work/prepared/s256 \
        --cache /work/state/corr --out codec/weights/cpu.safetensors

Why: the correction (``codec.model.enhancement_branch.PictureCorrection``, ~12k parameters) was trained inside the
whole model on 64² pictures only, under its perceptual and adversarial losses. The ladder's top rungs send 128²–256²
pictures, where it trusts a sharp picture too little (at 256² and qp 48, G's output is 1.5 dB under the decoded
picture itself). One correction refitted for every side gained on those and lost on the coarse 64² rungs (validation
people, 2026-12-07: qp 63 every 3rd frame -1.1 dB); so the model grows a second one (``ModelConfig.
enhancement_large_correction``; the generator uses it for pictures larger than E), started from the first and fitted
on the larger sides alone. Everything else is bit-identical: G's output without a picture or with an E² one, L and H
(the motion) and the reference's prepared features. The model file keeps its motion id (``motion_model_id``), and
the web receivers distilled from it still match.

Stage 1, cached under ``--cache`` (skipped when it is there; delete it to rebuild): for ``--people`` training people,
one clip each, ``--frames`` driving frames: the driving frame, and for each (side, qp) of ``COMBOS`` G's output
before the correction (with that picture in G's branch) and the decoded pictures of the frame and of the 1 and 2
frames before it (a rung with a picture every 2nd or 3rd frame renders with a stale one), coded as a call codes them
(``bench.codecs.ours_enhanced.code_enhancement``). Stage 2: Adam on the second correction alone, mean squared
error against the driving frame; a batch is one side larger than E, its pictures fresh with probability
1 - ``--stale`` and 1 or 2 frames old otherwise. A few cached people are held out and their PSNR printed per side and age. Validation and
test people are never read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codec.model import FaceVid2VidModel, checkpoint

logger = logging.getLogger("codec.train.fit_correction")

COMBOS = ((128, 55), (128, 48), (160, 55), (160, 48), (192, 55), (256, 55), (256, 48), (256, 63))  # (side, qp); the
# shipped file's was fitted on a cache that also held (64, 55) and (64, 40), which stage 2 leaves out
AGES = (0, 1, 2)  # a picture of the frame itself, or of 1 or 2 frames before
HELD_OUT_PEOPLE = 4


@dataclass(frozen=True)
class FitConfig:
    model: Path
    data: Path
    cache: Path
    out: Path
    people: int = 36
    frames: int = 20
    steps: int = 1000
    lr: float = 3e-4
    batch: int = 8
    stale: float = 0.5
    combos: tuple[tuple[int, int], ...] = COMBOS
    seed: int = 0


def _training_clips(data: Path, people: int, seed: int) -> list[dict[str, object]]:
    """One clip per training person, ``people`` of them, in a seeded order."""
    manifest = json.loads((data / "manifest.json").read_text())
    train = [c for c in manifest["clips"] if c["split"] == "train"]
    random.Random(seed + 1).shuffle(train)
    first: dict[str, dict[str, object]] = {}
    for clip in train:
        first.setdefault(str(clip["person"]), clip)
    clips = list(first.values())[:people]
    if len(clips) <= HELD_OUT_PEOPLE:
        raise ValueError(f"{data} has {len(clips)} training people; fitting needs more than {HELD_OUT_PEOPLE} (some are held out)")
    return clips


def build_cache(config: FitConfig) -> None:
    """Stage 1 (see the module docstring): writes pre.npy, target.npy (N, S, S, 3) uint8, index.npy (N, 3) [side, j,
    person], pictures{side}_age{a}.npy; N = people · frames · len(combos)."""
    from bench.codecs.ours_enhanced import code_enhancement
    from codec.model.loading import load_model_for_inference
    from codec.model.wrappers import FrameSynthesizer, MotionEncoder

    model, info = load_model_for_inference(str(config.model))
    synthesizer, encoder = FrameSynthesizer(model, info=info), MotionEncoder(model, info=info)
    generator = model.generator
    correction = generator.correction
    if correction is None:
        raise ValueError(f"{config.model} has no enhancement branch: there is no picture correction to fit")
    size = model.config.image_size
    sides = [s for s, _ in config.combos]
    if max(sides) > size or min(sides) < model.config.enhancement_size:
        raise ValueError(f"picture sides {sorted(set(sides))} must lie in [E, S] = [{model.config.enhancement_size}, {size}]")
    clips = _training_clips(config.data, config.people, config.seed)
    n = len(clips) * config.frames * len(config.combos)
    config.cache.mkdir(parents=True, exist_ok=True)
    pre = np.lib.format.open_memmap(config.cache / "pre.npy.part", "w+", np.uint8, (n, size, size, 3))
    target = np.lib.format.open_memmap(config.cache / "target.npy.part", "w+", np.uint8, (n, size, size, 3))
    pictures: dict[tuple[int, int], list[np.ndarray]] = {(s, a): [] for s in set(sides) for a in AGES}
    index: list[tuple[int, int, int]] = []
    rng = np.random.default_rng(config.seed)
    for person, clip in enumerate(clips):
        frames = np.asarray(np.load(config.data / "clips" / str(clip["id"]) / "frames.npy", mmap_mode="r")[:120])
        if frames.shape[1:3] != (size, size):
            raise ValueError(f"clip {clip['id']} is {frames.shape[1]}², the model renders {size}²")
        count = min(config.frames, len(frames) - 1)
        picks = sorted(int(i) for i in rng.choice(np.arange(1, len(frames)), size=count, replace=False))
        state = synthesizer.prepare(frames[0])  # the clip's first frame as the portrait, as validation pairs do
        motions = {i: encoder.encode(frames[i]) for i in picks}
        for side, qp in config.combos:
            coded = code_enhancement(frames, side, qp, float(clip.get("fps") or 25.0), 1)  # type: ignore[arg-type]
            generator.correction = None  # G's output before the correction, the picture still in its branch
            try:
                for i in picks:
                    pre[len(index)] = synthesizer.render(state, motions[i], enhancement=coded.pictures[i])
                    target[len(index)] = frames[i]
                    for age in AGES:
                        pictures[(side, age)].append(coded.pictures[max(0, i - age)])
                    index.append((side, len(pictures[(side, 0)]) - 1, person))
            finally:
                generator.correction = correction
        logger.info("cache: person %d/%d (%s), %d triples", person + 1, len(clips), clip["id"], len(index))
    pre.flush()
    target.flush()
    del pre, target
    for (side, age), stack in pictures.items():
        np.save(config.cache / f"pictures{side}_age{age}.npy", np.stack(stack))
    np.save(config.cache / "index.npy", np.array(index[:n], np.int64))
    (config.cache / "pre.npy.part").rename(config.cache / "pre.npy")  # last: a cache with pre.npy is complete
    (config.cache / "target.npy.part").rename(config.cache / "target.npy")


class _Cache:
    def __init__(self, folder: Path) -> None:
        self.pre = np.load(folder / "pre.npy", mmap_mode="r")  # (N, S, S, 3) uint8
        self.target = np.load(folder / "target.npy", mmap_mode="r")  # (N, S, S, 3) uint8
        self.index = np.load(folder / "index.npy")  # (N, 3): side, row in that side's pictures, person
        self.pictures = {(int(s), a): np.load(folder / f"pictures{int(s)}_age{a}.npy")
                         for s in np.unique(self.index[:, 0]) for a in AGES}

    def batch(self, rows: list[int], ages: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> G's output before the correction (B, 3, S, S), the pictures (B, 3, P, P), the driving frames (B, 3, S, S)."""
        def tensor(arrays: list[np.ndarray]) -> torch.Tensor:
            return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)

        pictures = [self.pictures[(int(self.index[r, 0]), a)][int(self.index[r, 1])] for r, a in zip(rows, ages)]
        return tensor([self.pre[r] for r in rows]), tensor(pictures), tensor([self.target[r] for r in rows])


def _held_out_psnr(correction: torch.nn.Module, cache: _Cache, rows: np.ndarray) -> dict[str, float]:
    """Mean PSNR (dB, whole frame) of the corrected output per side and picture age on the held-out people."""
    out = {}
    correction.eval()
    with torch.no_grad():
        for side in sorted({int(s) for s in cache.index[rows, 0]}):
            chosen = [int(r) for r in rows if cache.index[r, 0] == side]
            for age in (0, 2):
                psnrs = []
                for j in range(0, len(chosen), 16):
                    part = chosen[j:j + 16]
                    image, picture, target = cache.batch(part, [age] * len(part))
                    mse = (correction(image, picture) - target).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
                    psnrs += (-10 * mse.log10()).tolist()
                out[f"{side}/{age}"] = round(float(np.mean(psnrs)), 3)
    correction.train()
    return out


def fit(config: FitConfig) -> dict[str, object]:
    """Stage 2 (see the module docstring); writes ``config.out`` and returns the held-out PSNR before and after."""
    from codec.model.loading import load_model_for_inference

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    source, source_model_id = checkpoint.load(config.model)
    if source.generator.correction is None:
        raise ValueError(f"{config.model} has no enhancement branch: there is no picture correction to fit")
    model = FaceVid2VidModel(dataclasses.replace(source.config, enhancement_large_correction=True))
    missing = model.load_state_dict(source.state_dict(), strict=False).missing_keys
    if source.generator.correction_large is None:
        assert all(k.startswith("generator.correction_large.") for k in missing), missing
        model.generator.correction_large.load_state_dict(source.generator.correction.state_dict())  # type: ignore[union-attr]
    model = model.float().eval()
    correction = model.generator.correction_large
    assert correction is not None
    cache = _Cache(config.cache)
    people = np.unique(cache.index[:, 2])
    held = set(people[-HELD_OUT_PEOPLE:].tolist())
    held_rows = np.array([r for r in range(len(cache.index)) if cache.index[r, 2] in held])
    train_rows = np.array([r for r in range(len(cache.index)) if cache.index[r, 2] not in held])
    sides = sorted({int(s) for s in cache.index[:, 0]} - {model.config.enhancement_size})
    if not sides:
        raise ValueError(f"the cache in {config.cache} holds no picture larger than E = {model.config.enhancement_size}")
    train_rows = train_rows[np.isin(cache.index[train_rows, 0], sides)]
    held_rows = held_rows[np.isin(cache.index[held_rows, 0], sides)]
    before = _held_out_psnr(correction, cache, held_rows)
    logger.info("held-out PSNR before: %s", before)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in correction.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(correction.parameters(), lr=config.lr)
    start = time.perf_counter()
    correction.train()
    for step in range(1, config.steps + 1):
        side = sides[int(rng.integers(len(sides)))]
        candidates = train_rows[cache.index[train_rows, 0] == side]
        rows = sorted(int(r) for r in rng.choice(candidates, size=min(config.batch, len(candidates)), replace=False))
        ages = [0 if rng.random() >= config.stale else int(rng.integers(1, 3)) for _ in rows]
        image, picture, target = cache.batch(rows, ages)
        if rng.random() < 0.5:  # mirrored faces are faces too
            image, picture, target = image.flip(-1), picture.flip(-1), target.flip(-1)
        loss = (correction(image, picture) - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 250 == 0 or step == config.steps:
            logger.info("step %d (%.0f s): held-out PSNR %s", step, time.perf_counter() - start,
                        _held_out_psnr(correction, cache, held_rows))
    after = _held_out_psnr(correction, cache, held_rows)
    metadata = checkpoint.read_metadata(config.model)
    motion_id = metadata.get("motion_model_id") or metadata.get("model_id") or source_model_id
    keep = {k: v for k, v in metadata.items() if k not in {"format", "format_version", "config", "model_id"}}
    keep["motion_model_id"] = str(motion_id)  # L and H unchanged: senders keep announcing it
    keep["correction_fit"] = json.dumps({"people": config.people, "frames": config.frames, "steps": config.steps, "lr": config.lr,
                                         "stale": config.stale, "combos": [list(c) for c in config.combos],
                                         "held_out_psnr_before": before, "held_out_psnr_after": after})
    model_id = checkpoint.save(model.eval(), config.out, keep, half=_is_half(config.model))
    load_model_for_inference(str(config.out))  # it loads as a receiver would
    return {"model_id": model_id, "motion_model_id": str(motion_id), "before": before, "after": after}


def _is_half(path: Path) -> bool:
    """Whether a model file stores fp16 weights (the shipped one does); the fitted file is written alike."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return any(f.get_slice(k).get_dtype() == "F16" for k in f.keys())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.train.fit_correction", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the model file whose correction is fitted")
    parser.add_argument("--data", type=Path, required=True, help="the prepared dataset (its training people only)")
    parser.add_argument("--cache", type=Path, required=True, help="stage 1's folder (built when it holds no pre.npy)")
    parser.add_argument("--out", type=Path, required=True, help="the model file to write (may be --model)")
    parser.add_argument("--people", type=int, default=FitConfig.people)
    parser.add_argument("--frames", type=int, default=FitConfig.frames, help="driving frames per person")
    parser.add_argument("--steps", type=int, default=FitConfig.steps)
    parser.add_argument("--lr", type=float, default=FitConfig.lr)
    parser.add_argument("--batch", type=int, default=FitConfig.batch)
    parser.add_argument("--stale", type=float, default=FitConfig.stale, help="share of batches' pictures 1 or 2 frames old")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = FitConfig(args.model, args.data, args.cache, args.out, args.people, args.frames, args.steps, args.lr,
                       args.batch, args.stale)
    if not (config.cache / "pre.npy").exists():
        build_cache(config)
    result = fit(config)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
