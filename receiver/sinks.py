"""Where rendered frames go: an MP4 recorder, an on-screen window, or nowhere (the null sink).

Sinks receive frames in output order with their output frame number (``slot``). The recorder writes
exactly one video frame per slot at the sender's frame rate: a slot the render thread skipped (latest
wins) repeats the previous image, so the file keeps the call's frame count and pacing.

Recordings survive a crash: the MP4 is fragmented (an empty ``moov`` up front, then one ``moof``+``mdat``
per key frame, a key frame every ``KEYFRAME_INTERVAL_S``) and each fragment is flushed to the file as it
closes, so a SIGKILL loses at most the last second; the file plays as it is. A recording never replaces
a file: when the path exists the recorder takes ``NAME-1.mp4``, ``NAME-2.mp4``, ... and logs which.

Sound (``audio_expected``, asked at the first frame, says whether the call has any): an AAC track beside the video.
``write_audio`` places each chunk by its position on the video's slot timeline (``receiver.audio_playout`` computes it
from capture times), so the file is in sync by construction; gaps become silence and overlaps are cut, keeping the
track continuous. Sound is queued and encoded on the video's writer thread, after each frame.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

KEYFRAME_INTERVAL_S = 1.0  # a fragment per key frame: what a crash can lose at most
MAX_RECORDING_NAMES = 10_000  # NAME-1 ... NAME-9999, then give up (say so)
AUDIO_SAMPLE_RATE = 48_000
AUDIO_BITRATE = 64_000  # AAC, mono
AUDIO_TOLERANCE_SAMPLES = 480  # 10 ms: a chunk this close to where the track is goes on directly


def claim_new_path(path: Path) -> Path:
    """``path``, or the first free ``STEM-N.SUFFIX`` beside it; the file is created empty (atomically), so two
    recorders never take the same name and an existing file is never replaced. OSError when none is free."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in range(MAX_RECORDING_NAMES):
        candidate = path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            continue
        if n:
            logger.warning("%s exists: recording to %s instead (recordings never replace a file)", path, candidate)
        return candidate
    raise OSError(f"cannot record to {path}: it and {path.stem}-1 ... -{MAX_RECORDING_NAMES - 1} all exist; choose another --record path")


class FrameSink(abc.ABC):
    """Consumes (slot, image) in increasing slot order; ``write`` may block briefly (called off the loop)."""

    @abc.abstractmethod
    def write(self, slot: int, image: np.ndarray) -> None: ...

    def close(self) -> None:
        """Flush and release (idempotent)."""


class NullSink(FrameSink):
    """Discards frames (recording and display off)."""

    def write(self, slot: int, image: np.ndarray) -> None:
        return None


class Mp4Recorder(FrameSink):
    """Fragmented H.264 MP4 (PyAV, libx264, yuv420p) at ``fps``, one frame per slot, gaps filled by repetition.

    ``path`` is where it was asked to record; ``self.path`` is where it does (a new name when that exists)."""

    def __init__(self, path: Path, fps: float, crf: int = 18, audio_expected: Callable[[], bool] | None = None) -> None:
        import av  # imported here: only recording needs it

        self.requested_path = path
        self.path = claim_new_path(path)
        self.fps = fps
        container_options = {
            "movflags": "frag_keyframe+empty_moov+default_base_moof",  # playable after a crash, up to the last fragment
            "flush_packets": "1",  # each fragment reaches the file as it closes, not when a 32 KiB buffer fills
        }
        self._container = av.open(str(self.path), mode="w", format="mp4", options=container_options)
        rate = Fraction(fps).limit_denominator(1000)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.pix_fmt = "yuv420p"
        keyint = str(max(1, round(fps * KEYFRAME_INTERVAL_S)))
        self._stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency", "g": keyint, "keyint_min": keyint}
        self._stream.codec_context.time_base = 1 / rate
        self._last_slot: int | None = None
        self._last_image: np.ndarray | None = None
        self._first_slot: int | None = None
        self.frames_written = 0
        self.frames_repeated = 0
        self._closed = False
        self._audio_expected = audio_expected
        self._audio_stream: Any = None
        self._audio_pending: deque[tuple[np.ndarray, float]] = deque()  # (samples, at_slot) from the event loop
        self._audio_buffer = np.zeros(0, np.float32)
        self._audio_next = 0  # samples of sound placed in the track so far
        self._audio_encoded = 0
        self.audio_samples_written = 0
        logger.info("recording to %s (fragmented MP4: playable even if this process is killed)", self.path)

    def _encode(self, image: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames_written
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def write(self, slot: int, image: np.ndarray) -> None:
        if self._closed or (self._last_slot is not None and slot <= self._last_slot):
            return
        if self._first_slot is None:
            self._first_slot = slot
            height, width = image.shape[:2]
            self._stream.width, self._stream.height = width - width % 2, height - height % 2
            if self._audio_expected is not None and self._audio_expected():
                self._audio_stream = self._container.add_stream("aac", rate=AUDIO_SAMPLE_RATE, layout="mono")
                self._audio_stream.bit_rate = AUDIO_BITRATE
        image = image[: self._stream.height, : self._stream.width]
        if self._last_slot is not None and self._last_image is not None:
            for _ in range(slot - self._last_slot - 1):
                self._encode(self._last_image)
                self.frames_repeated += 1
        self._encode(image)
        self._last_slot, self._last_image = slot, image
        self._drain_audio()

    def write_audio(self, samples: np.ndarray, at_slot: float) -> None:
        """Mono 48 kHz int16 ``samples`` whose first belongs at (fractional) video slot ``at_slot``; queued (any thread)."""
        if not self._closed and self._audio_expected is not None:
            self._audio_pending.append((samples, at_slot))

    def _drain_audio(self, final: bool = False) -> None:
        import av

        if self._audio_stream is None or self._first_slot is None:
            self._audio_pending.clear()
            return
        while self._audio_pending:
            samples, at_slot = self._audio_pending.popleft()
            start = int(round((at_slot - self._first_slot) / self.fps * AUDIO_SAMPLE_RATE))
            pcm = samples.astype(np.float32) / 32768.0
            if start > self._audio_next + AUDIO_TOLERANCE_SAMPLES:  # a gap: silence
                pcm = np.concatenate([np.zeros(start - self._audio_next, np.float32), pcm])
            elif start < self._audio_next - AUDIO_TOLERANCE_SAMPLES:  # an overlap (or before the first frame): cut
                pcm = pcm[self._audio_next - start:]
            self._audio_buffer = np.concatenate([self._audio_buffer, pcm])
            self._audio_next += len(pcm)
        frame_size = self._audio_stream.codec_context.frame_size or 1024
        while len(self._audio_buffer) >= frame_size or (final and len(self._audio_buffer)):
            part = self._audio_buffer[:frame_size]
            if len(part) < frame_size:
                part = np.concatenate([part, np.zeros(frame_size - len(part), np.float32)])
            self._audio_buffer = self._audio_buffer[frame_size:]
            frame = av.AudioFrame.from_ndarray(part.reshape(1, -1), format="fltp", layout="mono")
            frame.sample_rate = AUDIO_SAMPLE_RATE
            frame.pts = self._audio_encoded
            frame.time_base = Fraction(1, AUDIO_SAMPLE_RATE)
            self._audio_encoded += frame_size
            self.audio_samples_written += frame_size
            for packet in self._audio_stream.encode(frame):
                self._container.mux(packet)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._first_slot is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            if self._audio_stream is not None:
                self._drain_audio(final=True)
                for packet in self._audio_stream.encode():
                    self._container.mux(packet)
        self._container.close()
        logger.info("recorded %d frames (%d repeated) to %s", self.frames_written, self.frames_repeated, self.path)


class WindowSink(FrameSink):
    """Shows the newest frame in an OpenCV window, on its own thread (latest wins; never blocks the caller)."""

    def __init__(self, title: str = "kpcall receiver", scale: int = 2) -> None:
        import cv2

        self._cv2 = cv2
        self.title, self.scale = title, scale
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._closed = False
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="display", daemon=True)
        self._thread.start()

    def write(self, slot: int, image: np.ndarray) -> None:
        with self._cond:
            self._image = image
            self._cond.notify()

    def _run(self) -> None:
        cv2 = self._cv2
        try:
            while True:
                with self._cond:
                    while self._image is None and not self._closed:
                        self._cond.wait(0.05)
                    if self._closed:
                        break
                    image, self._image = self._image, None
                assert image is not None
                bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
                if self.scale != 1:
                    bgr = cv2.resize(bgr, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_LINEAR)
                cv2.imshow(self.title, bgr)
                cv2.waitKey(1)
        except cv2.error as exc:
            self.error = str(exc)
            logger.error("cannot show frames (no display? run without --show): %s", exc)
        finally:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(2.0)
