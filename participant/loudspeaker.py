"""What a participant hears: every other participant's sound, as played in sync with its face, mixed and sent to a
loudspeaker (FFmpeg's ``alsa`` or ``pulse`` output through PyAV) or written to a WAV file.

Each remote's audio playout (``receiver.audio_playout``) hands its chunks over at their play time; ``Mixer.feed`` puts
them in that remote's queue. Every ``BLOCK_MS`` the mixer takes one block from each queue (silence where a queue runs
dry: a late or lost packet, a participant that left), sums them with saturation and hands the block to the output's
own thread (a blocking device write never stalls the event loop; when the device falls more than ``MAX_QUEUED_BLOCKS``
behind, the oldest blocks are dropped and counted). A queue holding more than ``MAX_BACKLOG_MS`` (a remote whose chunks
came in a burst) is trimmed to it from the front, so no remote drifts behind the others.

    speaker = Loudspeaker.open("pulse:default")          # or "alsa:default", "alsa:hw:0,0", "mix.wav"
    mixer = Mixer(speaker); mixer.start()
    receiver.audio.add_output(lambda played: mixer.feed("peer-id", played.samples))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import deque
from fractions import Fraction
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
BLOCK_MS = 20
BLOCK_SAMPLES = SAMPLE_RATE * BLOCK_MS // 1000
MAX_BACKLOG_MS = 200
MAX_QUEUED_BLOCKS = 25  # 0.5 s of sound waiting for the device
DEVICE_PREFIXES = ("alsa:", "pulse:")


class LoudspeakerError(RuntimeError):
    """The output could not be opened (the message names it and what to try)."""


class Loudspeaker:
    """A PyAV output for mono 16-bit 48 kHz blocks, written on its own thread."""

    def __init__(self, container: object, stream: object, name: str) -> None:
        self._container, self._stream, self.name = container, stream, name
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=MAX_QUEUED_BLOCKS)
        self._pts = 0
        self.blocks_written = 0
        self.blocks_dropped = 0
        self.write_errors = 0
        self._thread = threading.Thread(target=self._run, name="loudspeaker", daemon=True)
        self._thread.start()

    @classmethod
    def open(cls, spec: str) -> Loudspeaker:
        """``alsa:NAME``, ``pulse:NAME`` or a ``.wav`` path; LoudspeakerError when it cannot be opened."""
        import av

        try:
            if spec.startswith(DEVICE_PREFIXES):
                fmt, _, device = spec.partition(":")
                container = av.open(device or "default", mode="w", format=fmt)
            elif spec.lower().endswith(".wav"):
                if not Path(spec).parent.is_dir():
                    raise OSError(f"no folder {str(Path(spec).parent)!r}")
                container = av.open(str(Path(spec)), mode="w", format="wav")
            else:
                raise LoudspeakerError(f"--speaker {spec!r}: give alsa:NAME, pulse:NAME (e.g. pulse:default) or a FILE.wav")
            stream = container.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise LoudspeakerError(f"cannot open the loudspeaker {spec!r}: {exc} (is the device there? try pulse:default, "
                                   "alsa:default, or a FILE.wav)") from None
        return cls(container, stream, spec)

    def write(self, block: np.ndarray) -> None:
        """Queue one (BLOCK_SAMPLES,) int16 block; the oldest is dropped when the device is that far behind."""
        while True:
            try:
                self._queue.put_nowait(block)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                    self.blocks_dropped += 1

    def _run(self) -> None:
        import av

        while True:
            block = self._queue.get()
            if block is None:
                break
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts, frame.time_base = self._pts, Fraction(1, SAMPLE_RATE)
            self._pts += block.size
            try:
                for packet in self._stream.encode(frame):  # type: ignore[attr-defined]
                    self._container.mux(packet)  # type: ignore[attr-defined]
                self.blocks_written += 1
            except (av.FFmpegError, OSError) as exc:
                self.write_errors += 1
                if self.write_errors == 1:
                    logger.error("loudspeaker %s: %s (later errors are counted only)", self.name, exc)
        with contextlib.suppress(Exception):
            for packet in self._stream.encode(None):  # type: ignore[attr-defined]
                self._container.mux(packet)  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            self._container.close()  # type: ignore[attr-defined]

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5.0)


class Mixer:
    """Sums the remotes' played sound into one block every ``BLOCK_MS`` (see the module docstring)."""

    def __init__(self, output: Loudspeaker) -> None:
        self.output = output
        self._queues: dict[str, deque[np.ndarray]] = {}
        self._task: asyncio.Task[None] | None = None
        self.blocks = 0
        self.short_blocks = 0  # (remote, block) pairs filled with silence in part or whole: gaps, silent or departed remotes
        self.trimmed_samples = 0

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def feed(self, remote: str, samples: np.ndarray) -> None:
        pending = self._queues.setdefault(remote, deque())
        pending.append(np.asarray(samples, dtype=np.int16).ravel())
        backlog = sum(chunk.size for chunk in pending)
        excess = backlog - SAMPLE_RATE * MAX_BACKLOG_MS // 1000
        while excess > 0 and pending:
            head = pending[0]
            if head.size <= excess:
                pending.popleft()
                excess -= head.size
                self.trimmed_samples += head.size
            else:
                pending[0] = head[excess:]
                self.trimmed_samples += excess
                excess = 0

    def forget(self, remote: str) -> None:
        self._queues.pop(remote, None)

    def mix_block(self) -> np.ndarray:
        """One (BLOCK_SAMPLES,) int16 block of every remote's next samples, summed with saturation."""
        total = np.zeros(BLOCK_SAMPLES, np.int32)
        for pending in self._queues.values():
            filled = 0
            while filled < BLOCK_SAMPLES and pending:
                head = pending[0]
                take = min(head.size, BLOCK_SAMPLES - filled)
                total[filled:filled + take] += head[:take]
                if take == head.size:
                    pending.popleft()
                else:
                    pending[0] = head[take:]
                filled += take
            self.short_blocks += filled < BLOCK_SAMPLES
        self.blocks += 1
        return np.clip(total, -32768, 32767).astype(np.int16)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += BLOCK_MS / 1000.0
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self.output.write(self.mix_block())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self.output.close)

    def stats(self) -> dict[str, int]:
        return {"blocks": self.blocks, "short_blocks": self.short_blocks, "trimmed_samples": self.trimmed_samples,
                "blocks_written": self.output.blocks_written, "blocks_dropped": self.output.blocks_dropped,
                "write_errors": self.output.write_errors}
