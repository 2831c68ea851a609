"""python -m participant demo (what ``make demo`` runs): a whole call on this machine, in one process.

Starts the signaling server, a receiver and a sender on the built-in default source (the scripted
head-motion trace driving the default portrait) in one room, prints the page URL and runs until
Ctrl-C, then shuts everything down. Sender and receiver reach each other over 127.0.0.1 (host
candidates "all": loopback plus this machine's interface addresses, which a browser viewer uses).
With ``--two-way`` it runs a call of two participants instead (``participant.call``: each sends its
motion and sound to the other and renders the other's face; the second portrait is the first mirrored),
and the page shows both faces.

    python -m participant demo [--port 8080] [--room demo] [--record demo.mp4] [--max-kbps 8]
    python -m participant demo --two-way [--room call]       # make demo DEMO=--two-way
    python -m participant demo --browser-receiver            # make demo DEMO=--browser-receiver

With ``--browser-receiver`` there is no Python receiver: the page ``receive.html`` takes the receiver's role and
renders the face itself from the motion (the networks ``make web-models`` exports; ``make demo`` does it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np

from receiver.__main__ import DEFAULT_CACHE_DIR, add_model_arguments, load_synthesizer
from receiver.session import Receiver, ReceiverConfig
from sender.portrait import default_portrait, make_reference, read_photo
from sender.session import DEFAULT_MAX_KBPS, Sender, SenderConfig
from sender.sources import TraceSource
from signaling.__main__ import run_until_signal, setup_logging
from signaling.rtc import add_rtc_arguments, create_rtc_options
from signaling.server import DEFAULT_STATIC_DIR, ServerConfig, start_server

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m participant demo", description="Local demo call: server + sender + receiver.")
    parser.add_argument("--host", default="127.0.0.1", help="signaling/page address (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="signaling/page port (default %(default)s)")
    parser.add_argument("--room", default="demo", help="room name (default %(default)s)")
    parser.add_argument("--reference", type=Path, default=None, help="portrait photo (default: the built-in astronaut)")
    parser.add_argument("--record", type=Path, default=None, help="also record the receiver's output to this MP4")
    parser.add_argument("--max-kbps", type=float, default=DEFAULT_MAX_KBPS, help="sender's wire cap, 0 for none (default %(default)s)")
    parser.add_argument("--no-audio", action="store_true", help="no sound (default: the generated speech-like signal, in sync with the face)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    parser.add_argument("--two-way", action="store_true",
                        help="a call of two participants (each sends and renders the other) instead of sender + receiver")
    add_model_arguments(parser)  # --weights (any model file; its preset from the file), --device (auto: CUDA when present)
    parser.add_argument("--browser-receiver", action="store_true",
                        help="no Python receiver: open receive.html, which renders the face in the browser from the motion")
    parser.add_argument("--static-dir", type=Path, default=DEFAULT_STATIC_DIR, help="the browser page's files")
    add_rtc_arguments(parser, default_host_candidates="all")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    return parser


async def run_two_way(args: argparse.Namespace, stop: asyncio.Event, synthesizer: Any, photo: np.ndarray) -> int:
    """Two participants in one room, each on its own trace seed and portrait, both rendering on the one model."""
    from participant.call import Participant, ParticipantConfig
    from participant.shared_synthesizer import SharedSynthesizer
    from sender.audio_sender import AudioSender
    from sender.audio_sources import GeneratedSpeech

    rtc = create_rtc_options(args)
    room = "call" if args.room == "demo" else args.room
    shared = SharedSynthesizer(synthesizer)  # one render at a time for both (each participant's own lock sits on this one)
    server = await start_server(ServerConfig(host=args.host, port=args.port, static_dir=args.static_dir))
    people = []
    for seed, portrait in ((0, photo), (1, np.ascontiguousarray(photo[:, ::-1]))):
        reference = await asyncio.to_thread(make_reference, portrait, synthesizer.image_size, synthesizer.motion_model_id, str(synthesizer.model_version))
        audio = None if args.no_audio else AudioSender(GeneratedSpeech(seed=seed))
        config = ParticipantConfig(server.url, room, rtc=rtc, max_kbps=args.max_kbps or None, cache_dir=DEFAULT_CACHE_DIR)
        people.append(Participant(config, shared, TraceSource(25.0, num_keypoints=synthesizer.num_keypoints, seed=seed), reference, audio))
    tasks = [asyncio.ensure_future(p.run()) for p in people]
    stopper = asyncio.ensure_future(stop.wait() if args.seconds is None else asyncio.wait_for(stop.wait(), args.seconds))
    print(f"kpcall demo (two-way call of 2 participants): open {server.url}/?room={room}  (Ctrl-C stops)", flush=True)
    try:
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for person in people:
            person.stop()
        stopper.cancel()
        results = await asyncio.gather(*tasks, stopper, return_exceptions=True)
        await server.close()
    failures = [r for r in results[:2] if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
    for failure in failures:
        logger.error("demo participant failed: %s", failure)
    for i, person in enumerate(people):
        remotes = person.report()["departed"]
        rendered = sum(r["frames_rendered"] for r in remotes)
        print(f"kpcall demo stopped: participant {i} rendered {rendered} frames of the other", flush=True)
    return 1 if failures else 0


async def run_demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    rtc = create_rtc_options(args)
    synthesizer = await asyncio.to_thread(load_synthesizer, args.weights, args.device, DEFAULT_CACHE_DIR)
    if not getattr(synthesizer, "is_trained", True):
        logger.warning("no trained weights found: the demo runs with RANDOM weights (the picture will not look like a face)")
    photo = default_portrait() if args.reference is None else read_photo(args.reference)
    if args.two_way:
        return await run_two_way(args, stop, synthesizer, photo)
    reference = await asyncio.to_thread(
        make_reference, photo, synthesizer.image_size, synthesizer.motion_model_id, str(synthesizer.model_version)
    )
    server = await start_server(ServerConfig(host=args.host, port=args.port, static_dir=args.static_dir))
    receiver = None if args.browser_receiver else Receiver(
        ReceiverConfig(server.url, args.room, rtc=rtc, record=args.record, cache_dir=DEFAULT_CACHE_DIR), synthesizer)
    source = TraceSource(25.0, num_keypoints=synthesizer.num_keypoints)
    from sender.audio_sender import AudioSender
    from sender.audio_sources import GeneratedSpeech

    audio = None if args.no_audio else AudioSender(GeneratedSpeech())
    sender = Sender(SenderConfig(server.url, args.room, rtc=rtc, max_kbps=args.max_kbps or None), source, reference, audio=audio)
    tasks = [asyncio.ensure_future(sender.run())] + ([] if receiver is None else [asyncio.ensure_future(receiver.run())])
    stopper = asyncio.ensure_future(stop.wait() if args.seconds is None else asyncio.wait_for(stop.wait(), args.seconds))
    page = f"receive.html?room={args.room}" if receiver is None else f"?room={args.room}"
    print(f"kpcall demo: open {server.url}/{page}  (Ctrl-C stops)", flush=True)
    try:
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        sender.stop()
        if receiver is not None:
            receiver.stop("stopped")
        stopper.cancel()
        results = await asyncio.gather(*tasks, stopper, return_exceptions=True)
        await server.close()
    failures = [r for r in results[:len(tasks)] if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
    for failure in failures:
        logger.error("demo part failed: %s", failure)
    if receiver is None:
        links = sender.link_stats()
        print(f"kpcall demo stopped: {sum(link['frames'] for link in links)} frames sent to {len(links)} browser receiver(s)", flush=True)
        return 1 if failures else 0
    stats = receiver.stats()
    print(
        f"kpcall demo stopped: {stats['frames_output']} frames out, {stats['frames_rendered']} rendered, "
        f"{stats['frames_concealed']} concealed",
        flush=True,
    )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose - 1)  # warnings only unless -v
    stop = asyncio.Event()
    try:
        return asyncio.run(run_until_signal(run_demo(args, stop), stop.set))
    except (ValueError, RuntimeError, OSError) as exc:
        logger.error("demo cannot start: %s", exc)
        return 1
