"""The call's real-clip source: which clip plays (``--source``), and its frames, looped, for the sender.

``--source trace`` is the built-in scripted head-motion trace; ``--source auto-clip`` picks the first
test-group clip (``codec.data.split.test_group_clips``) of the clips folder that lasts the call, else the
longest one; any other value is a video file or image folder (``resolve_source``). A clip's frames are
resampled to the call's fps by timestamp (``codec.data.clips.iter_clip_frames_at``) and, when the clip is
shorter than the call, played again from the start (``LoopedClip``; ``source.passes`` in the JSON says how
often).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

TRACE_SOURCE = "trace"  # the built-in scripted head-motion trace
AUTO_CLIP = "auto-clip"  # a test-group clip of --clips (codec.data.split.test_group_clips)


def clip_seconds(clip: Path) -> float:
    """A clip's duration in seconds (an image folder: frames / its rate)."""
    import av

    from codec.data.clips import FOLDER_FPS, IMAGE_SUFFIXES

    if clip.is_dir():
        return len([p for p in clip.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]) / FOLDER_FPS
    with av.open(str(clip)) as container:
        if container.duration:
            return float(container.duration) / 1e6
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or FOLDER_FPS)
        return (stream.frames or 0) / rate


def pick_test_clip(root: Path, seconds: float) -> Path:
    """The first test-group clip under ``root`` (sorted; ``codec.data.split.test_group_clips``) that lasts at
    least ``seconds``, else the longest one (it will loop). ValueError naming the folder if there is none."""
    from codec.data.clips import list_clips
    from codec.data.split import test_group_clips

    if not root.is_dir():
        raise ValueError(f"--source {AUTO_CLIP} needs the clips folder, and {str(root)!r} does not exist: pass --clips DIR")
    clips = test_group_clips(list_clips(root))
    if not clips:
        raise ValueError(f"no test-group clip under {str(root)!r} (sources spectre, vasa1hack, liax, mimictalk, "
                         "real3dportrait, styleheat): pass --clips DIR or --source FILE")
    durations = [(clip, clip_seconds(clip)) for clip in clips]
    for clip, duration in durations:
        if duration >= seconds:
            return clip
    return max(durations, key=lambda pair: pair[1])[0]


class LoopedClip:
    """A clip's frames resampled to ``fps``, from the start again whenever it ends: the frame reader of a
    ``VideoSource`` (yields ((H, W, 3) uint8 RGB, fps)). ``passes`` counts the plays begun."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        self.passes = 0
        self.frames_per_pass: int | None = None

    def __call__(self) -> Iterator[tuple[np.ndarray, float | None]]:
        from codec.data.clips import iter_clip_frames_at

        while True:
            self.passes += 1
            count = 0
            for frame in iter_clip_frames_at(self.path, self.fps):
                count += 1
                yield frame, self.fps
            if count == 0:
                raise ValueError(f"clip {str(self.path)!r} has no frames")
            self.frames_per_pass = count



def resolve_source(spec: str, clips: Path, seconds: float) -> str:
    """``trace``, ``auto-clip`` (-> the picked clip's path) or a path; ValueError saying what to pass instead."""
    if spec == TRACE_SOURCE:
        return spec
    if spec == AUTO_CLIP:
        return str(pick_test_clip(clips, seconds))
    if not Path(spec).exists():
        raise ValueError(f"--source {spec!r} is neither {TRACE_SOURCE!r}, {AUTO_CLIP!r} nor an existing video file or image folder")
    return spec
