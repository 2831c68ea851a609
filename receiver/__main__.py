"""python -m receiver: receive a sender's motion, synthesize the face, record/show/publish it.

    python -m receiver --signaling http://127.0.0.1:8080 --room demo --record out.mp4
    python -m receiver --signaling URL --room R --show --view yaw=20,pitch=0,roll=0
    python -m receiver --signaling URL --room R --avatar other_person.jpg      # cross-identity
    python -m receiver repose ...                                               # offline re-posing (receiver/repose.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from receiver.portrait_cache import DEFAULT_CACHE_MAX_BYTES
from receiver.session import Receiver, ReceiverConfig
from signaling.credentials import add_token_arguments, token_from_args
from signaling.reconnect import add_reconnect_argument
from signaling.rtc import add_rtc_arguments, create_rtc_options

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "kpcall"


def add_receiver_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--signaling", default="http://127.0.0.1:8080", help="signaling server URL (default %(default)s)")
    parser.add_argument("--room", default="demo", help="room to join (default %(default)s)")
    add_token_arguments(parser)  # --token, --token-file, or $KPCALL_TOKEN
    parser.add_argument("--record", type=Path, default=None, metavar="OUT.mp4", help="record the synthesized video (fragmented MP4: playable after a crash; an existing file is never replaced, NAME-1.mp4 ... is used)")
    parser.add_argument("--show", action="store_true", help="show the synthesized video in a window")
    parser.add_argument("--view", default=None, help="'frontal' or 'yaw=..,pitch=..,roll=..' (default: the sender's pose)")
    parser.add_argument("--avatar", type=Path, default=None, metavar="IMAGE", help="drive this portrait with the sender's motion")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="portrait cache (default %(default)s)")
    parser.add_argument("--no-cache", action="store_true", help="keep no portraits on disk")
    parser.add_argument("--cache-max-mb", type=float, default=DEFAULT_CACHE_MAX_BYTES / 2**20,
                        help="disk cap of the portrait cache in MiB; the least recently used portraits go first (default %(default)g)")
    parser.add_argument("--state-cache-max-mb", type=float, default=None,
                        help="disk cap of the model's prepared portraits (CACHE_DIR/states, ~3 MB each) in MiB; the least recently "
                             "used go first (default: codec.model.wrappers.DEFAULT_STATE_CACHE_MAX_BYTES, 256)")
    parser.add_argument("--frames", type=int, default=None, help="stop after this many output frames")
    parser.add_argument("--exit-when-sender-leaves", action="store_true", help="end when the sender leaves (default: wait)")
    parser.add_argument("--audio", choices=("on", "none"), default="on",
                        help="play the sender's audio in sync with the face, into --record and to viewers (on, default) or "
                             "refuse it (none: the sender sends none)")
    parser.add_argument("--stats-json", type=Path, default=None, help="write the call's statistics here at the end")
    add_model_arguments(parser)
    add_rtc_arguments(parser)
    add_reconnect_argument(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--weights and --device, shared by the receiver and the demo."""
    parser.add_argument("--weights", type=Path, default=None,
                        help="model file, shipped or trained (e.g. a run's best.safetensors or python -m codec.train.ship's "
                             "output); its preset is read from the file (default: the shipped codec/weights/cpu.safetensors)")
    parser.add_argument("--device", default="auto",
                        help="where the model runs: auto (CUDA when present, else CPU), cpu, cuda or cuda:N (default %(default)s)")


def load_synthesizer(weights: Path | None, device: str | None, cache_dir: Path | None, state_cache_max_bytes: int | None = None) -> Any:
    """The FrameSynthesizer for ``weights`` (None: the shipped ones) on ``device`` (None or 'auto': CUDA when present);
    ValueError when the device cannot be used (e.g. cuda without CUDA) or the file is not a model.
    ``state_cache_max_bytes``: cap of its prepared-state cache (None: the synthesizer's default)."""
    try:
        from codec.model import FrameSynthesizer
    except ImportError as exc:
        raise RuntimeError(f"the synthesis model (codec.model) is not available: {exc}") from None
    # The synthesizer caches prepared reference states (safetensors) beside our portrait cache.
    cap = {} if state_cache_max_bytes is None else {"cache_max_bytes": state_cache_max_bytes}
    synth = FrameSynthesizer(weights, device=device, cache_dir=None if cache_dir is None else cache_dir / "states", **cap)
    logger.info("model %s (preset %s, %d², K = %d) from %s on %s, rendering in %s", synth.model_id, synth.info.preset,
                synth.image_size, synth.num_keypoints, synth.info.weights, synth.device, synth.precision)
    return synth


def create_receiver(args: argparse.Namespace) -> Receiver:
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be ≥ 1, got {args.frames}")
    if args.avatar is not None and not args.avatar.is_file():
        raise ValueError(f"--avatar {str(args.avatar)!r} is not a file")
    if not args.cache_max_mb > 0:
        raise ValueError(f"--cache-max-mb must be > 0, got {args.cache_max_mb:g}: use --no-cache to keep no portraits")
    if args.state_cache_max_mb is not None and not args.state_cache_max_mb > 0:
        raise ValueError(f"--state-cache-max-mb must be > 0, got {args.state_cache_max_mb:g}: use --no-cache to keep no portraits")
    state_cap = None if args.state_cache_max_mb is None else max(1, int(args.state_cache_max_mb * 2**20))
    cache_dir = None if args.no_cache else args.cache_dir
    config = ReceiverConfig(
        args.signaling, args.room, token_from_args(args), create_rtc_options(args), record=args.record, show=args.show, view=args.view,
        avatar=args.avatar, cache_dir=cache_dir, cache_max_bytes=max(1, int(args.cache_max_mb * 2**20)), max_frames=args.frames,
        exit_when_sender_leaves=args.exit_when_sender_leaves, reconnect=args.reconnect, audio=args.audio == "on",
    )
    return Receiver(config, load_synthesizer(args.weights, args.device, cache_dir, state_cap))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["repose"]:
        try:
            from receiver.repose import main as repose_main
        except ImportError as exc:
            logging.basicConfig(level=logging.WARNING)
            logger.error("'python -m receiver repose' is not available in this build: %s", exc)
            return 2
        return int(repose_main(argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m receiver", description=__doc__.split("\n")[0] if __doc__ else None)
    add_receiver_arguments(parser)
    args = parser.parse_args(argv)
    from signaling.__main__ import run_until_signal, setup_logging

    setup_logging(args.verbose + 1)
    try:
        receiver = create_receiver(args)
    except (ValueError, RuntimeError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    try:
        reason = asyncio.run(run_until_signal(receiver.run(), receiver.stop))
    except (ValueError, RuntimeError, OSError) as exc:
        logger.error("the call failed: %s", exc)
        return 1
    if args.stats_json is not None:
        args.stats_json.write_text(json.dumps({"end": reason, **receiver.report(), "events": list(receiver.events)}, indent=2))
    logger.warning("receiver finished: %s", reason)
    return 0 if reason in ("max_frames", "stopped", "sender_left") else 1


if __name__ == "__main__":
    sys.exit(main())
