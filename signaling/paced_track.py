"""A WebRTC video track that repeats the newest picture at a fixed frame rate (aiortc encodes it).

Both video tracks of a call are this: the receiver's synthesized video for viewers
(receiver/video_track.py) and the sender's original pictures (sender/original.py). The track never
queues: each ``recv`` waits for its slot on the frame grid and sends whatever picture is newest, so a
slow producer repeats frames and a viewer never falls behind.
"""

from __future__ import annotations

import abc
import asyncio
import fractions
import time

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


class PacedVideoTrack(MediaStreamTrack, abc.ABC):
    """Subclasses say what the newest picture is; this paces them at ``fps`` on the 90 kHz RTP clock."""

    kind = "video"

    def __init__(self, fps: float) -> None:
        super().__init__()
        self.fps = fps
        self._start: float | None = None
        self._count = 0
        self.frames_sent = 0

    @abc.abstractmethod
    def newest_picture(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB to send in this slot."""

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
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.newest_picture()), format="rgb24")
        frame.pts = int(round(self._count * VIDEO_CLOCK_RATE / self.fps))
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame
