"""Our codec with the enhancement layer in the benchmark: the motion plus the face crop at E×E through SVT-AV1.

Operating points ("rungs"): the enhancement layer's AV1 qp and picture interval (``PictureRate``), atop the motion exactly as ``OursCodec``
sends it at the enhanced rungs' K (``codec.enhancement.picture_rate.rung_keypoints``: 5 of the model's 20), one quantizer
preset and 1 frame per packet. Only for a model with the enhancement branch (``ModelConfig.enhancement_size`` = E > 0).

The enhancement layer: every ``interval``-th crop of the clip (frames 0, interval, ...) area-downscaled to E×E
(inside ``LowResEncoder.encode``, as the sender does) and coded by one ``LowResEncoder`` stream at the
rung's qp (at fps / interval); frame 0 (the reference) is sent too, so that the AV1 stream opens with a key frame. The
channel loses nothing: every picture is decoded in order by one ``LowResDecoder``, and each scored
frame renders from its decoded motion and the newest decoded picture (its own, or one < interval frames old).

Transport (the call's frame bundle, version 1, ``codec.enhancement.bundle``): each frame's
enhancement bytes ride in the same data-channel message as that frame's motion packet (aiortc does
not bundle SCTP chunks, so a message of its own would cost another 93 B of headers)::

    u8      0xB1
    varint  L (LEB128), then L bytes: the motion packet
    u8      flags (bit 0: the picture is an AV1 key frame; bits 1-2: the picture interval - 1)
    varint  M (LEB128), then M bytes: the enhancement packet

(at a picture interval N > 1 the frames between pictures go as plain motion packets);

so a frame costs ``motion_wire_bytes(frame_bundle_bytes(L, M))`` on the wire (RTP; the data channel for a bundle
too large for one RTP packet, ``bench.codecs.motion_transport``). Stream start:
the reference portrait's message plus frame 0's picture (the key frame), counted as one more message
framed like a bundle with an empty motion part (L = 0). The call sends no picture of the reference:
its first key picture rides with the first driving frame's motion (``pack_bundle`` needs L ≥ 1), so
there frame 1's picture is the key frame; either way the key frame is paid once per stream, which the
report amortizes over the call. Payload = motion bytes + enhancement bytes (the bundle's framing
counts only on the wire).

Timing: encode adds downscale + ``LowResEncoder.encode`` per driving frame (frame 0's encode opens
the encoder and is its warm-up, not timed into the driving frames); decode adds
``LowResDecoder.decode`` per scored frame; the render with the picture is timed like ours'.
What is computed once and shared between rungs: the coded and decoded pictures per (clip, qp)
(``EnhancementLayer``), and, as for ours, a render per distinct (decoded motion, decoded picture)
(``OursFactory.render``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.codecs.base import BenchClip, StreamInfo
from bench.codecs.datachannel import data_channel_wire_bytes
from bench.codecs.motion_transport import motion_packets, motion_wire_bytes, riding_wire_bytes
from bench.codecs.ours import OursCodec, OursFactory
from codec.enhancement.lowres_codec import LowResDecoder, LowResEncoder
from codec.enhancement.passthrough import shows_picture
from codec.enhancement.picture_rate import PictureRate, rung_keypoints

ENHANCED_PRESET = "default"  # the motion's quantizer preset under the enhancement rungs
TRANSPORT = (
    "frame bundle v1, one motion message per frame: 0xB1, varint L, L bytes motion packet, u8 flags "
    "(bit 0: AV1 key frame, bits 1-2: picture interval - 1), varint M, M bytes enhancement; wire = motion_wire_bytes(1 + varint_len(L) + L "
    "+ 1 + varint_len(M) + M) (RTP, or the data channel for a bundle over 1200 B); stream start: reference message "
    "+ frame 0's key picture as one data-channel message, counted as a bundle with L = 0; at a picture interval N > 1 "
    "the frames without a picture send the plain motion packet"
)


def varint_len(value: int) -> int:
    """Bytes of ``value`` as a minimal LEB128 varint (7 bits a byte)."""
    if value < 0:
        raise ValueError(f"a varint holds a value ≥ 0, got {value}")
    return max(1, (value.bit_length() + 6) // 7)


def frame_bundle_bytes(motion_bytes: int, enhancement_bytes: int) -> int:
    """Size of one frame bundle (module docstring) carrying a motion packet and an enhancement packet."""
    return 1 + varint_len(motion_bytes) + motion_bytes + 1 + varint_len(enhancement_bytes) + enhancement_bytes


@dataclass(frozen=True, eq=False)
class CodedEnhancement:
    """One clip's enhancement stream at one rung, frames 0..N-1 (frame 0: the key frame that opens it).

    sizes: (N,) bytes of each frame's picture (0: the frame carries none, at an interval above 1);
    key_frames: (N,) whether it is an AV1 key frame. pictures: (N, E, E, 3) uint8, what the receiver renders
    each frame with: the newest picture it decoded at or before the frame.
    encode_ms: (N,) downscale + encode (frame 0's includes opening the encoder: the warm-up; 0 without a picture);
    decode_ms: (N,) ``LowResDecoder.decode`` (frame 0's includes opening the decoder; 0 without a picture).
    """

    sizes: tuple[int, ...]
    key_frames: tuple[bool, ...]
    pictures: np.ndarray = field(repr=False)
    encode_ms: np.ndarray = field(repr=False)
    decode_ms: np.ndarray = field(repr=False)


def code_enhancement(frames: np.ndarray, size: int, qp: int, fps: float, interval: int = 1) -> CodedEnhancement:
    """frames: (N, S, S, 3) uint8 crops -> the E×E pictures (E = ``size``) of frames 0, interval, 2·interval, ...
    coded by one stream at ``qp`` (at fps / interval, as the sender codes them), and decoded in order with no loss."""
    count = frames.shape[0]
    sizes, keys = [0] * count, [False] * count
    pictures = np.empty((count, size, size, 3), np.uint8)
    encode_ms, decode_ms = np.zeros(count), np.zeros(count)
    decoder = LowResDecoder(size)
    with LowResEncoder(size, qp, fps / interval) as encoder:
        for i in range(count):
            if i % interval:
                pictures[i] = pictures[i - 1]  # no picture: the newest one stands
                continue
            start = time.perf_counter()
            data = encoder.encode(frames[i])  # the crop: downscaled to E×E inside, as the sender does
            encode_ms[i] = (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            picture = decoder.decode(data, i // interval)
            decode_ms[i] = (time.perf_counter() - start) * 1e3
            if picture is None:
                raise RuntimeError(f"the enhancement decoder gave no picture for frame {i} of a loss-free stream at qp {qp}")
            pictures[i] = picture
            sizes[i] = len(data)
            keys[i] = encoder.last_was_key
    if not keys[0]:
        raise RuntimeError(f"the enhancement stream at qp {qp} did not open with a key frame")
    return CodedEnhancement(tuple(sizes), tuple(keys), pictures, encode_ms, decode_ms)


class EnhancementLayer:
    """The enhancement pictures of each clip, coded and decoded once per (clip, rung) and shared by the rungs."""

    def __init__(self, model_size: int) -> None:
        if model_size <= 0:
            raise ValueError(f"the enhancement picture size must be positive, got {model_size}: the model has no enhancement branch")
        self.model_size = model_size  # E of the model's branch: the side of a rung without its own
        self._coded: dict[tuple[str, PictureRate], CodedEnhancement] = {}

    def coded(self, clip: BenchClip, rate: PictureRate) -> CodedEnhancement:
        key = (clip.clip_id, rate)
        if key not in self._coded:
            self._coded[key] = code_enhancement(clip.frames, rate.side(self.model_size), rate.qp, clip.fps, rate.interval)
        return self._coded[key]


class OursEnhancedCodec(OursCodec):
    """Our codec at K = all, one quantizer preset, 1 frame per packet, plus the enhancement layer at one AV1 qp."""

    codec = "ours+enh"

    def __init__(self, factory: OursFactory, preset: str, rate: PictureRate, layer: EnhancementLayer) -> None:
        if layer.model_size != factory.enhancement_size:
            raise ValueError(f"the enhancement layer codes {layer.model_size}² pictures, the model reads "
                             f"{factory.enhancement_size}²")
        side = rate.side(layer.model_size)
        self.shows_pictures = shows_picture(side, int(factory.synthesizer.image_size), rate.interval, own=True)
        super().__init__(factory, rung_keypoints(factory.num_keypoints), preset, 1)  # as a sender sends an enhanced rung
        self.rate = rate
        self.layer = layer
        self.side = side
        self.setting = f"{self.setting} enh{self.side} {rate.label().rpartition(':')[2]}"

    def params(self) -> dict[str, object]:
        return {
            **super().params(),
            "enhancement_size": self.side,
            "enhancement_qp": self.rate.qp,
            "enhancement_interval": self.rate.interval,
            "transport": TRANSPORT,
        }

    def run(self, clip: BenchClip, shown: np.ndarray | None = None) -> tuple[StreamInfo, np.ndarray]:
        idx = self.shown_indices(clip, shown)
        encoded = self.factory.encoded(clip)
        reference = self.factory.reference(clip)
        stream = self.stream(clip)
        coded = self.layer.coded(clip, self.rate)
        if len(stream.packets) != clip.num_driving:
            raise RuntimeError(f"{len(stream.packets)} motion packets for {clip.num_driving} frames at 1 frame per packet")
        motion_sizes = stream.packets  # frames 1..N-1, one packet each
        enhancement_sizes = coded.sizes[1:]
        messages = [frame_bundle_bytes(m, e) if e else m for m, e in zip(motion_sizes, enhancement_sizes)]  # no picture: the plain packet
        start_message = frame_bundle_bytes(0, coded.sizes[0])
        reconstruction = np.empty((idx.size,) + clip.frames.shape[1:], np.uint8)
        decode_ms = np.array(stream.unpack_ms, dtype=np.float64)[idx] + coded.decode_ms[1:][idx]
        for j, i in enumerate(idx):
            if self.shows_pictures and coded.pictures[i + 1].shape[:2] == reconstruction.shape[1:3]:
                reconstruction[j] = coded.pictures[i + 1]  # the receiver shows it as decoded: no render
                continue
            image, render_ms = self.factory.render(clip, reference, stream.decoded[i], coded.pictures[i + 1])
            reconstruction[j] = image
            decode_ms[j] += render_ms
        info = StreamInfo(
            start_payload_bytes=reference.sent.payload_bytes + coded.sizes[0],
            start_wire_bytes=reference.sent.wire_bytes + data_channel_wire_bytes(start_message),
            payload_bytes=sum(motion_sizes) + sum(enhancement_sizes),
            wire_bytes=sum(motion_wire_bytes(size) for size in messages),
            riding_wire_bytes=sum(riding_wire_bytes(size) for size in messages),
            packets=sum(motion_packets(size) for size in messages),
            encode_ms=encoded.encode_ms + stream.pack_ms + coded.encode_ms[1:],
            decode_ms=decode_ms,
        )
        return info, reconstruction


def enhanced_sweep(factory: OursFactory, rates: Sequence[PictureRate], preset: str = ENHANCED_PRESET,
                   crop_size: int | None = None) -> list[OursEnhancedCodec]:
    """One rung per picture rate, in the given order, sharing one ``EnhancementLayer``; a rung whose picture is larger
    than the clips' crops (``crop_size``) is left out, as a sender leaves out rungs its receiver cannot read."""
    layer = EnhancementLayer(factory.enhancement_size)
    kept = [rate for rate in rates if crop_size is None or rate.side(factory.enhancement_size) <= crop_size]
    return [OursEnhancedCodec(factory, preset, rate, layer) for rate in kept]
