"""Measures audio-video sync at the receiver: the sender's sync marks (``sender.sync_marks``) seen in both media.

The video event is the first rendered frame whose motion shows the mouth opened by a mark (``mouth_open``), at the
time its image was ready (``rendered_ms``, where the latency figures end too); the audio event is the first sample
of a click (|sample| above ``DETECT_AMPLITUDE`` of full scale, after at least ``REARM_MS`` without one), at the time
the audio playout handed that sample out (``played_ms`` of its chunk + its position). Each video event is paired
with the nearest audio event within ``PAIR_WINDOW_MS``: offset = audio − video (positive: the sound comes after the
face). Only sources with sync marks produce events; without them the probe stays empty.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from codec.motion import MotionParams

# What a mark looks like (sender.sync_marks makes them; PROTOCOL.md §2 "Audio"): the sender does not import these,
# nor this the sender; tests/test_call_audio.py checks that the two agree.
MOUTH_KEYPOINTS = (0, 4, 9, 10)  # lower lip, chin, jaw sides
DETECT_DY = 0.25  # a transmitted mouth keypoint's δ_y above this is a mark (speech moves them by ≲ 0.06)
DETECT_AMPLITUDE = 0.7  # |sample| above this fraction of full scale is a click (the generated speech peaks at 0.3)
REARM_MS = 300.0  # a new event needs this long without one (a mark lasts 3 frames, a click 4 ms)
PAIR_WINDOW_MS = 500.0
MAX_EVENTS = 1000


@dataclass(frozen=True)
class SyncOffsets:
    """Offsets (audio − face, ms) of the paired marks and what could not be paired."""

    offsets_ms: tuple[float, ...]
    video_events: int
    audio_events: int

    def summary(self) -> dict[str, float | int | None]:
        arr = np.asarray(self.offsets_ms, dtype=np.float64)
        if not len(arr):
            return {"pairs": 0, "video_events": self.video_events, "audio_events": self.audio_events, "offset_ms_median": None,
                    "offset_ms_p95_abs": None, "offset_ms_max_abs": None, "offset_ms_min": None, "offset_ms_max": None}
        return {
            "pairs": int(len(arr)), "video_events": self.video_events, "audio_events": self.audio_events,
            "offset_ms_median": round(float(np.median(arr)), 2),
            "offset_ms_p95_abs": round(float(np.percentile(np.abs(arr), 95)), 2),
            "offset_ms_max_abs": round(float(np.abs(arr).max()), 2),
            "offset_ms_min": round(float(arr.min()), 2), "offset_ms_max": round(float(arr.max()), 2),
        }


def mouth_open(motion: MotionParams) -> bool:
    """Whether ``motion`` shows a mark: a transmitted mouth keypoint's δ_y above ``DETECT_DY``."""
    return any(k < motion.num_keypoints and motion.present[k] and motion.expression[k, 1] > DETECT_DY for k in MOUTH_KEYPOINTS)


class SyncProbe:
    """Collects the mark events of both media (see the module docstring)."""

    def __init__(self, sample_rate: int = 48_000) -> None:
        self.sample_rate = sample_rate
        self.video_ms: deque[float] = deque(maxlen=MAX_EVENTS)
        self.audio_ms: deque[float] = deque(maxlen=MAX_EVENTS)
        self._last_video = -1e18
        self._last_audio = -1e18
        self._threshold = int(DETECT_AMPLITUDE * 32767)

    def on_video(self, motion: MotionParams, rendered_ms: float) -> None:
        if mouth_open(motion):
            if rendered_ms - self._last_video >= REARM_MS:
                self.video_ms.append(rendered_ms)
            self._last_video = rendered_ms

    def on_audio(self, samples: np.ndarray, played_ms: float) -> None:
        """``samples`` (N,) int16 whose first one was played at ``played_ms``."""
        loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > self._threshold)
        if not len(loud):
            return
        ms_per_sample = 1000.0 / self.sample_rate
        for index in loud:
            t = played_ms + float(index) * ms_per_sample
            if t - self._last_audio >= REARM_MS:
                self.audio_ms.append(t)
            self._last_audio = t

    def offsets(self) -> SyncOffsets:
        audio = np.asarray(self.audio_ms, dtype=np.float64)
        out: list[float] = []
        if len(audio):
            for v in self.video_ms:
                nearest = audio[np.argmin(np.abs(audio - v))]
                if abs(nearest - v) <= PAIR_WINDOW_MS:
                    out.append(float(nearest - v))
        return SyncOffsets(tuple(out), len(self.video_ms), len(self.audio_ms))
