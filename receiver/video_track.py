"""The synthesized video as a WebRTC track for viewers: the newest rendered frame, paced at the call's rate."""

from __future__ import annotations

import numpy as np

from signaling.paced_track import PacedVideoTrack


class LatestFrame:
    """The newest rendered image, shared by every viewer's track (no queue: viewers never lag behind)."""

    def __init__(self, size: int) -> None:
        self.image: np.ndarray = np.full((size, size, 3), 32, np.uint8)  # dark grey until the first frame
        self.slot = -1

    def update(self, slot: int, image: np.ndarray) -> None:
        self.image, self.slot = image, slot


class SynthesizedVideoTrack(PacedVideoTrack):
    """A video track repeating the newest frame of ``latest`` at ``fps`` (aiortc encodes it, VP8 by default)."""

    def __init__(self, latest: LatestFrame, fps: float) -> None:
        super().__init__(fps)
        self._latest = latest

    def newest_picture(self) -> np.ndarray:
        return self._latest.image
