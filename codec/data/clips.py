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
    clip = Path(clip)
    if clip.is_dir():
        for path in _frame_files(clip):
            with Image.open(path) as image:
                yield np.asarray(image.convert("RGB"))
        return
    if not clip.is_file():
        raise FileNotFoundError(f"clip {clip} does not exist")
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
