"""A tiny synthetic prepared dataset (the face pipeline's on-disk format) for training tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _template(rng: np.random.Generator) -> np.ndarray:
    """(478, 3) landmark layout inside a unit ellipse around the origin."""
    angle = rng.uniform(0, 2 * np.pi, 478)
    radius = np.sqrt(rng.uniform(0, 1, 478))
    return np.stack([0.6 * radius * np.cos(angle), 0.8 * radius * np.sin(angle), rng.normal(0, 0.05, 478)], -1)


def write_fake_prepared(root: Path, size: int = 32, frames_per_clip: int = 12, seed: int = 0,
                        people: tuple[tuple[str, str, int], ...] = (("a", "train", 2), ("b", "train", 1),
                                                                    ("c", "val", 1), ("d", "val", 1))) -> Path:
    """Write ROOT/manifest.json and ROOT/clips/<id>/{frames.npy, meta.npz}; returns ROOT.

    people: (person, split, number of clips). Each clip shows a coloured ellipse ("face") with two
    dark blobs ("eyes") that moves and turns; the landmarks follow the same motion; frame 1 of the
    first clip has face_found False.
    """
    rng = np.random.default_rng(seed)
    template = _template(rng)
    clips = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    for person, split, count in people:
        colour = rng.uniform(0.3, 0.9, 3)
        for c in range(count):
            clip_id = f"{person}_{c}"
            n = frames_per_clip
            frames = np.zeros((n, size, size, 3), np.uint8)
            landmarks = np.zeros((n, 478, 3), np.float32)
            pose = np.zeros((n, 3), np.float32)
            for i in range(n):
                t = i / max(n - 1, 1)
                cx, cy = size * (0.5 + 0.08 * np.sin(2 * np.pi * t + c)), size * (0.5 + 0.05 * np.cos(2 * np.pi * t))
                roll = 10.0 * np.sin(2 * np.pi * t)
                scale = size * 0.35
                rot = np.deg2rad(roll)
                r = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
                pts = template[:, :2] @ r.T * scale + [cx, cy]
                landmarks[i, :, :2] = pts
                landmarks[i, :, 2] = template[:, 2] * scale
                pose[i] = (15.0 * np.sin(2 * np.pi * t), 5.0 * np.cos(2 * np.pi * t), roll)
                dx, dy = xx - cx, yy - cy
                u = (dx * np.cos(rot) + dy * np.sin(rot)) / (0.6 * scale)
                v = (-dx * np.sin(rot) + dy * np.cos(rot)) / (0.8 * scale)
                inside = (u**2 + v**2) < 1.0
                image = np.full((size, size, 3), 0.15, np.float32) + 0.1 * (xx / size)[..., None]
                image[inside] = colour
                for ex in (-0.35, 0.35):
                    eye = ((u - ex) ** 2 + (v + 0.25) ** 2) < 0.02 + 0.01 * np.sin(4 * np.pi * t)
                    image[eye] = 0.05
                frames[i] = np.clip(image * 255, 0, 255).astype(np.uint8)
            face_found = np.ones(n, bool)
            if not clips:
                face_found[1] = False
            folder = root / "clips" / clip_id
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / "frames.npy", frames)
            np.savez(folder / "meta.npz", landmarks=landmarks, pose=pose, face_found=face_found,
                     boxes=np.tile(np.array([[size / 2, size / 2, size]], np.float32), (n, 1)))
            clips.append({"id": clip_id, "person": person, "split": split, "num_frames": n, "fps": 25.0,
                          "source": "synthetic"})
    (root / "manifest.json").write_text(json.dumps({"size": size, "landmark_count": 478, "clips": clips}))
    return root
