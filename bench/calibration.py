"""python -m bench calibration: what the sender's keypoint calibration buys, on frames the fit never saw.

    python -m bench calibration --people val --json OUT.json     # validation people (used to pick the design)
    python -m bench calibration --people test --json OUT.json    # the test group (reported figures)

For each person's first clip (``--frames`` at 25 fps, cropped as ``bench rd`` crops; reference = frame 0), the
motion the sender sends without calibration (encoder, landmark refinement, smoothing: ``bench rd``'s path) is
rendered with and without an offset fitted (``codec.model.keypoint_calibration``) as each of the sender's fit profiles
would fit it (``sender.calibration.FULL``, ``LIGHT``: their frame count and steps), on frames spread over the
clip's first half (every ``--spacing``-th driving frame, the profile's count evenly among them), and scored
(``bench.quality.score_frames``: face PSNR, AKD, the openings' errors) on every ``--spacing``-th frame of its second
half. In a call the fit sees the first second only and its offset then holds for the rest; here the window is the
first half so that the held-out frames are far from it. The identity check a sender runs first is not applied: the
reference is the person's own frame.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bench.codecs.base import BenchClip
from bench.rd import PEOPLE_CHOICES, RdConfig, load_clips, machine_info

logger = logging.getLogger(__name__)

DEFAULT_FRAMES = 100
DEFAULT_SPACING = 6
METRICS = ("face_psnr", "psnr", "face_ssim", "akd", "akd_mouth", "akd_eyes", "mouth_open_error", "eyes_open_error")


def split_frames(num_driving: int, spacing: int) -> tuple[list[int], list[int]]:
    """Driving-frame indices (1-based, frame 0 is the reference) the fit may use (first half) and the scored ones
    (second half), every ``spacing``-th."""
    if spacing < 1 or num_driving < 4 * spacing:
        raise ValueError(f"a clip needs at least {4 * spacing} driving frames at spacing {spacing}, got {num_driving}")
    half = num_driving // 2
    return list(range(1, half + 1, spacing)), list(range(half + 1, num_driving + 1, spacing))


def evaluate_clip(factory: Any, clip: BenchClip, profiles: Mapping[str, Any], spacing: int,
                  detector: Any, embedder: Any, tracked_steps: int = 0) -> dict[str, dict[str, float]]:
    """{variant: {metric: mean over the scored frames}} for one clip; ``profiles``: name -> FitProfile or None (no
    calibration). ``tracked_steps`` > 0 adds the variant ``<first profile with a fit>+tracked``: its offset, then a
    ``KeypointTracker`` of that many steps over every frame of the second half, in order."""
    from bench.quality import detect_landmarks, score_frames
    from codec.face.regions import face_hull_mask
    from codec.model.keypoint_calibration import apply_offset, calibrate_keypoints

    model = factory.encoder.model
    motions = factory.encoded(clip).motions  # frames 1..N-1
    portrait = factory.reference(clip).sent.image
    fit_pool, scored = split_frames(clip.num_driving, spacing)
    originals = clip.frames[scored]
    original_landmarks = detect_landmarks(detector, originals)
    pool_landmarks = detect_landmarks(detector, clip.frames[fit_pool])
    out: dict[str, dict[str, float]] = {}
    offsets: dict[str, np.ndarray | None] = {}
    for name, profile in profiles.items():
        offset = None
        seconds = 0.0
        if profile is not None:
            picks = np.unique(np.linspace(0, len(fit_pool) - 1, min(profile.frames, len(fit_pool))).round().astype(int))
            picks = [int(p) for p in picks if np.all(np.isfinite(pool_landmarks[p]))]
            if picks:
                size = clip.frames.shape[1]
                result = calibrate_keypoints(model, portrait, [clip.frames[fit_pool[p]] for p in picks],
                                             [motions[fit_pool[p] - 1] for p in picks],
                                             [face_hull_mask(pool_landmarks[p][:, :2], size) for p in picks],
                                             profile.steps, profile.learning_rate)
                offset, seconds = (result.offset if result.improved else None), result.seconds
        offsets[name] = offset
        rendered = np.stack([factory.synthesizer.render(factory.reference(clip).state,
                                                        motions[i - 1] if offset is None else apply_offset(motions[i - 1], offset))
                             for i in scored])
        scores = score_frames(originals, original_landmarks, np.asarray(rendered, np.uint8), detector, embedder,
                              identity_every=len(scored) + 1)
        out[name] = {key: float(np.nanmean(scores.values[key])) for key in METRICS}
        out[name]["fit_seconds"] = seconds
        out[name]["applied"] = float(offset is not None)
    fitted = [name for name, profile in profiles.items() if profile is not None]
    if tracked_steps > 0 and fitted:
        from codec.model.keypoint_tracking import KeypointTracker

        offset = offsets[fitted[0]]
        tracker = KeypointTracker(model, portrait, steps=tracked_steps)
        half = clip.num_driving // 2
        track = list(range(half + 1, clip.num_driving + 1))
        landmarks = detect_landmarks(detector, clip.frames[track])
        size = clip.frames.shape[1]
        started = time.perf_counter()
        tracked = {}
        for i, lm in zip(track, landmarks):
            motion = motions[i - 1] if offset is None else apply_offset(motions[i - 1], offset)
            mask = face_hull_mask(lm[:, :2], size) if np.all(np.isfinite(lm)) else None
            tracked[i] = tracker(motion, clip.frames[i], mask)
        seconds = (time.perf_counter() - started) / len(track)
        rendered = np.stack([factory.synthesizer.render(factory.reference(clip).state, tracked[i]) for i in scored])
        scores = score_frames(originals, original_landmarks, np.asarray(rendered, np.uint8), detector, embedder,
                              identity_every=len(scored) + 1)
        name = f"{fitted[0]}+tracked"
        out[name] = {key: float(np.nanmean(scores.values[key])) for key in METRICS}
        out[name]["fit_seconds"] = out[fitted[0]]["fit_seconds"]
        out[name]["applied"] = out[fitted[0]]["applied"]
        out[name]["tracking_seconds_per_frame"] = seconds
    return out


def run_calibration(people: str = "val", frames: int = DEFAULT_FRAMES, spacing: int = DEFAULT_SPACING,
                    clips_dir: str | None = None, synthetic: bool = False, weights: str | None = None,
                    profiles: Mapping[str, Any] | None = None,
                    progress: Callable[[str], None] = logger.info, tracked_steps: int = 0) -> dict[str, Any]:
    from bench.codecs.ours import OursFactory
    from bench.quality import make_identity_embedder, make_static_detector
    from sender.calibration import FULL, LIGHT

    profiles = dict(profiles) if profiles is not None else {"none": None, "full": FULL, "light": LIGHT}
    config = RdConfig(clips=clips_dir, synthetic=synthetic, people=people, frames=frames, clips_per_person=1)
    clips, source = load_clips(config, progress)
    factory = OursFactory.load(weights, calibration=False)
    detector, embedder = make_static_detector(), make_identity_embedder()
    started = time.perf_counter()
    per_clip = {}
    for clip in clips:
        per_clip[clip.clip_id] = evaluate_clip(factory, clip, profiles, spacing, detector, embedder, tracked_steps)
        progress(f"{clip.clip_id}: " + ", ".join(f"{name} {v['face_psnr']:.2f} dB" for name, v in per_clip[clip.clip_id].items()))
    mean = {name: {key: float(np.mean([c[name][key] for c in per_clip.values()]))
                   for key in (*METRICS, "fit_seconds", "applied", "tracking_seconds_per_frame") if key in variant}
            for name, variant in next(iter(per_clip.values()), {}).items()}
    return {
        "benchmark": "calibration",
        "method": __doc__.split("\n\n", 2)[2].replace("\n", " ").strip(),
        "config": {"people": people, "frames": frames, "spacing": spacing, "weights": weights, "tracked_steps": tracked_steps,
                   "profiles": {name: None if p is None else vars(p) for name, p in profiles.items()}},
        "machine": machine_info(),
        "model": factory.describe(),
        "source": source,
        "seconds": time.perf_counter() - started,
        "clips": per_clip,
        "mean": mean,
    }


def format_table(report: Mapping[str, Any]) -> str:
    rows = ["| variant | face PSNR | AKD px | mouth opening error px | eyes' opening error px | fit s |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, v in report["mean"].items():
        rows.append(f"| {name} | {v['face_psnr']:.3f} | {v['akd']:.3f} | {v['mouth_open_error']:.3f} | "
                    f"{v['eyes_open_error']:.3f} | {v['fit_seconds']:.1f} |")
    return "\n".join(rows)


def add_calibration_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("calibration", help="the sender's keypoint calibration on held-out frames",
                                   description=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--people", choices=[p for p in PEOPLE_CHOICES if p != "train"], default="val",
                        help="whose clips (codec.data.split; default val)")
    parser.add_argument("--clips", default=None, help="folder of clips (default ../shared/data/clips)")
    parser.add_argument("--synthetic", action="store_true", help="the embedded synthetic clip instead of real clips")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames per clip at 25 fps (default %(default)s)")
    parser.add_argument("--spacing", type=int, default=DEFAULT_SPACING,
                        help="every n-th driving frame is a fit candidate (first half) or scored (second half)")
    parser.add_argument("--weights", default=None, help="model weights (default: the shipped ones)")
    parser.add_argument("--tracked-steps", type=int, default=0,
                        help="also the full fit's offset plus a per-frame correction of this many steps over every "
                             "frame of the second half (codec/model/keypoint_tracking.py; default 0: not run)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")


def run_calibration_from_args(args: argparse.Namespace) -> int:
    if args.tracked_steps < 0:
        raise SystemExit(f"--tracked-steps must be 0 or more, got {args.tracked_steps}")
    report = run_calibration(args.people, args.frames, args.spacing, args.clips, args.synthetic, args.weights,
                             tracked_steps=args.tracked_steps)
    print(format_table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0
