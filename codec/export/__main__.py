"""python -m codec.export: write the receiver's networks as ONNX (reference.onnx, render.onnx, manifest.json).

    python -m codec.export --weights codec/weights/cpu.safetensors --out /tmp/kpcall-onnx
    python -m codec.export --out /tmp/kpcall-onnx --check [--reference portrait.png] [--frames 8]
    python -m codec.export --weights codec/weights/cpu.safetensors --weights codec/weights/web.safetensors --out DIR

With several ``--weights`` (best picture first) each model goes to DIR/<preset>/ and DIR/index.json lists them in
that order; a browser receiver (receive.html) measures them and renders with the best one it can run in time.
All must read the same motion (one motion_model_id: a distilled model and its teacher).

``--check`` then renders ``--frames`` frames of the seeded synthetic trace with onnxruntime and with PyTorch
(the receiver's FrameSynthesizer, fp32) from the same reference and prints the PSNR and the largest error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from codec.export.onnx_export import ExportedFiles, export_onnx, export_variants
from codec.model.loading import default_weights_path, load_model_for_inference

log = logging.getLogger(__name__)


def read_reference(path: Path | None, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB: the image at ``path`` resized, or scikit-image's astronaut (its face's square)."""
    from PIL import Image

    if path is None:
        from skimage import data

        image = Image.fromarray(data.astronaut()[0:256, 128:384])
    else:
        image = Image.open(path).convert("RGB")
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def check_motions(num_keypoints: int, frames: int) -> list:
    """``frames`` frames of the seeded synthetic trace, every third with only the first half of δ present."""
    from codec.synthetic_trace import synthetic_trace

    motions = synthetic_trace(frames * 10, 25.0, num_keypoints=num_keypoints, seed=0)[::10]
    half = np.arange(num_keypoints) < num_keypoints // 2
    return [m.with_present(half) if i % 3 == 2 else m for i, m in enumerate(motions)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.export", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, action="append", default=None,
                        help="model file (default: shipped); repeat for a variant list, best picture first")
    parser.add_argument("--out", type=Path, required=True, help="folder for the ONNX files (created)")
    parser.add_argument("--fp32-weights", action="store_true", help="store weights as fp32 (default: fp16 where exact)")
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch afterwards")
    parser.add_argument("--reference", type=Path, default=None, help="portrait for --check (default: astronaut)")
    parser.add_argument("--frames", type=int, default=8, help="frames for --check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    weights = args.weights or [default_weights_path()]
    if len(weights) > 1:
        if args.check:
            parser.error("--check compares one model: give one --weights")
        index = export_variants(weights, args.out, fp16_weights=not args.fp32_weights)
        log.info("%s: %s", index, ", ".join(v["folder"] for v in json.loads(index.read_text())["variants"]))
        return 0
    model, info = load_model_for_inference(weights[0], device="cpu")
    files: ExportedFiles = export_onnx(model, info, args.out, fp16_weights=not args.fp32_weights)
    manifest = json.loads(files.manifest.read_text())
    for key in ("reference", "render"):
        log.info("%s: %s (%.1f MB)", key, args.out / manifest[key]["file"], manifest[key]["bytes"] / 1e6)
    if args.check:
        from codec.export.verify import verify_export

        reference = read_reference(args.reference, model.config.image_size)
        check = verify_export(files, model, reference, check_motions(model.config.num_keypoints, args.frames))
        log.info("check over %d frames: min PSNR %.1f dB, max abs error %.2e (render), %.2e (reference)",
                 len(check.psnr_db), check.min_psnr_db, check.max_abs_error, check.reference_max_abs_error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
