"""Call benchmark: a real call over loopback WebRTC, measured end to end, the whole call counted.

Run::

    python -m bench call --seconds 20 --json OUT.json                     # the built-in trace, the default sender (8 kbps cap)
    python -m bench call --seconds 20 --source auto-clip --json OUT.json  # a test-group clip of ../shared/data/clips
    python -m bench call --seconds 20 --source clip.mp4 --json OUT.json   # any video file (loops if shorter than the call)
    python -m bench call --seconds 20 --max-kbps 0 --json OUT.json        # no cap: lowest latency
    python -m bench call --seconds 20 --drop 0.3 --json OUT.json          # 30 % of motion packets dropped
    python -m bench call --renderer reference-copy ...                    # transport and playout only, no synthesis

The signaling server runs in this process; the sender and the receiver each run in their own process, as on
two machines, with "loopback" host candidates (every packet on 127.0.0.1). The sender's motion comes from the
built-in scripted head-motion trace driving the default portrait (``--source trace``), or from a real clip
(``bench.call_source``: which clip; its frames resampled to --fps by timestamp and played again from the start
if it is shorter than the call): its frames go through the sender's own video pipeline
(``sender.sources.VideoSource``: face crop, motion encoder, landmark refinement, smoothing), and its first frame
with a face is the portrait sent.

The whole call (``whole_call`` in the JSON; each figure's ``method`` is written there too), for each direction,
sender → receiver and receiver → sender:

- bytes: every UDP datagram of the peer connection (STUN, DTLS, SCTP), with its UDP/IPv4 header, counted where
  aioice sends and receives it in the sender's process, and the same way in the receiver's as a cross-check
  (``bench.wire_log``);
- parts, split at the sender's own events: set-up, portrait, first-frame wait, motion (the steady state); the
  whole call is their sum; amortized rates over a call of ``--call-seconds`` (``bench.call_accounting``);
- signaling: what each peer exchanged with the signaling server over its WebSocket, counted at the client
  (``bench.wire_log``).

Also reported: payload kbps (motion packet bytes / the motion period); output fps (frames the receiver's
playout emitted) and rendered fps (frames the synthesizer finished; lower when rendering is slower than real
time: the newest motion wins and the output repeats); glass-to-glass latency: capture timestamp at the sender →
synthesized image ready at the receiver (both processes read one wall clock), median and p95 over frames
decoded from motion, with the render time inside it reported separately; losses: frames lost in transit
(receiver feedback), concealed, late, packets rejected.

Audio (``--audio generated``, the default): the sender also sends the generated speech-like signal as Opus
(``--audio-kbps``, ``--audio-frame-ms``, 40 by default) on its audio transceiver, and its motion shows a sync mark every
``SYNC_MARK_PERIOD_S`` (the mouth snaps open; the audio clicks at that capture time, ``sender.sync_marks``). The
receiver plays the audio delayed to the face's latency and measures each mark's offset, audio − face
(``receiver.av_sync``): ``av_offset_ms_median`` / ``av_offset_ms_p95_abs``. ``audio_wire_kbps`` counts the audio's
datagrams (SRTP, by their Opus payload type) over the motion period; ``wire_kbps`` stays motion alone (audio
subtracted), ``wire_kbps_with_audio`` is both. With motion riding inside the audio packets (``--motion-transport
rtp+audio``, the default; ``signaling.audio_motion``) the prefixes it adds to audio datagrams (counted by the sender:
they are encrypted) are motion's: ``wire_kbps`` = motion's own datagrams + those prefixes (its marginal cost),
``audio_wire_kbps`` = the audio datagrams without them, ``motion_in_audio_kbps`` the prefixes alone and
``motion_messages_ridden`` of ``motion_messages`` how many rode. ``wire_kbps_both_directions`` is motion's both ways
(``..._with_audio`` adds the audio).

Targets (issue #6): wire ≤ 8 kbps at 25 fps output; latency p95 ≤ 120 ms. Issue #23: |audio − face| p95 ≤ 40 ms.
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

from bench.call_accounting import format_whole_call, whole_call
from bench.call_source import AUTO_CLIP, TRACE_SOURCE, LoopedClip, clip_seconds, resolve_source
from bench.impairment import Impairment, impaired
from bench.wire_log import CountingSignaling, WireLog, install_wire_log

logger = logging.getLogger(__name__)

ROOM = "bench"
WIRE_TARGET_KBPS = 8.0
LATENCY_TARGET_P95_MS = 120.0
AV_OFFSET_TARGET_P95_MS = 40.0
SYNC_MARK_PERIOD_S = 2.0
COPY_MODEL_ID, COPY_MODEL_VERSION = "reference-copy", "0"
DEFAULT_CLIPS = Path("../shared/data/clips")  # the clips folder for --source auto-clip
DEFAULT_CALL_SECONDS = (20.0, 60.0)  # call lengths over which set-up and portrait are amortized
FIRST_FACE_SEARCH_FRAMES = 250  # frames of a clip searched for the portrait (the first with a face)


@dataclass(frozen=True)
class CallBenchConfig:
    seconds: float = 20.0  # output frames to record = seconds × fps
    fps: float = 25.0  # the sender's frame rate (a clip is resampled to it)
    max_kbps: float | None = 8.0  # the sender's wire cap (None: none)
    keypoints: int | None = None  # pin K (None: the controller decides)
    frames_per_packet: int | None = None  # pin frames per packet (None: the controller decides)
    drop: float = 0.0  # fraction of motion packets dropped at the sender (fault injection)
    renderer: str = "model"  # "model" (FrameSynthesizer) or "reference-copy" (no synthesis)
    weights: str | None = None
    render_weights: str | None = None  # the receiver's model (None: weights), e.g. a distilled one reading the same motion
    device: str | None = None
    seed: int = 0
    source: str = TRACE_SOURCE  # "trace" or a video file (played again from the start if shorter than the call)
    call_seconds: tuple[float, ...] = DEFAULT_CALL_SECONDS  # call lengths for the amortized rates
    motion_transport: str = "rtp+audio"  # both ends' --motion-transport: "rtp+audio" (the default), "rtp" or "datachannel"
    srtp_tag_bits: int = 80  # both ends' --srtp-tag-bits
    audio: str = "generated"  # "generated" (speech-like signal + sync marks) or "none"
    impair_loss: float = 0.0  # fraction of each process's outgoing media datagrams dropped (bench.impairment)
    impair_jitter_ms: float = 0.0  # each outgoing media datagram delayed by 0..this ms (reorders them)

    def impairment(self) -> Impairment:
        return Impairment(self.impair_loss, self.impair_jitter_ms, self.seed)
    audio_kbps: float = 16.0  # Opus bitrate
    audio_frame_ms: int = 40  # Opus frame per packet: 20, 40 or 60 ms (the sender's default, sender.audio_sources.DEFAULT_FRAME_MS)
    motion_audio_wait_ms: float | None = None  # the sender's --motion-audio-wait-ms (None: its default)
    audio_hold_ms: float = 20.0  # the sender's --audio-hold-ms
    enhancement: bool = False  # a clip source with a model that has the branch: the enhancement layer's ladder is on
    calibration: str = "auto"  # a clip source: the sender's keypoint calibration (sender/calibration.py): auto, on, off
    calibration_cache: str = ""  # a folder of offsets kept across runs (sender/calibration_cache.py), as the sender CLI's; "": none
    keypoint_tracking: str = "auto"  # per-frame corrections after the offset (sender/keypoint_tracking.py): auto, on, off

    def rtc(self) -> Any:
        from signaling.rtc import RtcOptions

        return RtcOptions(host_candidates="loopback", motion_transport=self.motion_transport, srtp_tag_bits=self.srtp_tag_bits)


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


# -- the two processes --------------------------------------------------------------------------
def _synthesizer(config: CallBenchConfig) -> Any:
    if config.renderer == "reference-copy":
        return ReferenceCopy()
    from codec.model import FrameSynthesizer

    weights = config.render_weights or config.weights
    return FrameSynthesizer(None if weights is None else Path(weights), device=config.device)


def _receiver_child(url: str, config: CallBenchConfig, out: Any) -> None:
    try:
        from receiver.session import Receiver, ReceiverConfig

        wire = install_wire_log()
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
        signaling = CountingSignaling(url, ROOM, "receiver")
        receiver = Receiver(
            ReceiverConfig(url, ROOM, rtc=config.rtc(), max_frames=frames, exit_when_sender_leaves=True),
            synthesizer, signaling=signaling,
        )
        with impaired(config.impairment()) as impairment:
            reason = asyncio.run(receiver.run())
        out.put(("receiver", {
            "end": reason, "warmup_render_ms": [round(w, 2) for w in warm], **receiver.report(),
            "signaling": signaling.stats(), "datagrams": wire.datagrams, "impairment": asdict(impairment) | {"delays_ms": None},
        }))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the benchmark
        out.put(("receiver", {"error": f"{type(exc).__name__}: {exc}"}))


def _trace_inputs(config: CallBenchConfig) -> tuple[Any, Any, dict[str, Any]]:
    """The trace source and the default portrait: (source, reference message, source info)."""
    from codec.reference_message import ReferenceMessage, encode_portrait
    from sender.portrait import default_portrait, make_reference
    from sender.sources import TraceSource

    keypoints, size = 20, 256
    if config.renderer == "reference-copy":
        ids = (COPY_MODEL_ID, COPY_MODEL_VERSION)
    else:
        from codec.model import MotionEncoder

        encoder = MotionEncoder(None if config.weights is None else Path(config.weights), device=config.device)
        ids, size, keypoints = (encoder.motion_model_id, str(encoder.model_version)), encoder.image_size, encoder.num_keypoints
    photo = default_portrait()
    if config.renderer == "reference-copy":  # no face crop needed: the whole photo, resized
        from PIL import Image

        face = np.asarray(Image.fromarray(photo).resize((size, size), Image.BICUBIC))
        reference = ReferenceMessage.from_image(encode_portrait(face), *ids)
    else:
        reference = make_reference(photo, size, *ids)
    source = TraceSource(config.fps, num_keypoints=keypoints, seed=config.seed)
    return source, reference, {"kind": TRACE_SOURCE, "name": source.name, "portrait": "the default portrait (astronaut)"}


def _clip_inputs(config: CallBenchConfig) -> tuple[Any, Any, np.ndarray | None, LoopedClip, dict[str, Any]]:
    """A clip through the sender's video pipeline, its first frame with a face as the portrait:
    (source, reference message, expression baseline, looped clip, source info)."""
    from codec.data.clips import iter_clip_frames
    from codec.face.crop import FaceCropper
    from codec.reference_message import decode_portrait
    from sender.__main__ import load_motion_encoder
    from sender.portrait import make_reference
    from sender.sources import VideoSource

    path = Path(config.source)
    encoder = load_motion_encoder(None if config.weights is None else Path(config.weights), config.device)
    ids = (COPY_MODEL_ID, COPY_MODEL_VERSION) if config.renderer == "reference-copy" else (
        encoder.motion_model_id, str(getattr(encoder, "model_version", "1")))
    reference = None
    for index, frame in enumerate(iter_clip_frames(path)):
        if index >= FIRST_FACE_SEARCH_FRAMES:
            break
        try:
            reference = make_reference(frame, encoder.image_size, *ids)
            break
        except ValueError:  # no face in this frame
            continue
    if reference is None:
        raise ValueError(f"no face in the first {FIRST_FACE_SEARCH_FRAMES} frames of {str(path)!r}: pick another clip")
    portrait = decode_portrait(reference)  # as the receiver decodes it
    refiner = encoder.landmark_refiner(portrait) if hasattr(encoder, "landmark_refiner") else None
    baseline = np.asarray(encoder.encode(portrait).expression) if hasattr(encoder, "encode") else None
    from sender.calibration import make_calibrator  # as the sender CLI
    from sender.calibration_cache import CalibrationCache

    cache = CalibrationCache(Path(config.calibration_cache)) if config.calibration_cache else None
    calibrator = (make_calibrator(config.calibration, encoder, portrait, cache, config.keypoint_tracking)
                  if config.renderer == "model" else None)
    frames = LoopedClip(path, config.fps)
    source = VideoSource(
        frames, str(path), FaceCropper(output_size=encoder.image_size, fps=config.fps), encoder, fps=config.fps,
        refiner=refiner if refiner is not None and refiner.active else None, calibrator=calibrator,
    )
    info = {
        "kind": "clip", "name": str(path), "clip_seconds": round(clip_seconds(path), 3),
        "portrait": f"frame {index} of the clip (the first with a face)",
        "landmark_refinement": bool(refiner is not None and refiner.active),
        "keypoint_calibration": calibrator is not None,  # its outcome: the sender's link stats
        "enhancement_size": int(encoder.model.config.enhancement_size) if hasattr(encoder, "model") else 0,  # E of its branch
    }
    return source, reference, baseline, frames, info


def _sender_child(url: str, config: CallBenchConfig, stop: Any, out: Any) -> None:
    try:
        from codec.reference_message import pack_reference_message
        from sender.session import Sender, SenderConfig

        wire = install_wire_log()
        clip: LoopedClip | None = None
        baseline = None
        if config.source == TRACE_SOURCE:
            source, reference, info = _trace_inputs(config)
        else:
            source, reference, baseline, clip, info = _clip_inputs(config)
        rng = np.random.default_rng(config.seed)
        dropped = 0

        def drop(packet: bytes) -> bytes | None:
            nonlocal dropped
            if config.drop and rng.random() < config.drop:
                dropped += 1
                return None
            return packet

        audio = None
        if config.audio == "generated":
            from sender.audio_sender import AudioConfig, AudioSender
            from sender.audio_sources import GeneratedSpeech
            from sender.sync_marks import MarkedSource, SyncMarks

            marks = SyncMarks(period_s=SYNC_MARK_PERIOD_S)
            source = MarkedSource(source, marks)
            audio = AudioSender(GeneratedSpeech(config.audio_frame_ms, marks=marks, seed=config.seed),
                                AudioConfig(config.audio_kbps, config.audio_frame_ms))
            info["audio"] = f"generated speech-like signal, Opus {config.audio_kbps:g} kbps mono, {config.audio_frame_ms} ms frames; sync marks every {SYNC_MARK_PERIOD_S:g} s"
        signaling = CountingSignaling(url, ROOM, "sender")
        sender = Sender(
            SenderConfig(
                url, ROOM, rtc=config.rtc(), max_kbps=config.max_kbps, keypoints=config.keypoints,
                frames_per_packet=config.frames_per_packet, motion_audio_wait_ms=config.motion_audio_wait_ms,
                audio_hold_ms=config.audio_hold_ms,
            ),
            source, reference, signaling=signaling, packet_filter=drop if config.drop else None, expression_baseline=baseline,
            audio=audio, enhancement_size=int(info.get("enhancement_size", 0)) if config.enhancement else 0,
        )

        async def run() -> str:
            task = asyncio.ensure_future(sender.run())
            while not task.done() and not stop.is_set():
                await asyncio.sleep(0.1)
            sender.stop()
            return await task

        with impaired(config.impairment()):
            reason = asyncio.run(run())
        worker = getattr(source, "_thread", None)  # a video source's worker: let it finish its frame (killed inside
        if worker is not None:  # the face model's threads at exit, the process aborts)
            worker.join(10.0)
        info.update(frames_captured=sender.frames_captured, faces_missed=getattr(source, "faces_missed", 0))
        if clip is not None:
            info.update(passes=clip.passes, frames_per_pass=clip.frames_per_pass)
        out.put(("sender", {
            "end": reason, "packets_dropped_by_fault_injection": dropped, "links": sender.link_stats(), "source": info,
            "reference_message_bytes": len(pack_reference_message(reference)), "marks": _sender_marks(sender, wire),
            "signaling": signaling.stats(), "datagrams": wire.datagrams, "udp_sockets": wire.sockets,
            "audio": None if audio is None else audio.stats(),
        }))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        out.put(("sender", {"error": f"{type(exc).__name__}: {exc}"}))


def _sender_marks(sender: Any, wire: WireLog) -> dict[str, float | None]:
    """The sender's events that split the call (wall ms), for its first receiver link."""
    first_event: dict[str, float] = {}
    for t_ms, name, _ in sender.events:
        first_event.setdefault(name, t_ms)
    rx = sender.link_history[0] if sender.link_history else None
    return {
        "signaling_joined_ms": first_event.get("joined"),
        "receiver_joined_ms": first_event.get("receiver_joined"),  # the sender heard of the receiver: its offer follows
        "first_packet_ms": min((d[0] for d in wire.datagrams), default=None),
        "channel_open_ms": None if rx is None else rx.started_ms,
        "reference_ready_ms": first_event.get("reference_ready"),
        "first_motion_ms": None if rx is None or rx.first_motion is None else rx.first_motion[0],
        "last_motion_ms": None if rx is None or rx.last_motion is None else rx.last_motion[0],
    }


def run_call_bench(config: CallBenchConfig) -> dict[str, Any]:
    """Run one call and return the result dict (RuntimeError if a side failed)."""
    from signaling.server import ServerConfig, start_server

    if config.source != TRACE_SOURCE and not Path(config.source).exists():
        raise RuntimeError(f"source {config.source!r} is neither {TRACE_SOURCE!r} nor an existing video file or image folder")
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


# -- the result -------------------------------------------------------------------------------
def summarize(config: CallBenchConfig, sender: dict[str, Any], receiver: dict[str, Any]) -> dict[str, Any]:
    """The result dict from what the two processes handed back: summary, whole call, conditions, targets."""
    sender, receiver = dict(sender), dict(receiver)
    sender_datagrams, receiver_datagrams = sender.pop("datagrams"), receiver.pop("datagrams")
    links = sender["links"]
    if not links:
        raise RuntimeError("the sender never connected to the receiver")
    link = links[0]
    seconds = link.get("motion_seconds") or 0.0
    payload_kbps = round(link["payload_bytes"] * 8 / 1000 / seconds, 3) if seconds else None
    signaling = {"sender": sender.pop("signaling"), "receiver": receiver.pop("signaling")}
    whole = whole_call(
        sender_datagrams, receiver_datagrams, sender["marks"], signaling, sender["reference_message_bytes"], config.call_seconds,
    )
    forward, reverse = whole["sender_to_receiver"], whole["receiver_to_sender"]
    latency, render = receiver["latency_ms"], receiver["render_ms"]
    source_fps = round(link["frames"] / seconds, 2) if seconds and "frames" in link else None
    motion_part = forward["parts"]["motion"]
    audio_datagram_kbps = motion_part.get("rtp_audio_bytes", 0) * 8 / 1000 / motion_part["seconds"] if motion_part["seconds"] else None
    # Motion riding in the audio packets: its prefixes are inside the audio's datagrams (encrypted, so counted by the
    # sender); they are motion's marginal cost, not the audio's.
    riding = link.get("motion_in_audio")
    ridden_bytes = (link.get("audio_rtp") or {}).get("motion_bytes_sent", 0) if riding else 0
    riding_kbps = ridden_bytes * 8 / 1000 / seconds if seconds else 0.0
    audio_wire_kbps = None if audio_datagram_kbps is None else round(audio_datagram_kbps - riding_kbps, 3)
    wire_with_audio = motion_part["kbps"]
    wire_kbps = None if wire_with_audio is None else round(wire_with_audio - (audio_wire_kbps or 0.0), 3)
    sync = (receiver.get("audio") or {}).get("sync") or {}
    summary = {
        "payload_kbps": payload_kbps,
        "source_fps": source_fps,
        "wire_kbps": wire_kbps,
        "wire_kbps_with_audio": wire_with_audio,
        "motion_in_audio_kbps": round(riding_kbps, 3) if riding else None,
        "motion_messages_ridden": None if not riding else riding["messages_ridden"],
        "motion_messages": None if not riding else riding["messages"],
        "audio_wire_kbps": audio_wire_kbps if sender.get("audio") else None,
        "audio_payload_kbps": (sender.get("audio") or {}).get("payload_kbps"),
        "av_offset_ms_median": sync.get("offset_ms_median"),
        "av_offset_ms_p95_abs": sync.get("offset_ms_p95_abs"),
        "av_sync_pairs": sync.get("pairs"),
        "audio_delay_ms": (receiver.get("audio") or {}).get("delay_ms"),
        "wire_kbps_reverse": reverse["parts"]["motion"]["kbps"],
        "wire_kbps_both_directions": _sum_or_none(wire_kbps, reverse["parts"]["motion"]["kbps"]),
        "wire_kbps_both_directions_with_audio": _sum_or_none(forward["parts"]["motion"]["kbps"], reverse["parts"]["motion"]["kbps"]),
        "motion_transport": link.get("motion_transport"),
        "rtp_packets_lost": (receiver.get("rtp") or {}).get("packets_lost"),
        "wire_kbps_dtls_counters": link.get("wire_kbps"),
        "wire_kbps_reverse_dtls_counters": link.get("wire_kbps_reverse"),
        "call_seconds_measured": whole["seconds"],
        "call_bytes": forward["total"]["bytes"],
        "call_bytes_reverse": reverse["total"]["bytes"],
        "call_kbps": forward["total"]["kbps"],
        "call_kbps_reverse": reverse["total"]["kbps"],
        "setup_bytes": forward["parts"]["setup"]["bytes"],
        "setup_bytes_reverse": reverse["parts"]["setup"]["bytes"],
        "portrait_bytes": forward["parts"]["portrait"]["bytes"],
        "portrait_bytes_reverse": reverse["parts"]["portrait"]["bytes"],
        "wire_kbps_call": [
            {"call_seconds": a["call_seconds"], "kbps": a["kbps"], "kbps_reverse": b["kbps"]}
            for a, b in zip(forward["amortized"], reverse["amortized"])
        ],
        "output_fps": receiver["output_fps"],
        "rendered_fps": receiver["rendered_fps"],
        "latency_ms_median": latency["median"],
        "latency_ms_p95": latency["p95"],
        "latency_parts_ms": receiver.get("latency_parts_ms"),
        "latency_ms_by_window": receiver.get("latency_ms_by_window"),
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
    if sender.get("audio"):
        summary["meets_av_offset_target"] = sync.get("offset_ms_p95_abs") is not None and sync["offset_ms_p95_abs"] <= AV_OFFSET_TARGET_P95_MS
    source = sender["source"]
    if source["kind"] == TRACE_SOURCE:
        source_text = "built-in scripted head-motion trace (codec.synthetic_trace) driving the default portrait"
    else:
        passes = source.get("passes") or 1
        source_text = (
            f"clip {source['name']} ({source['clip_seconds']} s) resampled to {config.fps:g} fps through the sender's video "
            f"pipeline (face crop, motion encoder{', landmark refinement' if source.get('landmark_refinement') else ''}, "
            f"smoothing); portrait: {source['portrait']}; "
            + (f"shorter than the call: played {passes} times from the start" if passes > 1 else "played once")
        )
        if source_fps is not None and source_fps < 0.9 * config.fps:
            source_text += (f"; the sender's pipeline delivered {source_fps:g} of the {config.fps:g} fps asked (this machine "
                            f"is too slow for it), so the clip played at {source_fps / config.fps:.2f}× speed")
    return {
        "benchmark": "call",
        "config": asdict(config),
        "conditions": {
            "transport": (
                f"motion as {_transport_text(config)}"
                f" (the link chose: {link.get('motion_transport')}), control on a data channel, aiortc over 127.0.0.1 (loopback host "
                "candidates), sender and receiver in separate processes"
            ),
            "source": source_text,
            "renderer": config.renderer if config.renderer != "model" else "codec.model.FrameSynthesizer",
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "targets": {"wire_kbps_max": WIRE_TARGET_KBPS, "fps": 25.0, "latency_ms_p95_max": LATENCY_TARGET_P95_MS,
                    "av_offset_ms_p95_abs_max": AV_OFFSET_TARGET_P95_MS},
        "summary": summary,
        "whole_call": whole,
        "sender": sender,
        "receiver": receiver,
    }


def _run_participants_from_args(args: argparse.Namespace) -> int:
    from bench.participants import ParticipantsBenchConfig, format_summary, run_participants_bench

    config = ParticipantsBenchConfig(
        participants=args.participants, seconds=args.seconds, kill_after_s=args.kill_after, others_fps=args.others_fps,
        max_kbps=args.max_kbps or None, weights=args.weights, render_weights=args.render_weights, device=args.device,
        audio_frame_ms=args.audio_frame_ms,
        measure_first=args.measure_first,
    )
    try:
        result = run_participants_bench(config)
    except RuntimeError as exc:
        logger.error("bench call --participants failed: %s", exc)
        return 1
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    print(format_summary(result))
    return 0


def _transport_text(config: CallBenchConfig) -> str:
    if config.motion_transport == "datachannel":
        return "a data channel"
    text = f"RTP (SRTP, {config.srtp_tag_bits}-bit tag preferred)"
    if config.motion_transport == "rtp+audio":
        wait = "one audio frame, at most 20 ms" if config.motion_audio_wait_ms is None else f"{config.motion_audio_wait_ms:g} ms"
        text += f" riding inside the audio's RTP packets when the call has audio (wait {wait}, audio hold {config.audio_hold_ms:g} ms)"
    return text


def _sum_or_none(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a + b, 3)


# -- the CLI ----------------------------------------------------------------------------------
def add_call_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``python -m bench call``."""
    d = CallBenchConfig()
    p = subparsers.add_parser(
        "call", help="a real call over loopback: the whole call's bytes both ways, fps, glass-to-glass latency, losses"
    )
    p.add_argument("--seconds", type=float, default=d.seconds, help="output to record (default %(default)s s)")
    p.add_argument("--json", type=Path, default=None, help="write the result JSON here")
    p.add_argument(
        "--source", default=d.source,
        help=f"'{TRACE_SOURCE}' (the built-in head-motion trace, default), '{AUTO_CLIP}' (the first test-group clip of "
        "--clips lasting --seconds, else the longest) or a video file / image folder; a clip shorter than the call loops",
    )
    p.add_argument("--clips", type=Path, default=DEFAULT_CLIPS, help=f"clips folder for --source {AUTO_CLIP} (default %(default)s)")
    p.add_argument("--call-seconds", type=float, nargs="+", default=list(d.call_seconds),
                   help="call lengths over which set-up and portrait are amortized (default %(default)s)")
    p.add_argument("--fps", type=float, default=d.fps, help="sender frame rate (default %(default)s)")
    p.add_argument("--max-kbps", type=float, default=d.max_kbps, help="sender wire cap, 0 for none (default %(default)s)")
    p.add_argument("--keypoints", type=int, default=None, help="pin K")
    p.add_argument("--frames-per-packet", type=int, default=None, help="pin frames per packet")
    p.add_argument("--drop", type=float, default=0.0, help="fraction of motion packets to drop at the sender")
    p.add_argument("--renderer", choices=("model", "reference-copy"), default=d.renderer, help="synthesis (default) or none")
    p.add_argument("--weights", default=None,
                   help="model file, shipped or trained; its preset is read from the file (default: the shipped one)")
    p.add_argument("--render-weights", default=None,
                   help="the receiver's (participants': the others') model when not --weights: one that reads the same motion, "
                        "e.g. codec/weights/web.safetensors (distilled from the shipped model)")
    p.add_argument("--device", default="auto",
                   help="where sender and receiver run the model: auto (CUDA when present, else CPU), cpu, cuda or cuda:N "
                        "(default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="trace and drop seed")
    p.add_argument("--impair-loss", type=float, default=0.0,
                   help="drop this fraction of every media datagram each peer sends (both directions; bench.impairment)")
    p.add_argument("--impair-jitter-ms", type=float, default=0.0,
                   help="delay each media datagram each peer sends by 0..this many ms (reorders them)")
    p.add_argument("--motion-transport", choices=("rtp+audio", "rtp", "datachannel"), default=d.motion_transport,
                   help="how motion crosses the link, both ends (default %(default)s: inside the audio packets when there is "
                        "audio; see signaling.rtp_motion, signaling.audio_motion)")
    p.add_argument("--audio-frame-ms", type=int, choices=(20, 40, 60), default=d.audio_frame_ms,
                   help="Opus frame per audio packet (default %(default)s)")
    p.add_argument("--motion-audio-wait-ms", type=float, default=None,
                   help="how long a motion message may wait for an audio packet to ride (default: one audio frame, at most 20)")
    p.add_argument("--audio-hold-ms", type=float, default=d.audio_hold_ms,
                   help="how long an audio packet may wait for a motion message (default %(default)g)")
    p.add_argument("--audio", choices=("generated", "none"), default=d.audio,
                   help="sound: the generated speech-like signal with sync marks, for the audio-video offset (default), or none")
    p.add_argument("--audio-kbps", type=float, default=d.audio_kbps, help="Opus bitrate (default %(default)g)")
    p.add_argument("--srtp-tag-bits", type=int, choices=(80, 32), default=d.srtp_tag_bits,
                   help="SRTP tag both ends prefer for RTP motion (default %(default)s)")
    p.add_argument("--calibration", choices=("auto", "on", "off"), default=d.calibration,
                   help="a clip source: the sender's keypoint calibration, as its CLI (default %(default)s)")
    p.add_argument("--keypoint-tracking", choices=("auto", "on", "off"), default=d.keypoint_tracking,
                   help="a clip source: per-frame keypoint corrections after the offset, as the sender CLI's (default %(default)s)")
    p.add_argument("--calibration-cache", default=d.calibration_cache, metavar="DIR",
                   help="keep fitted offsets here across runs, as the sender CLI does (default: none, every run fits)")
    p.add_argument("--enhancement", action="store_true",
                   help="with a clip --source and a model with the enhancement branch: the sender may send the enhancement "
                        "layer (its ladder climbs to the rungs the cap allows; codec.enhancement.picture_rate)")
    p.add_argument("--participants", type=int, default=0,
                   help="a two-way call of this many 'python -m participant' processes (2-4) instead of one sender and one "
                        "receiver (bench.participants); takes --seconds, --max-kbps, --weights, --device, --audio-frame-ms")
    p.add_argument("--kill-after", type=float, default=None, metavar="SECONDS",
                   help="with --participants: kill -9 the last participant this far into the call and start it again")
    p.add_argument("--others-fps", default="auto", help="with --participants: their --others-fps (default %(default)s)")
    p.add_argument("--measure-first", action="store_true",
                   help="with --participants: the first as if on its own machine (the others at nice 19, rendering ≤ 2 fps, "
                        "still sending at full rate); the summary is the first's")


def run_call_from_args(args: argparse.Namespace) -> int:
    if args.participants:
        return _run_participants_from_args(args)
    if args.seconds <= 0 or not 0.0 <= args.drop < 1.0:
        raise SystemExit(f"--seconds must be > 0 and --drop in [0, 1): got {args.seconds}, {args.drop}")
    if not 0.0 <= args.impair_loss < 1.0 or not 0.0 <= args.impair_jitter_ms <= 10_000:
        raise SystemExit(f"--impair-loss must be in [0, 1) and --impair-jitter-ms in [0, 10000]: got {args.impair_loss}, "
                         f"{args.impair_jitter_ms}")
    if not all(s > 0 for s in args.call_seconds):
        raise SystemExit(f"--call-seconds must be positive, got {args.call_seconds}")
    try:
        source = resolve_source(args.source, args.clips, args.seconds)
        from codec.model.loading import pick_device

        pick_device(args.device)  # here, not in the two child processes, so a bad --device fails with its reason
    except (ValueError, FileNotFoundError) as exc:
        logger.error("bench call: %s", exc)
        return 2
    config = CallBenchConfig(
        seconds=args.seconds, fps=args.fps, max_kbps=args.max_kbps or None, keypoints=args.keypoints,
        frames_per_packet=args.frames_per_packet, drop=args.drop, renderer=args.renderer, weights=args.weights,
        render_weights=args.render_weights, device=args.device, seed=args.seed, source=source, call_seconds=tuple(args.call_seconds),
        motion_transport=args.motion_transport, srtp_tag_bits=args.srtp_tag_bits,
        impair_loss=args.impair_loss, impair_jitter_ms=args.impair_jitter_ms, audio=args.audio, audio_kbps=args.audio_kbps,
        audio_frame_ms=args.audio_frame_ms, motion_audio_wait_ms=args.motion_audio_wait_ms, audio_hold_ms=args.audio_hold_ms,
        enhancement=args.enhancement, calibration=args.calibration, calibration_cache=args.calibration_cache,
        keypoint_tracking=args.keypoint_tracking,
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
        f"call {config.seconds:g} s ({config.renderer}, {'trace' if config.source == TRACE_SOURCE else config.source}, "
        f"cap {config.max_kbps or 'none'} kbps, drop {config.drop:.0%}): source {s['source_fps']} fps, "
        f"motion as {s['motion_transport']}: payload {s['payload_kbps']} kbps, wire {s['wire_kbps']} kbps "
        f"(reverse {s['wire_kbps_reverse']}, both {s['wire_kbps_both_directions']}), "
        f"output {s['output_fps']} fps, rendered {s['rendered_fps']} fps, latency median {s['latency_ms_median']} ms "
        f"p95 {s['latency_ms_p95']} ms (render median {s['render_ms_median']} ms), lost {s['frames_lost_in_transit']}, "
        f"concealed {s['frames_concealed']}, late {s['frames_late']}; setting {s['final_setting']}"
    )
    if config.audio != "none":
        if s["motion_messages"]:
            print(f"motion in the audio: {s['motion_messages_ridden']} of {s['motion_messages']} messages rode, "
                  f"{s['motion_in_audio_kbps']} kbps of prefixes (counted in the motion's wire kbps, not the audio's)")
        print(f"audio: wire {s['audio_wire_kbps']} kbps (Opus payload {s['audio_payload_kbps']} kbps), delay {s['audio_delay_ms']} ms; "
              f"audio - face offset median {s['av_offset_ms_median']} ms, p95 |offset| {s['av_offset_ms_p95_abs']} ms "
              f"over {s['av_sync_pairs']} marks")
    print(format_whole_call(result))
    return 0
