"""The receiver's audio: Opus decoded, delayed to the face's latency by the capture clock, and handed to its outputs.

Packets come from ``signaling.rtp_audio.AudioRtpChannel`` with their first sample's capture time (48 kHz RTP
timestamp). A decoded chunk captured at ``c`` is played at ``c + delay``:

    delay = max(video_latency, audio_need)

- ``video_latency``: the median over the last ``VIDEO_WINDOW`` frames decoded from motion of rendered − capture (the
  render path's latency: network, jitter buffer, render queue and render; both on the receiver's wall clock, the
  sender's capture clock unwrapped as the motion playout does);
- ``audio_need``: the largest arrival − capture of the last ``AUDIO_WINDOW`` packets plus ``GUARD_MS`` (a packet
  waits for its last sample at the sender; Opus frames of 60 ms make that 60 ms), so that a chunk is there by its time.

When the audio needs more than the video takes (a fast renderer: the test double, a GPU), the video waits instead:
the motion playout's minimum delay is raised (``PlayoutBuffer.min_delay_ms``) so that its latency reaches the audio's
(need − the fastest path − the median time from a frame's due time to its rendered image).
The delay changes only by more than ``HYSTERESIS_MS`` (each change is a small gap or overlap in the sound). A chunk
that would play more than ``LATE_MS`` after its time is dropped (counted); a lost packet is a gap (silence to the
outputs that need continuous sound). A new SSRC (a new or restarted sender) restarts the decoder and the windows.

Outputs (``add_output``) get every ``PlayedAudio`` at its play time on the event loop: the viewers' audio tracks
(``receiver.audio_track``), the MP4 recorder (``record_to``: placed by capture time against the video frames it
wrote) and the sync probe (``receiver.av_sync``), which the report summarizes.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from receiver.av_sync import SyncProbe
from receiver.playout import PlayoutBuffer, PlayoutFrame
from signaling.rtp_audio import SAMPLES_PER_MS, AudioRtpPacket, unwrap_audio_timestamp

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
VIDEO_WINDOW = 25  # frames (1 s at 25 fps)
AUDIO_WINDOW = 50  # packets (3 s of 60 ms frames)
GUARD_MS = 10.0
HYSTERESIS_MS = 15.0
VIDEO_FLOOR_STEP_MS = 5.0  # the video's minimum delay moves only by more than this
LATE_MS = 20.0
MAX_DELAY_MS = 1000.0


@dataclass(frozen=True, eq=False)
class PlayedAudio:
    """A chunk handed to the outputs: mono 48 kHz samples, when they were captured and when played."""

    samples: np.ndarray = field(repr=False)  # (N,) int16
    capture_ms: float  # the sender's wall clock, first sample
    played_ms: float  # the receiver's wall clock, first sample


class AudioRecorder(Protocol):
    """What the MP4 recorder offers for sound (``receiver.sinks.Mp4Recorder``)."""

    fps: float

    def write_audio(self, samples: np.ndarray, at_slot: float) -> None: ...


class OpusDecoder:
    """Opus packets -> mono 48 kHz int16 with the pts of their first sample (PyAV libopus)."""

    def __init__(self) -> None:
        import av

        codec = av.CodecContext.create("libopus", "r")
        codec.sample_rate = SAMPLE_RATE
        codec.layout = "mono"
        codec.format = "s16"
        self._codec: Any = codec

    def decode(self, payload: bytes, pts: int) -> list[tuple[np.ndarray, int]]:
        import av

        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = fractions.Fraction(1, SAMPLE_RATE)
        out = []
        for frame in self._codec.decode(packet):
            samples = frame.to_ndarray().reshape(-1)
            if frame.layout.nb_channels > 1:  # interleaved s16: keep the first channel
                samples = samples[:: frame.layout.nb_channels]
            out.append((samples.astype(np.int16), pts if frame.pts is None else int(frame.pts)))
        return out


class AudioPlayout:
    """See the module docstring. ``video``: the motion playout whose delay floor it raises when audio lags."""

    def __init__(self, video: PlayoutBuffer | None = None, clock: Callable[[], float] | None = None) -> None:
        import time

        self.video = video
        self._clock = clock or (lambda: time.time() * 1000.0)
        self.outputs: list[Callable[[PlayedAudio], None]] = []
        self.probe = SyncProbe(SAMPLE_RATE)
        self.outputs.append(lambda played: self.probe.on_audio(played.samples, played.played_ms))
        self.delay_ms: float | None = None
        self.video_floor_ms = 0.0
        self._video_latency: deque[float] = deque(maxlen=VIDEO_WINDOW)
        self._video_after_due: deque[float] = deque(maxlen=VIDEO_WINDOW)  # rendered − due: the render queue and render
        self._arrival: deque[float] = deque(maxlen=AUDIO_WINDOW)
        self._decoder: OpusDecoder | None = None
        self._ssrc: int | None = None
        self._handles: set[asyncio.TimerHandle] = set()
        self.last_video: tuple[int, float] | None = None  # (slot, capture ms) of the newest rendered frame
        self.packets = 0
        self.payload_bytes = 0
        self.chunks_played = 0
        self.chunks_late = 0
        self.decode_errors = 0
        self.streams = 0
        self.delay_changes = 0
        self.first_arrival_ms: float | None = None
        self.last_arrival_ms: float | None = None

    # -- wiring ---------------------------------------------------------------------------------
    def add_output(self, output: Callable[[PlayedAudio], None]) -> None:
        self.outputs.append(output)

    def remove_output(self, output: Callable[[PlayedAudio], None]) -> None:
        if output in self.outputs:
            self.outputs.remove(output)

    def record_to(self, recorder: AudioRecorder) -> None:
        """Write the sound into ``recorder``'s file beside the video frames of the same capture time."""

        def write(played: PlayedAudio) -> None:
            if self.last_video is None:
                return  # nothing of the video in the file yet: the sound starts with the picture
            slot, capture_ms = self.last_video
            recorder.write_audio(played.samples, slot + (played.capture_ms - capture_ms) * recorder.fps / 1000.0)

        self.add_output(write)

    def close(self) -> None:
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()

    # -- input ----------------------------------------------------------------------------------
    def on_video_rendered(self, frame: PlayoutFrame, rendered_ms: float) -> None:
        """A rendered face (called where frames go to the sinks): the video latency and the probe's video side."""
        self.last_video = (frame.slot, frame.capture_ms)
        self.probe.on_video(frame.motion, rendered_ms)
        if not frame.concealed:
            self._video_latency.append(rendered_ms - frame.capture_ms)
        self._video_after_due.append(rendered_ms - frame.due_ms)

    def on_packet(self, packet: AudioRtpPacket) -> None:
        now = packet.arrival_ms
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                logger.info("new audio stream (SSRC %d, was %d): the decoder starts again", packet.ssrc, self._ssrc)
            self._ssrc, self._decoder = packet.ssrc, OpusDecoder()
            self._arrival.clear()
            self.streams += 1
        assert self._decoder is not None
        capture_ms = unwrap_audio_timestamp(packet.timestamp, now)
        self.packets += 1
        self.payload_bytes += len(packet.payload)
        if self.first_arrival_ms is None:
            self.first_arrival_ms = now
        self.last_arrival_ms = now
        self._arrival.append(now - capture_ms)
        self._update_delay()
        base = int(round(capture_ms * SAMPLES_PER_MS))
        try:
            decoded = self._decoder.decode(packet.payload, base)
        except Exception as exc:  # noqa: BLE001 - a corrupt packet costs its own sound only
            self.decode_errors += 1
            logger.debug("audio packet not decoded: %s", exc)
            return
        assert self.delay_ms is not None
        loop = asyncio.get_running_loop()
        for samples, pts in decoded:
            chunk_capture = pts / SAMPLES_PER_MS
            due = chunk_capture + self.delay_ms
            if due < now - LATE_MS:
                self.chunks_late += 1
                continue
            handle: asyncio.TimerHandle | None = None

            def play(samples: np.ndarray = samples, chunk_capture: float = chunk_capture) -> None:
                self._handles.discard(handle)  # type: ignore[arg-type]
                self._play(PlayedAudio(samples, chunk_capture, self._clock()))

            handle = loop.call_later(max(0.0, (due - now) / 1000.0), play)
            self._handles.add(handle)

    def _play(self, played: PlayedAudio) -> None:
        self.chunks_played += 1
        for output in list(self.outputs):
            try:
                output(played)
            except Exception:  # noqa: BLE001 - one failing output (a closed viewer) must not silence the others
                logger.exception("an audio output failed")

    # -- the delay ------------------------------------------------------------------------------
    @property
    def video_latency_ms(self) -> float | None:
        return float(np.median(self._video_latency)) if self._video_latency else None

    @property
    def audio_need_ms(self) -> float:
        return (max(self._arrival) if self._arrival else 0.0) + GUARD_MS

    def _update_delay(self) -> None:
        need, video = self.audio_need_ms, self.video_latency_ms
        desired = min(MAX_DELAY_MS, need if video is None else max(video, need))
        if self.delay_ms is None or abs(desired - self.delay_ms) > HYSTERESIS_MS:
            if self.delay_ms is not None:
                self.delay_changes += 1
            self.delay_ms = desired
        buffer = self.video
        if buffer is None or video is None:
            return
        # The video's latency is offset (fastest path) + its jitter buffer's target + rendering after the due time; the
        # floor is the target that brings it to the audio's need. Measured apart from the target (not from the video
        # latency, which lags a change of the target), so raising the floor does not feed on itself.
        after_due = float(np.median(self._video_after_due)) if self._video_after_due else 0.0
        floor = min(buffer.max_delay_ms, max(0.0, need - buffer.offset_ms - after_due))
        if abs(floor - self.video_floor_ms) > VIDEO_FLOOR_STEP_MS or (floor == 0.0 and self.video_floor_ms != 0.0):
            self.video_floor_ms = floor
            buffer.min_delay_ms = floor

    # -- figures --------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        seconds = None
        if self.first_arrival_ms is not None and self.last_arrival_ms is not None and self.last_arrival_ms > self.first_arrival_ms:
            seconds = (self.last_arrival_ms - self.first_arrival_ms) / 1000.0
        return {
            "packets": self.packets, "payload_bytes": self.payload_bytes,
            "payload_kbps": round(self.payload_bytes * 8 / 1000 / seconds, 3) if seconds else None,
            "chunks_played": self.chunks_played, "chunks_late": self.chunks_late, "decode_errors": self.decode_errors,
            "streams": self.streams, "delay_ms": None if self.delay_ms is None else round(self.delay_ms, 1),
            "delay_changes": self.delay_changes,
            "video_latency_ms": None if self.video_latency_ms is None else round(self.video_latency_ms, 1),
            "audio_need_ms": round(self.audio_need_ms, 1) if self._arrival else None,
            "video_floor_ms": round(self.video_floor_ms, 1),
            "sync": self.probe.offsets().summary(),
        }
