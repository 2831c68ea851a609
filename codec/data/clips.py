"""Reading face clips: mp4 files (PyAV) and folders of numbered JPEG frames, as RGB uint8 frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FOLDER_FPS = 25.0  # JPEG-frame folders carry no rate; ../shared/data's are 25 fps


def list_clips(root: Path) -> list[Path]:
    """Every clip under ``root``: video files and folders holding image frames, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"clip folder {root} does not exist")
    clips = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    clips += [d for d in root.rglob("*") if d.is_dir() and _frame_files(d)]
    return sorted(clips)


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def clip_fps(clip: Path) -> float:
    """Frames per second of a clip (FOLDER_FPS for image folders)."""
    if clip.is_dir():
        return FOLDER_FPS
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return float(rate) if rate else FOLDER_FPS


def iter_clip_frames(clip: Path) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 RGB frames of a video file or an image folder, in order."""
    for _, frame in _iter_timed_frames(Path(clip)):
        yield frame


def iter_clip_frames_at(clip: Path, fps: float) -> Iterator[np.ndarray]:
    """Yield the frames a camera running at ``fps`` would deliver while the clip plays.

    Resampled by timestamp, not by index: at each tick i / fps (s) the newest source frame whose
    presentation time is ≤ the tick is yielded (a 30 fps clip at 25 fps drops one frame in six; a
    clip slower than ``fps`` repeats frames). Image folders are taken as FOLDER_FPS. The ticks stop
    at the last source frame's time.
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    clip = Path(clip)
    timed = _iter_timed_frames(clip)
    tick = 0
    previous: np.ndarray | None = None
    last_s = 0.0
    for time_s, frame in timed:
        while previous is not None and tick / fps < time_s - 1e-6:
            yield previous
            tick += 1
        previous, last_s = frame, time_s
    if previous is not None and tick / fps <= last_s + 1e-6:
        yield previous


def _iter_timed_frames(clip: Path) -> Iterator[tuple[float, np.ndarray]]:
    """(presentation time in s from the first frame, frame) in order."""
    if clip.is_dir():
        for i, path in enumerate(_frame_files(clip)):
            with Image.open(path) as image:
                yield i / FOLDER_FPS, np.asarray(image.convert("RGB"))
        return
    if not clip.is_file():
        raise FileNotFoundError(f"clip {clip} does not exist")
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        start: float | None = None
        for index, frame in enumerate(container.decode(stream)):
            if frame.pts is not None and frame.time_base is not None:
                t = float(frame.pts * frame.time_base)
            else:
                t = index / float(rate or FOLDER_FPS)
            start = t if start is None else start
            yield t - start, frame.to_ndarray(format="rgb24")
