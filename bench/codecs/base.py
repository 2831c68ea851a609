"""The contract every benchmarked codec meets: a clip in, (stream info, reconstruction) out.

A codec sees a ``BenchClip`` (face crops; frame 0 is the reference portrait / first frame), codes,
sends and decodes all of it, and returns what it spent (``StreamInfo``: real byte counts, packets,
encode and decode times) and what the receiver shows for the driving frames it is asked for (the
scored ones; a codec may skip making pictures nobody looks at, as ours skips rendering them). Shared
code (``bench.quality``, ``bench.rd``) measures quality and aggregates; no codec computes its own
metrics.

Frame 0 opens the stream for every codec: our codec's reference portrait, a video codec's first
(key)frame. Its bytes are kept apart (``start_*``) and frame 0 is not scored, so that every codec
is judged on the same driving frames; the report amortizes the start over a call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class BenchClip:
    """One clip as every codec sees it.

    frames: (N, S, S, 3) uint8 RGB face crops, N >= 2; frames[0] is the reference.
    fps: the clip's frame rate (frames per second), for bitrates.
    """

    clip_id: str
    person: str
    fps: float
    frames: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        frames = self.frames
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
            raise ValueError(f"clip {self.clip_id!r}: frames must be uint8 (N, S, S, 3), got {frames.dtype} {frames.shape}")
        if frames.shape[0] < 2:
            raise ValueError(f"clip {self.clip_id!r} has {frames.shape[0]} frame(s); need a reference and at least one more")
        if not (np.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"clip {self.clip_id!r}: fps must be positive, got {self.fps}")

    @property
    def num_driving(self) -> int:
        """Frames scored and streamed after the start: N - 1."""
        return int(self.frames.shape[0] - 1)

    @property
    def size(self) -> int:
        return int(self.frames.shape[1])

    @property
    def duration_s(self) -> float:
        """Seconds of the driving frames 1..N-1 (what the steady-state bitrates are divided by)."""
        return self.num_driving / self.fps


@dataclass(frozen=True, eq=False)
class StreamInfo:
    """What one codec spent on one clip; byte counts are real (``len`` of what would be sent).

    start_*: the bytes that open the stream (frame 0), payload and on the wire.
    payload_bytes / wire_bytes / packets: everything sent for the driving frames 1..N-1.
    riding_wire_bytes: ours only: the driving frames' bytes in a call with sound, the messages riding the audio's
        packets (``bench.codecs.motion_transport.riding_wire_bytes``); None: as ``wire_bytes`` (video codecs).
    encode_ms: (N-1,) per driving frame, after a warm-up on frame 0.
    decode_ms: per driving frame decoded to a picture (all of them for the video codecs, the
        requested ones for ours), after a warm-up.
    """

    start_payload_bytes: int
    start_wire_bytes: int
    payload_bytes: int
    wire_bytes: int
    packets: int
    encode_ms: np.ndarray = field(repr=False)
    decode_ms: np.ndarray = field(repr=False)
    riding_wire_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.wire_bytes < self.payload_bytes or self.start_wire_bytes < self.start_payload_bytes:
            raise ValueError(
                f"wire bytes must include the payload: wire {self.wire_bytes} < payload {self.payload_bytes} "
                f"or start wire {self.start_wire_bytes} < start payload {self.start_payload_bytes}"
            )
        if self.riding_wire_bytes is not None and not self.payload_bytes <= self.riding_wire_bytes <= self.wire_bytes:
            raise ValueError(f"riding wire bytes {self.riding_wire_bytes} must lie between the payload {self.payload_bytes}"
                             f" and the wire bytes {self.wire_bytes}")


class Codec(ABC):
    """One codec at one operating point."""

    codec: str  # family, one curve on the plot: "ours", "h264", "vp8", "vp9", "av1", "no-motion floor"
    setting: str  # the operating point, preset and tune included ("crf30 veryfast zerolatency")

    @abstractmethod
    def run(self, clip: BenchClip, shown: np.ndarray | None = None) -> tuple[StreamInfo, np.ndarray]:
        """Encode, send and decode the clip -> (info, reconstruction (M, S, S, 3) uint8).

        shown: sorted indices into the driving frames (0 = frame 1) whose pictures are returned
        (M of them); None: all N-1.
        """

    def params(self) -> dict[str, object]:
        """Settings for the JSON report (override to add codec-specific ones)."""
        return {}

    @staticmethod
    def shown_indices(clip: BenchClip, shown: np.ndarray | None) -> np.ndarray:
        """``shown`` checked against the clip (None -> every driving frame)."""
        if shown is None:
            return np.arange(clip.num_driving)
        idx = np.asarray(shown, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= clip.num_driving or np.any(np.diff(idx) <= 0)):
            raise ValueError(f"shown must be increasing indices in [0, {clip.num_driving}), got {idx.tolist()[:10]}")
        return idx

    @property
    def name(self) -> str:
        return f"{self.codec} {self.setting}"
