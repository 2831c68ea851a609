"""Call benchmark: a real call over loopback WebRTC, measured end to end.

Run::

    python -m bench call --seconds 20 --json OUT.json                 # the default sender (8 kbps cap)
    python -m bench call --seconds 20 --max-kbps 0 --json OUT.json    # no cap: lowest latency
    python -m bench call --seconds 20 --drop 0.3 --json OUT.json      # 30 % of motion packets dropped
    python -m bench call --renderer reference-copy ...                # transport and playout only, no synthesis

The signaling server runs in this process; the sender (built-in scripted head-motion trace, the
default portrait) and the receiver each run in their own process, as on two machines, with
"loopback" host candidates (every packet on 127.0.0.1). Reported:

- payload kbps: motion packet bytes / the motion period (first to last motion packet);
- wire kbps: the sender's outgoing IPv4 bytes over the same period from aiortc's DTLS transport
  counters (RTCTransportStats bytesSent, plus 28 bytes of UDP/IPv4 header per packet): motion packets,
  control messages and the SCTP SACKs it returns for the receiver's feedback; and the reverse direction;
- output fps (frames the receiver's playout emitted) and rendered fps (frames the synthesizer finished;
  lower when rendering is slower than real time: the newest motion wins and the output repeats);
- glass-to-glass latency: capture timestamp at the sender → synthesized image ready at the receiver
  (both processes read one wall clock), median and p95 over frames decoded from motion, with the
  render time inside it reported separately;
- losses: frames lost in transit (receiver feedback), concealed, late, packets rejected.

Targets (issue #6): wire ≤ 8 kbps at 25 fps output; latency p95 ≤ 120 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ROOM = "bench"
WIRE_TARGET_KBPS = 8.0
LATENCY_TARGET_P95_MS = 120.0
COPY_MODEL_ID, COPY_MODEL_VERSION = "reference-copy", "0"


@dataclass(frozen=True)
class CallBenchConfig:
    seconds: float = 20.0  # output frames to record = seconds × fps
    fps: float = 25.0  # the sender's frame rate
    max_kbps: float | None = 8.0  # the sender's wire cap (None: none)
    keypoints: int | None = None  # pin K (None: the controller decides)
    frames_per_packet: int | None = None  # pin frames per packet (None: the controller decides)
    drop: float = 0.0  # fraction of motion packets dropped at the sender (fault injection)
    renderer: str = "model"  # "model" (FrameSynthesizer) or "reference-copy" (no synthesis)
    weights: str | None = None
    device: str | None = None
    seed: int = 0


class ReferenceCopy:
    """A renderer that shows the reference unchanged: measures the call without the synthesis cost."""

    model_id, model_version = COPY_MODEL_ID, COPY_MODEL_VERSION

    def __init__(self, image_size: int = 256) -> None:
        self.image_size = image_size

    def prepare(self, reference_rgb: np.ndarray) -> Any:
        from types import SimpleNamespace

        from codec.motion import MotionParams

        return SimpleNamespace(image=np.ascontiguousarray(reference_rgb), motion=MotionParams.neutral())

    def render(self, state: Any, motion: Any, view: Any = None) -> np.ndarray:
        return np.asarray(state.image)


def _synthesizer(config: CallBenchConfig) -> Any:
    if config.renderer == "reference-copy":
        return ReferenceCopy()
    from codec.model import FrameSynthesizer

    return FrameSynthesizer(None if config.weights is None else Path(config.weights), device=config.device)


def _receiver_child(url: str, config: CallBenchConfig, out: Any) -> None:
    try:
        from receiver.session import Receiver, ReceiverConfig
        from signaling.rtc import RtcOptions

        synthesizer = _synthesizer(config)
        rng = np.random.default_rng(0)
        warm_state = synthesizer.prepare(rng.integers(0, 255, (synthesizer.image_size,) * 2 + (3,), dtype=np.uint8))
        from codec.motion import MotionParams

        warm = []
        for _ in range(5):  # first renders allocate; keep them out of the measurement
            start = time.perf_counter()
            synthesizer.render(warm_state, MotionParams.neutral())
            warm.append((time.perf_counter() - start) * 1000.0)
        frames = int(round(config.seconds * config.fps))
        receiver = Receiver(
            ReceiverConfig(url, ROOM, rtc=RtcOptions(host_candidates="loopback"), max_frames=frames, exit_when_sender_leaves=True),
            synthesizer,
        )
        reason = asyncio.run(receiver.run())
        out.put(("receiver", {"end": reason, "warmup_render_ms": [round(w, 2) for w in warm], **receiver.report()}))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the benchmark
        out.put(("receiver", {"error": f"{type(exc).__name__}: {exc}"}))


def _reference(config: CallBenchConfig, synthesizer_ids: tuple[str, str, int]) -> Any:
    from codec.reference_message import ReferenceMessage, encode_portrait
    from sender.portrait import default_portrait, make_reference

    model_id, model_version, size = synthesizer_ids
    photo = default_portrait()
    if config.renderer == "reference-copy":  # no face crop needed: the whole photo, resized
        from PIL import Image

        face = np.asarray(Image.fromarray(photo).resize((size, size), Image.BICUBIC))
        return ReferenceMessage.from_image(encode_portrait(face), model_id, model_version)
    return make_reference(photo, size, model_id, model_version)


def _sender_child(url: str, config: CallBenchConfig, stop: Any, out: Any) -> None:
    try:
        from sender.session import Sender, SenderConfig
        from sender.sources import TraceSource
        from signaling.rtc import RtcOptions

        keypoints = 20
        if config.renderer == "reference-copy":
            ids = (COPY_MODEL_ID, COPY_MODEL_VERSION, 256)
        else:
            from codec.model import MotionEncoder

            encoder = MotionEncoder(None if config.weights is None else Path(config.weights), device=config.device)
            ids = (encoder.model_id, str(encoder.model_version), encoder.image_size)
            keypoints = encoder.num_keypoints
        rng = np.random.default_rng(config.seed)
        dropped = 0

        def drop(packet: bytes) -> bytes | None:
            nonlocal dropped
            if config.drop and rng.random() < config.drop:
                dropped += 1
                return None
            return packet

        sender = Sender(
            SenderConfig(
                url, ROOM, rtc=RtcOptions(host_candidates="loopback"), max_kbps=config.max_kbps, keypoints=config.keypoints,
                frames_per_packet=config.frames_per_packet,
            ),
            TraceSource(config.fps, num_keypoints=keypoints, seed=config.seed), _reference(config, ids), packet_filter=drop if config.drop else None,
        )

        async def run() -> str:
            task = asyncio.ensure_future(sender.run())
            while not task.done() and not stop.is_set():
                await asyncio.sleep(0.1)
            sender.stop()
            return await task

        reason = asyncio.run(run())
        out.put(("sender", {"end": reason, "packets_dropped_by_fault_injection": dropped, "links": sender.link_stats()}))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out.put(("sender", {"error": f"{type(exc).__name__}: {exc}"}))


def run_call_bench(config: CallBenchConfig) -> dict[str, Any]:
    """Run one call and return the result dict (RuntimeError if a side failed)."""
    from signaling.server import ServerConfig, start_server

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop = ctx.Event()

    async def orchestrate() -> dict[str, Any]:
        server = await start_server(ServerConfig(port=0, static_dir=None))
        results: dict[str, Any] = {}
        receiver = ctx.Process(target=_receiver_child, args=(server.url, config, out), name="bench-receiver")
        sender = ctx.Process(target=_sender_child, args=(server.url, config, stop, out), name="bench-sender")
        try:
            receiver.start()
            sender.start()
            deadline = time.monotonic() + config.seconds * 4 + 180
            while "receiver" not in results and time.monotonic() < deadline:
                while not out.empty():
                    side, result = out.get()
                    results[side] = result
                if "sender" in results and "receiver" not in results and not receiver.is_alive():
                    break
                await asyncio.sleep(0.2)
            stop.set()
            while "sender" not in results and time.monotonic() < deadline + 30:
                while not out.empty():
                    side, result = out.get()
                    results[side] = result
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            for proc in (receiver, sender):
                if proc.pid is None:  # never started
                    continue
                proc.join(15)
                if proc.is_alive():
                    proc.kill()
            await server.close()
        return results

    results = asyncio.run(orchestrate())
    for side in ("receiver", "sender"):
        if side not in results:
            raise RuntimeError(f"the {side} process returned no result")
        if "error" in results[side]:
            raise RuntimeError(f"the {side} failed: {results[side]['error']}")
    return summarize(config, results["sender"], results["receiver"])


def summarize(config: CallBenchConfig, sender: dict[str, Any], receiver: dict[str, Any]) -> dict[str, Any]:
    links = sender["links"]
    if not links:
        raise RuntimeError("the sender never connected to the receiver")
    link = links[0]
    seconds = link.get("motion_seconds") or 0.0
    payload_kbps = round(link["payload_bytes"] * 8 / 1000 / seconds, 3) if seconds else None
    latency, render = receiver["latency_ms"], receiver["render_ms"]
    summary = {
        "payload_kbps": payload_kbps,
        "wire_kbps": link.get("wire_kbps"),
        "wire_kbps_reverse": link.get("wire_kbps_reverse"),
        "output_fps": receiver["output_fps"],
        "rendered_fps": receiver["rendered_fps"],
        "latency_ms_median": latency["median"],
        "latency_ms_p95": latency["p95"],
        "render_ms_median": render["median"],
        "render_ms_p95": render["p95"],
        "playout_delay_ms": receiver["playout_delay_ms"],
        "frames_output": receiver["frames_output"],
        "frames_lost_in_transit": receiver["frames_lost_in_transit"],
        "frames_concealed": receiver["frames_concealed"],
        "frames_late": receiver["frames_late"],
        "packets_dropped_by_fault_injection": sender["packets_dropped_by_fault_injection"],
        "final_setting": link["rung"],
    }
    summary["meets_wire_target"] = summary["wire_kbps"] is not None and summary["wire_kbps"] <= WIRE_TARGET_KBPS
    summary["meets_latency_target"] = latency["p95"] is not None and latency["p95"] <= LATENCY_TARGET_P95_MS
    return {
        "benchmark": "call",
        "config": asdict(config),
        "conditions": {
            "transport": "aiortc data channels over 127.0.0.1 (loopback host candidates), sender and receiver in separate processes",
            "source": "built-in scripted head-motion trace (codec.synthetic_trace) driving the default portrait",
            "renderer": config.renderer if config.renderer != "model" else "codec.model.FrameSynthesizer",
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "targets": {"wire_kbps_max": WIRE_TARGET_KBPS, "fps": 25.0, "latency_ms_p95_max": LATENCY_TARGET_P95_MS},
        "summary": summary,
        "sender": sender,
        "receiver": receiver,
    }


def add_call_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``python -m bench call``."""
    d = CallBenchConfig()
    p = subparsers.add_parser("call", help="a real call over loopback: kbps, fps, glass-to-glass latency, losses")
    p.add_argument("--seconds", type=float, default=d.seconds, help="output to record (default %(default)s s)")
    p.add_argument("--json", type=Path, default=None, help="write the result JSON here")
    p.add_argument("--fps", type=float, default=d.fps, help="sender frame rate (default %(default)s)")
    p.add_argument("--max-kbps", type=float, default=d.max_kbps, help="sender wire cap, 0 for none (default %(default)s)")
    p.add_argument("--keypoints", type=int, default=None, help="pin K")
    p.add_argument("--frames-per-packet", type=int, default=None, help="pin frames per packet")
    p.add_argument("--drop", type=float, default=0.0, help="fraction of motion packets to drop at the sender")
    p.add_argument("--renderer", choices=("model", "reference-copy"), default=d.renderer, help="synthesis (default) or none")
    p.add_argument("--weights", default=None, help="model weights (default: the shipped ones)")
    p.add_argument("--device", default=None, help="torch device")
    p.add_argument("--seed", type=int, default=0, help="trace and drop seed")


def run_call_from_args(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or not 0.0 <= args.drop < 1.0:
        raise SystemExit(f"--seconds must be > 0 and --drop in [0, 1): got {args.seconds}, {args.drop}")
    config = CallBenchConfig(
        seconds=args.seconds, fps=args.fps, max_kbps=args.max_kbps or None, keypoints=args.keypoints,
        frames_per_packet=args.frames_per_packet, drop=args.drop, renderer=args.renderer, weights=args.weights,
        device=args.device, seed=args.seed,
    )
    try:
        result = run_call_bench(config)
    except (RuntimeError, ImportError) as exc:
        logger.error("bench call failed: %s", exc)
        return 1
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    s = result["summary"]
    print(
        f"call {config.seconds:g} s ({config.renderer}, cap {config.max_kbps or 'none'} kbps, drop {config.drop:.0%}): "
        f"payload {s['payload_kbps']} kbps, wire {s['wire_kbps']} kbps (reverse {s['wire_kbps_reverse']}), "
        f"output {s['output_fps']} fps, rendered {s['rendered_fps']} fps, latency median {s['latency_ms_median']} ms "
        f"p95 {s['latency_ms_p95']} ms (render median {s['render_ms_median']} ms), lost {s['frames_lost_in_transit']}, "
        f"concealed {s['frames_concealed']}, late {s['frames_late']}; setting {s['final_setting']}"
    )
    return 0
