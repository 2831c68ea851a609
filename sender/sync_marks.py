"""Audio-video sync marks: the mouth snaps open on a frame and the audio clicks at that frame's capture time.

A scripted event both media carry, so that the receiver (``receiver.av_sync.SyncProbe``, whose thresholds these clear) can measure how far apart
it plays them: every ``period_s`` (from ``first_s`` after the motion starts) ``MarkedSource`` opens the mouth wide for
``MOUTH_OPEN_FRAMES`` frames (the lower lip, chin and jaw keypoints' δ_y set to ``MOUTH_OPEN_DY``, far beyond speech's
≈ 0.06) and notes the first marked frame's capture time in the shared ``SyncMarks``; the audio source
(``sender.audio_sources``) adds a click (``CLICK_MS`` of a ``CLICK_HZ`` tone at ``CLICK_AMPLITUDE`` of full scale,
above speech's 0.35) starting at exactly that capture time. Audio is produced after its capture time, like a
microphone's, and a frame is handed over at its capture time, so the mark is noted before its audio is made.

    marks = SyncMarks(period_s=2.0)
    source = MarkedSource(TraceSource(25.0), marks)          # the motion side
    audio = GeneratedSpeech(marks=marks)                     # the audio side
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator

import numpy as np

from codec.motion import MotionParams
from sender.sources import MotionFrame, MotionSource

MOUTH_KEYPOINTS = (0, 4, 9, 10)  # lower lip, chin, jaw sides (codec.synthetic_trace's roles)
MOUTH_OPEN_DY = 0.4  # δ_y of those keypoints while the mark shows (speech moves them by ≲ 0.06)
MOUTH_OPEN_FRAMES = 3  # frames the mouth stays open per mark
CLICK_MS = 10.0
CLICK_HZ = 1000.0
CLICK_AMPLITUDE = 0.95  # of full scale (Opus at 16 kbps keeps ≥ 0.85 of it; speech stays ≤ 0.55 after coding)
DEFAULT_PERIOD_S = 2.0
MAX_NOTED = 64


class SyncMarks:
    """The capture times (wall ms) of the marks the motion source showed, read by the audio source (thread-safe)."""

    def __init__(self, period_s: float = DEFAULT_PERIOD_S, first_s: float = 1.0) -> None:
        if not period_s >= 0.5:
            raise ValueError(f"sync marks need a period of at least 0.5 s (the receiver pairs events within it), got {period_s}")
        self.period_s, self.first_s = period_s, first_s
        self._times: deque[float] = deque(maxlen=MAX_NOTED)
        self._lock = threading.Lock()

    def note(self, capture_ms: float) -> None:
        with self._lock:
            self._times.append(capture_ms)

    def between(self, start_ms: float, end_ms: float) -> list[float]:
        """Mark times in [start_ms, end_ms)."""
        with self._lock:
            return [t for t in self._times if start_ms <= t < end_ms]

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._times)


def open_mouth(motion: MotionParams) -> MotionParams:
    """``motion`` with the mouth keypoints' δ_y at ``MOUTH_OPEN_DY`` (keypoints the model lacks are skipped)."""
    expression = np.array(motion.expression, dtype=np.float32)  # (K, 3)
    present = np.array(motion.present)
    for k in MOUTH_KEYPOINTS:
        if k < motion.num_keypoints:
            expression[k, 1] = MOUTH_OPEN_DY
            present[k] = True
    return MotionParams(motion.yaw, motion.pitch, motion.roll, motion.translation, expression, present)


def click(sample_rate: int) -> np.ndarray:
    """The click's samples, float32 in [-1, 1] (a Hann-windowed tone burst)."""
    n = max(1, int(round(CLICK_MS * sample_rate / 1000.0)))
    t = np.arange(n) / sample_rate
    window = np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 0.25  # nearly flat: the onset is the sample that crosses
    return (CLICK_AMPLITUDE * window * np.sin(2 * np.pi * CLICK_HZ * t)).astype(np.float32)


class MarkedSource(MotionSource):
    """Any motion source with the sync marks shown in its motion (see the module docstring)."""

    def __init__(self, source: MotionSource, marks: SyncMarks) -> None:
        self.source, self.marks = source, marks
        self.fps, self.name = source.fps, f"{source.name} + sync marks every {marks.period_s:g} s"
        self.provides_faces = source.provides_faces
        self.marks_shown = 0

    def __getattr__(self, name: str) -> object:  # motion_at (the trace's K), skipped_frames, ...
        return getattr(self.source, name)

    async def frames(self) -> AsyncIterator[MotionFrame]:
        first_index: int | None = None
        last_cycle = -1
        fps = self.source.fps
        period = max(1, int(round(self.marks.period_s * fps)))
        offset = int(round(self.marks.first_s * fps))
        async for frame in self.source.frames():
            if first_index is None:
                first_index = frame.index
            phase = frame.index - first_index - offset
            if phase >= 0 and phase % period < MOUTH_OPEN_FRAMES:
                if phase // period != last_cycle:  # the mark's first frame shown (a late source may skip frames)
                    last_cycle = phase // period
                    self.marks.note(frame.capture_ms)
                    self.marks_shown += 1
                frame = MotionFrame(frame.index, open_mouth(frame.motion), frame.capture_ms, frame.face)
            yield frame

    def close(self) -> None:
        self.source.close()

    def latest_picture(self) -> np.ndarray | None:
        return self.source.latest_picture()
