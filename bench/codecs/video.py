"""Conventional video codecs through PyAV (FFmpeg): H.264 (libx264), VP8, VP9 (libvpx), AV1 (SVT-AV1).

Each operating point encodes the clip's face crops as a low-delay real-time stream (one keyframe at
frame 0 and no periodic keyframes, as in a WebRTC call where keyframes come only on a receiver's
request), decodes it with PyAV, and counts every encoded frame's real bytes. Payload bytes are the
codec's bytes that travel in RTP (the encoder's output less Annex B start codes and AV1 temporal
delimiters, which RTP does not carry); the wire size comes from ``bench.rtp`` (RTP packetization,
payload descriptors and per-packet headers).

Timing: encode time of a frame = RGB -> YUV 4:2:0 conversion + ``encode()``; decode time =
``decode()`` + YUV -> RGB conversion (our codec also takes and gives RGB). Frame 0 (the keyframe)
is the warm-up and is not timed. Encoders and decoders run on one thread (``CODEC_THREADS``), as
libwebrtc runs them at this resolution; with more threads libvpx's VP8 encoder was measured to stall
for tens of milliseconds per frame whenever the machine's two cores were busy.

SVT-AV1, run as root, switches the thread that opens it, and its own worker threads, to real-time
SCHED_FIFO priority 99 (in a test run: the demo's processes and a headless Chromium, whose spinning
renderers then starved the machine's two cores); so every encoder call here is wrapped in
``codec.thread_scheduling.scheduling_kept``, which puts them back to normal scheduling.

A "low-resolution" family (``av1-64``: SVT-AV1 at 64², the enhancement layer's codec and size) codes the
crops area-downscaled to that size and shows the decoded pictures bicubic-upscaled back to the crop's size,
as a receiver with no model would: the baseline that says what our generator adds over sending a small video.

A frame the encoder drops (rate control) sends nothing and the receiver keeps showing the previous
decoded frame, as a WebRTC receiver does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from fractions import Fraction
from typing import cast

import av
import numpy as np
from av.video.codeccontext import VideoCodecContext

from bench import rtp
from bench.codecs.base import BenchClip, Codec, StreamInfo
from codec.enhancement.lowres_codec import SVT_AV1_PRESET, downscale, svt_av1_options, upscale
from codec.thread_scheduling import scheduling_kept

logger = logging.getLogger(__name__)

# Operating points of the default sweeps: each reaches down to the lowest bitrate the encoder gives
# at this resolution (x264's CRF and SVT-AV1's QP stop at 51 and 63; libvpx cannot go below what its
# qmax 63 gives, so its lowest targets overshoot) and up to about 150 kbps on 256² talking heads.
H264_CRFS = (28, 33, 38, 43, 48, 51)
# Each at the slowest preset tried that stays well inside a 25 fps call's 40 ms at 256² on one core (bench rd
# reports every codec's encode_ms): our enhancement pictures use SVT-AV1 preset 4, so the baselines get the same effort.
H264_PRESET, H264_TUNE = "medium", "zerolatency"
VP8_KBPS = (10, 20, 40, 80, 160)
VP8_CPU_USED = -6  # negative: a fixed speed, as libwebrtc sets (positive values let libvpx adapt its speed to the frame time)
VP9_KBPS = (5, 10, 20, 40, 80)
VP9_CPU_USED = 5
AV1_QPS = (40, 48, 55, 63)
AV1_PRESET = SVT_AV1_PRESET  # and SVT_AV1_PARAMS: the enhancement layer's low-delay settings
NO_PERIODIC_KEYFRAMES = 100_000  # GOP length: longer than any benchmark clip
CODEC_THREADS = 1

_ENCODERS = {"h264": "libx264", "vp8": "libvpx", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
_DECODERS = {"h264": "h264", "vp8": "vp8", "vp9": "vp9", "av1": "libdav1d"}
_PAYLOAD_FORMATS = {"h264": rtp.H264, "vp8": rtp.VP8, "vp9": rtp.VP9, "av1": rtp.AV1}


def codec_available(codec: str) -> bool:
    """True when this PyAV build has both the encoder and the decoder used for ``codec``."""
    if codec not in _ENCODERS:
        raise ValueError(f"unknown video codec {codec!r}; expected one of {sorted(_ENCODERS)}")
    try:
        av.codec.Codec(_ENCODERS[codec], "w")
        av.codec.Codec(_DECODERS[codec], "r")
    except av.error.FFmpegError:  # type: ignore[attr-defined]
        return False
    except ValueError:  # PyAV raises UnknownCodecError, a ValueError subclass, on older versions
        return False
    return True


class VideoCodec(Codec):
    """One PyAV encoder at one operating point, decoded with PyAV."""

    def __init__(
        self,
        codec: str,
        setting: str,
        options: Mapping[str, str],
        bit_rate_kbps: float | None = None,
        coded_size: int | None = None,
    ) -> None:
        """coded_size: code the crops area-downscaled to this side and upscale the decoded pictures back
        (bicubic); None: at the crops' own size. The curve's family is then ``<codec>-<coded_size>``."""
        if codec not in _ENCODERS:
            raise ValueError(f"unknown video codec {codec!r}; expected one of {sorted(_ENCODERS)}")
        if coded_size is not None and coded_size < 16:
            raise ValueError(f"coded_size must be at least 16 pixels, got {coded_size}")
        self.codec = codec if coded_size is None else f"{codec}-{coded_size}"
        self.coded_size = coded_size
        self.setting = setting
        self.encoder = _ENCODERS[codec]
        self.decoder = _DECODERS[codec]
        self.payload_format = _PAYLOAD_FORMATS[codec]
        self.options = dict(options)
        self.bit_rate_kbps = bit_rate_kbps

    def params(self) -> dict[str, object]:
        return {
            "encoder": self.encoder,
            "decoder": self.decoder,
            "options": self.options,
            "target_kbps": self.bit_rate_kbps,
            "rtp_payload_format": self.payload_format,
            "threads": CODEC_THREADS,
            "coded_size": self.coded_size,
        }

    def _encoder_context(self, size: int, fps: float) -> VideoCodecContext:
        if self.encoder == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 logs its configuration to stderr otherwise
        rate = Fraction(fps).limit_denominator(1001)
        ctx = cast(VideoCodecContext, av.CodecContext.create(self.encoder, "w"))
        ctx.width = ctx.height = size
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = 1 / rate
        ctx.framerate = rate
        ctx.gop_size = NO_PERIODIC_KEYFRAMES
        ctx.thread_count = CODEC_THREADS
        if self.bit_rate_kbps is not None:
            ctx.bit_rate = int(self.bit_rate_kbps * 1000)
        ctx.options = dict(self.options)
        return ctx

    def run(self, clip: BenchClip, shown: np.ndarray | None = None) -> tuple[StreamInfo, np.ndarray]:
        idx = self.shown_indices(clip, shown)
        n = clip.frames.shape[0]
        if self.coded_size is not None and self.coded_size > clip.size:
            raise ValueError(f"{self.name}: coded size {self.coded_size} exceeds the crops' {clip.size}")
        coded_size = self.coded_size or clip.size
        encoder = self._encoder_context(coded_size, clip.fps)
        frames_bytes: list[list[bytes]] = [[] for _ in range(n)]
        keyframes = np.zeros(n, bool)
        encode_ms = np.zeros(n)

        def collect(packets: list[av.Packet]) -> int:
            for packet in packets:
                if packet.pts is None or not 0 <= packet.pts < n:
                    raise RuntimeError(f"{self.encoder} returned a packet with pts {packet.pts} outside 0..{n - 1}")
                frames_bytes[packet.pts].append(bytes(packet))
                keyframes[packet.pts] |= bool(packet.is_keyframe)
            return len(packets)

        for i in range(n):
            start = time.perf_counter()
            rgb = clip.frames[i] if coded_size == clip.size else downscale(clip.frames[i], coded_size)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            with scheduling_kept():  # the first call opens the encoder
                packets = encoder.encode(frame)
            encode_ms[i] = (time.perf_counter() - start) * 1e3
            collect(packets)
        with scheduling_kept():
            late = collect(encoder.encode(None))
        if late:
            logger.warning("%s: %d packets came out only at the end of the stream (not low-delay)", self.name, late)
        if not frames_bytes[0]:
            raise RuntimeError(f"{self.name}: the encoder produced nothing for frame 0")

        decoder = cast(VideoCodecContext, av.CodecContext.create(self.decoder, "r"))
        decoder.thread_count = CODEC_THREADS
        pictures: dict[int, np.ndarray] = {}
        decode_ms = np.zeros(n)
        for i in range(n):
            start = time.perf_counter()
            for data in frames_bytes[i]:
                packet = av.Packet(data)
                packet.pts = i
                for decoded in decoder.decode(packet):
                    pictures[decoded.pts if decoded.pts is not None else i] = decoded.to_ndarray(format="rgb24")
            decode_ms[i] = (time.perf_counter() - start) * 1e3
        for decoded in decoder.decode(None):
            pictures[decoded.pts if decoded.pts is not None else n - 1] = decoded.to_ndarray(format="rgb24")
        if 0 not in pictures:
            raise RuntimeError(f"{self.name}: the decoder returned no picture for the keyframe")
        if coded_size != clip.size:  # the receiver shows them at the crop's size
            pictures = {i: upscale(picture, clip.size) for i, picture in pictures.items()}

        reconstruction = np.empty_like(clip.frames[1:])
        last = pictures[0]
        dropped = 0
        for i in range(1, n):
            if i in pictures:
                last = pictures[i]
            else:
                dropped += 1
            reconstruction[i - 1] = last
        if dropped:
            logger.info("%s on %s: %d of %d frames dropped or undecodable", self.name, clip.clip_id, dropped, n - 1)

        rtp_frames = [
            [rtp.packetize(data, self.payload_format, keyframe=bool(keyframes[i])) for data in frames_bytes[i]]
            for i in range(n)
        ]
        payload = [sum(f.media_bytes for f in rtp_frames[i]) for i in range(n)]
        wire = [sum(f.wire_bytes for f in rtp_frames[i]) for i in range(n)]
        info = StreamInfo(
            start_payload_bytes=payload[0],
            start_wire_bytes=wire[0],
            payload_bytes=sum(payload[1:]),
            wire_bytes=sum(wire[1:]),
            packets=sum(f.packets for i in range(1, n) for f in rtp_frames[i]),
            encode_ms=encode_ms[1:],
            decode_ms=decode_ms[1:],
        )
        return info, reconstruction[idx]


def h264_sweep(crfs: tuple[int, ...] = H264_CRFS) -> list[VideoCodec]:
    """libx264, zerolatency tune, CRF sweep."""
    return [
        VideoCodec(
            "h264",
            f"crf{crf} {H264_PRESET} {H264_TUNE}",
            {"preset": H264_PRESET, "tune": H264_TUNE, "crf": str(crf)},
        )
        for crf in crfs
    ]


def vp8_sweep(kbps: tuple[int, ...] = VP8_KBPS) -> list[VideoCodec]:
    """libvpx VP8, realtime deadline, target-bitrate sweep (quantizer range 2..63)."""
    return [
        VideoCodec(
            "vp8",
            f"{k}kbps realtime cpu-used{VP8_CPU_USED}",
            {"deadline": "realtime", "cpu-used": str(VP8_CPU_USED), "lag-in-frames": "0", "qmin": "2", "qmax": "63"},
            bit_rate_kbps=k,
        )
        for k in kbps
    ]


def vp9_sweep(kbps: tuple[int, ...] = VP9_KBPS) -> list[VideoCodec]:
    """libvpx-vp9, realtime deadline, target-bitrate sweep (quantizer range 2..63)."""
    return [
        VideoCodec(
            "vp9",
            f"{k}kbps realtime cpu-used{VP9_CPU_USED}",
            {
                "deadline": "realtime",
                "cpu-used": str(VP9_CPU_USED),
                "lag-in-frames": "0",
                "row-mt": "1",
                "qmin": "2",
                "qmax": "63",
            },
            bit_rate_kbps=k,
        )
        for k in kbps
    ]


def av1_sweep(qps: tuple[int, ...] = AV1_QPS, coded_size: int | None = None) -> list[VideoCodec]:
    """SVT-AV1 with the enhancement layer's settings (low-delay prediction, no lookahead), constant-QP sweep;
    coded_size: at that side, upscaled."""
    return [
        VideoCodec(
            "av1",
            f"qp{qp} preset{AV1_PRESET} low-delay" + (f" at {coded_size}² bicubic-upscaled" if coded_size else ""),
            svt_av1_options(qp, AV1_PRESET),
            coded_size=coded_size,
        )
        for qp in qps
    ]


def default_video_codecs(names: tuple[str, ...] = ("h264", "vp8", "vp9", "av1")) -> list[VideoCodec]:
    """The default sweeps of the named codecs this PyAV build has (the missing are logged and skipped)."""
    sweeps = {"h264": h264_sweep, "vp8": vp8_sweep, "vp9": vp9_sweep, "av1": av1_sweep}
    codecs: list[VideoCodec] = []
    for name in names:
        if name not in sweeps:
            raise ValueError(f"unknown video codec {name!r}; expected some of {sorted(sweeps)}")
        if not codec_available(name):
            logger.warning("PyAV has no %s encoder/decoder (%s/%s); %s skipped", name, _ENCODERS[name], _DECODERS[name], name)
            continue
        codecs.extend(sweeps[name]())
    return codecs
