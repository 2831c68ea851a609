"""python -m bench speed: per-frame encoder and render cost of each model preset.

    python -m bench speed --json speed.json [--presets cpu paper-256] [--threads 2] [--runs 30]
    python -m bench speed --device cuda --weights codec/weights/cpu.safetensors RUN/best.safetensors

Encoder: MotionEncoder.encode on a 256² face crop (the sender's per-frame work). Render:
FrameSynthesizer.render with the reference's state prepared once (the receiver's per-frame work).
For a preset with the enhancement branch, also the render with the enhancement picture, and the sender's
whole per-frame work with the layer: MotionEncoder.encode plus the enhancement layer's encode (area downscale
to E×E, SVT-AV1 at the default qp; inter frames of a moving picture, the first key frame in the warm-up); both again
(``*_largest``) with the largest picture of the ladder's top rungs (``codec.enhancement.picture_rate``). Medians after
warm-up; peak resident memory of this process (CPU) or peak CUDA memory. --presets: random weights (the cost
does not depend on the weights' values); --weights: model files, each with the preset its metadata names.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from codec.enhancement import lowres_codec
from codec.enhancement.picture_rate import LADDER as PICTURE_LADDER
from codec.model import PRESETS, FaceVid2VidModel, FrameSynthesizer, MotionEncoder, ModelConfig, checkpoint
from codec.model.loading import pick_device
from codec.motion import MotionParams

log = logging.getLogger(__name__)

DEFAULT_PRESETS = ["cpu", "cpu-enh64", "paper-256"]


def _median_ms(fn: Any, runs: int, warmup: int, sync: bool) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure_preset(name: str, device: torch.device, runs: int, warmup: int, precision: str = "auto") -> dict[str, Any]:
    """A preset with seeded random weights."""
    torch.manual_seed(0)
    model = FaceVid2VidModel(ModelConfig.preset(name)).to(device).eval()
    return measure_model(model, device, runs, warmup, precision)


def measure_model(model: FaceVid2VidModel, device: torch.device, runs: int, warmup: int, precision: str = "auto") -> dict[str, Any]:
    encoder, synth = MotionEncoder(model), FrameSynthesizer(model, precision=precision)
    size = model.config.image_size
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    state = synth.prepare(face)
    motion = MotionParams(5.0, -3.0, 1.0, np.zeros(3), rng.normal(0, 0.02, (model.config.num_keypoints, 3)),
                          np.ones(model.config.num_keypoints, bool))
    sync = device.type == "cuda"
    if sync:
        torch.cuda.reset_peak_memory_stats()
    result = {
        "preset": model.config.name,
        "image_size": size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "render_precision": synth.precision,
        "encode_precision": encoder.precision,
        "params": int(sum(p.numel() for p in model.parameters())),
        "encode_ms": _median_ms(lambda: encoder.encode(face), runs, warmup, sync),
        "render_ms": _median_ms(lambda: synth.render(state, motion), runs, warmup, sync),
        "prepare_ms": _median_ms(lambda: synth.prepare(face), max(3, runs // 5), 1, sync),
    }
    if model.config.enhancement_size:
        e = model.config.enhancement_size
        picture = rng.integers(0, 256, (e, e, 3), dtype=np.uint8)
        result["render_enhanced_ms"] = _median_ms(lambda: synth.render(state, motion, enhancement=picture), runs, warmup, sync)
        largest = max(rate.side(e) for rate in PICTURE_LADDER if rate.side(e) <= size)  # the top rungs' picture
        result["enhancement_largest_size"] = largest
        if largest != e:
            big = rng.integers(0, 256, (largest, largest, 3), dtype=np.uint8)
            result["render_enhanced_largest_ms"] = _median_ms(lambda: synth.render(state, motion, enhancement=big), runs, warmup, sync)
        if lowres_codec.codecs_available():
            result.update(_measure_sender_with_layer(encoder, e, runs, warmup, sync))
            if largest != e:
                result.update({f"{k}_largest": v for k, v in _measure_sender_with_layer(encoder, largest, runs, warmup, sync).items()
                               if k != "enhancement_qp"})
    result["render_fps"] = 1000.0 / result["render_ms"]
    result["peak_memory_mb"] = (torch.cuda.max_memory_allocated() / 2**20 if sync
                                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def _moving_faces(size: int, count: int) -> list[np.ndarray]:
    """count (size, size, 3) uint8 frames of a smooth random picture drifting a pixel a frame (SVT-AV1's cost
    depends on the content: white noise would be its worst case, a still picture its best)."""
    rng = np.random.default_rng(1)
    canvas = cv2.GaussianBlur(rng.integers(0, 256, (size + count, size + count, 3), dtype=np.uint8), (0, 0), 3)
    return [np.ascontiguousarray(canvas[i:i + size, i:i + size]) for i in range(count)]


def _measure_sender_with_layer(encoder: MotionEncoder, picture_size: int, runs: int, warmup: int,
                               sync: bool) -> dict[str, float]:
    """The sender's per-frame work with the enhancement layer: motion, then the picture (its first frame, a key
    frame, in the warm-up)."""
    faces = iter(_moving_faces(encoder.image_size, 2 * (runs + warmup) + 2))
    with lowres_codec.LowResEncoder(size=picture_size) as layer:
        picture_ms = _median_ms(lambda: layer.encode(next(faces)), runs, warmup, sync=False)

        def both() -> None:
            face = next(faces)
            encoder.encode(face)
            layer.encode(face)

        both_ms = _median_ms(both, runs, warmup, sync)
    return {"enhancement_encode_ms": picture_ms, "encode_enhanced_ms": both_ms, "enhancement_qp": float(lowres_codec.DEFAULT_QP)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def add_speed_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("speed", help="encoder and render ms/frame per model preset", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=None, help="write results here")
    p.add_argument("--presets", nargs="+", default=None, choices=sorted(PRESETS),
                   help=f"presets with random weights (default: {' '.join(DEFAULT_PRESETS)}, unless --weights is given)")
    p.add_argument("--weights", type=Path, nargs="+", default=[], metavar="FILE",
                   help="model files, shipped or trained (preset read from each file), measured besides --presets")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N (default %(default)s)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="render precision (auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32)")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)


def _runs(runs: int, preset: str, device: torch.device) -> int:
    """paper-256 on a CPU takes seconds a frame: a tenth of the runs (at least 3)."""
    return runs if preset != "paper-256" or device.type == "cuda" else max(3, runs // 10)


def _print(name: str, r: dict[str, Any]) -> dict[str, Any]:
    print(f"{name:10s} {r['image_size']}² on {r['device']} ({r['threads']} threads): encode {r['encode_ms']:.1f} ms, "
          f"render {r['render_ms']:.1f} ms ({r['render_fps']:.1f} fps, {r['render_precision']}), prepare {r['prepare_ms']:.0f} ms, "
          f"{r['params'] / 1e6:.2f} M params, peak {r['peak_memory_mb']:.0f} MB"
          + (f"; with the enhancement picture {r['render_enhanced_ms']:.1f} ms" if "render_enhanced_ms" in r else "")
          + (f"; sender with the layer {r['encode_enhanced_ms']:.1f} ms (picture alone {r['enhancement_encode_ms']:.1f} ms)"
             if "encode_enhanced_ms" in r else ""), flush=True)
    return r


def run_speed_from_args(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    try:
        device = pick_device(args.device)
        models = [(str(path), *checkpoint.load(path, device=device)) for path in args.weights]
    except ValueError as exc:  # CheckpointError is one
        log.error("bench speed: %s", exc)
        return 2
    presets = args.presets if args.presets is not None else ([] if models else DEFAULT_PRESETS)
    results = {}
    for name in presets:
        runs = _runs(args.runs, name, device)
        results[name] = _print(name, measure_preset(name, device, runs, min(args.warmup, runs), args.precision))
    for path, model, _ in models:
        name, runs = f"{model.config.name}:{path}", _runs(args.runs, model.config.name, device)
        result = {**measure_model(model, device, runs, min(args.warmup, runs), args.precision), "weights": path}
        results[name] = _print(name, result)
    out = {"machine": {"cpu_count": os.cpu_count(), "cpu": _cpu_name(), "torch": torch.__version__,
                       "load_average": os.getloadavg()},
           "method": ("median ms over --runs calls after --warmup calls, one 256² frame per call, random weights for "
                      "--presets (cost does not depend on them), the file's own for --weights: encode = MotionEncoder.encode, "
                      "render = FrameSynthesizer.render with the "
                      "reference prepared once, render_enhanced = the same with the model's enhancement picture (64² for cpu-enh64), "
                      "encode_enhanced = MotionEncoder.encode + the enhancement layer's encode (downscale + SVT-AV1 at "
                      "enhancement_qp) of one frame, inter frames of a smooth picture drifting 1 px a frame; *_largest: both "
                      "with the ladder's largest picture (enhancement_largest_size); "
                      "enhancement_encode = the layer's encode alone"),
           "presets": results,
           "encode_ms": {k: v["encode_ms"] for k, v in results.items()},
           "render_ms": {k: v["render_ms"] for k, v in results.items()},
           "params": {k: v["params"] for k, v in results.items()}}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0
