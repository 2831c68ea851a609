"""The played audio as a WebRTC track for viewers, beside the synthesized video (aiortc encodes it as Opus).

Each viewer's track takes what ``receiver.audio_playout`` plays, at its play time (so in step with the faces the
video track sends), into a short FIFO, and hands out 20 ms frames in real time: silence when the FIFO is empty (no
sender, a gap), the oldest sound dropped when it holds more than ``MAX_FIFO_MS`` (the track never lags).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from receiver.audio_playout import AudioPlayout, PlayedAudio

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms
MAX_FIFO_MS = 120.0


class PlayoutAudioTrack(MediaStreamTrack):
    """See the module docstring."""

    kind = "audio"

    def __init__(self, playout: AudioPlayout) -> None:
        super().__init__()
        self._playout = playout
        self._fifo = np.zeros(0, np.int16)
        self._start: float | None = None
        self._pts = 0
        playout.add_output(self._on_played)

    def _on_played(self, played: PlayedAudio) -> None:
        fifo = np.concatenate([self._fifo, played.samples])
        limit = int(MAX_FIFO_MS * SAMPLE_RATE / 1000)
        self._fifo = fifo[-limit:] if len(fifo) > limit else fifo

    async def recv(self) -> Any:
        import av

        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        samples = np.zeros(FRAME_SAMPLES, np.int16)
        take = min(FRAME_SAMPLES, len(self._fifo))
        samples[:take] = self._fifo[:take]
        self._fifo = self._fifo[take:]
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame

    def stop(self) -> None:
        self._playout.remove_output(self._on_played)
        super().stop()
