"""python -m bench rd: bandwidth and quality of our codec against H.264, VP8, VP9 and AV1 (issue #8).

    python -m bench rd --json rd.json --plot rd.png                 # the test group of ../shared/data
    python -m bench rd --people val --json rd.json                  # the validation people instead
    python -m bench rd --clips DIR --json rd.json --plot rd.png     # mp4 files / JPEG folders under DIR
    python -m bench rd --synthetic --json rd.json                   # the embedded synthetic clip
    python -m bench rd --weights W --json rd.json                   # a model with the enhancement branch: + ours+enh rungs

For each clip: resampled by timestamp to the call's frame rate (``--fps``), reference = its first
frame with a face, driving = the clip, every frame cropped by the sender's face pipeline. By default
the clips are the data README's test group (``codec.data.split``): people no training run saw and no
checkpoint was picked on. Every codec at every operating point encodes, "sends" (real byte
counts, per-packet headers) and decodes the clip; shared code scores the reconstruction against
the original crops (``bench.quality``), aggregates (``bench.report``), compares curves
(``bench.bdrate``) and plots (``bench.plots``). The default run is sized to finish in about
15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from bench import report, rtp
from bench.clips import crop_clip, find_clips, read_frames
from bench.codecs import motion_transport
from bench.codecs.base import BenchClip, Codec, StreamInfo
from bench.codecs.floor import NoMotionFloor
from bench.codecs.ours import OursFactory
from bench.codecs.ours_enhanced import enhanced_sweep
from bench.codecs.video import AV1_QPS, H264_CRFS, VP8_KBPS, VP9_KBPS, VideoCodec, av1_sweep, codec_available
from bench.codecs.video import h264_sweep, vp8_sweep, vp9_sweep
from bench.synthetic_clip import SYNTHETIC_FPS, synthetic_talking_head
from codec.bitstream import MAX_FRAMES_PER_PACKET
from codec.enhancement.picture_rate import LADDER as PICTURE_LADDER
from codec.enhancement.picture_rate import parse_picture_rate
from codec.motion import MAX_NUM_KEYPOINTS
from codec.quantize import get_preset

if TYPE_CHECKING:
    from bench.quality import FrameScores

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLIPS_DIR = REPO_ROOT.parent / "shared" / "data" / "clips"
VIDEO_CODECS = ("h264", "vp8", "vp9", "av1", "av1-64")  # av1-64: SVT-AV1 at 64², bicubic-upscaled (no model)
LOWRES_AV1_SIZE = 64
LOWRES_AV1_QPS = (32, 40, 48, 55, 63)
ALL_CODECS = ("ours",) + VIDEO_CODECS
PEOPLE_CHOICES = ("test", "val", "train", "all")
PEOPLE_SELECTION = {"test": "the test group (codec.data.split: never trained on, never used to pick a checkpoint)",
                    "val": "validation people (codec.data.split: they picked the shipped checkpoint)",
                    "train": "training people (codec.data.split: for fitting constants such as the controller's priors, "
                             "never for figures)"}


class RdInputError(ValueError):
    """The benchmark's input (flags, clips folder, a clip, the weights) is unusable; the message says why."""


@dataclass(frozen=True)
class RdConfig:
    """Everything a run depends on; the field comments are the CLI help."""

    clips: str | None = None  # folder of mp4 files / JPEG folders (default: ../shared/data/clips)
    synthetic: bool = False  # use the embedded synthetic clip instead of real clips
    people: str = "test"  # whose clips: test (the test group), val (validation people), train (training people: fitting only) or all (a folder without any of them uses all)
    clips_per_person: int = 1  # clips taken per person (first ones in name order)
    frames: int = 150  # frames per clip at --fps (the first is the reference); all are coded, sent and decoded
    fps: float = 25.0  # clips are resampled by timestamp to this rate, a camera at the call's rate (0: the clip's own)
    score_every: int = 4  # score every n-th driving frame (only those are rendered by ours)
    identity_every: int = 3  # of the scored frames, the identity distance on every n-th (~0.1 s each)
    size: int = 256  # face crop size in pixels (all codecs code the same crops)
    codecs: tuple[str, ...] = ALL_CODECS  # codecs to run (video codecs PyAV lacks are skipped)
    keypoints: tuple[int, ...] = (20, 10, 5, 0)  # ours: K, how many keypoints' δ are sent
    presets: tuple[str, ...] = ("fine", "default", "coarse")  # ours: quantizer presets
    frames_per_packet: tuple[int, ...] = (1, 2, 4)  # ours: frames bundled in one motion packet
    enhancement_rungs: tuple[str, ...] = tuple(rate.label() for rate in PICTURE_LADDER)  # ours+enh: each enhancement-layer rung as QP or QP/N (AV1 qp 1..63, a picture with every N-th frame, N ≤ 4), atop ours at the enhanced rungs' K (5), 1 frame/packet (only a model with the enhancement branch)
    h264_crf: tuple[int, ...] = H264_CRFS  # H.264 (libx264 zerolatency) CRF sweep
    vp8_kbps: tuple[int, ...] = VP8_KBPS  # VP8 (libvpx realtime) target-bitrate sweep
    vp9_kbps: tuple[int, ...] = VP9_KBPS  # VP9 (libvpx realtime) target-bitrate sweep
    av1_qp: tuple[int, ...] = AV1_QPS  # AV1 (SVT-AV1 rtc) QP sweep
    weights: str | None = None  # ours: model weights file (default: the shipped trained weights if any)
    no_calibration: bool = False  # ours: no keypoint calibration on the clip's first frames (sender/calibration.py)
    light_calibration: bool = False  # ours: the light fit (sender.calibration.LIGHT, what a CPU under 4 cores runs) instead of the full one
    call_seconds: float = 60.0  # call length over which the stream start (reference, keyframe) is amortized
    latency_budget_ms: float = 120.0  # glass-to-glass p95 a call may have: the headline uses only points within it
    unbundled_p95_ms: float = 102.0  # glass-to-glass p95 of ours at 1 frame/packet (bench call, README)
    # (measured: bench call --renderer reference-copy, 40 ms Opus frames, 1 frame/packet, 2026-12-06: p95 68.6 ms
    # riding against 59.6 ms as plain RTP motion)
    riding_p95_ms: float = 9.0  # what riding the audio's packets adds to ours' p95, for the with-audio headline
    seed: int = 0  # seed of the synthetic clip


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_tuple(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _field_help() -> dict[str, str]:
    source = Path(__file__).read_text().split("class RdConfig", 1)[1].split("def _int_tuple", 1)[0]
    helps = {}
    for line in source.splitlines():
        if ":" in line and "#" in line and "=" in line:
            name = line.split(":", 1)[0].strip()
            helps[name] = line.split("#", 1)[1].strip()
    return helps


def add_rd_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rd`` sub-command's flags (one per RdConfig field) plus --json and --plot."""
    helps = _field_help()
    defaults = RdConfig()
    for f in dataclasses.fields(RdConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = helps.get(f.name, "")
        if "default" not in text:
            text += f" (default: {shown})"
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", help=helps.get(f.name, ""))
        elif isinstance(default, tuple):
            kind = _int_tuple if all(isinstance(v, int) for v in default) else _str_tuple
            parser.add_argument(flag, type=kind, default=default, help=text)
        elif isinstance(default, (int, float)):
            parser.add_argument(flag, type=type(default), default=default, help=text)
        else:
            parser.add_argument(flag, type=str, default=default, help=text)
    parser.add_argument("--json", type=Path, default=None, help="write the report (points, headline, machine) here")
    parser.add_argument("--plot", type=Path, default=None, help="write the rate-quality plot (PNG) here")
    parser.add_argument("--markdown", type=Path, default=None, help="write a README-ready results section here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> RdConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RdConfig)}
    config = RdConfig(**values)
    validate_config(config)
    return config


def validate_config(config: RdConfig) -> None:
    if config.frames < 2:
        raise RdInputError(f"--frames must be at least 2 (a reference and one driving frame), got {config.frames}")
    if config.size < 32:
        raise RdInputError(f"--size must be at least 32 pixels, got {config.size}")
    if config.identity_every < 1:
        raise RdInputError(f"--identity-every must be at least 1, got {config.identity_every}")
    if config.score_every < 1:
        raise RdInputError(f"--score-every must be at least 1, got {config.score_every}")
    if config.people not in PEOPLE_CHOICES:
        raise RdInputError(f"--people must be one of {', '.join(PEOPLE_CHOICES)}, got {config.people!r}")
    if config.fps < 0 or config.fps != config.fps:
        raise RdInputError(f"--fps must be ≥ 0 (0: each clip's own rate), got {config.fps}")
    if not config.latency_budget_ms > 0 or not config.unbundled_p95_ms >= 0 or not config.riding_p95_ms >= 0:
        raise RdInputError("--latency-budget-ms must be positive, --unbundled-p95-ms and --riding-p95-ms ≥ 0")
    if config.clips_per_person < 1:
        raise RdInputError(f"--clips-per-person must be at least 1, got {config.clips_per_person}")
    unknown = set(config.codecs) - set(ALL_CODECS)
    if unknown:
        raise RdInputError(f"unknown codec(s) {sorted(unknown)}; choose among {','.join(ALL_CODECS)}")
    if not config.call_seconds > 0:
        raise RdInputError(f"--call-seconds must be positive, got {config.call_seconds}")
    if config.synthetic and config.clips:
        raise RdInputError("pass either --clips DIR or --synthetic, not both")
    if config.no_calibration and config.light_calibration:
        raise RdInputError("pass either --no-calibration or --light-calibration, not both")
    for preset in config.presets:
        try:
            get_preset(preset)
        except ValueError as exc:
            raise RdInputError(f"--presets: {exc}") from None
    checks = (
        ("--keypoints", config.keypoints, 0, MAX_NUM_KEYPOINTS),
        ("--frames-per-packet", config.frames_per_packet, 1, MAX_FRAMES_PER_PACKET),
        ("--h264-crf", config.h264_crf, 0, 51),
        ("--av1-qp", config.av1_qp, 1, 63),
        ("--vp8-kbps", config.vp8_kbps, 1, 100_000),
        ("--vp9-kbps", config.vp9_kbps, 1, 100_000),
    )
    for rung in config.enhancement_rungs:
        try:
            parse_picture_rate(rung)
        except ValueError as exc:
            raise RdInputError(f"--enhancement-rungs: {exc}") from None
    for flag, values, low, high in checks:
        bad = [v for v in values if not low <= v <= high]
        if bad:
            raise RdInputError(f"{flag} values must be in [{low}, {high}], got {bad}")


# ----------------------------------------------------------------------------------------------- clips


def select_clips(config: RdConfig) -> tuple[list[tuple[Path, str]], dict[str, Any]]:
    """(clip path, person) pairs to run, and a description of where they came from."""
    root = Path(config.clips) if config.clips else DEFAULT_CLIPS_DIR
    try:
        paths = find_clips(root)
    except FileNotFoundError as exc:
        raise RdInputError(str(exc)) from None
    if not paths:
        raise RdInputError(f"no clips (mp4 files or folders of images) under {str(root)!r}")
    from codec.data.split import person_of, split_of  # the face pipeline's by-person split

    everyone: dict[str, list[Path]] = {}
    for path in paths:
        everyone.setdefault(person_of(path), []).append(path)
    wanted = {person: clips for person, clips in everyone.items() if split_of(person) == config.people}
    known = {person for person in everyone if split_of(person) != "train"}
    if config.people == "all":
        chosen, selection = everyone, "all people"
    elif wanted:
        chosen, selection = wanted, PEOPLE_SELECTION[config.people]
    elif config.clips and not known:  # a user's own folder: nobody in it was trained on
        logger.info("no test or validation person of codec.data.split under %s: using all %d people", root, len(everyone))
        chosen, selection = everyone, "all people (none of the folder's people is in codec.data.split)"
    else:
        raise RdInputError(f"no {config.people!r} people's clips under {str(root)!r}; pass --people all to use every clip")
    pairs = [(p, person) for person in sorted(chosen) for p in sorted(chosen[person])[: config.clips_per_person]]
    source = {"kind": "clips", "root": str(root), "selection": selection, "people": sorted(chosen)}
    return pairs, source


def load_clips(config: RdConfig, progress: Callable[[str], None]) -> tuple[list[BenchClip], dict[str, Any]]:
    """Read and crop the clips (or make the synthetic one)."""
    from codec.face.crop import FaceCropper

    use_synthetic = config.synthetic or (config.clips is None and not DEFAULT_CLIPS_DIR.is_dir())
    if use_synthetic:
        if not config.synthetic:
            logger.warning("%s not found: running on the embedded synthetic clip", DEFAULT_CLIPS_DIR)
        items: list[tuple[str, str, np.ndarray, float]] = [
            ("synthetic", "synthetic", synthetic_talking_head(config.frames, max(config.size, 256), config.seed),
             SYNTHETIC_FPS)
        ]
        source: dict[str, Any] = {"kind": "synthetic", "seed": config.seed}
    else:
        pairs, source = select_clips(config)
        items = []
        for path, person in pairs:
            try:
                frames, fps = read_frames(path, config.frames, config.fps or None)
            except (ValueError, FileNotFoundError) as exc:
                raise RdInputError(f"clip {str(path)!r}: {exc}") from exc
            items.append((str(path.relative_to(path.parents[1])), person, frames, fps))
    clips = []
    for clip_id, person, frames, fps in items:
        cropper = FaceCropper(output_size=config.size, fps=fps)

        def crop(frame: np.ndarray, cropper: FaceCropper = cropper) -> tuple[np.ndarray, bool]:
            result = cropper.crop(frame)
            return result.image, bool(result.face_found)

        try:
            clip = crop_clip(clip_id, person, frames, fps, crop)
        finally:
            cropper.close()
        progress(f"cropped {clip_id}")
        if clip is not None:
            clips.append(clip)
    if not clips:
        raise RdInputError("no usable clip: no face was found in any of them")
    source["clips"] = [{"id": c.clip_id, "person": c.person, "frames": int(c.frames.shape[0]), "fps": c.fps} for c in clips]
    return clips, source


# ---------------------------------------------------------------------------------------------- codecs


def build_codecs(config: RdConfig, ours: OursFactory | None) -> list[Codec]:
    """Every operating point of the run, ours first (then ours with the enhancement layer), the no-motion floor last."""
    codecs: list[Codec] = []
    if "ours" in config.codecs and ours is not None:
        codecs += ours.sweep(config.keypoints, config.presets, config.frames_per_packet)
        if config.enhancement_rungs and ours.enhancement_size > 0:
            codecs += enhanced_sweep(ours, [parse_picture_rate(rung) for rung in config.enhancement_rungs], crop_size=config.size)
        elif config.enhancement_rungs:
            logger.info("the model has no enhancement branch: no enhancement rungs")
    sweeps: dict[str, Callable[[], list[VideoCodec]]] = {
        "h264": lambda: h264_sweep(config.h264_crf),
        "vp8": lambda: vp8_sweep(config.vp8_kbps),
        "vp9": lambda: vp9_sweep(config.vp9_kbps),
        "av1": lambda: av1_sweep(config.av1_qp),
        "av1-64": lambda: av1_sweep(LOWRES_AV1_QPS, coded_size=LOWRES_AV1_SIZE),
    }
    for name in VIDEO_CODECS:
        if name not in config.codecs:
            continue
        if not codec_available(name.split("-")[0]):
            logger.warning("this PyAV build lacks the %s encoder or decoder; skipped", name)
            continue
        codecs += sweeps[name]()
    codecs.append(NoMotionFloor(ours.motion_model_id, ours.model_version) if ours is not None else NoMotionFloor())
    return codecs


# ------------------------------------------------------------------------------------------------- run


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    import av
    import torch

    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "av": av.__version__,
        "git_commit": commit,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": os.getloadavg(),
    }


def evaluate_codecs(
    codecs: Sequence[Codec],
    clips: Sequence[BenchClip],
    call_seconds: float,
    progress: Callable[[str], None] = lambda text: None,
    score_every: int = 1,
    identity_every: int = 1,
) -> list[dict[str, Any]]:
    """Run every codec on every clip and score it: one report point per codec (see ``bench.report``).

    Every frame is coded, sent and decoded; quality is measured on every ``score_every``-th driving frame.
    """
    from bench.quality import array_digest, detect_landmarks, make_static_detector, score_frames

    detector = make_static_detector()
    scored_frames = [np.arange(0, clip.num_driving, score_every) for clip in clips]  # indices into frames[1:]
    original_landmarks = []
    for clip, chosen in zip(clips, scored_frames):
        original_landmarks.append(detect_landmarks(detector, clip.frames[1:][chosen]))
        progress(f"landmarks {clip.clip_id}")
    has_face = [np.all(np.isfinite(lm), axis=(1, 2)) for lm in original_landmarks]
    scored: dict[tuple[int, str], FrameScores] = {}
    points = []
    for codec in codecs:
        infos: list[StreamInfo] = []
        scores: list[FrameScores] = []
        for index, clip in enumerate(clips):
            chosen = scored_frames[index]
            info, reconstruction = codec.run(clip, chosen)
            key = (index, array_digest(reconstruction))
            if key not in scored:  # identical output (e.g. ours at another frames-per-packet): scored once
                scored[key] = score_frames(clip.frames[1:][chosen], original_landmarks[index], reconstruction, detector,
                                           identity_every=identity_every)
            infos.append(info)
            scores.append(scored[key])
            progress(f"{codec.name} {clip.clip_id}")
        points.append(report.make_point(codec, clips, infos, scores, has_face, call_seconds))
    report.add_floor_gaps(points)
    return points


def run_rd(config: RdConfig, show_progress: bool = True, ours: OursFactory | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the report (also what --json writes). ``ours`` overrides the model."""
    validate_config(config)
    started = time.perf_counter()
    machine = machine_info()
    if "ours" in config.codecs and ours is None:
        try:
            ours = OursFactory.load(config.weights, calibration=not config.no_calibration,
                                    light_calibration=config.light_calibration)
        except (ValueError, FileNotFoundError) as exc:  # CheckpointError is a ValueError
            raise RdInputError(f"cannot load the model weights {config.weights!r}: {exc}") from exc
    bar = tqdm(total=0, disable=not show_progress, unit="step", dynamic_ncols=True, file=sys.stderr)

    def progress(text: str) -> None:
        bar.set_postfix_str(text[:60], refresh=False)
        bar.update(1)

    try:
        clips, source = load_clips(config, progress)
        codecs = build_codecs(config, ours)
        bar.total = bar.n + len(clips) + len(codecs) * len(clips)
        points = evaluate_codecs(codecs, clips, config.call_seconds, progress, config.score_every, config.identity_every)
        crossed = None
        if ours is not None and "ours" in config.codecs:
            from bench.cross_identity import cross_identity
            from bench.quality import make_identity_embedder

            crossed = cross_identity(ours, clips, make_identity_embedder(), every=config.score_every * config.identity_every)
    finally:
        bar.close()
    latency = report.LatencyRule(config.latency_budget_ms, config.unbundled_p95_ms)
    machine["load_average_end"] = os.getloadavg()
    machine["wall_seconds"] = time.perf_counter() - started
    return {
        "benchmark": "rd",
        "config": dataclasses.asdict(config),
        "machine": machine,
        "source": source,
        "model": ours.describe() if ours is not None else None,
        "rate_definitions": report.__doc__,
        "wire_model": {
            "ours": motion_transport.TRANSPORT,
            "ours_per_packet_overhead_bytes": motion_transport.RTP_MOTION_OVERHEAD_BYTES,
            "ours_with_audio": motion_transport.RIDING_TRANSPORT,
            "video_codecs": f"RTP packetization as libwebrtc's, {rtp.PER_PACKET_HEADER_BYTES} B a packet (bench.rtp)",
        },
        "points": points,
        "headline": report.headline(points, latency=latency),
        "headline_all_points": report.headline(points),
        "headline_with_audio": report.headline(points, report.WITH_AUDIO_RATE,
                                               dataclasses.replace(latency, riding_p95_ms=config.riding_p95_ms)),
        "cross_identity": crossed,
    }


def _json_default(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def write_outputs(
    result: dict[str, Any], json_path: Path | None, plot_path: Path | None, markdown_path: Path | None = None
) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1, default=_json_default, allow_nan=True) + "\n")
    if plot_path is not None:
        from bench.plots import plot_rate_quality

        m = result["machine"]
        clips = result["source"]["clips"]
        scored = result["points"][0]["scored_frames"] if result["points"] else 0
        title = (f"{len(clips)} clips, {sum(c['frames'] - 1 for c in clips)} driving frames coded ({scored} scored); "
                 f"{m['cpu']} ({m['cpu_count']} cores), {m['date_utc'][:10]}; model: "
                 f"{'trained' if (result.get('model') or {}).get('is_trained') else 'RANDOM weights'}")
        plot_rate_quality(result["points"], plot_path, title=title)
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(report.results_markdown(result, plot_path.name if plot_path else None))


def add_rd_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``python -m bench rd``."""
    parser = subparsers.add_parser("rd", help="rate-quality: ours vs H.264/VP8/VP9/AV1 (kbps, PSNR, SSIM, AKD)",
                                   description=__doc__.split("\n", 1)[0])
    add_rd_arguments(parser)


def run_rd_from_args(args: argparse.Namespace) -> int:
    """The ``rd`` sub-command body, for the ``python -m bench`` dispatcher."""
    try:
        config = config_from_args(args)
        result = run_rd(config, show_progress=not args.no_progress)
    except RdInputError as exc:
        print(f"python -m bench rd: {exc}", file=sys.stderr)
        return 2
    write_outputs(result, args.json, args.plot, args.markdown)
    print(report.markdown_table(result["points"]))
    print()
    print(result["headline"]["latency"]["rule"])
    for sentence in result["headline"]["sentences"]:
        print(sentence)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench rd", description=__doc__.split("\n", 1)[0])
    add_rd_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_rd_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
