"""The receiver's jitter buffer: one output frame per sender frame, paced, late frames dropped, gaps concealed.

Decoded frames go in with their arrival time; ``pop_due(now)`` hands out, in sender order, every
frame whose playout time has come. The playout time of sender frame s is

    due(s) = capture(s) + offset + target_delay

where ``capture(s)`` is the sender's capture timestamp (estimated from the frame rate for a frame that
never arrived), ``offset`` the smallest arrival − capture seen recently (clock offset plus the fastest
path) and ``target_delay`` the 95th percentile of the arrival delay above that minimum plus a small
guard: with several frames per packet the first frame of a packet waits for the last, and the
target absorbs that. A frame arriving after its playout time is late and dropped. A frame missing at
its playout time is concealed (``receiver.concealment``): interpolated when a later frame is already
buffered, extrapolated otherwise. After ``max_conceal_ms`` of concealment with nothing arriving the
buffer stalls (no output) and re-anchors on the next frame that arrives, so output never runs ahead of
a sender that stopped. A new stream id (a restarted sender) re-anchors as well; output frame numbers
(``slot``) keep counting up.

All times are milliseconds of one wall clock (``time.time() * 1000``); nothing here sleeps.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from codec.bitstream import TIMESTAMP_MODULUS, unwrap_seq
from codec.motion import MotionParams
from codec.prediction import DecodedFrame
from receiver.concealment import extrapolate, interpolate

logger = logging.getLogger(__name__)

MAX_BUFFERED = 512


def unwrap_timestamp_ms(ts_ms: int, near_ms: float) -> float:
    """A 32-bit ms timestamp -> the full ms value closest to ``near_ms`` (clocks within ±24 days)."""
    diff = (int(near_ms) - ts_ms + (TIMESTAMP_MODULUS >> 1)) % TIMESTAMP_MODULUS - (TIMESTAMP_MODULUS >> 1)
    return float(int(near_ms) - diff)


@dataclass(frozen=True, eq=False)
class PlayoutFrame:
    """One output frame: the motion to render and where it came from."""

    slot: int  # output frame number, 0, 1, 2, ... (never skips)
    stream_id: int
    seq: int  # unwrapped sender sequence number
    due_ms: float  # when it was due for rendering (local wall clock)
    motion: MotionParams
    capture_ms: float  # the sender's capture time (estimated when concealed)
    concealed: bool
    arrival_ms: float | None  # None when concealed


@dataclass
class _Arrived:
    frame: DecodedFrame
    capture_ms: float
    arrival_ms: float


class PlayoutBuffer:
    """Jitter buffer and concealment for one receiver (see the module docstring)."""

    def __init__(
        self, fps: float = 25.0, min_delay_ms: float = 0.0, max_delay_ms: float = 500.0, guard_ms: float = 5.0,
        window: int = 100, max_conceal_ms: float = 1000.0,
    ) -> None:
        self.fps = fps
        self.min_delay_ms, self.max_delay_ms, self.guard_ms = min_delay_ms, max_delay_ms, guard_ms
        self.window = window
        self.max_conceal_ms = max_conceal_ms
        self.next_slot = 0
        self.frames_late = 0
        self.frames_concealed = 0
        self.frames_interpolated = 0
        self.frames_duplicate = 0
        self.stalls = 0
        self.target_delay_ms = 0.0
        self._reset_stream(None)

    def _reset_stream(self, stream_id: int | None) -> None:
        self.stream_id = stream_id
        self._ext_last: int | None = None  # newest unwrapped seq received
        self._buffer: dict[int, _Arrived] = {}
        self._next_seq: int | None = None  # unwrapped seq of the next output slot; None = anchor on arrival
        self._delays: deque[float] = deque(maxlen=self.window)
        self._last_capture: tuple[int, float] | None = None  # (ext seq, capture ms) of the newest received frame
        self._last_due: float | None = None
        self._out_prev: tuple[int, MotionParams] | None = None  # last two decoded outputs, for extrapolation
        self._out_last: tuple[int, MotionParams] | None = None
        self._concealed_run = 0
        self._last_arrival: float | None = None

    def restart(self) -> None:
        """A new sender: re-anchor on its first frame, whatever its stream id (output slots keep counting)."""
        self._reset_stream(None)

    @property
    def interval_ms(self) -> float:
        return 1000.0 / self.fps

    def set_fps(self, fps: float) -> None:
        if not 1.0 <= fps <= 120.0:
            raise ValueError(f"fps must be in [1, 120], got {fps}")
        self.fps = fps

    @property
    def stalled(self) -> bool:
        return self._next_seq is None

    @property
    def offset_ms(self) -> float:
        """The smallest arrival − capture seen recently (clock offset plus the fastest path; 0 before any frame)."""
        return min(self._delays) if self._delays else 0.0

    @property
    def jitter_ms(self) -> float:
        if not self._delays:
            return 0.0
        delays = np.asarray(self._delays)
        return float(np.percentile(delays - delays.min(), 95))

    # -- input -----------------------------------------------------------------------------------
    def push(self, frame: DecodedFrame, arrival_ms: float) -> bool:
        """Add a decoded frame; False if it is dropped (late or duplicate)."""
        if frame.stream_id != self.stream_id:
            if self.stream_id is not None:
                logger.info("new motion stream %d (was %d): re-anchoring playout", frame.stream_id, self.stream_id)
            self._reset_stream(frame.stream_id)
        ext = unwrap_seq(frame.seq, self._ext_last)
        capture = unwrap_timestamp_ms(frame.capture_ts_ms, arrival_ms)
        self._last_arrival = arrival_ms
        if self._ext_last is None or ext > self._ext_last:
            self._ext_last = ext
            self._last_capture = (ext, capture)
        self._delays.append(arrival_ms - capture)
        self._update_target()
        if self._next_seq is not None and ext < self._next_seq:
            self.frames_late += 1
            return False
        if ext in self._buffer:
            self.frames_duplicate += 1
            return False
        if self._next_seq is None:
            self._next_seq = ext  # anchor (first frame, or after a stall)
            self._last_due = None
        self._buffer[ext] = _Arrived(frame, capture, arrival_ms)
        while len(self._buffer) > MAX_BUFFERED:
            del self._buffer[min(self._buffer)]
        return True

    def _update_target(self) -> None:
        delays = np.asarray(self._delays)
        excess = float(np.percentile(delays - delays.min(), 95)) + self.guard_ms
        target = min(self.max_delay_ms, max(self.min_delay_ms, excess))
        if target >= self.target_delay_ms:
            self.target_delay_ms = target
        else:  # come down slowly, so that pacing stays smooth
            self.target_delay_ms = max(target, self.target_delay_ms - 0.05 * self.interval_ms)

    # -- output ----------------------------------------------------------------------------------
    def _capture_of(self, ext: int) -> float:
        arrived = self._buffer.get(ext)
        if arrived is not None:
            return arrived.capture_ms
        assert self._last_capture is not None
        seq, capture = self._last_capture
        return capture + (ext - seq) * self.interval_ms

    def _due_of(self, ext: int) -> float:
        offset = min(self._delays) if self._delays else 0.0
        due = self._capture_of(ext) + offset + self.target_delay_ms
        if self._last_due is not None:
            due = max(due, self._last_due)
        return due

    def next_due_ms(self) -> float | None:
        """When the next output frame is due (None while stalled / before the first frame)."""
        if self._next_seq is None:
            return None
        return self._due_of(self._next_seq)

    def pop_due(self, now_ms: float) -> list[PlayoutFrame]:
        """Every output frame due by ``now_ms``, in order."""
        out: list[PlayoutFrame] = []
        while self._next_seq is not None:
            ext = self._next_seq
            due = self._due_of(ext)
            if due > now_ms:
                break
            arrived = self._buffer.pop(ext, None)
            if arrived is not None:
                motion = arrived.frame.motion
                self._out_prev, self._out_last = self._out_last, (ext, motion)
                self._concealed_run = 0
                frame = PlayoutFrame(self.next_slot, arrived.frame.stream_id, ext, due, motion, arrived.capture_ms, False, arrived.arrival_ms)
            else:
                if self._concealed_run * self.interval_ms >= self.max_conceal_ms and not self._buffer:
                    logger.info("no motion for %.0f ms: playout stalls until the sender resumes", self._concealed_run * self.interval_ms)
                    self._next_seq = None
                    self._concealed_run = 0
                    self.stalls += 1
                    break
                motion = self._conceal(ext)
                self._concealed_run += 1
                self.frames_concealed += 1
                frame = PlayoutFrame(self.next_slot, self.stream_id or 0, ext, due, motion, self._capture_of(ext), True, None)
            out.append(frame)
            self._last_due = due
            self.next_slot += 1
            self._next_seq = ext + 1
        return out

    def _conceal(self, ext: int) -> MotionParams:
        later = [s for s in self._buffer if s > ext]
        last = self._out_last
        if last is None:
            if later:  # nothing shown yet: use the first frame that will be shown
                return self._buffer[min(later)].frame.motion
            raise AssertionError("concealment without any motion")  # anchoring guarantees a first frame
        if later:
            nxt = min(later)
            self.frames_interpolated += 1
            return interpolate(last[1], self._buffer[nxt].frame.motion, (ext - last[0]) / (nxt - last[0]))
        prev = self._out_prev
        if prev is None:
            return last[1]
        return extrapolate(prev[1], last[1], last[0] - prev[0], ext - last[0])
