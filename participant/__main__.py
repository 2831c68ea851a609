"""python -m participant: one person in a call of up to 4, two-way: sends your face's motion and sound, renders the others.

    python -m participant --signaling http://127.0.0.1:8080 --room team                      # built-in trace + portrait
    python -m participant --signaling URL --room team --reference me.jpg --source webcam --audio alsa:default
    python -m participant ... --others-fps 10 --stats-json call.json --seconds 60 --speaker pulse:default
    python -m participant demo [--two-way]       # the local demo: server + sender + receiver (or two participants)

Everyone in the call runs the same command with the same --room; a browser page opened at
http://SERVER/?room=team joins as a viewer and shows every participant's face (each served by one participant).
The sender's flags (source, audio, rate caps, model) are those of ``python -m sender``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from participant.call import Participant, ParticipantConfig
from participant.loudspeaker import LoudspeakerError
from receiver.__main__ import DEFAULT_CACHE_DIR, load_synthesizer
from sender.__main__ import add_sender_arguments, create_sender
from signaling.credentials import token_from_args
from signaling.rtc import create_rtc_options

logger = logging.getLogger(__name__)


def others_fps_argument(text: str) -> float | None:
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid rate {text!r}: give frames per second (e.g. 12.5) or 'auto'") from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"rate {value:g} is outside (0, 60] frames per second")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m participant", description=__doc__.split("\n")[0] if __doc__ else None)
    add_sender_arguments(parser)
    parser.set_defaults(room="call")
    parser.add_argument("--others-fps", type=others_fps_argument, default=None, metavar="FPS|auto",
                        help="render rate of the faces that are not the active speaker's (default: auto, what the CPU leaves)")
    parser.add_argument("--speaker-fps", type=others_fps_argument, default=None, metavar="FPS",
                        help="render even the active speaker's face at most this often, and the others no faster (default: "
                             "the call's rate; lower spends less CPU, e.g. on battery)")
    parser.add_argument("--render-weights", type=Path, default=None, metavar="PATH",
                        help="the model that renders the others' faces (default: --weights). It must read the same motion: "
                             "e.g. codec/weights/web.safetensors, distilled from the shipped model, renders in about half the time")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="portrait cache (default %(default)s)")
    parser.add_argument("--no-cache", action="store_true", help="keep no portraits on disk")
    parser.add_argument("--no-playout-audio", action="store_true", help="ask the others for no sound")
    parser.add_argument("--speaker", default=None, metavar="alsa:NAME|pulse:NAME|FILE.wav",
                        help="play the others' mixed sound here, each in sync with its face (default: nowhere; e.g. pulse:default)")
    parser.add_argument("--seconds", type=float, default=None, help="leave the call after this long (default: until Ctrl-C)")
    parser.add_argument("--stats-json", type=Path, default=None, help="write the call's statistics here at the end")
    return parser


def create_participant(args: argparse.Namespace) -> Participant:
    if args.seconds is not None and not args.seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds:g}")
    cache_dir = None if args.no_cache else args.cache_dir
    synthesizer = load_synthesizer(args.render_weights or args.weights, args.device, cache_dir)
    config = ParticipantConfig(
        args.signaling, args.room, token_from_args(args), create_rtc_options(args), max_kbps=args.max_kbps or None,
        others_fps=args.others_fps, speaker_fps=args.speaker_fps, cache_dir=cache_dir, audio=not args.no_playout_audio,
        speaker=args.speaker,
    )
    return Participant(config, synthesizer, sender_factory=lambda _config, signaling: create_sender(args, signaling))


async def run_participant(participant: Participant, seconds: float | None) -> str:
    if seconds is None:
        return await participant.run()
    task = asyncio.ensure_future(participant.run())
    try:
        return await asyncio.wait_for(asyncio.shield(task), seconds)
    except TimeoutError:
        participant.stop("time_up")
        return await task


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:
        from participant.demo import main as demo_main

        return demo_main(argv[1:])
    args = build_parser().parse_args(argv)
    from signaling.__main__ import run_until_signal, setup_logging

    setup_logging(args.verbose + 1)
    try:
        participant = create_participant(args)
    except (ValueError, RuntimeError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    try:
        reason = asyncio.run(run_until_signal(run_participant(participant, args.seconds), participant.stop))
    except LoudspeakerError as exc:
        logger.error("%s", exc)
        return 2
    except Exception as exc:  # noqa: BLE001 - a failed call: its reason, and where (a bug to report)
        logger.error("the call failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        return 1
    if args.stats_json is not None:
        args.stats_json.write_text(json.dumps({"end": reason, **participant.report()}, indent=2, default=str))
    logger.warning("participant finished: %s", reason)
    return 0 if reason in ("source_ended", "stopped", "time_up") else 1


if __name__ == "__main__":
    sys.exit(main())
