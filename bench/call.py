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
built-in scripted head-motion trace driving the default portrait (``--source trace``), or from a real clip:
its frames, resampled to --fps by timestamp (``codec.data.clips.iter_clip_frames_at``), go through the
sender's own video pipeline (``sender.sources.VideoSource``: face crop, motion encoder, landmark refinement,
smoothing), and its first frame with a face is the portrait sent. A clip shorter than the call plays again
from the start (``source.passes`` in the JSON says how often).

The whole call (``whole_call`` in the JSON; each figure's ``method`` is written there too), for each direction,
sender → receiver and receiver → sender:

- bytes: every UDP datagram of the peer connection, counted where aioice sends and receives it
  (``install_wire_log`` wraps the socket transport of aioice's ``StunProtocol`` in the sender's process):
  STUN (ICE connectivity checks and consent-freshness checks, which aiortc's RTCTransportStats leave out),
  DTLS handshake records, and DTLS application data (SCTP: association set-up, data-channel open, the
  portrait, motion, control, feedback, SACKs), each plus 28 bytes of UDP/IPv4 header: IPv4 bytes, no
  link-layer framing. The receiver's process counts the same way, as a cross-check;
- parts, split at the sender's own events (one wall clock): set-up = the first ICE datagram either way → the
  control channel open (ICE + DTLS handshake + SCTP association + data-channel open); portrait → the
  receiver's "reference ready" (hello, reference status, the portrait's chunks, their SACKs); first-frame
  wait → the first motion packet (the source's first frame; ~0 for the trace); motion → the last motion
  packet (the steady state, which ``wire_kbps`` reported before and still reports). The whole call is the sum
  of the parts and ends at the last motion packet; what follows (end of stream, teardown) is reported apart;
- amortized: motion kbps + (set-up + portrait + first-frame wait bytes) · 8 / T / 1000 for a call of T s
  (``--call-seconds``, like ``bench rd``'s ``call_seconds``), also with the peer's signaling bytes sent;
- signaling: what each peer exchanged with the signaling server over its WebSocket, counted at the client
  (``CountingSignaling``): message text bytes (payload only), and the kernel's TCP counters of that socket
  (TCP_INFO: payload bytes with the HTTP upgrade and WebSocket framing, and segments, the TCP handshake's
  included) plus an estimated 52 bytes of IPv4 + TCP header per segment, up to the moment the client closes.

Also reported: payload kbps (motion packet bytes / the motion period); output fps (frames the receiver's
playout emitted) and rendered fps (frames the synthesizer finished; lower when rendering is slower than real
time: the newest motion wins and the output repeats); glass-to-glass latency: capture timestamp at the sender →
synthesized image ready at the receiver (both processes read one wall clock), median and p95 over frames
decoded from motion, with the render time inside it reported separately; losses: frames lost in transit
(receiver feedback), concealed, late, packets rejected.

Targets (issue #6): wire ≤ 8 kbps at 25 fps output; latency p95 ≤ 120 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from signaling import messages as m
from signaling.client import WebSocketSignaling
from signaling.rtc import UDP_IPV4_HEADER_BYTES

logger = logging.getLogger(__name__)

ROOM = "bench"
WIRE_TARGET_KBPS = 8.0
LATENCY_TARGET_P95_MS = 120.0
COPY_MODEL_ID, COPY_MODEL_VERSION = "reference-copy", "0"
TRACE_SOURCE = "trace"  # the built-in scripted head-motion trace
AUTO_CLIP = "auto-clip"  # a test-group clip of --clips (codec.data.split.test_group_clips)
DEFAULT_CLIPS = Path("../shared/data/clips")
DEFAULT_CALL_SECONDS = (20.0, 60.0)  # call lengths over which set-up and portrait are amortized
TCP_IPV4_HEADER_BYTES = 52  # IPv4 20 + TCP 20 + the timestamps option 12 (Linux's default) per segment
DIRECTIONS = ("sender_to_receiver", "receiver_to_sender")
PARTS = ("setup", "portrait", "first_frame_wait", "motion")
FIRST_FACE_SEARCH_FRAMES = 250  # frames of a clip searched for the portrait (the first with a face)

METHOD = {
    "bytes": "IPv4 bytes: each UDP datagram's length + 28 (UDP 8 + IPv4 20 header bytes); no link-layer framing. "
    "Counted in the sender's process at aioice's socket transport (StunProtocol's transport.sendto wrapped for sent "
    "datagrams, StunProtocol.datagram_received for received ones): every datagram of the peer connection, STUN "
    "included",
    "packets": "UDP datagrams, counted with the bytes",
    "stun_bytes": "datagrams whose first byte is 0-3 (RFC 7983): ICE connectivity checks, their responses, "
    "consent-freshness checks (RFC 7675, every 4-6 s each way); aiortc's RTCTransportStats do not count these",
    "dtls_handshake_bytes": "datagrams whose first byte is a DTLS 1.2 change-cipher-spec, alert or handshake record "
    "(20-22): the DTLS handshake, and close_notify at the end",
    "dtls_data_bytes": "datagrams whose first byte is a DTLS application-data record (23): SCTP packets (association "
    "set-up, data-channel open, DATA chunks of every message, SACKs, heartbeats)",
    "seconds": "the part's span on the sender's wall clock",
    "kbps": "bytes · 8 / 1000 / seconds",
    "setup": "from the first ICE datagram either way (the earliest either process logged) to the sender's control "
    "channel 'open' (its DCEP open acknowledged): ICE checks, DTLS handshake, SCTP association, data-channel open",
    "timeline_ms": "the sender's events on its wall clock, in ms from the moment it heard of the receiver (it then "
    "sends its offer through the signaling server); negative: before",
    "portrait": "from the control channel open to the sender's receipt of the receiver's 'reference ready': "
    "hello, reference status, the portrait's chunks (reference message + 43-byte chunk headers) and SACKs",
    "first_frame_wait": "from 'reference ready' to the first motion packet (the source's first frame): consent "
    "checks, pings, SACKs only",
    "motion": "from the first to the last motion packet (sender-side samples right after each send, so the first "
    "packet is in and the last one out): motion, control messages, feedback, SACKs, consent checks; the "
    "steady state",
    "total": "the first ICE datagram to the last motion packet: the sum of setup, portrait, first_frame_wait and motion",
    "after_end": "after the last motion packet until the sender closed (the last partial packet, end of stream, "
    "teardown); not in the total",
    "amortized": "motion kbps + (setup + portrait + first_frame_wait bytes) · 8 / call_seconds / 1000; "
    "kbps_with_signaling adds the originating peer's signaling IPv4 bytes sent, spread the same way",
    "start_bytes": "setup + portrait + first_frame_wait bytes: what a call costs before its first motion packet",
    "reference_message_bytes": "the packed reference message (portrait JPEG + header) before chunking: the least "
    "the portrait part can carry",
    "signaling_messages": "signaling messages sent and received by the peer's client, join and leave included",
    "counted_by_receiver": "the same direction's total as the receiver's process counted it (same instrument, same "
    "wall-clock boundaries): a cross-check",
    "signaling_payload_bytes": "signaling message text (UTF-8 JSON), counted at each peer's client "
    "(CountingSignaling): sent as encoded, received re-encoded with the encoder the server uses; no WebSocket, "
    "TCP or IP headers",
    "signaling_tcp_bytes": "the kernel's TCP_INFO counters of the client's socket, read just before the client "
    "closes: tcpi_bytes_sent / tcpi_bytes_received (HTTP upgrade, WebSocket frames and heartbeats included) and "
    "tcpi_segs_out / tcpi_segs_in (the handshake's segments and pure ACKs included)",
    "signaling_ipv4_bytes": "an estimate: TCP payload bytes + segments × 52 (IPv4 20 + TCP 20 + timestamps "
    "option 12); SYN options and SACK blocks add a few bytes more; the WebSocket close and FIN after the read "
    "are not counted",
    "wire_kbps_dtls_counters": "the previous method, kept for comparison: aiortc's DTLS transport counters "
    "(RTCTransportStats bytesSent/bytesReceived + 28 bytes per packet) over the motion period; leaves STUN out",
}


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
    device: str | None = None
    seed: int = 0
    source: str = TRACE_SOURCE  # "trace" or a video file (played again from the start if shorter than the call)
    call_seconds: tuple[float, ...] = DEFAULT_CALL_SECONDS  # call lengths for the amortized rates


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


# -- counting the UDP datagrams ------------------------------------------------------------------
Datagram = tuple[float, bool, str, int]  # (wall ms, outgoing, kind, IPv4 bytes)


def datagram_kind(data: bytes) -> str:
    """What a datagram carries, from its first byte (RFC 7983; DTLS 1.2 record content types)."""
    if not data:
        return "other"
    first = data[0]
    if first <= 3:
        return "stun"
    if first in (20, 21, 22):
        return "dtls_handshake"
    if first == 23:
        return "dtls_data"
    if 24 <= first <= 63:
        return "dtls_other"  # DTLS 1.3 ciphertext records (not negotiated by aiortc today)
    if 128 <= first <= 191:
        return "rtp"
    return "other"


@dataclass
class WireLog:
    """Every UDP datagram aioice sent or received in this process (all its ICE connections)."""

    datagrams: list[Datagram] = field(default_factory=list)
    sockets: int = 0  # aioice sockets opened (one per local candidate)

    def record(self, outgoing: bool, data: bytes) -> None:
        self.datagrams.append((time.time() * 1000.0, outgoing, datagram_kind(data), len(data) + UDP_IPV4_HEADER_BYTES))


class _CountingTransport:
    """An asyncio datagram transport that logs what it sends, and otherwise is the one it wraps."""

    def __init__(self, transport: Any, log: WireLog) -> None:
        self._transport = transport
        self._log = log

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._log.record(True, data)
        self._transport.sendto(data, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_wire_log: WireLog | None = None


def install_wire_log() -> WireLog:
    """Log every datagram of this process's ICE connections from now on (patches aioice's StunProtocol
    for this process; idempotent). Call it before the peer connection is created."""
    global _wire_log
    if _wire_log is not None:
        return _wire_log
    import aioice.ice

    log = _wire_log = WireLog()
    protocol = aioice.ice.StunProtocol
    connection_made, datagram_received = protocol.connection_made, protocol.datagram_received

    def counted_connection_made(self: Any, transport: Any) -> None:
        log.sockets += 1
        connection_made(self, _CountingTransport(transport, log))

    def counted_datagram_received(self: Any, data: Any, addr: Any) -> None:
        log.record(False, bytes(data))
        datagram_received(self, data, addr)

    protocol.connection_made = counted_connection_made  # type: ignore[method-assign]
    protocol.datagram_received = counted_datagram_received  # type: ignore[method-assign]
    return log


# -- counting the signaling ---------------------------------------------------------------------
@dataclass(frozen=True)
class TcpCounters:
    """A TCP socket's kernel counters (Linux TCP_INFO)."""

    bytes_sent: int
    bytes_received: int
    segments_sent: int
    segments_received: int

    @property
    def ipv4_bytes_sent(self) -> int:
        return self.bytes_sent + TCP_IPV4_HEADER_BYTES * self.segments_sent

    @property
    def ipv4_bytes_received(self) -> int:
        return self.bytes_received + TCP_IPV4_HEADER_BYTES * self.segments_received


def tcp_counters(sock: Any) -> TcpCounters | None:
    """TCP_INFO of a connected socket: payload bytes and segments each way; None where the kernel has no
    such counters (not Linux, or before 4.19)."""
    option = getattr(socket, "TCP_INFO", None)
    if sock is None or option is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, 256)
    except OSError:
        return None
    if len(info) < 208:  # tcpi_bytes_sent arrived in Linux 4.19
        return None
    (bytes_received,) = struct.unpack_from("=Q", info, 128)  # tcpi_bytes_received
    segments_sent, segments_received = struct.unpack_from("=II", info, 136)  # tcpi_segs_out, tcpi_segs_in
    (bytes_sent,) = struct.unpack_from("=Q", info, 200)  # tcpi_bytes_sent
    return TcpCounters(bytes_sent, bytes_received, segments_sent, segments_received)


class CountingSignaling(WebSocketSignaling):
    """``WebSocketSignaling`` that counts what this peer exchanged with the signaling server."""

    def __init__(self, url: str, room: str, role: m.Role) -> None:
        super().__init__(url, room, role)
        self.messages_sent = self.messages_received = 0
        self.payload_bytes_sent = self.payload_bytes_received = 0
        self.tcp: TcpCounters | None = None

    async def send(self, msg: m.ClientMessage) -> None:
        await super().send(msg)
        self.messages_sent += 1
        self.payload_bytes_sent += len(m.encode_client_message(msg).encode())

    async def receive(self) -> m.ServerMessage | None:
        msg = await super().receive()
        if msg is not None:
            self.messages_received += 1
            self.payload_bytes_received += len(m.encode_server_message(msg).encode())
        return msg

    async def close(self) -> None:
        if self._ws is not None and not self._ws.closed:
            self.tcp = tcp_counters(self._ws.get_extra_info("socket")) or self.tcp
        await super().close()

    def stats(self) -> dict[str, Any]:
        tcp = self.tcp
        return {
            "messages_sent": self.messages_sent, "messages_received": self.messages_received,
            "payload_bytes_sent": self.payload_bytes_sent, "payload_bytes_received": self.payload_bytes_received,
            "tcp_bytes_sent": None if tcp is None else tcp.bytes_sent,
            "tcp_bytes_received": None if tcp is None else tcp.bytes_received,
            "tcp_segments_sent": None if tcp is None else tcp.segments_sent,
            "tcp_segments_received": None if tcp is None else tcp.segments_received,
            "ipv4_bytes_sent": None if tcp is None else tcp.ipv4_bytes_sent,
            "ipv4_bytes_received": None if tcp is None else tcp.ipv4_bytes_received,
        }


# -- real clips ---------------------------------------------------------------------------------
def clip_seconds(clip: Path) -> float:
    """A clip's duration in seconds (an image folder: frames / its rate)."""
    import av

    from codec.data.clips import FOLDER_FPS, IMAGE_SUFFIXES

    if clip.is_dir():
        return len([p for p in clip.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]) / FOLDER_FPS
    with av.open(str(clip)) as container:
        if container.duration:
            return float(container.duration) / 1e6
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or FOLDER_FPS)
        return (stream.frames or 0) / rate


def pick_test_clip(root: Path, seconds: float) -> Path:
    """The first test-group clip under ``root`` (sorted; ``codec.data.split.test_group_clips``) that lasts at
    least ``seconds``, else the longest one (it will loop). ValueError naming the folder if there is none."""
    from codec.data.clips import list_clips
    from codec.data.split import test_group_clips

    if not root.is_dir():
        raise ValueError(f"--source {AUTO_CLIP} needs the clips folder, and {str(root)!r} does not exist: pass --clips DIR")
    clips = test_group_clips(list_clips(root))
    if not clips:
        raise ValueError(f"no test-group clip under {str(root)!r} (sources spectre, vasa1hack, liax, mimictalk, "
                         "real3dportrait, styleheat): pass --clips DIR or --source FILE")
    durations = [(clip, clip_seconds(clip)) for clip in clips]
    for clip, duration in durations:
        if duration >= seconds:
            return clip
    return max(durations, key=lambda pair: pair[1])[0]


class LoopedClip:
    """A clip's frames resampled to ``fps``, from the start again whenever it ends: the frame reader of a
    ``VideoSource`` (yields ((H, W, 3) uint8 RGB, fps)). ``passes`` counts the plays begun."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        self.passes = 0
        self.frames_per_pass: int | None = None

    def __call__(self) -> Iterator[tuple[np.ndarray, float | None]]:
        from codec.data.clips import iter_clip_frames_at

        while True:
            self.passes += 1
            count = 0
            for frame in iter_clip_frames_at(self.path, self.fps):
                count += 1
                yield frame, self.fps
            if count == 0:
                raise ValueError(f"clip {str(self.path)!r} has no frames")
            self.frames_per_pass = count


# -- the two processes --------------------------------------------------------------------------
def _synthesizer(config: CallBenchConfig) -> Any:
    if config.renderer == "reference-copy":
        return ReferenceCopy()
    from codec.model import FrameSynthesizer

    return FrameSynthesizer(None if config.weights is None else Path(config.weights), device=config.device)


def _receiver_child(url: str, config: CallBenchConfig, out: Any) -> None:
    try:
        from receiver.session import Receiver, ReceiverConfig
        from signaling.rtc import RtcOptions

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
            ReceiverConfig(url, ROOM, rtc=RtcOptions(host_candidates="loopback"), max_frames=frames, exit_when_sender_leaves=True),
            synthesizer, signaling=signaling,
        )
        reason = asyncio.run(receiver.run())
        out.put(("receiver", {
            "end": reason, "warmup_render_ms": [round(w, 2) for w in warm], **receiver.report(),
            "signaling": signaling.stats(), "datagrams": wire.datagrams,
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
        ids, size, keypoints = (encoder.model_id, str(encoder.model_version)), encoder.image_size, encoder.num_keypoints
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
        encoder.model_id, str(getattr(encoder, "model_version", "1")))
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
    frames = LoopedClip(path, config.fps)
    source = VideoSource(
        frames, str(path), FaceCropper(output_size=encoder.image_size, fps=config.fps), encoder, fps=config.fps,
        refiner=refiner if refiner is not None and refiner.active else None,
    )
    info = {
        "kind": "clip", "name": str(path), "clip_seconds": round(clip_seconds(path), 3),
        "portrait": f"frame {index} of the clip (the first with a face)",
        "landmark_refinement": bool(refiner is not None and refiner.active),
    }
    return source, reference, baseline, frames, info


def _sender_child(url: str, config: CallBenchConfig, stop: Any, out: Any) -> None:
    try:
        from codec.reference_message import pack_reference_message
        from sender.session import Sender, SenderConfig
        from signaling.rtc import RtcOptions

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

        signaling = CountingSignaling(url, ROOM, "sender")
        sender = Sender(
            SenderConfig(
                url, ROOM, rtc=RtcOptions(host_candidates="loopback"), max_kbps=config.max_kbps, keypoints=config.keypoints,
                frames_per_packet=config.frames_per_packet,
            ),
            source, reference, signaling=signaling, packet_filter=drop if config.drop else None, expression_baseline=baseline,
        )

        async def run() -> str:
            task = asyncio.ensure_future(sender.run())
            while not task.done() and not stop.is_set():
                await asyncio.sleep(0.1)
            sender.stop()
            return await task

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


# -- accounting ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallMarks:
    """Wall-clock ms (the sender's clock) that split the call into its parts (see the module docstring)."""

    first_packet_ms: float  # the first ICE datagram either way
    channel_open_ms: float  # the sender's control channel open
    reference_ready_ms: float  # the receiver holds the portrait
    first_motion_ms: float  # the first motion packet sent
    last_motion_ms: float  # the last one: the end of the measured call

    @classmethod
    def from_sender(cls, marks: dict[str, float | None]) -> CallMarks:
        """From the sender's raw marks; RuntimeError naming the missing event. (A receiver that already holds the
        portrait still answers the hello: its portrait part is then that exchange alone.)"""
        names = ("first_packet_ms", "channel_open_ms", "reference_ready_ms", "first_motion_ms", "last_motion_ms")
        missing = [n for n in names if marks.get(n) is None]
        if missing:
            raise RuntimeError(f"the sender's call lacks {', '.join(missing)}: it never reached that point")
        times = [float(marks[n]) for n in names]  # type: ignore[arg-type]
        for i in range(1, len(times)):  # events of one loop are ordered; guard against clock steps
            times[i] = max(times[i], times[i - 1])
        return cls(*times)

    def parts(self) -> list[tuple[str, float, float]]:
        return [
            ("setup", self.first_packet_ms, self.channel_open_ms),
            ("portrait", self.channel_open_ms, self.reference_ready_ms),
            ("first_frame_wait", self.reference_ready_ms, self.first_motion_ms),
            ("motion", self.first_motion_ms, self.last_motion_ms),
        ]


def tally(datagrams: Sequence[Datagram], outgoing: bool, start_ms: float, end_ms: float) -> dict[str, Any]:
    """Bytes and datagrams one way in [start_ms, end_ms), by kind (see METHOD)."""
    kinds: dict[str, int] = {"stun": 0, "dtls_handshake": 0, "dtls_data": 0}
    count = 0
    for t_ms, out, kind, size in datagrams:
        if out == outgoing and start_ms <= t_ms < end_ms:
            kinds[kind] = kinds.get(kind, 0) + size
            count += 1
    total = sum(kinds.values())
    seconds = (end_ms - start_ms) / 1000.0 if math.isfinite(end_ms) else None
    result: dict[str, Any] = {
        "bytes": total, "packets": count, "seconds": None if seconds is None else round(seconds, 3),
        "kbps": round(total * 8 / 1000 / seconds, 3) if seconds else None,
    }
    result.update({f"{kind}_bytes": size for kind, size in kinds.items()})
    return result


def account_call(
    datagrams: Sequence[Datagram], marks: CallMarks, call_seconds: Sequence[float], signaling_bytes_sent: dict[str, int | None],
    receiver_datagrams: Sequence[Datagram] | None = None,
) -> dict[str, Any]:
    """Each direction's whole call from the sender's datagram log: its parts, total, amortized rates.

    ``datagrams``: the sender's log (outgoing = sender → receiver); ``receiver_datagrams``: the receiver's, for
    the cross-check; ``signaling_bytes_sent``: IPv4 bytes each peer ("sender", "receiver") sent to the
    signaling server (None if unknown)."""
    directions: dict[str, Any] = {}
    for direction, outgoing, peer in (("sender_to_receiver", True, "sender"), ("receiver_to_sender", False, "receiver")):
        parts = {name: tally(datagrams, outgoing, start, end) for name, start, end in marks.parts()}
        total = tally(datagrams, outgoing, marks.first_packet_ms, marks.last_motion_ms)
        start_bytes = sum(parts[name]["bytes"] for name in PARTS if name != "motion")
        motion_kbps = parts["motion"]["kbps"] or 0.0
        signaling = signaling_bytes_sent.get(peer) or 0
        entry: dict[str, Any] = {
            "total": total,
            "parts": parts,
            "start_bytes": start_bytes,
            "amortized": [
                {
                    "call_seconds": seconds,
                    "kbps": round(motion_kbps + start_bytes * 8 / seconds / 1000, 3),
                    "kbps_with_signaling": round(motion_kbps + (start_bytes + signaling) * 8 / seconds / 1000, 3),
                }
                for seconds in call_seconds
            ],
            "after_end": tally(datagrams, outgoing, marks.last_motion_ms, math.inf),
        }
        if receiver_datagrams is not None:  # the receiver sends what the sender receives, and the other way
            entry["counted_by_receiver"] = tally(receiver_datagrams, not outgoing, marks.first_packet_ms, marks.last_motion_ms)["bytes"]
        directions[direction] = entry
    return {
        "seconds": round((marks.last_motion_ms - marks.first_packet_ms) / 1000.0, 3),
        "end": "the sender's last motion packet",
        **directions,
    }


def summarize(config: CallBenchConfig, sender: dict[str, Any], receiver: dict[str, Any]) -> dict[str, Any]:
    sender, receiver = dict(sender), dict(receiver)
    sender_datagrams, receiver_datagrams = sender.pop("datagrams"), receiver.pop("datagrams")
    links = sender["links"]
    if not links:
        raise RuntimeError("the sender never connected to the receiver")
    link = links[0]
    seconds = link.get("motion_seconds") or 0.0
    payload_kbps = round(link["payload_bytes"] * 8 / 1000 / seconds, 3) if seconds else None
    raw_marks = dict(sender["marks"])
    firsts = [d[0] for d in (sender_datagrams[:1] + receiver_datagrams[:1])]
    if firsts:  # the receiver's first ICE check leaves before the sender logs it arriving
        raw_marks["first_packet_ms"] = min(firsts)
    marks = CallMarks.from_sender(raw_marks)
    signaling = {"sender": sender.pop("signaling"), "receiver": receiver.pop("signaling")}
    whole = account_call(
        sender_datagrams, marks, config.call_seconds, {peer: s["ipv4_bytes_sent"] for peer, s in signaling.items()},
        receiver_datagrams,
    )
    whole["parts_of"] = list(PARTS)
    whole["reference_message_bytes"] = sender["reference_message_bytes"]
    whole["signaling"] = signaling
    joined = raw_marks.get("receiver_joined_ms")
    whole["timeline_ms"] = {  # from the moment the sender heard of the receiver (and made its offer)
        name.removesuffix("_ms"): None if t is None or joined is None else round(t - joined, 1)
        for name, t in raw_marks.items()
    }
    whole["method"] = METHOD
    forward, reverse = whole["sender_to_receiver"], whole["receiver_to_sender"]
    latency, render = receiver["latency_ms"], receiver["render_ms"]
    source_fps = round(link["frames"] / seconds, 2) if seconds and "frames" in link else None
    summary = {
        "payload_kbps": payload_kbps,
        "source_fps": source_fps,
        "wire_kbps": forward["parts"]["motion"]["kbps"],
        "wire_kbps_reverse": reverse["parts"]["motion"]["kbps"],
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
            "transport": "aiortc data channels over 127.0.0.1 (loopback host candidates), sender and receiver in separate processes",
            "source": source_text,
            "renderer": config.renderer if config.renderer != "model" else "codec.model.FrameSynthesizer",
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "targets": {"wire_kbps_max": WIRE_TARGET_KBPS, "fps": 25.0, "latency_ms_p95_max": LATENCY_TARGET_P95_MS},
        "summary": summary,
        "whole_call": whole,
        "sender": sender,
        "receiver": receiver,
    }


def format_whole_call(result: dict[str, Any]) -> str:
    """The whole call as a text table: each part's bytes and kbps both ways, amortized rates, signaling."""
    whole = result["whole_call"]
    forward, reverse = whole["sender_to_receiver"], whole["receiver_to_sender"]
    labels = {"setup": "set-up (ICE+DTLS+SCTP)", "portrait": "portrait", "first_frame_wait": "first-frame wait", "motion": "motion (steady)"}
    lines = [
        f"whole call: first ICE packet → last motion packet, {whole['seconds']} s; IPv4 bytes (UDP/IPv4 headers, STUN included)",
        f"{'part':<24}{'seconds':>9}{'s→r bytes':>12}{'s→r kbps':>10}{'r→s bytes':>12}{'r→s kbps':>10}",
    ]

    def row(label: str, a: dict[str, Any], b: dict[str, Any]) -> str:
        return f"{label:<24}{a['seconds']:>9}{a['bytes']:>12}{str(a['kbps']):>10}{b['bytes']:>12}{str(b['kbps']):>10}"

    for name in PARTS:
        lines.append(row(labels[name], forward["parts"][name], reverse["parts"][name]))
    lines.append(row("whole call", forward["total"], reverse["total"]))
    for a, b in zip(forward["amortized"], reverse["amortized"]):
        label = f"a {a['call_seconds']:g} s call (amortized)"
        lines.append(f"{label:<24}{'':>21}{a['kbps']:>10}{'':>12}{b['kbps']:>10}"
                     f"   (with signaling {a['kbps_with_signaling']} / {b['kbps_with_signaling']})")
    lines.append(f"portrait message {whole['reference_message_bytes']} B; after the end (not in the total): "
                 f"{forward['after_end']['bytes']} / {reverse['after_end']['bytes']} B")
    for peer, s in whole["signaling"].items():
        lines.append(
            f"signaling, {peer} ↔ server (counted at the client): sent {s['messages_sent']} messages, {s['payload_bytes_sent']} B "
            f"text, ~{s['ipv4_bytes_sent']} B IPv4; received {s['messages_received']}, {s['payload_bytes_received']} B text, "
            f"~{s['ipv4_bytes_received']} B IPv4"
        )
    return "\n".join(lines)


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
    p.add_argument("--weights", default=None, help="model weights (default: the shipped ones)")
    p.add_argument("--device", default=None, help="torch device")
    p.add_argument("--seed", type=int, default=0, help="trace and drop seed")


def resolve_source(spec: str, clips: Path, seconds: float) -> str:
    """``trace``, ``auto-clip`` (-> the picked clip's path) or a path; ValueError saying what to pass instead."""
    if spec == TRACE_SOURCE:
        return spec
    if spec == AUTO_CLIP:
        return str(pick_test_clip(clips, seconds))
    if not Path(spec).exists():
        raise ValueError(f"--source {spec!r} is neither {TRACE_SOURCE!r}, {AUTO_CLIP!r} nor an existing video file or image folder")
    return spec


def run_call_from_args(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or not 0.0 <= args.drop < 1.0:
        raise SystemExit(f"--seconds must be > 0 and --drop in [0, 1): got {args.seconds}, {args.drop}")
    if not all(s > 0 for s in args.call_seconds):
        raise SystemExit(f"--call-seconds must be positive, got {args.call_seconds}")
    try:
        source = resolve_source(args.source, args.clips, args.seconds)
    except (ValueError, FileNotFoundError) as exc:
        logger.error("bench call: %s", exc)
        return 2
    config = CallBenchConfig(
        seconds=args.seconds, fps=args.fps, max_kbps=args.max_kbps or None, keypoints=args.keypoints,
        frames_per_packet=args.frames_per_packet, drop=args.drop, renderer=args.renderer, weights=args.weights,
        device=args.device, seed=args.seed, source=source, call_seconds=tuple(args.call_seconds),
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
        f"payload {s['payload_kbps']} kbps, wire {s['wire_kbps']} kbps (reverse {s['wire_kbps_reverse']}), "
        f"output {s['output_fps']} fps, rendered {s['rendered_fps']} fps, latency median {s['latency_ms_median']} ms "
        f"p95 {s['latency_ms_p95']} ms (render median {s['render_ms_median']} ms), lost {s['frames_lost_in_transit']}, "
        f"concealed {s['frames_concealed']}, late {s['frames_late']}; setting {s['final_setting']}"
    )
    print(format_whole_call(result))
    return 0
