"""Motion sources of the sender: the built-in scripted head-motion trace, or camera/file/folder frames.

Every source yields ``MotionFrame``s in real time (paced at its frame rate) from ``frames()``.
The trace source *is* motion (no face crop or encoder); the video sources read frames on a worker
thread, crop the face (``codec.face.crop.FaceCropper``), run ``MotionEncoder`` there, move the motion
towards the crop's face-mesh landmarks (``codec.model.landmark_refinement``, for a model trained for it;
the first frame with a face is the anchor) and smooth it, and hand the newest result to the event loop through an ``asyncio.Queue`` (``None`` = end of stream).

    source = create_source("default", fps=25.0)        # or "webcam", "/dev/video0", "clip.mp4", "frames/"
    async for frame in source.frames():
        ...                                            # frame.motion, frame.capture_ts_ms
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from codec.bitstream import TIMESTAMP_MODULUS
from codec.motion import DEFAULT_NUM_KEYPOINTS, MotionParams
from codec.synthetic_trace import synthetic_trace
from sender.motion_filter import MotionSmoother

logger = logging.getLogger(__name__)

DEFAULT_SOURCE = "default"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
TRACE_LOOP_SECONDS = 60.0  # the default trace repeats after this long
MAX_LATE_FRAMES = 2  # a paced source more than this many frames behind skips ahead (like a camera)


def wall_clock_ms() -> float:
    """Milliseconds since the epoch (the clock of capture timestamps and latency measurements)."""
    return time.time() * 1000.0


@dataclass(frozen=True, eq=False)
class MotionFrame:
    """One captured frame's motion and when it was captured."""

    index: int  # frame number in the source (gaps = frames the source skipped)
    motion: MotionParams
    capture_ms: float  # wall-clock ms since the epoch
    face: np.ndarray | None = None  # (S, S, 3) uint8 the face crop the motion encoder saw (None: no picture, e.g. the trace)

    @property
    def capture_ts_ms(self) -> int:
        """The 32-bit wire timestamp (ms mod 2^32)."""
        return int(self.capture_ms) % TIMESTAMP_MODULUS


class MotionSource(abc.ABC):
    """A real-time stream of MotionFrames."""

    fps: float
    name: str
    provides_faces: bool = False  # its MotionFrames carry the face crop (what the enhancement layer codes)

    @abc.abstractmethod
    def frames(self) -> AsyncIterator[MotionFrame]:
        """Frames paced in real time; ends when the source ends (or never, for a looping one)."""

    def close(self) -> None:
        """Release devices and threads (idempotent)."""

    def latest_picture(self) -> np.ndarray | None:
        """The newest original picture, (H, W, 3) uint8 RGB, for viewers who compare; None for sources
        without pictures (the trace)."""
        return None


class TraceSource(MotionSource):
    """The built-in default: a seeded synthetic head-motion trace (turns, nods, talking, blinks), looped.

    Like a camera's frame timestamps, capture times sit on the frame grid (start + i / fps); a frame is
    handed over when its time has come, so any scheduling delay counts in the call's latency.
    """

    def __init__(
        self, fps: float = 25.0, num_keypoints: int = DEFAULT_NUM_KEYPOINTS, seed: int = 0,
        max_frames: int | None = None, loop_seconds: float = TRACE_LOOP_SECONDS,
        clock: Callable[[], float] = wall_clock_ms,
    ) -> None:
        if not 1.0 <= fps <= 120.0:
            raise ValueError(f"fps must be in [1, 120], got {fps}")
        self.fps = fps
        self.name = f"trace(seed={seed}, K={num_keypoints})"
        self.max_frames = max_frames
        count = max(2, int(round(loop_seconds * fps)))
        if max_frames is not None:
            count = max(2, min(count, max_frames))
        self._trace = synthetic_trace(count, fps, num_keypoints=num_keypoints, seed=seed)
        self._clock = clock
        self.skipped_frames = 0

    def motion_at(self, index: int) -> MotionParams:
        return self._trace[index % len(self._trace)]

    async def frames(self) -> AsyncIterator[MotionFrame]:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.fps
        start = loop.time()
        start_ms = self._clock()  # a virtual camera: frame i is captured at start + i / fps exactly
        index = 0
        while self.max_frames is None or index < self.max_frames:
            due = start + index * interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > MAX_LATE_FRAMES * interval:
                behind = int(-delay / interval)
                self.skipped_frames += behind
                index += behind
                logger.debug("trace source %d frames behind real time: skipping them", behind)
                if self.max_frames is not None and index >= self.max_frames:
                    break
            yield MotionFrame(index, self.motion_at(index), start_ms + index * 1000.0 * interval)
            index += 1


class Cropper(Protocol):
    def crop(self, frame_rgb: np.ndarray) -> Any: ...


class Encoder(Protocol):
    image_size: int

    def encode(self, face_rgb: np.ndarray) -> MotionParams: ...


class Refiner(Protocol):
    def reset(self) -> None: ...

    def __call__(self, motion: MotionParams, landmarks_px: np.ndarray | None) -> MotionParams: ...


class Calibrator(Protocol):
    def __call__(self, motion: MotionParams, face: np.ndarray | None, landmarks: np.ndarray | None) -> MotionParams: ...


def _iter_av(path: str, fmt: str | None = None) -> Iterator[tuple[np.ndarray, float | None]]:
    """Decoded RGB frames (H, W, 3) uint8 and the stream's frame rate from a file or device (PyAV)."""
    import av  # imported here: only video sources need it

    options = {"framerate": "30"} if fmt == "v4l2" else {}
    container = av.open(path, format=fmt, options=options)
    try:
        stream = container.streams.video[0]
        rate = float(stream.average_rate) if stream.average_rate else None
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24"), rate
    finally:
        container.close()


def _iter_folder(folder: Path) -> Iterator[tuple[np.ndarray, float | None]]:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"image folder {str(folder)!r} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    for path in files:
        with Image.open(path) as img:
            yield np.asarray(img.convert("RGB")), None


class VideoSource(MotionSource):
    """Frames from a webcam, a video file or an image folder -> face crop -> MotionEncoder (worker thread)."""

    provides_faces = True

    def __init__(
        self, frames: Callable[[], Iterator[tuple[np.ndarray, float | None]]], name: str, cropper: Cropper, encoder: Encoder,
        fps: float | None = None, live: bool = False, max_frames: int | None = None, clock: Callable[[], float] = wall_clock_ms,
        smooth: bool = True, refiner: Refiner | None = None, calibrator: Calibrator | None = None,
    ) -> None:
        self._open_frames = frames
        self.name = name
        self._cropper, self._encoder = cropper, encoder
        self._requested_fps = fps
        self.fps = fps or 25.0
        self._live = live  # a camera paces itself; files and folders are paced here
        self.max_frames = max_frames
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._picture: np.ndarray | None = None
        self.faces_missed = 0
        self._smooth = smooth  # One-Euro filter on the encoder's output (sender/motion_filter.py)
        self._refiner = refiner  # landmark refinement (codec/model/landmark_refinement.py), before smoothing
        self.calibrator = calibrator  # keypoint calibration (sender/calibration.py), after refinement, before smoothing

    def _work(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[MotionFrame | BaseException | None]) -> None:
        def put(item: MotionFrame | BaseException | None) -> None:
            def _put() -> None:
                if item is not None and not isinstance(item, BaseException) and queue.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()  # latest wins: drop the stale frame
                queue.put_nowait(item)

            with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
                loop.call_soon_threadsafe(_put)

        last: MotionParams | None = None
        smoother: MotionSmoother | None = None
        if self._refiner is not None:
            self._refiner.reset()  # a new stream: its first face is the anchor
        start = time.monotonic()
        try:
            for index, (rgb, rate) in enumerate(self._open_frames()):
                if self._stop.is_set() or (self.max_frames is not None and index >= self.max_frames):
                    break
                if index == 0 and rate and self._requested_fps is None:
                    self.fps = float(rate)
                if not self._live:  # pace files and folders at the frame rate
                    delay = start + index / self.fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                capture = self._clock()
                self._picture = rgb  # one reference swap: read by the event loop for viewers' original stream
                crop = self._cropper.crop(rgb)
                face = None
                if not getattr(crop, "face_found", True):
                    self.faces_missed += 1
                    if last is None:
                        continue
                    motion = last  # no face: hold the last motion
                else:
                    face = np.asarray(crop.image)
                    motion = self._encoder.encode(face)
                    if self._refiner is not None:
                        motion = self._refiner(motion, getattr(crop, "landmarks", None))
                    if self.calibrator is not None:
                        motion = self.calibrator(motion, face, getattr(crop, "landmarks", None))
                    if self._smooth:
                        smoother = smoother or MotionSmoother(self.fps)
                        motion = smoother(motion)
                last = motion
                put(MotionFrame(index, motion, capture, face))
        except Exception as exc:  # noqa: BLE001 - a device/decoder/model failure ends the stream with its error
            put(exc)
            return
        put(None)

    async def frames(self) -> AsyncIterator[MotionFrame]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[MotionFrame | BaseException | None] = asyncio.Queue(maxsize=2)
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, args=(loop, queue), name=f"source {self.name}", daemon=True)
        self._thread.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise RuntimeError(f"source {self.name} failed: {item}") from item
                yield item
        finally:
            self._stop.set()

    def latest_picture(self) -> np.ndarray | None:
        return self._picture

    def close(self) -> None:
        self._stop.set()
        if hasattr(self.calibrator, "close"):
            self.calibrator.close()  # a fit still running in its own process


def create_source(
    spec: str, fps: float | None = None, num_keypoints: int = DEFAULT_NUM_KEYPOINTS, max_frames: int | None = None,
    cropper: Cropper | None = None, encoder: Encoder | None = None, seed: int = 0, smooth: bool = True,
    refiner: Refiner | None = None, calibrator: Calibrator | None = None,
) -> MotionSource:
    """``default`` (the trace), ``webcam`` / a device path, a video file or an image folder. ``refiner``: the
    encoder's landmark refinement for the portrait sent (``MotionEncoder.landmark_refiner``), if any; ``calibrator``:
    the keypoint calibration (``sender.calibration.KeypointCalibrator``), if any."""
    if spec == DEFAULT_SOURCE:
        return TraceSource(fps or 25.0, num_keypoints=num_keypoints, seed=seed, max_frames=max_frames)
    live = spec == "webcam" or spec.startswith("/dev/video")
    path = Path(spec)
    if not live and not path.exists():
        raise ValueError(f"source {spec!r} is neither 'default', 'webcam', a /dev/video* device, a video file nor an image folder")
    if encoder is None or cropper is None:
        try:
            from codec.face.crop import FaceCropper
            from codec.model import MotionEncoder
        except ImportError as exc:
            raise RuntimeError(f"source {spec!r} needs the face cropper and the motion encoder, which are not available: {exc}") from None
        encoder = encoder or MotionEncoder()
        cropper = cropper or FaceCropper(output_size=encoder.image_size, fps=fps or 25.0)
    frames: Callable[[], Iterator[tuple[np.ndarray, float | None]]]
    if live:
        device = "/dev/video0" if spec == "webcam" else spec
        frames = lambda: _iter_av(device, "v4l2")  # noqa: E731
    elif path.is_dir():
        frames = lambda: _iter_folder(path)  # noqa: E731
    else:
        frames = lambda: _iter_av(str(path))  # noqa: E731
    return VideoSource(frames, spec, cropper, encoder, fps=fps, live=live, max_frames=max_frames, smooth=smooth, refiner=refiner,
                       calibrator=calibrator)
