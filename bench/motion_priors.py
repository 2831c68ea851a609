"""The rate controller's motion priors, measured on real faces: payload bytes per frame by quantizer, K and packing.

Run::

    python -m bench priors --json OUT.json                  # training people's clips (codec.data.split), 150 frames each
    python -m bench priors --people train --clips-per-person 1 --frames 150 --json OUT.json

Until a rung's own packets are measured, ``sender.controller`` predicts its motion payload from a prior
``a + b·K + (c + d·K) / fpp`` bytes per frame for each quantizer preset (``_PRIORS``). This measures the
payload of every (preset, K, frames per packet) the way a sender makes it: each clip cropped by the sender's
face pipeline and coded by the shipped model's motion encoder with the sender's refinement and smoothing
(``bench.codecs.ours``), then packed by the sender's packetizer with the sender's causal choice of keypoints and
receiver feedback 100 ms after each packet (``bench.codecs.motion_stream``). As the controller does, the
packets of a rung's first ``SKIP_AFTER_CHANGE_S`` are left out (KEY packets before the first acknowledgement).
The fit is least squares on the relative error, per preset; the JSON holds the measured table, the fit and its
largest relative error, and the clips used.

Training people only by default: the priors are constants the controller is tuned with, and figures are
measured on the test group.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.codecs.base import BenchClip
from bench.codecs.motion_stream import stream_motion
from bench.codecs.ours import OursFactory
from bench.rd import PEOPLE_CHOICES, RdConfig, RdInputError, load_clips
from codec.quantize import PRESETS_BY_NAME
from sender.controller import SKIP_AFTER_CHANGE_S

logger = logging.getLogger(__name__)

PRESETS = ("fine", "default", "coarse")
KEYPOINTS = (0, 4, 8, 12, 20)
FRAMES_PER_PACKET = (1, 2, 3, 4, 6, 8)


@dataclass(frozen=True)
class PriorFit:
    """``a + b·K + (c + d·K) / fpp`` payload bytes per frame for one preset, and its worst relative error."""

    preset_id: int
    coefficients: tuple[float, float, float, float]  # (a, b, c, d)
    max_relative_error: float

    def predict(self, keypoints: int, frames_per_packet: int) -> float:
        a, b, c, d = self.coefficients
        return a + b * keypoints + (c + d * keypoints) / frames_per_packet


def fit_prior(preset_id: int, rows: Sequence[tuple[int, int, float]]) -> PriorFit:
    """Least squares on the relative error over ``rows`` of (K, frames per packet, measured bytes per frame)."""
    if len(rows) < 4:
        raise ValueError(f"need at least 4 (K, fpp) points to fit 4 coefficients, got {len(rows)}")
    k, fpp, y = (np.array(v, np.float64) for v in zip(*rows))
    if not np.all(y > 0):
        raise ValueError("every measured payload must be positive")
    design = np.stack([np.ones_like(k), k, 1 / fpp, k / fpp], axis=1) / y[:, None]  # (N, 4), rows weighted by 1/y
    coefficients, *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
    fit = PriorFit(preset_id, tuple(float(round(c, 3)) for c in coefficients), 0.0)  # type: ignore[arg-type]
    error = max(abs(fit.predict(int(kk), int(ff)) / yy - 1) for kk, ff, yy in zip(k, fpp, y))
    return replace(fit, max_relative_error=float(error))


def payload_per_frame(packets: Sequence[int], frames_per_packet: int, skip_frames: int) -> float:
    """Bytes per frame of ``packets`` (one per ``frames_per_packet`` frames, the last maybe short) after the first
    ``skip_frames`` frames' packets."""
    skip = -(-skip_frames // frames_per_packet)
    kept = packets[skip:-1] if len(packets) > skip + 1 else packets[skip:]  # the flushed last packet may be short
    if not kept:
        raise ValueError(f"no packet left after skipping {skip_frames} frames: use longer clips")
    return float(sum(kept)) / (len(kept) * frames_per_packet)


def payload_table(
    clips: Sequence[BenchClip], ours: OursFactory, presets: Sequence[str], keypoints: Sequence[int],
    frames_per_packet: Sequence[int], skip_frames: int,
) -> list[dict[str, Any]]:
    """Mean, min and max over ``clips`` of the payload bytes per frame of each (preset, K, frames per packet)."""
    model_k = ours.num_keypoints
    if any(not 0 <= k <= model_k for k in keypoints):
        raise RdInputError(f"keypoints must be in [0, {model_k}] for this model, got {list(keypoints)}")
    per_clip: dict[tuple[str, int, int], list[float]] = {}
    for clip in clips:
        encoded = ours.encoded(clip)
        logger.info("encoded %s", clip.clip_id)
        for preset in presets:
            preset_id = PRESETS_BY_NAME[preset].preset_id
            for k in keypoints:
                for fpp in frames_per_packet:
                    stream = stream_motion(encoded.motions, clip.fps, preset_id, fpp, None if k == model_k else k,
                                           encoded.expression_baseline)
                    per_clip.setdefault((preset, k, fpp), []).append(payload_per_frame(stream.packets, fpp, skip_frames))
    return [{"preset": p, "keypoints": k, "frames_per_packet": f, "bytes_per_frame": round(float(np.mean(v)), 3),
             "bytes_per_frame_min": round(float(np.min(v)), 3), "bytes_per_frame_max": round(float(np.max(v)), 3)}
            for (p, k, f), v in per_clip.items()]


def fit_table(table: Sequence[dict[str, Any]]) -> dict[str, PriorFit]:
    """One ``PriorFit`` per preset in ``table`` (rows of ``payload_table``)."""
    presets = dict.fromkeys(row["preset"] for row in table)
    return {preset: fit_prior(PRESETS_BY_NAME[preset].preset_id,
                              [(r["keypoints"], r["frames_per_packet"], r["bytes_per_frame"])
                               for r in table if r["preset"] == preset])
            for preset in presets}


def measure(
    config: RdConfig, weights: str | None, presets: Sequence[str], keypoints: Sequence[int],
    frames_per_packet: Sequence[int],
) -> dict[str, Any]:
    """Every clip's motion through every (preset, K, fpp): the table, the fits and the run's conditions."""
    started = time.time()
    clips, source = load_clips(config, lambda message: logger.info("%s", message))
    ours = OursFactory.load(weights)
    skip_frames = int(round(SKIP_AFTER_CHANGE_S * config.fps))
    table = payload_table(clips, ours, presets, keypoints, frames_per_packet, skip_frames)
    fits = {preset: {"preset_id": fit.preset_id, "coefficients": list(fit.coefficients),
                     "max_relative_error": round(fit.max_relative_error, 4)}
            for preset, fit in fit_table(table).items()}
    return {
        "what": "motion payload bytes per frame by (preset, K, frames per packet) on real faces; the controller's _PRIORS",
        "model": ours.describe(), "source": source, "fps": config.fps, "frames_per_clip": config.frames,
        "skipped_frames_per_stream": skip_frames, "table": table, "fits": fits,
        "priors_literal": {fits[p]["preset_id"]: tuple(fits[p]["coefficients"]) for p in presets},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "seconds": round(time.time() - started, 1),
    }


def add_priors_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``python -m bench priors``."""
    parser = subparsers.add_parser("priors", help="the controller's motion priors, measured on real faces",
                                   description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clips", default=None, help="folder of clips (default: ../shared/data/clips)")
    parser.add_argument("--people", default="train", choices=PEOPLE_CHOICES, help="whose clips (default: train)")
    parser.add_argument("--clips-per-person", type=int, default=1, help="clips per person (default: 1)")
    parser.add_argument("--frames", type=int, default=150, help="frames per clip at --fps (default: 150)")
    parser.add_argument("--fps", type=float, default=25.0, help="the call's frame rate (default: 25)")
    parser.add_argument("--weights", default=None, help="model weights (default: the shipped file)")
    parser.add_argument("--json", type=Path, default=None, help="write the table and the fits here")


def run_priors_from_args(args: argparse.Namespace) -> int:
    """The ``priors`` sub-command body, for the ``python -m bench`` dispatcher."""
    config = RdConfig(clips=args.clips, people=args.people, clips_per_person=args.clips_per_person,
                      frames=args.frames, fps=args.fps, codecs=("ours",))
    try:
        if args.frames < 3 * args.fps:
            raise RdInputError(f"--frames must cover at least 3 s at --fps (>= {3 * args.fps:g}), got {args.frames}")
        result = measure(config, args.weights, PRESETS, KEYPOINTS, FRAMES_PER_PACKET)
    except RdInputError as exc:
        print(f"python -m bench priors: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    for preset, fit in result["fits"].items():
        print(f"{preset}: {fit['coefficients']} (max relative error {fit['max_relative_error']:.1%})")
    print(f"_PRIORS = {result['priors_literal']}")
    return 0
