"""The benchmark's input: raw clips (mp4 files or JPEG folders) read and cropped by the face pipeline.

Clips are listed and decoded by ``codec.data.clips`` (the same reader as the data preparation);
``crop_clip`` runs the sender's face cropper over a clip frame by frame (one cropper per clip, in
order, as the sender does) and starts the clip at its first frame with a face, which becomes the
reference. Nothing here needs a prepared dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import av
import numpy as np

from bench.codecs.base import BenchClip
from codec.data.clips import clip_fps, iter_clip_frames, iter_clip_frames_at, list_clips

logger = logging.getLogger(__name__)


def find_clips(root: Path) -> list[Path]:
    """Video files and folders of image frames under ``root`` (recursively), sorted."""
    if not root.is_dir():
        raise FileNotFoundError(f"clips folder {str(root)!r} does not exist; pass --clips a folder of mp4 files or JPEG folders")
    return list_clips(root)


def read_frames(path: Path, max_frames: int | None = None, fps: float | None = None) -> tuple[np.ndarray, float]:
    """A clip -> ((N, H, W, 3) uint8 RGB frames, at most ``max_frames``; frames per second).

    fps: resample by timestamp to this rate (``codec.data.clips.iter_clip_frames_at``); None: the clip's own.
    """
    if max_frames is not None and max_frames < 2:
        raise ValueError(f"max_frames must be at least 2 (a reference and one driving frame), got {max_frames}")
    try:
        if fps is None:
            frames = list(islice(iter_clip_frames(path), max_frames))
            fps = clip_fps(path)
        else:
            frames = list(islice(iter_clip_frames_at(path, fps), max_frames))
    except (av.error.FFmpegError, IndexError) as exc:  # type: ignore[attr-defined]
        raise ValueError(f"cannot decode {path}: {exc}") from exc
    if len(frames) < 2:
        raise ValueError(f"{path} has {len(frames)} frame(s); a clip needs at least 2")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{path}: frames change size mid-clip ({sorted(shapes)})")
    return np.stack(frames), fps


CropFunction = Callable[[np.ndarray], tuple[np.ndarray, bool]]
"""One frame (H, W, 3) uint8 -> ((S, S, 3) uint8 face crop, face found); stateful across a clip."""


def crop_clip(
    clip_id: str, person: str, frames: np.ndarray, fps: float, crop: CropFunction
) -> BenchClip | None:
    """Crop every frame in order; the clip starts at its first frame with a face (None if it has < 2 left)."""
    crops: list[np.ndarray] = []
    for frame in frames:
        image, found = crop(frame)
        if not crops and not found:
            continue  # the reference must show a face
        crops.append(np.asarray(image, np.uint8))
    if len(crops) < 2:
        logger.warning("clip %s: fewer than 2 frames from the first face on; skipped", clip_id)
        return None
    if len(crops) < frames.shape[0]:
        logger.info("clip %s: starts at frame %d, the first with a face", clip_id, frames.shape[0] - len(crops))
    return BenchClip(clip_id, person, fps, np.stack(crops))
