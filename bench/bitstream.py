"""Motion bitstream benchmark: bytes per frame, payload/wire/entropy kbps and errors per setting.

Run::

    python -m bench bitstream --json OUT.json                  # seeded synthetic trace, 30 s
    python -m bench bitstream --trace trace.npz --json OUT.json  # a recorded trace (see below)
    python -m bench bitstream --presets default --ks 20 --fpps 1 2 3 --seconds 10 --quick

For every quantizer preset × K ∈ {20, 10, 5, 0} × frames per packet ∈ {1, 2, 3} × fps ∈ {25, 30} it
runs the real ``MotionPacketizer`` → ``MotionDepacketizer`` pair, with feedback reaching the sender
``--feedback-delay-ms`` after each packet (a round trip plus the receiver's feedback interval) and
optional random loss, and reports:

- bytes per frame: all, in KEY packets, in DELTA packets (our packet bytes, header included);
- payload kbps (the motion messages) and wire kbps as the call sends them between Python peers: RTP, payload +
  ``RTP_MOTION_OVERHEAD_BYTES`` (50) per packet (``bench.codecs.motion_transport``); and wire kbps on the data channel
  (browsers, older peers, ``--motion-transport datachannel``) = payload + ``WIRE_OVERHEAD_BYTES`` (93) per packet +
  SCTP padding of the DATA chunk to 4 bytes;
- entropy kbps: order-0 empirical entropy of the quantized integers the packets code (DELTA
  residuals and KEY absolute values; one alphabet per class: angles, translation, δ, KEY values),
  the bound a memoryless coder of those symbols could reach, with no headers;
- the largest decoded error per field group (degrees / normalized units);
- for comparison, the bytes per frame of the other entropy-coding options on the same residuals and
  headers (``codec.baseline_coders``): float32, float16, fixed-width quantized, msgpack,
  msgpack + zstd, msgpack + zstd with the shipped dictionary.

K < 20 sends the δ of the keypoints the sender itself would choose, causally, from the frames so far
(``bench.keypoint_choice`` replays ``sender.controller``; the portrait's own δ is its baseline for real
clips); K = 0 sends the pose only.

The default feedback delay, 100 ms, stands for a 60-80 ms round trip plus the receiver's feedback
cadence; it sets how old the confirmed reference is. Measured (default preset, K = 20, 25 fps, 60 s;
payload kbps for 1 / 2 / 3 frames per packet): delay 0 → 2.34 / 1.81 / 1.64; 100 ms → 2.64 / 2.08 /
1.64; 200 ms → 2.82 / 2.04 / 1.84. With 100 ms and 5 % (20 %) random packet loss the receiver decoded
94 % (78-80 %) of the frames, every one exactly: a loss costs only the lost packet's own frames.

Wire overhead per data-channel message (IPv4, DTLS 1.2 with AES-128-GCM, which Chrome and aiortc
negotiate): IPv4 20 + UDP 8 + DTLS record header 13 + GCM explicit nonce 8 + GCM tag 16 + SCTP common
header 12 + SCTP DATA chunk header 16 = 93 bytes, plus 0-3 bytes padding the DATA chunk to a multiple
of 4. (With ChaCha20-Poly1305 the DTLS part is 29 bytes, 85 in all; SACKs flow the other way.)

Trace files (``--trace``): an .npz with ``yaw``, ``pitch``, ``roll`` (N,) degrees, ``translation``
(N, 3), ``expression`` (N, K, 3), optional ``present`` (N, K) bool, ``timestamps_ms`` (N,) and
``fps`` (scalar); ``save_trace`` writes one. A trace runs at its own fps. Real clips (``--clips``) are
resampled by timestamp to ``--clip-fps`` (25: a camera at the call's rate; a 30 fps clip drops one frame
in six) before the face crop, so their kbps are measured at the rate a call sends, not scaled to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codec.baseline_coders import fixed_width_body, msgpack_body, raw_float_body, zstd_body
from codec.bitstream import SEQ_MODULUS, Layout, residuals_for_packet, unpack_header
from codec.motion import MotionParams
from codec.prediction import DEFAULT_KEY_INTERVAL_FRAMES, MotionDepacketizer, MotionPacketizer
from codec.quantize import PRESETS_BY_NAME, get_preset
from bench.codecs.datachannel import DATA_CHANNEL_PACKET_OVERHEAD_BYTES
from bench.codecs.motion_transport import RTP_MOTION_OVERHEAD_BYTES, motion_wire_bytes
from bench.keypoint_choice import SenderKeypointChoice
from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms

logger = logging.getLogger(__name__)

WIRE_OVERHEAD_BYTES = DATA_CHANNEL_PACKET_OVERHEAD_BYTES  # 93 (bench.codecs.datachannel)
TARGET_PAYLOAD_KBPS = 1.0
TARGET_ENTROPY_RATIO = 1.2
ALTERNATIVES = ("float32", "float16", "fixed_width", "msgpack", "zstd", "zstd_dict")


def rtp_wire_bytes(payload_bytes: int) -> int:
    """On-the-wire bytes of one motion packet of ``payload_bytes`` sent as RTP (the call's default transport)."""
    return motion_wire_bytes(payload_bytes)


def wire_bytes(payload_bytes: int) -> int:
    """On-the-wire bytes of one data-channel message of ``payload_bytes``."""
    return payload_bytes + (-payload_bytes) % 4 + WIRE_OVERHEAD_BYTES


@dataclass(frozen=True)
class BenchConfig:
    presets: tuple[str, ...] = ("fine", "default", "coarse")  # quantizer presets by name
    ks: tuple[int, ...] = (20, 10, 5, 0)  # δ rows sent
    fpps: tuple[int, ...] = (1, 2, 3)  # frames per packet
    fpss: tuple[float, ...] = (25.0, 30.0)  # frame rates (synthetic trace only)
    seconds: float = 30.0  # synthetic trace length
    seed: int = 0  # synthetic trace seed
    feedback_delay_ms: float = 100.0  # packet sent -> its feedback applied at the sender
    loss: float = 0.0  # packet loss probability (seeded)
    key_interval_frames: int = DEFAULT_KEY_INTERVAL_FRAMES
    alternatives: bool = True  # also size the zstd/raw/fixed-width options
    trace: Path | None = None  # .npz trace instead of the synthetic one
    clips: tuple[Path, ...] = ()  # real clips encoded by the motion encoder instead of the synthetic trace
    weights: Path | None = None  # motion encoder weights for ``clips`` (default: the shipped ones)
    smooth: bool = True  # the sender's motion smoothing on ``clips`` traces
    clip_fps: float = 25.0  # real clips are resampled by timestamp to this rate (a camera at the call's rate)


@dataclass
class Trace:
    motions: list[MotionParams]
    timestamps_ms: list[int]
    fps: float
    source: str
    expression_baseline: np.ndarray | None = None  # (K, 3) the portrait's own δ (the sender's keypoint ranking baseline)


def save_trace(path: Path, motions: Sequence[MotionParams], fps: float, timestamps_ms: Sequence[int] | None = None) -> None:
    """Write MotionParams arrays as an .npz that ``--trace`` reads."""
    np.savez(
        path,
        yaw=np.array([m.yaw for m in motions]),
        pitch=np.array([m.pitch for m in motions]),
        roll=np.array([m.roll for m in motions]),
        translation=np.stack([m.translation for m in motions]),  # (N, 3)
        expression=np.stack([m.expression for m in motions]),  # (N, K, 3)
        present=np.stack([m.present for m in motions]),  # (N, K)
        timestamps_ms=np.array(timestamps_ms if timestamps_ms is not None else trace_timestamps_ms(len(motions), fps)),
        fps=np.float64(fps),
    )


def trace_from_clips(clips: Sequence[Path], weights: Path | None = None, max_frames: int = 750, smooth: bool = True,
                     fps: float = 25.0) -> Trace:
    """A real motion trace: each clip (video file or JPEG folder) resampled by timestamp to ``fps`` (what a camera
    at that rate delivers), then the sender's path: face crop -> MotionEncoder (the shipped weights unless
    ``weights``) -> landmark refinement (for a model trained for it) -> the sender's motion smoothing (unless
    ``smooth`` is False); clips one after another (each ≤ max_frames), as one stream. The keypoint-ranking
    baseline is the first clip's portrait (its first face crop as the receiver decodes it), as in a call."""
    import itertools

    from bench.codecs.reference import send_reference
    from codec.data.clips import iter_clip_frames_at
    from codec.face.crop import FaceCropper
    from codec.model.wrappers import MotionEncoder
    from sender.motion_filter import MotionSmoother

    encoder = MotionEncoder(weights)
    motions: list[MotionParams] = []
    baseline: np.ndarray | None = None
    for clip in clips:
        cropper = FaceCropper(encoder.image_size, fps=fps)
        smoother = MotionSmoother(fps) if smooth else None
        refine = None  # the landmark refinement, for the clip's first face crop as the portrait sent
        try:
            for frame in itertools.islice(iter_clip_frames_at(clip, fps), max_frames):
                crop = cropper.crop(frame)
                if refine is None:
                    refine = encoder.landmark_refiner(crop.image)
                    if baseline is None:
                        baseline = encoder.encode(send_reference(crop.image).image).expression
                motion = refine(encoder.encode(crop.image), crop.landmarks)
                motions.append(smoother(motion) if smoother is not None else motion)
        finally:
            cropper.close()
    if not motions:
        raise ValueError(f"no frames in {[str(c) for c in clips]}")
    model = "trained" if encoder.is_trained else "RANDOM-weight"
    return Trace(motions, trace_timestamps_ms(len(motions), fps), fps,
                 f"{len(clips)} clip(s) resampled to {fps:g} fps by timestamp, through the {model} motion encoder "
                 f"{encoder.model_id}: {', '.join(c.name for c in clips)}", baseline)


def load_trace(path: Path) -> Trace:
    """Read a trace .npz (see the module docstring); ValueError naming what is wrong."""
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in ("yaw", "pitch", "roll", "translation", "expression") if k not in data]
        if missing:
            raise ValueError(f"trace {path} lacks arrays {missing}; it needs yaw, pitch, roll, translation, expression")
        yaw, pitch, roll = (np.asarray(data[k], np.float64).reshape(-1) for k in ("yaw", "pitch", "roll"))
        translation = np.asarray(data["translation"], np.float32)
        expression = np.asarray(data["expression"], np.float32)
        n = len(yaw)
        if not (len(pitch) == len(roll) == n and translation.shape == (n, 3) and expression.ndim == 3 and len(expression) == n):
            raise ValueError(
                f"trace {path}: shapes disagree (yaw {yaw.shape}, translation {translation.shape}, expression {expression.shape})"
            )
        present = np.asarray(data["present"], bool) if "present" in data else np.ones(expression.shape[:2], bool)
        fps = float(data["fps"]) if "fps" in data else 25.0
        stamps = [int(t) for t in data["timestamps_ms"]] if "timestamps_ms" in data else trace_timestamps_ms(n, fps)
    motions = [MotionParams(yaw[i], pitch[i], roll[i], translation[i], expression[i], present[i]) for i in range(n)]
    return Trace(motions, stamps, fps, str(path))


def _entropy_bits(counter: Counter[int]) -> float:
    total = sum(counter.values())
    if not total:
        return 0.0
    counts = np.array(list(counter.values()), dtype=np.float64)
    return float(-(counts * np.log2(counts / total)).sum())


def _class_of(field: int) -> str:
    return "angles" if field < 3 else ("translation" if field < 6 else "expression")


@dataclass
class _Tally:
    bytes_total: int = 0
    wire_total: int = 0
    wire_total_datachannel: int = 0
    packets: int = 0
    key_bytes: int = 0
    key_frames: int = 0
    delta_bytes: int = 0
    delta_frames: int = 0
    symbols: dict[str, Counter[int]] = field(default_factory=lambda: {c: Counter() for c in ("angles", "translation", "expression", "key")})
    alt_bytes: dict[str, int] = field(default_factory=lambda: {name: 0 for name in ALTERNATIVES})
    encode_s: float = 0.0
    decode_s: float = 0.0


def run_setting(trace: Trace, preset_name: str, k: int, fpp: int, config: BenchConfig) -> dict[str, Any]:
    """Stream one trace through sender and receiver for one setting; the measured figures."""
    preset = get_preset(preset_name)
    sender = MotionPacketizer(1, preset.preset_id, fpp, config.key_interval_frames)
    receiver = MotionDepacketizer()
    num_keypoints = trace.motions[0].num_keypoints
    choice = None
    if k < num_keypoints:  # the sender's causal choice of which δ to send
        choice = SenderKeypointChoice(trace.fps, num_keypoints, k, fpp, preset.preset_id, trace.expression_baseline)
    mask = np.ones(num_keypoints, bool)
    masks: dict[int, np.ndarray] = {}  # seq -> the keypoints its frame was sent with
    rng = random.Random(config.seed * 1000 + k * 10 + fpp)
    tally = _Tally()
    values_by_seq: dict[int, tuple[int, ...]] = {}
    pending_feedback: list[tuple[float, Any]] = []
    decoded: dict[int, MotionParams] = {}
    index_of_seq: dict[int, int] = {}
    seq = 0
    for index, (motion, ts) in enumerate(zip(trace.motions, trace.timestamps_ms)):
        while pending_feedback and pending_feedback[0][0] <= ts:
            sender.on_feedback(pending_feedback.pop(0)[1])
        start = time.perf_counter()
        if choice is not None:
            choice.step(motion, ts / 1000.0, sender)
            mask = choice.present_mask
        tally.encode_s += time.perf_counter() - start
        present = motion.present & mask
        q = preset.quantize(motion.with_present(present))
        values_by_seq[seq] = tuple(int(v) for v in np.concatenate([q.angles, q.translation, q.expression.ravel()]))
        index_of_seq[seq] = index
        masks[seq] = mask
        seq = (seq + 1) % SEQ_MODULUS
        start = time.perf_counter()
        packet = sender.push(motion, ts)
        if packet is None and index == len(trace.motions) - 1:
            packet = sender.flush()
        tally.encode_s += time.perf_counter() - start
        if packet is None:
            continue
        _account(tally, packet, preset.preset_id, masks, trace, values_by_seq, index_of_seq, config)
        if rng.random() < config.loss:
            continue
        start = time.perf_counter()
        frames = receiver.receive(packet)
        tally.decode_s += time.perf_counter() - start
        for frame in frames:
            decoded[index_of_seq[frame.seq]] = frame.motion
        feedback = receiver.feedback()
        if feedback is not None:
            pending_feedback.append((ts + config.feedback_delay_ms, feedback))
    return _summarize(tally, trace, decoded, preset_name, k, fpp, config)


def _account(
    tally: _Tally,
    packet: bytes,
    preset_id: int,
    masks: dict[int, np.ndarray],
    trace: Trace,
    values_by_seq: dict[int, tuple[int, ...]],
    index_of_seq: dict[int, int],
    config: BenchConfig,
) -> None:
    header = unpack_header(packet)
    seqs = header.seqs
    # The sender's layout for these frames (a packet never mixes layouts).
    layout = Layout(preset_id, tuple(bool(p) for p in trace.motions[index_of_seq[seqs[0]]].present & masks[seqs[0]]))
    tally.bytes_total += len(packet)
    tally.wire_total += rtp_wire_bytes(len(packet))
    tally.wire_total_datachannel += wire_bytes(len(packet))
    tally.packets += 1
    if header.key:
        tally.key_bytes += len(packet)
        tally.key_frames += len(seqs)
    else:
        tally.delta_bytes += len(packet)
        tally.delta_frames += len(seqs)
    frames = [values_by_seq[s] for s in seqs]
    reference = None if header.key else values_by_seq.get(header.reference_seq)  # type: ignore[arg-type]
    residuals = residuals_for_packet(layout, frames, reference)
    order = list(range(6)) + [6 + 3 * r + c for r, p in enumerate(layout.present) if p for c in range(3)]
    for i, frame_residuals in enumerate(residuals):
        for pos, value in enumerate(frame_residuals):
            cls = "key" if header.key and i == 0 else _class_of(order[pos])
            tally.symbols[cls][value] += 1
    if not config.alternatives:
        return
    head = header.size
    motions = [trace.motions[index_of_seq[s]] for s in seqs]
    intervals = [
        trace.timestamps_ms[index_of_seq[s]] - trace.timestamps_ms[max(0, index_of_seq[s] - 1)] for s in seqs
    ]
    shown = [m.with_present(np.array(layout.present)) for m in motions]
    packed = msgpack_body(layout, frames, intervals, reference)
    alt = tally.alt_bytes
    alt["float32"] += head + len(raw_float_body(shown, np.float32))
    alt["float16"] += head + len(raw_float_body(shown, np.float16))
    alt["fixed_width"] += head + len(fixed_width_body(layout, frames))
    alt["msgpack"] += head + len(packed)
    alt["zstd"] += head + len(zstd_body(packed, use_dictionary=False))
    alt["zstd_dict"] += head + len(zstd_body(packed, use_dictionary=True))


def _summarize(
    tally: _Tally, trace: Trace, decoded: dict[int, MotionParams], preset_name: str, k: int, fpp: int, config: BenchConfig
) -> dict[str, Any]:
    frames = len(trace.motions)
    duration_s = frames / trace.fps
    entropy_bits = sum(_entropy_bits(c) for c in tally.symbols.values())
    errors = {"angles_deg": 0.0, "translation": 0.0, "expression": 0.0}
    for index, motion in decoded.items():
        shown = trace.motions[index].with_present(motion.present)
        for name, value in shown.max_abs_difference(motion).items():
            errors[name] = max(errors[name], value)
    bound = get_preset(preset_name).error_bounds
    bytes_per_frame = tally.bytes_total / frames
    result: dict[str, Any] = {
        "preset": preset_name,
        "k": k,
        "frames_per_packet": fpp,
        "fps": trace.fps,
        "frames": frames,
        "packets": tally.packets,
        "bytes_per_frame": {
            "all": bytes_per_frame,
            "key": tally.key_bytes / tally.key_frames if tally.key_frames else None,
            "delta": tally.delta_bytes / tally.delta_frames if tally.delta_frames else None,
        },
        "key_frames": tally.key_frames,
        "payload_kbps": tally.bytes_total * 8 / duration_s / 1000,
        "wire_kbps": tally.wire_total * 8 / duration_s / 1000,
        "wire_kbps_datachannel": tally.wire_total_datachannel * 8 / duration_s / 1000,
        "entropy_kbps": entropy_bits / duration_s / 1000,
        "payload_to_entropy": (tally.bytes_total * 8 / entropy_bits) if entropy_bits else None,
        "max_error": errors,
        "error_bound": bound,
        "within_bound": all(errors[n] <= bound[n] * (1 + 1e-6) + 1e-6 for n in errors),
        "frames_decoded": len(decoded),
        "encode_ms_per_packet": 1000 * tally.encode_s / max(1, tally.packets),
        "decode_ms_per_packet": 1000 * tally.decode_s / max(1, tally.packets),
    }
    if config.alternatives:
        result["alternatives_bytes_per_frame"] = {name: b / frames for name, b in tally.alt_bytes.items()}
        result["alternatives_bytes_per_frame"]["range_coder"] = bytes_per_frame
    return result


def setting_key(preset: str, k: int, fpp: int, fps: float) -> str:
    return f"preset={preset},K={k},fpp={fpp},fps={fps:g}"


def run_bitstream(config: BenchConfig) -> dict[str, Any]:
    """All settings of ``config``; the JSON-ready result."""
    for name in config.presets:
        if name not in PRESETS_BY_NAME:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS_BY_NAME)}")
    traces: list[Trace] = []
    if config.trace is not None:
        traces.append(load_trace(config.trace))
    elif config.clips:
        traces.append(trace_from_clips(config.clips, config.weights, smooth=config.smooth, fps=config.clip_fps))
    else:
        for fps in config.fpss:
            n = int(round(config.seconds * fps))
            traces.append(
                Trace(synthetic_trace(n, fps, seed=config.seed), trace_timestamps_ms(n, fps), fps, f"synthetic seed {config.seed}")
            )
    settings: dict[str, Any] = {}
    for trace in traces:
        for preset in config.presets:
            for k in config.ks:
                for fpp in config.fpps:
                    result = run_setting(trace, preset, k, fpp, config)
                    settings[setting_key(preset, k, fpp, trace.fps)] = result
                    logger.info("%s: %.2f kbps", setting_key(preset, k, fpp, trace.fps), result["payload_kbps"])
    return {
        "conditions": {
            "trace": traces[0].source,
            "seconds": len(traces[0].motions) / traces[0].fps,
            "feedback_delay_ms": config.feedback_delay_ms,
            "loss": config.loss,
            "key_interval_frames": config.key_interval_frames,
            "wire_overhead_bytes_per_packet": RTP_MOTION_OVERHEAD_BYTES,
            "wire_overhead": "RTP 12 + SRTP tag 10 (AES_CM_128_HMAC_SHA1_80) + UDP 8 + IPv4 20 (motion as RTP, the call's "
                             "default between Python peers)",
            "wire_overhead_bytes_per_packet_datachannel": WIRE_OVERHEAD_BYTES,
            "wire_overhead_datachannel": "IPv4 20 + UDP 8 + DTLS 13 + GCM nonce 8 + GCM tag 16 + SCTP 12 + DATA chunk 16, + pad "
                                         "to 4",
            "entropy": "order-0 empirical entropy per symbol class (angles, translation, δ residuals; KEY values)",
            "fps": traces[0].fps,
            "frame_rate": ("real clips resampled by timestamp to this rate before the face crop (a camera at the "
                           "call's rate)" if config.clips else "the trace's own rate; kbps are measured at it, not scaled"),
            "keypoint_choice": "K < all: the sender's causal choice (sender.controller replayed frame by frame)",
            "payload_kbps": "bytes of every motion packet × 8 / trace duration",
            "wire_kbps": "payload + per-packet RTP/SRTP/UDP/IPv4 overhead (wire_overhead), one direction (feedback, one "
                         "RTP packet a second back, is not counted here: bench call does)",
            "wire_kbps_datachannel": "payload + per-packet IPv4/UDP/DTLS/SCTP overhead (wire_overhead_datachannel) + DATA "
                         "chunk padding, one direction (the SACKs and feedback going back are not counted here: bench call does)",
        },
        "settings": settings,
    }


def format_table(result: dict[str, Any]) -> str:
    """The human-readable table of a ``run_bitstream`` result."""
    lines = [
        f"{'setting':<36} {'B/frame':>7} {'key':>6} {'delta':>6} {'payload':>8} {'wire':>7} {'wireDC':>7} {'entropy':>8} "
        f"{'ratio':>5} {'err deg/t/δ':>22}",
        f"{'':<36} {'':>7} {'':>6} {'':>6} {'kbps':>8} {'kbps':>7} {'kbps':>7} {'kbps':>8} {'':>5}",
    ]
    for key, r in result["settings"].items():
        b = r["bytes_per_frame"]
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        err = r["max_error"]
        ratio = "-" if r["payload_to_entropy"] is None else f"{r['payload_to_entropy']:.2f}"
        lines.append(
            f"{key:<36} {b['all']:>7.2f} {fmt(b['key']):>6} {fmt(b['delta']):>6} {r['payload_kbps']:>8.2f} "
            f"{r['wire_kbps']:>7.1f} {r['wire_kbps_datachannel']:>7.1f} {r['entropy_kbps']:>8.2f} {ratio:>5} "
            f"{err['angles_deg']:>6.3f}/{err['translation']:.4f}/{err['expression']:.4f}"
        )
    with_alt = [(k, r) for k, r in result["settings"].items() if "alternatives_bytes_per_frame" in r]
    if with_alt:
        names = list(with_alt[0][1]["alternatives_bytes_per_frame"])
        lines += ["", "bytes per frame by entropy coding option (same packets, same headers):"]
        lines.append(f"{'setting':<36} " + " ".join(f"{n:>11}" for n in names))
        for key, r in with_alt:
            alt = r["alternatives_bytes_per_frame"]
            lines.append(f"{key:<36} " + " ".join(f"{alt[n]:>11.2f}" for n in names))
    c = result["conditions"]
    lines.append(
        f"\ntrace: {c['trace']}, {c['seconds']:.0f} s; feedback delay {c['feedback_delay_ms']:g} ms; loss {c['loss']:g}; "
        f"KEY every {c['key_interval_frames']} frames; wire = payload + {c['wire_overhead_bytes_per_packet']} B/packet (RTP); "
        f"wireDC = payload + {c['wire_overhead_bytes_per_packet_datachannel']} B/packet + pad (data channel)"
    )
    return "\n".join(lines)


def add_bitstream_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``python -m bench bitstream``."""
    defaults = BenchConfig()
    p = subparsers.add_parser("bitstream", help="motion bitstream: bytes, kbps, entropy, errors per setting")
    p.add_argument("--json", type=Path, default=None, help="write the result JSON here")
    p.add_argument("--trace", type=Path, default=None, help=".npz MotionParams trace (default: synthetic)")
    p.add_argument("--clips", type=Path, nargs="+", default=[],
                   help="real clips (video files / JPEG folders) encoded by the motion encoder as the trace")
    p.add_argument("--weights", type=Path, default=None, help="motion encoder weights for --clips (default: shipped)")
    p.add_argument("--no-smoothing", action="store_true", help="--clips: skip the sender's motion smoothing")
    p.add_argument("--clip-fps", type=float, default=defaults.clip_fps,
                   help="--clips: resample by timestamp to this frame rate (a camera at the call's rate)")
    p.add_argument("--presets", nargs="+", default=list(defaults.presets), help="quantizer presets by name")
    p.add_argument("--ks", nargs="+", type=int, default=list(defaults.ks), help="δ rows sent")
    p.add_argument("--fpps", nargs="+", type=int, default=list(defaults.fpps), help="frames per packet")
    p.add_argument("--fps", nargs="+", type=float, default=list(defaults.fpss), help="synthetic trace frame rates")
    p.add_argument("--seconds", type=float, default=defaults.seconds, help="synthetic trace length")
    p.add_argument("--seed", type=int, default=defaults.seed, help="synthetic trace seed")
    p.add_argument("--feedback-delay-ms", type=float, default=defaults.feedback_delay_ms, help="packet -> feedback at sender")
    p.add_argument("--loss", type=float, default=defaults.loss, help="packet loss probability")
    p.add_argument("--key-interval", type=int, default=defaults.key_interval_frames, help="frames between KEYs (0: none)")
    p.add_argument("--no-alternatives", action="store_true", help="skip sizing the zstd/raw/fixed-width options")


def run_bitstream_from_args(args: argparse.Namespace) -> int:
    config = BenchConfig(
        presets=tuple(args.presets),
        ks=tuple(args.ks),
        fpps=tuple(args.fpps),
        fpss=tuple(args.fps),
        seconds=args.seconds,
        seed=args.seed,
        feedback_delay_ms=args.feedback_delay_ms,
        loss=args.loss,
        key_interval_frames=args.key_interval,
        alternatives=not args.no_alternatives,
        trace=args.trace,
        clips=tuple(args.clips),
        weights=args.weights,
        smooth=not args.no_smoothing,
        clip_fps=args.clip_fps,
    )
    if not 0.0 <= config.loss < 1.0 or math.isnan(config.loss):
        logger.error("--loss must be in [0, 1), got %s", config.loss)
        return 2
    result = run_bitstream(config)
    print(format_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
        logger.info("wrote %s", args.json)
    return 0
