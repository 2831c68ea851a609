"""Dataset preparation: crop every clip with the face pipeline and store training-ready frames.

    python -m codec.data prepare --src ../shared/data/clips --out /work/prepared/s256 --size 256
    python -m codec.data prepare --src ../shared/data/clips --out /work/prepared --size 256 --size 128

With several sizes, each goes to OUT/s<size> (one pass over the clips). Layout of one size's folder:
    manifest.json            {"size", "landmark_count", "clips": [{"id", "person", "split",
                              "num_frames", "fps", "source"}], "people": {"train": n, "val": n, "test": n},
                              "frames": {"train": n, "val": n, "test": n}}
                             (split "test" = the data README's test group: codec.train never reads it)
    clips/<id>/frames.npy    uint8 (N, S, S, 3) RGB, memory-mappable
    clips/<id>/meta.npz      landmarks (N, 478, 3) float32 crop pixels (NaN where no face),
                             pose (N, 3) float32 yaw/pitch/roll degrees (codec/motion.py convention;
                             NaN where no face), face_found (N,) bool, boxes (N, 3) float32
                             (x0, y0, side) in source pixels
A clip whose two files exist is skipped (resume); files are written under a temporary name and
renamed, so an interrupted run never leaves a half-written clip behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from codec.data.clips import clip_fps, iter_clip_frames, list_clips
from codec.data.split import SPLITS, person_of, split_of
from codec.face.crop import FaceCropper
from codec.face.head_pose import head_pose_from_landmarks

log = logging.getLogger(__name__)
MODEL_INPUT_SIZE = 256  # crops are made at this size; smaller sizes are area-downscaled from it


@dataclass(frozen=True)
class PreparedClip:
    id: str
    person: str
    split: str
    num_frames: int
    fps: float
    source: str


def clip_id(clip: Path, root: Path) -> str:
    rel = clip.relative_to(root)
    return "__".join(rel.with_suffix("").parts) if clip.is_file() else "__".join(rel.parts)


def _save_atomic_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _save_atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def crop_clip(clip: Path, sizes: list[int]) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray, np.ndarray]:
    """Crop one clip. Returns ({size: (frames (N,S,S,3), landmarks (N,478,3))}, pose (N,3),
    face_found (N,), boxes (N,3))."""
    cropper = FaceCropper(output_size=MODEL_INPUT_SIZE, fps=clip_fps(clip))
    frames: dict[int, list[np.ndarray]] = {s: [] for s in sizes}
    landmarks, poses, found, boxes = [], [], [], []
    try:
        for frame in iter_clip_frames(clip):
            crop = cropper.crop(frame)
            nan = np.full((478, 3), np.nan, np.float32)
            lm = crop.landmarks if crop.landmarks is not None else nan
            landmarks.append(lm)
            poses.append(head_pose_from_landmarks(lm) if crop.face_found else (np.nan,) * 3)
            found.append(crop.face_found)
            boxes.append(crop.box)
            for s in sizes:
                img = crop.image if s == MODEL_INPUT_SIZE else cv2.resize(crop.image, (s, s), interpolation=cv2.INTER_AREA)
                frames[s].append(img)
    finally:
        cropper.close()
    lm_all = np.stack(landmarks).astype(np.float32)  # (N, 478, 3) at MODEL_INPUT_SIZE
    out = {}
    for s in sizes:
        lm_s = lm_all.copy()
        lm_s *= s / MODEL_INPUT_SIZE
        out[s] = (np.stack(frames[s]), lm_s)
    return out, np.asarray(poses, np.float32), np.asarray(found, bool), np.asarray(boxes, np.float32)


def prepare(src: Path, out: Path, sizes: list[int]) -> dict[int, Path]:
    """Prepare every clip under ``src`` for each size; returns {size: dataset folder}."""
    clips = list_clips(src)
    if not clips:
        raise FileNotFoundError(f"no clips (video files or image-frame folders) found under {src}")
    roots = {s: (out if len(sizes) == 1 else out / f"s{s}") for s in sizes}
    entries: list[PreparedClip] = []
    for clip in tqdm(clips, desc="clips", unit="clip"):
        cid = clip_id(clip, src)
        dirs = {s: roots[s] / "clips" / cid for s in sizes}
        done = all((d / "frames.npy").is_file() and (d / "meta.npz").is_file() for d in dirs.values())
        if not done:
            per_size, pose, found, boxes = crop_clip(clip, sizes)
            for s, d in dirs.items():
                d.mkdir(parents=True, exist_ok=True)
                frames, lm = per_size[s]
                _save_atomic_npy(d / "frames.npy", frames)
                _save_atomic_npz(d / "meta.npz", landmarks=lm, pose=pose, face_found=found, boxes=boxes)
        num_frames = int(np.load(dirs[sizes[0]] / "frames.npy", mmap_mode="r").shape[0])
        person = person_of(clip)
        entries.append(PreparedClip(cid, person, split_of(person), num_frames, clip_fps(clip), str(clip.relative_to(src))))
    for s, root in roots.items():
        people = {sp: len({e.person for e in entries if e.split == sp}) for sp in SPLITS}
        counts = {sp: sum(e.num_frames for e in entries if e.split == sp) for sp in SPLITS}
        manifest = {
            "size": s,
            "landmark_count": 478,
            "clips": [e.__dict__ for e in entries],
            "people": people,
            "frames": counts,
        }
        tmp = root / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, root / "manifest.json")
        log.info("%s: %s frames, %s people per split", root, counts, people)
    return roots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.data prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=Path("../shared/data/clips"), help="folder of clips (mp4 files, JPEG-frame folders)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (outside the repository)")
    parser.add_argument("--size", type=int, action="append", help="crop size in pixels (repeatable; default 256)")
    args = parser.parse_args(argv)
    sizes = sorted(set(args.size or [256]), reverse=True)
    bad = [s for s in sizes if not 32 <= s <= MODEL_INPUT_SIZE]
    if bad:
        parser.error(f"--size {bad[0]} is out of range: use 32..{MODEL_INPUT_SIZE}")
    roots = prepare(args.src, args.out, sizes)
    for s, root in roots.items():
        manifest = json.loads((root / "manifest.json").read_text())
        print(f"{root}: frames {manifest['frames']}, people {manifest['people']}")
    return 0
