"""python -m sender: stream a face's motion to the receivers of a room.

    python -m sender --signaling http://127.0.0.1:8080 --room demo                   # built-in trace + portrait
    python -m sender --signaling URL --room R --reference me.jpg --source webcam     # or /dev/video1, clip.mp4, frames/
    python -m sender ... --max-kbps 8 [--keypoints 12] [--frames-per-packet 3] [--ice-server stun:host:3478]
    python -m sender ... --weights cpu-enh64.safetensors --max-kbps 0   # + the enhancement layer (a model with the branch)
    python -m sender ... --weights cpu-enh64.safetensors --max-kbps 0 --enhancement-qp 55   # ... at a pinned qp (off: none)
    python -m sender ... --audio speech.wav [--audio-kbps 16]          # sound: none, generated, a file, alsa:NAME, pulse:NAME
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from codec.quantize import PRESETS_BY_NAME
from codec.reference_message import decode_portrait
from sender.audio_sender import DEFAULT_AUDIO_KBPS, AudioConfig, AudioSender
from sender.audio_sources import AUDIO_AUTO, DEFAULT_FRAME_MS, FRAME_MS_CHOICES, create_audio_source, default_audio_spec
from sender.calibration_cache import DEFAULT_DIR as DEFAULT_CALIBRATION_CACHE
from sender.motion_rider import DEFAULT_HOLD_MS
from sender.portrait import default_portrait, make_reference, read_photo
from sender.session import DEFAULT_MAX_KBPS, Sender, SenderConfig
from sender.sources import DEFAULT_SOURCE, create_source
from signaling.client import Signaling
from signaling.credentials import add_token_arguments, token_from_args
from signaling.reconnect import add_reconnect_argument
from signaling.rtc import add_rtc_arguments, create_rtc_options

logger = logging.getLogger(__name__)


def enhancement_qp_argument(text: str) -> int | None:
    """``--enhancement-qp``: an SVT-AV1 qp 1..63, "off" (or 0) for motion only, "auto" for the controller's choice."""
    value = text.strip().lower()
    if value == "auto":
        return None
    if value == "off":
        return 0
    try:
        qp = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid qp {text!r}: give 1-63, 'off' or 'auto'") from None
    if not 0 <= qp <= 63:
        raise argparse.ArgumentTypeError(f"qp {qp} is outside 1-63: give 1-63 (higher = fewer bytes), 'off' or 'auto'")
    return qp


def add_sender_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--signaling", default="http://127.0.0.1:8080", help="signaling server URL (default %(default)s)")
    parser.add_argument("--room", default="demo", help="room to join (default %(default)s)")
    add_token_arguments(parser)  # --token, --token-file, or $KPCALL_TOKEN
    parser.add_argument("--reference", type=Path, default=None, help="portrait photo to send (default: the built-in astronaut)")
    parser.add_argument(
        "--source", default=DEFAULT_SOURCE,
        help="'default' (scripted head motion), 'webcam', a /dev/video* device, a video file or an image folder",
    )
    parser.add_argument("--fps", type=float, default=None, help="frame rate (default: the source's own, 25 for the trace)")
    parser.add_argument("--frames", type=int, default=None, help="stop after this many source frames (default: run until Ctrl-C)")
    parser.add_argument("--max-kbps", type=float, default=DEFAULT_MAX_KBPS, help="on-the-wire cap, 0 for none (default %(default)s)")
    parser.add_argument("--keypoints", type=int, default=None, help="send δ of this many keypoints (default: adaptive)")
    parser.add_argument("--no-smoothing", action="store_true",
                        help="send the motion encoder's raw output (default: One-Euro smoothing, sender/motion_filter.py)")
    parser.add_argument("--no-refinement", action="store_true",
                        help="send the motion encoder's keypoints as they are (default: moved towards the face mesh's "
                             "motion as far as the model was trained for, codec/model/landmark_refinement.py)")
    parser.add_argument("--calibration", choices=("auto", "on", "off"), default="auto",
                        help="fit one keypoint offset on the call's first frames when the portrait shows the person on "
                             "camera (sender/calibration.py); auto: the full fit with a GPU or at least 4 CPU cores, a "
                             "light one (a quarter of the work, one core, idle priority) below (default auto)")
    parser.add_argument("--calibration-cache", type=str, default=str(DEFAULT_CALIBRATION_CACHE), metavar="DIR|off",
                        help="keep each fitted offset (~1 KB of numbers, no image) in DIR for the next call with the same "
                             "portrait and model, which checks it and applies it instead of fitting again; off: keep "
                             "nothing (default %(default)s)")
    parser.add_argument("--keypoint-tracking", choices=("auto", "on", "off"), default="auto",
                        help="once the calibration's offset is on, give each frame's keypoints their own correction (2 "
                             "passes of the generator a frame, sender/keypoint_tracking.py; turns itself off when a frame "
                             "takes over 15 ms); auto: with a GPU only (default auto)")
    parser.add_argument("--frames-per-packet", type=int, default=None, help="motion frames per packet, 1-8 (default: adaptive)")
    parser.add_argument("--preset", choices=sorted(PRESETS_BY_NAME), default=None, help="quantizer preset (default: adaptive)")
    parser.add_argument("--enhancement-qp", type=enhancement_qp_argument, default=None, metavar="QP|off|auto",
                        help="the enhancement layer (the face crop at E×E coded by SVT-AV1, sent with each frame's motion "
                             "when the model has the branch, the receiver reads it and the rate allows 1 frame per packet "
                             "plus the picture): pin its qp (1-63, higher = fewer bytes), 'off' for motion only (default: auto, the "
                             "controller picks qp 32, 40, 48, 55 or 63, or motion only)")
    parser.add_argument("--audio", default=AUDIO_AUTO, metavar="auto|none|generated|FILE|DEVICE",
                        help="the call's sound, Opus in sync with the face: 'generated' (a speech-like demo signal), an audio or "
                             "video file, a device ('alsa:default', 'alsa:hw:1,0', 'pulse:default') or 'none' (default: auto = "
                             "generated for the built-in trace, a video file's own sound track, none for a camera)")
    parser.add_argument("--audio-kbps", type=float, default=DEFAULT_AUDIO_KBPS, help="Opus bitrate (default %(default)g)")
    parser.add_argument("--audio-frame-ms", type=int, choices=FRAME_MS_CHOICES, default=DEFAULT_FRAME_MS,
                        help="Opus frame per packet in ms: longer costs fewer packet headers, shorter less delay (default %(default)s)")
    parser.add_argument("--motion-audio-wait-ms", type=float, default=None,
                        help="with motion riding in the audio (--motion-transport rtp+audio, the default): how long a motion "
                             "message may wait for the next audio packet before it goes as its own RTP packet (default: one "
                             "audio frame, at most 20 ms; 0: only rides an audio packet already held for it)")
    parser.add_argument("--audio-hold-ms", type=float, default=DEFAULT_HOLD_MS,
                        help="... and how long an audio packet may wait for the next motion message (default %(default)g; costs "
                             "the sound latency only where the receiver does not delay it to the face anyway)")
    parser.add_argument("--sync-marks", type=float, default=0.0, metavar="SECONDS",
                        help="every SECONDS the mouth snaps open and the audio clicks at the same capture time, so that a "
                             "receiver measures the audio-video offset (its report's audio.sync); 0: none (default)")
    parser.add_argument("--weights", type=Path, default=None, help="model weights (default: the shipped ones)")
    parser.add_argument("--device", default=None, help="torch device (default: CUDA when present, else CPU)")
    add_rtc_arguments(parser)
    add_reconnect_argument(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")


def load_motion_encoder(weights: Path | None, device: str | None) -> Any:
    try:
        from codec.model import MotionEncoder
    except ImportError as exc:
        raise RuntimeError(f"the motion model (codec.model) is not available: {exc}") from None
    return MotionEncoder(weights, device=device)


def create_sender(args: argparse.Namespace, signaling: Signaling | None = None) -> Sender:
    """Build the sender from parsed flags (ValueError/RuntimeError with a clear message when unusable); ``signaling``:
    what it talks to the room through (default: its own WebSocket as ``sender``; a participant passes its call's)."""
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be ≥ 1, got {args.frames}")
    rtc = create_rtc_options(args)
    encoder = load_motion_encoder(args.weights, args.device)
    model_version = str(getattr(encoder, "model_version", "1"))
    photo = default_portrait() if args.reference is None else read_photo(args.reference)
    reference = make_reference(photo, encoder.image_size, encoder.motion_model_id, model_version)
    portrait = decode_portrait(reference)  # the portrait as the receiver decodes it
    refiner = None
    if args.source != DEFAULT_SOURCE and not args.no_refinement and hasattr(encoder, "landmark_refiner"):
        refiner = encoder.landmark_refiner(portrait)
        logger.info("landmark refinement: %s", f"{refiner.fraction:g} of the way to the face mesh's motion"
                    if refiner.active else "off (the model was not trained for it)")
    calibrator = None
    if args.source != DEFAULT_SOURCE:
        from sender.calibration import make_calibrator
        from sender.calibration_cache import CalibrationCache

        cache = None if args.calibration_cache == "off" else CalibrationCache(Path(args.calibration_cache).expanduser())
        calibrator = make_calibrator(args.calibration, encoder, portrait, cache, args.keypoint_tracking)
        if calibrator is not None:
            logger.info("keypoint calibration: fitted on the first frames if the portrait shows the person on camera")
    source = create_source(
        args.source, fps=args.fps, num_keypoints=encoder.num_keypoints, max_frames=args.frames,
        encoder=encoder if args.source != DEFAULT_SOURCE else None, smooth=not args.no_smoothing,
        refiner=refiner if refiner is not None and refiner.active else None, calibrator=calibrator,
    )
    marks = None
    if args.sync_marks:
        from sender.sync_marks import MarkedSource, SyncMarks

        marks = SyncMarks(period_s=args.sync_marks)
        source = MarkedSource(source, marks)
    audio_spec = default_audio_spec(args.source) if args.audio == AUDIO_AUTO else args.audio
    audio_source = create_audio_source(audio_spec, args.audio_frame_ms, marks)
    audio = None if audio_source is None else AudioSender(audio_source, AudioConfig(args.audio_kbps, args.audio_frame_ms))
    logger.info("audio: %s", "none" if audio_source is None else f"{audio_source.name}, Opus {args.audio_kbps:g} kbps")
    config = SenderConfig(
        args.signaling, args.room, token_from_args(args), rtc, max_kbps=args.max_kbps or None, keypoints=args.keypoints,
        frames_per_packet=args.frames_per_packet, preset=args.preset, enhancement_qp=args.enhancement_qp,
        reconnect=args.reconnect, motion_audio_wait_ms=args.motion_audio_wait_ms, audio_hold_ms=args.audio_hold_ms,
    )
    enhancement_size = int(getattr(getattr(getattr(encoder, "model", None), "config", None), "enhancement_size", 0) or 0)
    if args.enhancement_qp and not enhancement_size:
        logger.warning("--enhancement-qp: model %s has no enhancement branch; sending motion only", encoder.model_id)
    baseline = None  # the reference's own δ, which the receiver keeps for keypoints not sent
    if hasattr(encoder, "encode"):
        baseline = np.asarray(encoder.encode(portrait).expression)
    return Sender(config, source, reference, signaling, expression_baseline=baseline, enhancement_size=enhancement_size, audio=audio)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sender", description=__doc__.split("\n")[0] if __doc__ else None)
    add_sender_arguments(parser)
    args = parser.parse_args(argv)
    from signaling.__main__ import run_until_signal, setup_logging

    setup_logging(args.verbose + 1)
    try:
        sender = create_sender(args)
    except (ValueError, RuntimeError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    try:
        reason = asyncio.run(run_until_signal(sender.run(), sender.stop))
    except Exception as exc:  # noqa: BLE001 - report a failed call in one line, not a traceback
        logger.error("the call failed: %s", exc)
        return 1
    logger.warning("sender finished: %s", reason)
    return 0 if reason in ("source_ended", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
