"""The synthesized video as a WebRTC track for viewers: the newest rendered frame, paced at the call's rate."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


class LatestFrame:
    """The newest rendered image, shared by every viewer's track (no queue: viewers never lag behind)."""

    def __init__(self, size: int) -> None:
        self.image: np.ndarray = np.full((size, size, 3), 32, np.uint8)  # dark grey until the first frame
        self.slot = -1

    def update(self, slot: int, image: np.ndarray) -> None:
        self.image, self.slot = image, slot


class SynthesizedVideoTrack(MediaStreamTrack):
    """A video track repeating the newest frame of ``latest`` at ``fps`` (aiortc encodes it, VP8 by default)."""

    kind = "video"

    def __init__(self, latest: LatestFrame, fps: float) -> None:
        super().__init__()
        self._latest = latest
        self.fps = fps
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._count += 1
            delay = self._start + self._count / self.fps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self._latest.image), format="rgb24")
        frame.pts = int(round(self._count * VIDEO_CLOCK_RATE / self.fps))
        frame.time_base = VIDEO_TIME_BASE
        return frame
