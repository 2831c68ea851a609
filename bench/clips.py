"""The benchmark's input: raw clips (mp4 files or JPEG folders) read and cropped by the face pipeline.

``find_clips`` lists the clips under a folder; ``read_frames`` decodes one; ``crop_clip`` runs the
sender's face cropper over it frame by frame (one cropper per clip, in order, as the sender does)
and starts the clip at its first frame with a face, which becomes the reference. Nothing here needs
a prepared dataset.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from PIL import Image

from bench.codecs.base import BenchClip

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
JPEG_FOLDER_FPS = 25.0  # frame rate of a folder of numbered images (the PC-AVS folders are 25 fps)
MAX_SOURCE_PIXELS = 4096 * 4096


def _natural_key(path: Path) -> tuple[object, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name))


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=_natural_key)


def find_clips(root: Path) -> list[Path]:
    """Video files and folders of at least two images under ``root`` (recursively), sorted."""
    if not root.is_dir():
        raise FileNotFoundError(f"clips folder {str(root)!r} does not exist; pass --clips a folder of mp4 files or JPEG folders")
    found = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
    found += [p for p in root.rglob("*") if p.is_dir() and len(_images_in(p)) >= 2]
    return sorted(found)


def read_frames(path: Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """A clip -> ((N, H, W, 3) uint8 RGB frames, frames per second)."""
    if max_frames is not None and max_frames < 2:
        raise ValueError(f"max_frames must be at least 2 (a reference and one driving frame), got {max_frames}")
    frames: list[np.ndarray] = []
    if path.is_dir():
        for image_path in _images_in(path)[:max_frames]:
            with Image.open(image_path) as image:
                if image.width * image.height > MAX_SOURCE_PIXELS:
                    raise ValueError(f"{image_path}: {image.width}x{image.height} is too large (max {MAX_SOURCE_PIXELS} pixels)")
                frames.append(np.asarray(image.convert("RGB")))
        fps = JPEG_FOLDER_FPS
    elif path.is_file():
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ValueError(f"{path} has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                fps = float(rate) if rate else JPEG_FOLDER_FPS
                if stream.width * stream.height > MAX_SOURCE_PIXELS:
                    raise ValueError(f"{path}: {stream.width}x{stream.height} is too large (max {MAX_SOURCE_PIXELS} pixels)")
                for frame in container.decode(stream):
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if max_frames is not None and len(frames) >= max_frames:
                        break
        except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
            raise ValueError(f"cannot decode {path}: {exc}") from exc
    else:
        raise FileNotFoundError(f"clip {str(path)!r} does not exist")
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
