"""The sender's audio: one Opus encoder for the call, each packet sent to every receiver link that takes audio.

``AudioSender.run`` reads the audio source (``sender.audio_sources``), encodes each chunk once (``OpusEncoder``: PyAV's
libopus, mono, ``bitrate_kbps``, one ``frame_ms`` frame per packet, VoIP tuning) and hands every packet to the
``AudioRtpChannel`` of each link whose receiver accepted the stream (``signaling.rtp_audio``). The packet's RTP
timestamp is its first sample's capture time on the 48 kHz clock (libopus's look-ahead is in the encoder's pts, so
the receiver's decoded samples land where they were captured).
"""

from __future__ import annotations

import fractions
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sender.audio_sources import DEFAULT_FRAME_MS, SAMPLE_RATE, AudioChunk, AudioSource
from signaling.rtp_audio import SAMPLES_PER_MS, AudioRtpChannel

logger = logging.getLogger(__name__)

DEFAULT_AUDIO_KBPS = 16.0


@dataclass(frozen=True)
class AudioConfig:
    """Audio coding settings; the field comments are the CLI help."""

    bitrate_kbps: float = DEFAULT_AUDIO_KBPS  # Opus bitrate (6-128 kbps; 16 is clear wideband speech)
    frame_ms: int = DEFAULT_FRAME_MS  # Opus frame per RTP packet: 20, 40 or 60 ms (longer: fewer packets, ~50 B headers each)

    def __post_init__(self) -> None:
        if not 6.0 <= self.bitrate_kbps <= 128.0:
            raise ValueError(f"audio bitrate {self.bitrate_kbps:g} kbps is outside Opus's 6-128 kbps")


class AudioOutlet(Protocol):
    """Where one link's Opus packets go: its ``AudioRtpChannel``, or the ``sender.motion_rider.MotionRider`` that puts
    motion inside them."""

    @property
    def active(self) -> bool: ...

    def send(self, payload: bytes, timestamp: int) -> None: ...


@dataclass(frozen=True)
class OpusPacket:
    payload: bytes
    timestamp_samples: int  # first decoded sample's capture time, 48 kHz samples since the epoch (not wrapped)


class OpusEncoder:
    """Mono 48 kHz int16 chunks -> Opus packets (PyAV libopus), pts = capture time in samples."""

    def __init__(self, config: AudioConfig) -> None:
        import av

        self.config = config
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = SAMPLE_RATE
        codec.layout = "mono"
        codec.format = "s16"
        codec.bit_rate = int(config.bitrate_kbps * 1000)
        codec.time_base = fractions.Fraction(1, SAMPLE_RATE)
        codec.options = {"application": "voip", "frame_duration": str(config.frame_ms)}
        codec.open()
        self._codec: Any = codec
        self.frame_samples = int(codec.frame_size)

    def encode(self, chunk: AudioChunk) -> list[OpusPacket]:
        import av

        if len(chunk.samples) != self.frame_samples:
            raise ValueError(f"an audio chunk of {len(chunk.samples)} samples; this encoder takes {self.frame_samples} "
                             f"({self.config.frame_ms} ms at {SAMPLE_RATE} Hz)")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.samples.reshape(1, -1)), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = int(round(chunk.capture_ms * SAMPLES_PER_MS))
        return [OpusPacket(bytes(p), int(p.pts)) for p in self._codec.encode(frame)]


class AudioSender:
    """Encodes the source once and fans its packets out (see the module docstring)."""

    def __init__(self, source: AudioSource, config: AudioConfig = AudioConfig()) -> None:
        if source.chunk_ms != config.frame_ms:
            raise ValueError(f"the audio source gives {source.chunk_ms} ms chunks, the encoder takes {config.frame_ms} ms frames")
        self.source, self.config = source, config
        self.chunks = 0
        self.packets = 0
        self.payload_bytes = 0
        self.send_errors = 0
        self.first_capture_ms: float | None = None
        self.last_capture_ms: float | None = None

    def offer(self, pc: Any) -> AudioRtpChannel:
        """Add the audio transceiver to a receiver link's offer."""
        return AudioRtpChannel.offer(pc)

    async def run(self, channels: Callable[[], Iterable[AudioOutlet | None]]) -> None:
        """Until the source ends: every packet to each started channel ``channels()`` gives at that moment."""
        encoder = OpusEncoder(self.config)
        try:
            async for chunk in self.source.chunks():
                self.chunks += 1
                if self.first_capture_ms is None:
                    self.first_capture_ms = chunk.capture_ms
                self.last_capture_ms = chunk.capture_ms + chunk.duration_ms
                for packet in encoder.encode(chunk):
                    self.packets += 1
                    self.payload_bytes += len(packet.payload)
                    for channel in channels():
                        if channel is None or not channel.active:
                            continue
                        try:
                            channel.send(packet.payload, packet.timestamp_samples)
                        except (ConnectionError, ValueError) as exc:
                            self.send_errors += 1
                            logger.debug("audio packet not sent: %s", exc)
        finally:
            self.source.close()

    def stats(self) -> dict[str, Any]:
        seconds = None if self.first_capture_ms is None or self.last_capture_ms is None else (self.last_capture_ms - self.first_capture_ms) / 1000.0
        return {
            "source": self.source.name, "bitrate_kbps": self.config.bitrate_kbps, "frame_ms": self.config.frame_ms,
            "chunks": self.chunks, "packets": self.packets, "payload_bytes": self.payload_bytes, "send_errors": self.send_errors,
            "payload_kbps": round(self.payload_bytes * 8 / 1000 / seconds, 3) if seconds else None,
        }
