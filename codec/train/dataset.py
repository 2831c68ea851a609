"""Training pairs (reference, driving) from a prepared dataset, with teacher-consistent augmentation.

A prepared dataset (written by the face pipeline) is a folder::

    manifest.json            {"size": S, "landmark_count": 478, "clips": [{"id", "person", "split", ...}]}
    clips/<id>/frames.npy    uint8 (N, S, S, 3) RGB face crops (memory-mapped here)
    clips/<id>/meta.npz      landmarks (N, 478, 3) float32 crop pixels, pose (N, 3) yaw/pitch/roll
                             degrees, face_found (N,) bool, boxes (N, 3)

Pairs are drawn in-process from the memory-mapped frames (the machine has 2 cores; a worker process
would only compete with the training step). Both frames of a pair come from the same clip; a
fraction of pairs use the clip's first usable frame as the reference, as the codec does at run time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from codec.data.split import SPLITS, split_of
from codec.face.metrics import EYELIDS
from codec.model.eyelid_branch import EYE_CORNER_LANDMARKS
from codec.train.flip import NUM_LANDMARKS, flip_landmarks, flip_pose

logger = logging.getLogger(__name__)



@dataclass(frozen=True, eq=False)
class Clip:
    """One prepared clip; arrays are memory-mapped or loaded once."""

    clip_id: str
    person: str
    split: str
    frames: np.ndarray  # (N, S, S, 3) uint8 RGB
    landmarks: np.ndarray  # (N, 478, 3) float32 crop pixels
    pose: np.ndarray  # (N, 3) float32 yaw/pitch/roll degrees
    usable: np.ndarray  # (M,) int64 indices of frames with face_found
    enhancement: dict[int, np.ndarray] = field(default_factory=dict)  # qp -> (N, E, E, 3) uint8 decoded pictures

    @property
    def first_usable(self) -> int:
        return int(self.usable[0])


class PreparedData:
    """The clips of one split of a prepared dataset folder."""

    def __init__(self, root: str | Path, split: str, min_usable_frames: int = 2, enhancement_size: int = 0,
                 enhancement_qps: tuple[int, ...] = ()) -> None:
        """enhancement_size, enhancement_qps: also load each clip's coded enhancement pictures
        (clips/<id>/enh<E>_qp<Q>.npy, written by ``python -m codec.data enhance``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.enhancement_size = enhancement_size
        self.enhancement_qps = tuple(enhancement_qps) if enhancement_size else ()
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"no manifest.json in {self.root}: pass --data a folder written by the face data preparation"
            )
        manifest = json.loads(manifest_path.read_text())
        self.size = int(manifest["size"])
        if int(manifest.get("landmark_count", NUM_LANDMARKS)) != NUM_LANDMARKS:
            raise ValueError(f"{manifest_path}: landmark_count {manifest.get('landmark_count')} != {NUM_LANDMARKS}")
        self.clips: list[Clip] = []
        for entry in manifest["clips"]:
            if entry.get("split") not in SPLITS:
                raise ValueError(f"{manifest_path}: clip {entry.get('id')!r} has split {entry.get('split')!r}")
            if split_of(str(entry.get("person"))) == "test" and entry["split"] != "test":
                raise ValueError(
                    f"{manifest_path}: clip {entry.get('id')!r} is the test group's ({entry.get('person')}) but is marked "
                    f"{entry['split']!r}: the manifest predates the test group; re-run python -m codec.data prepare"
                )
            if entry["split"] != split:
                continue
            clip = self._load_clip(entry)
            if clip.usable.size < min_usable_frames:
                logger.warning("clip %s has %d usable frames; skipped", clip.clip_id, clip.usable.size)
                continue
            self.clips.append(clip)
        if not self.clips:
            raise ValueError(f"{self.root} has no usable {split!r} clips")
        self.people = sorted({c.person for c in self.clips})
        logger.info(
            "%s/%s: %d clips, %d people, %d usable frames at %d px",
            self.root, split, len(self.clips), len(self.people), sum(c.usable.size for c in self.clips), self.size,
        )

    def _load_clip(self, entry: dict) -> Clip:
        folder = self.root / "clips" / str(entry["id"])
        frames = np.load(folder / "frames.npy", mmap_mode="r")
        with np.load(folder / "meta.npz") as meta:
            landmarks = np.asarray(meta["landmarks"], dtype=np.float32)
            pose = np.asarray(meta["pose"], dtype=np.float32)
            face_found = np.asarray(meta["face_found"], dtype=bool)
        n = frames.shape[0]
        expected = {"frames": (n, self.size, self.size, 3), "landmarks": (n, NUM_LANDMARKS, 3), "pose": (n, 3),
                    "face_found": (n,)}
        for name, array in (("frames", frames), ("landmarks", landmarks), ("pose", pose), ("face_found", face_found)):
            if array.shape != expected[name]:
                raise ValueError(f"{folder}: {name} has shape {array.shape}, expected {expected[name]}")
        if frames.dtype != np.uint8:
            raise ValueError(f"{folder}/frames.npy has dtype {frames.dtype}, expected uint8")
        finite = np.isfinite(landmarks).all(axis=(1, 2)) & np.isfinite(pose).all(axis=1)
        usable = np.flatnonzero(face_found & finite).astype(np.int64)
        enhancement = {}
        for qp in self.enhancement_qps:
            path = folder / f"enh{self.enhancement_size}_qp{qp}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run python -m codec.data enhance --data {self.root} "
                                        f"--size {self.enhancement_size} " + " ".join(f"--qp {q}" for q in self.enhancement_qps))
            pictures = np.load(path, mmap_mode="r")
            want = (frames.shape[0], self.enhancement_size, self.enhancement_size, 3)
            if pictures.shape != want or pictures.dtype != np.uint8:
                raise ValueError(f"{path} holds {pictures.dtype} {pictures.shape}, expected uint8 {want}")
            enhancement[qp] = pictures
        return Clip(str(entry["id"]), str(entry["person"]), str(entry["split"]), frames, landmarks, pose, usable,
                    enhancement)


@dataclass(frozen=True, eq=False)
class PairBatch:
    """A batch of (reference, driving) pairs with their teachers.

    ref, drv: (B, 3, S, S) float32 in [0, 1].
    ref_landmarks, drv_landmarks: (B, 478, 2) float32 in normalised image coordinates [-1, 1]
        (x / S * 2 - 1, the grid_sample convention with align_corners=False).
    ref_pose, drv_pose: (B, 3) float32 yaw/pitch/roll degrees.
    enhancement: (B, 3, E, E) float32 in [0, 1], the driving frame as the enhancement layer's receiver decodes it
        (None: the data has none); enhancement_present: (B,) float32 1/0, whether each sample renders with it.
    """

    ref: torch.Tensor
    drv: torch.Tensor
    ref_landmarks: torch.Tensor
    drv_landmarks: torch.Tensor
    ref_pose: torch.Tensor
    drv_pose: torch.Tensor
    enhancement: torch.Tensor | None = None
    enhancement_present: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> PairBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return PairBatch(*(move(getattr(self, f)) for f in
                           ("ref", "drv", "ref_landmarks", "drv_landmarks", "ref_pose", "drv_pose", "enhancement",
                            "enhancement_present")))  # type: ignore[arg-type]

    def without_enhancement(self) -> PairBatch:
        """The same pairs rendered from motion alone."""
        return dataclasses.replace(self, enhancement=None, enhancement_present=None)

    @property
    def size(self) -> int:
        return int(self.ref.shape[-1])


@dataclass(frozen=True)
class SamplerConfig:
    """How training pairs are drawn and augmented."""

    batch_size: int = 8
    first_frame_fraction: float = 0.25  # share of pairs whose reference is the clip's first usable frame
    flip_probability: float = 0.5  # mirror both frames (landmarks remapped, yaw/roll negated)
    brightness: float = 0.1  # colour jitter, identical for both frames of a pair: factor in 1 ± this
    contrast: float = 0.1
    saturation: float = 0.1
    enhancement_drop: float = 0.5  # share of pairs rendered without the enhancement picture (when the data has one)
    enhancement_qp: int | None = None  # the pictures' qp (None: drawn per pair from the data's)
    enhancement_stale: float = 0.0  # share of pairs whose picture is of a frame 1 or 2 before the driving one (as the
    # frames between pictures get it in a call at a picture interval of 2 or 3: codec.enhancement.picture_rate)
    eye_pair_fraction: float = 0.0  # share of pairs whose driving frame is drawn in proportion to how much its eyes'
    # opening differs from the reference's (blinks are a few frames in a hundred: drawn uniformly G rarely sees one)


def eye_openness(landmarks: np.ndarray) -> np.ndarray:
    """(N, 478, 2+) face-mesh landmarks -> (N,) both eyelids' mean gap over the outer eye corners' distance
    (scale-free: ~0.1 open, ~0.02 in a blink)."""
    points = np.asarray(landmarks, np.float32)[..., :2]
    gaps = [np.linalg.norm(points[:, lower] - points[:, upper], axis=-1) for upper, lower in EYELIDS]  # each (N,)
    width = np.linalg.norm(points[:, EYE_CORNER_LANDMARKS[1]] - points[:, EYE_CORNER_LANDMARKS[0]], axis=-1)  # (N,)
    return (np.mean(gaps, axis=0) / np.maximum(width, 1e-6)).astype(np.float32)


def normalize_landmarks(landmarks_px: np.ndarray, size: int) -> np.ndarray:
    """(..., 478, >=2) crop pixels -> (..., 478, 2) in [-1, 1] (x / S * 2 - 1)."""
    return (landmarks_px[..., :2] / np.float32(size) * 2.0 - 1.0).astype(np.float32)


def to_tensor_images(frames: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)


def color_jitter(images: list[torch.Tensor], rng: np.random.Generator, config: SamplerConfig) -> list[torch.Tensor]:
    """Apply one random brightness/contrast/saturation change per sample to every tensor in ``images``.

    images: each (B, 3, H, W) in [0, 1]; sample b of every tensor gets the same factors.
    """
    b = images[0].shape[0]
    bright = torch.from_numpy(rng.uniform(1 - config.brightness, 1 + config.brightness, b).astype(np.float32))
    contrast = torch.from_numpy(rng.uniform(1 - config.contrast, 1 + config.contrast, b).astype(np.float32))
    sat = torch.from_numpy(rng.uniform(1 - config.saturation, 1 + config.saturation, b).astype(np.float32))
    out = []
    for image in images:
        x = image * bright.view(b, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        x = (x - mean) * contrast.view(b, 1, 1, 1) + mean
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])  # (B, 1, H, W)
        x = (x - gray) * sat.view(b, 1, 1, 1) + gray
        out.append(x.clamp_(0.0, 1.0))
    return out


class PairSampler:
    """Draws augmented (reference, driving) pairs from a PreparedData split.

    People are drawn with weight sqrt(usable frames), then a clip of that person in proportion to its
    usable frames, so that speakers with many clips do not dominate.
    """

    def __init__(self, data: PreparedData, config: SamplerConfig) -> None:
        self.data = data
        self.config = config
        by_person: dict[str, list[int]] = {}
        for i, clip in enumerate(data.clips):
            by_person.setdefault(clip.person, []).append(i)
        self._people = sorted(by_person)
        totals = np.array([sum(data.clips[i].usable.size for i in by_person[p]) for p in self._people], np.float64)
        self._person_p = np.sqrt(totals) / np.sqrt(totals).sum()
        self._clips_of = [np.array(by_person[p]) for p in self._people]
        self._clip_p = [
            np.array([data.clips[i].usable.size for i in by_person[p]], np.float64) for p in self._people
        ]
        self._clip_p = [w / w.sum() for w in self._clip_p]
        self._eye_openness = [eye_openness(clip.landmarks) for clip in data.clips] if config.eye_pair_fraction > 0 else []

    def eye_pair_driving_frame(self, clip_index: int, ref: int, rng: np.random.Generator) -> int | None:
        """A driving frame of the clip drawn with weight |its eyes' openness − the reference's| (None when every
        usable frame's eyes are as open as the reference's)."""
        clip = self.data.clips[clip_index]
        openness = self._eye_openness[clip_index]
        weights = np.abs(openness[clip.usable] - openness[ref]).astype(np.float64)  # (M,)
        total = weights.sum()
        if not np.isfinite(total) or total <= 0:
            return None
        return int(rng.choice(clip.usable, p=weights / total))

    def draw_indices(self, rng: np.random.Generator) -> list[tuple[int, int, int]]:
        """Batch of (clip index, reference frame, driving frame)."""
        out = []
        for _ in range(self.config.batch_size):
            person = rng.choice(len(self._people), p=self._person_p)
            clip_index = int(rng.choice(self._clips_of[person], p=self._clip_p[person]))
            clip = self.data.clips[clip_index]
            drv = int(rng.choice(clip.usable))
            if rng.random() < self.config.first_frame_fraction:
                ref = clip.first_usable
            else:
                ref = int(rng.choice(clip.usable))
            if self.config.eye_pair_fraction > 0 and rng.random() < self.config.eye_pair_fraction:
                eye_pair = self.eye_pair_driving_frame(clip_index, ref, rng)
                drv = drv if eye_pair is None else eye_pair
            out.append((clip_index, ref, drv))
        return out

    def sample(self, rng: np.random.Generator) -> PairBatch:
        return self.make_batch(self.draw_indices(rng), rng, augment=True)

    def make_batch(
        self, indices: list[tuple[int, int, int]], rng: np.random.Generator | None = None, augment: bool = False
    ) -> PairBatch:
        """Build a batch from (clip, ref frame, drv frame) triples; augmentation needs ``rng``."""
        size = self.data.size
        ref_img, drv_img, ref_lm, drv_lm, ref_pose, drv_pose = [], [], [], [], [], []
        pictures: list[np.ndarray] = []
        qps = self.data.enhancement_qps
        for clip_index, ref, drv in indices:
            clip = self.data.clips[clip_index]
            pair = [(clip.frames[ref], clip.landmarks[ref], clip.pose[ref]),
                    (clip.frames[drv], clip.landmarks[drv], clip.pose[drv])]
            picture = None
            if qps:
                qp = self.config.enhancement_qp
                if qp is None:
                    qp = int(rng.choice(qps)) if rng is not None else qps[len(qps) // 2]
                if qp not in clip.enhancement:
                    raise ValueError(f"no enhancement pictures at qp {qp} for clip {clip.clip_id}; loaded: {sorted(clip.enhancement)}")
                source = drv
                if augment and rng is not None and rng.random() < self.config.enhancement_stale:
                    source = max(0, drv - int(rng.integers(1, 3)))  # frames are consecutive at the clip's rate
                picture = clip.enhancement[qp][source]
            if augment and rng is not None and rng.random() < self.config.flip_probability:
                pair = [(f[:, ::-1], flip_landmarks(lm, size), flip_pose(p)) for f, lm, p in pair]
                picture = None if picture is None else picture[:, ::-1]
            if picture is not None:
                pictures.append(np.ascontiguousarray(picture))
            (fr, lr, pr), (fd, ld, pd) = pair
            ref_img.append(np.ascontiguousarray(fr))
            drv_img.append(np.ascontiguousarray(fd))
            ref_lm.append(normalize_landmarks(lr, size))
            drv_lm.append(normalize_landmarks(ld, size))
            ref_pose.append(np.asarray(pr, np.float32))
            drv_pose.append(np.asarray(pd, np.float32))
        ref_t, drv_t = to_tensor_images(np.stack(ref_img)), to_tensor_images(np.stack(drv_img))
        enh_t = to_tensor_images(np.stack(pictures)) if pictures else None
        if augment and rng is not None:
            ref_t, drv_t, *rest = color_jitter([ref_t, drv_t] + ([enh_t] if enh_t is not None else []), rng, self.config)
            enh_t = rest[0] if rest else None
        present = None
        if enh_t is not None:
            keep = np.ones(len(indices), np.float32)
            if augment and rng is not None:
                keep = (rng.random(len(indices)) >= self.config.enhancement_drop).astype(np.float32)
            present = torch.from_numpy(keep)
        return PairBatch(
            ref=ref_t,
            drv=drv_t,
            ref_landmarks=torch.from_numpy(np.stack(ref_lm)),
            drv_landmarks=torch.from_numpy(np.stack(drv_lm)),
            ref_pose=torch.from_numpy(np.stack(ref_pose)),
            drv_pose=torch.from_numpy(np.stack(drv_pose)),
            enhancement=enh_t,
            enhancement_present=present,
        )


def validation_pairs(data: PreparedData, count: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """A fixed, seeded set of (clip, reference = first usable frame, driving frame) triples.

    Spread evenly over the split's people, then over their clips; the driving frames are distinct
    from the reference and from each other within a clip where the clip allows.
    """
    if count < 1:
        raise ValueError(f"validation pair count must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    by_person: dict[str, list[int]] = {}
    for i, clip in enumerate(data.clips):
        by_person.setdefault(clip.person, []).append(i)
    people = sorted(by_person)
    out: list[tuple[int, int, int]] = []
    for k, person in enumerate(people):
        n_person = count // len(people) + (1 if k < count % len(people) else 0)
        clips = by_person[person]
        for j, clip_index in enumerate(clips):
            n_clip = n_person // len(clips) + (1 if j < n_person % len(clips) else 0)
            clip = data.clips[clip_index]
            candidates = clip.usable[clip.usable != clip.first_usable]
            if candidates.size == 0 or n_clip == 0:
                continue
            drv = np.sort(rng.choice(candidates, size=min(n_clip, candidates.size), replace=False))
            out.extend((clip_index, clip.first_usable, int(d)) for d in drv)
    return out
