"""Validation: PSNR/SSIM (whole frame and face hull), AKD (all, mouth, eyes), identity and keypoint spread, next to two floors.

Pairs are fixed (seeded) from the validation people; the reference is the clip's first usable frame.
AKD compares landmarks detected (mediapipe, static mode) on the generated frame with the teacher's
landmarks of the driving frame, in pixels at the data's resolution. The floors ("output = reference",
"output = reference warped by a similarity from the stable landmarks") are computed once and cached.
Detection failures are counted, not averaged in: a run whose outputs lose the face is visible as a
low ``detect_rate``.
``identity`` is dlib's face-recognition distance between output and real driving frame (same person: lower
is better, < ``SAME_PERSON_DISTANCE`` = 0.6 reads as the same person); it needs an ``IdentityEmbedder`` (~0.1 s
per frame on 2 cores) and is NaN without one (the training loop's default).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from codec.face import LANDMARK_METRICS, face_hull_mask, landmark_metrics
from codec.face.identity import IdentityEmbedder, optional_distance
from codec.metrics import psnr, ssim
from codec.model.config import KEYPOINT_LANDMARK_INDICES
from codec.train.dataset import PairBatch, PairSampler, PreparedData
from codec.train.floors import affine_floor, no_motion_floor

logger = logging.getLogger(__name__)

COLLAPSE_DISTANCE = 0.05  # keypoints closer than this (normalised units, x/y) count as collapsed
METRIC_KEYS = ("psnr", "ssim", "face_psnr", "face_ssim", *LANDMARK_METRICS, "identity")

# landmarks (478, 2) crop pixels, or None where no face was found
LandmarkFn = Callable[[np.ndarray], "np.ndarray | None"]
# a PairBatch (ref, drv (B, 3, S, S) in [0, 1], their landmarks) -> model outputs: image, occlusion, kp_ref, kp_drv
GenerateFn = Callable[[PairBatch], "GeneratedBatch"]


@dataclass(frozen=True, eq=False)
class GeneratedBatch:
    """What validation needs from the model. image: (B, 3, S, S) [0, 1]; occlusion: (B, 1, h, w) [0, 1]
    or None; kp_ref, kp_drv: (B, K, 3) normalised coordinates."""

    image: torch.Tensor
    occlusion: torch.Tensor | None
    kp_ref: torch.Tensor
    kp_drv: torch.Tensor


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float [0, 1] -> (B, H, W, 3) uint8."""
    return (images.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def keypoint_spread(kp: torch.Tensor) -> dict[str, float]:
    """Spread of projected keypoints. kp: (B, K, >=2) -> mean/min pairwise x,y distance and collapsed count.

    ``kp_collapsed`` is the mean number of keypoints per frame that lie within COLLAPSE_DISTANCE of another.
    """
    xy = kp[..., :2].detach().float()
    k = xy.shape[1]
    dist = torch.cdist(xy, xy)  # (B, K, K)
    off = ~torch.eye(k, dtype=torch.bool, device=xy.device)
    pair = dist[:, off].view(xy.shape[0], k, k - 1)  # (B, K, K-1)
    nearest = pair.min(-1).values  # (B, K)
    return {
        "kp_mean_distance": float(pair.mean()),
        "kp_min_distance": float(nearest.min(-1).values.mean()),
        "kp_collapsed": float((nearest < COLLAPSE_DISTANCE).float().sum(-1).mean()),
    }


def frame_metrics(output: np.ndarray, target: np.ndarray, target_landmarks: np.ndarray,
                  output_landmarks: np.ndarray | None, embedder: IdentityEmbedder | None = None,
                  target_descriptor: np.ndarray | None = None) -> dict[str, float]:
    """All per-frame metrics. output, target: (S, S, 3) uint8; landmarks (478, >=2) crop pixels.

    ``identity`` (NaN without an embedder): the output's face is read at its own landmarks, or at the
    target's where none were found on it (a lost face then counts as a large distance, not as missing);
    target_descriptor: the target's (128,) descriptor when the caller has it cached.
    """
    size = target.shape[0]
    mask = face_hull_mask(target_landmarks[:, :2], size)
    out: dict[str, float] = {
        "psnr": float(psnr(output, target)),
        "ssim": float(ssim(output, target)),
        "face_psnr": float(psnr(output, target, mask=mask)),
        "face_ssim": float(ssim(output, target, mask=mask)),
    }
    if output_landmarks is None:
        out.update(dict.fromkeys(LANDMARK_METRICS, float("nan")))
    else:
        out.update(landmark_metrics(output_landmarks, target_landmarks))
    out["identity"] = float("nan")
    if embedder is not None:
        if target_descriptor is None:
            target_descriptor = embedder.describe(target, landmarks=target_landmarks)
        at = target_landmarks if output_landmarks is None else output_landmarks
        out["identity"] = optional_distance(embedder.describe(output, landmarks=at), target_descriptor)
    return out


def aggregate(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over frames (NaN AKDs from failed detections left out) + detect_rate."""
    out: dict[str, float] = {}
    for key in METRIC_KEYS:
        values = np.array([r[key] for r in rows], np.float64)
        finite = values[np.isfinite(values)]
        out[key] = float(finite.mean()) if finite.size else float("nan")
    out["detect_rate"] = float(np.mean([np.isfinite(r["akd"]) for r in rows])) if rows else float("nan")
    out["count"] = float(len(rows))
    return out


def draw_keypoints(image: np.ndarray, kp: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8, kp (K, >=2) normalised -> copy with numbered coloured dots."""
    out = np.ascontiguousarray(image.copy())
    size = image.shape[0]
    k = kp.shape[0]
    for i, (x, y) in enumerate(kp[:, :2]):
        hue = int(180 * i / max(k, 1))
        colour = cv2.cvtColor(np.uint8([[[hue, 255, 255]]]), cv2.COLOR_HSV2RGB)[0, 0].tolist()
        centre = (int(round((x + 1) / 2 * size - 0.5)), int(round((y + 1) / 2 * size - 0.5)))
        cv2.circle(out, centre, max(1, size // 96), colour, -1, lineType=cv2.LINE_AA)
    return out


def make_grid(ref: np.ndarray, drv: np.ndarray, output: np.ndarray, occlusion: np.ndarray | None,
              kp_ref: np.ndarray, kp_drv: np.ndarray) -> np.ndarray:
    """Rows of reference (with kp_ref) | driving | output (with kp_drv) | occlusion mask.

    ref, drv, output: (N, S, S, 3) uint8; occlusion: (N, h, w) float [0, 1] or None; kp_*: (N, K, 3).
    Returns (N*S, 4*S, 3) uint8.
    """
    rows = []
    size = ref.shape[1]
    for i in range(ref.shape[0]):
        if occlusion is None:
            occ = np.zeros((size, size, 3), np.uint8)
        else:
            occ = cv2.resize((occlusion[i] * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
            occ = np.repeat(occ[..., None], 3, axis=-1)
        rows.append(np.concatenate([draw_keypoints(ref[i], kp_ref[i]), drv[i], draw_keypoints(output[i], kp_drv[i]),
                                    occ], axis=1))
    return np.concatenate(rows, axis=0)


class Validator:
    """Fixed validation pairs, cached floors, and one ``run`` per validation step.

    embedder: measures ``identity`` (the driving frames' descriptors are computed once and kept); None
    leaves it NaN.
    """

    def __init__(self, data: PreparedData, pairs: list[tuple[int, int, int]], detect: LandmarkFn,
                 cache_path: Path | None = None, batch_size: int = 8, grid_rows: int = 4,
                 embedder: IdentityEmbedder | None = None) -> None:
        if not pairs:
            raise ValueError("validation needs at least one pair")
        self.data = data
        self.pairs = pairs
        self.detect = detect
        self.embedder = embedder
        self._target_descriptors: dict[tuple[int, int, int], np.ndarray | None] = {}
        self.batch_size = batch_size
        self.grid_rows = min(grid_rows, len(pairs))
        self._sampler = PairSampler(data, _no_augment_config(batch_size))
        self.persons = [data.clips[c].person for c, _, _ in pairs]
        self.floors = self._load_or_compute_floors(cache_path)

    def _frames(self, pair: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        clip = self.data.clips[pair[0]]
        return (np.asarray(clip.frames[pair[1]]), np.asarray(clip.frames[pair[2]]),
                clip.landmarks[pair[1]], clip.landmarks[pair[2]])

    def _metrics(self, output: np.ndarray, pair: tuple[int, int, int]) -> dict[str, float]:
        """frame_metrics of ``output`` (S, S, 3) uint8 against the pair's driving frame."""
        _, drv, _, drv_lm = self._frames(pair)
        target_descriptor = None
        if self.embedder is not None:
            if pair not in self._target_descriptors:
                self._target_descriptors[pair] = self.embedder.describe(drv, landmarks=drv_lm)
            target_descriptor = self._target_descriptors[pair]
        return frame_metrics(output, drv, drv_lm, self.detect(output), self.embedder, target_descriptor)

    def _load_or_compute_floors(self, cache_path: Path | None) -> dict[str, Any]:
        key = {"root": str(self.data.root), "pairs": [list(p) for p in self.pairs]}
        if cache_path is not None and cache_path.is_file():
            cached = json.loads(cache_path.read_text())
            floors = cached.get("floors", {})
            if (cached.get("key") == key and "teacher_keypoints" in floors
                    and all(k in floors["no_motion"]["overall"] for k in METRIC_KEYS)
                    and (self.embedder is None or np.isfinite(floors["no_motion"]["overall"]["identity"]))):
                return cached["floors"]
        floors: dict[str, Any] = {}
        for name in ("no_motion", "affine"):
            rows = []
            for pair in self.pairs:
                ref, _, ref_lm, drv_lm = self._frames(pair)
                out = no_motion_floor(ref) if name == "no_motion" else affine_floor(ref, ref_lm, drv_lm)
                rows.append(self._metrics(out, pair))
            floors[name] = self._summarise(rows)
        floors["teacher_keypoints"] = self.teacher_keypoint_spread()
        if cache_path is not None:
            cache_path.write_text(json.dumps({"key": key, "floors": floors}))
        logger.info("floors: no-motion %s; affine %s", _short(floors["no_motion"]["overall"]),
                    _short(floors["affine"]["overall"]))
        return floors

    def teacher_keypoint_spread(self) -> dict[str, float]:
        """keypoint_spread of the guidance landmarks themselves on the driving frames: the layout a healthy
        model approaches (inner lips of a closed mouth nearly touch, so some closeness is normal)."""
        index = list(KEYPOINT_LANDMARK_INDICES)
        layouts = np.stack([self._frames(p)[3][index, :2] for p in self.pairs])  # (N, K, 2) crop pixels
        return keypoint_spread(torch.from_numpy(layouts / self.data.size * 2 - 1))

    def _summarise(self, rows: list[dict[str, float]]) -> dict[str, Any]:
        per_person = {p: aggregate([r for r, q in zip(rows, self.persons, strict=True) if q == p])
                      for p in sorted(set(self.persons))}
        return {"overall": aggregate(rows), "per_person": per_person}

    @torch.no_grad()
    def run(self, generate: GenerateFn, device: torch.device | str) -> tuple[dict[str, Any], np.ndarray]:
        """Metrics of the model (overall, per person, keypoint spread) and the grid image (uint8)."""
        rows: list[dict[str, float]] = []
        kp_all: list[torch.Tensor] = []
        grid_parts: dict[str, list[Any]] = {k: [] for k in ("ref", "drv", "out", "occ", "kp_ref", "kp_drv")}
        for start in range(0, len(self.pairs), self.batch_size):
            chunk = self.pairs[start:start + self.batch_size]
            batch = self._sampler.make_batch(chunk).to(device)
            generated = generate(batch)
            outputs = to_uint8(generated.image)
            kp_all.append(generated.kp_drv.float().cpu())
            for i, pair in enumerate(chunk):
                rows.append(self._metrics(outputs[i], pair))
            take = max(0, self.grid_rows - len(grid_parts["ref"]))
            for i in range(min(take, len(chunk))):
                grid_parts["ref"].append(to_uint8(batch.ref[i:i + 1])[0])
                grid_parts["drv"].append(to_uint8(batch.drv[i:i + 1])[0])
                grid_parts["out"].append(outputs[i])
                occ = generated.occlusion
                grid_parts["occ"].append(None if occ is None else occ[i, 0].float().cpu().numpy())
                grid_parts["kp_ref"].append(generated.kp_ref[i].float().cpu().numpy())
                grid_parts["kp_drv"].append(generated.kp_drv[i].float().cpu().numpy())
        record = self._summarise(rows)
        record["overall"].update(keypoint_spread(torch.cat(kp_all)))
        occ_list = grid_parts["occ"]
        grid = make_grid(np.stack(grid_parts["ref"]), np.stack(grid_parts["drv"]), np.stack(grid_parts["out"]),
                         None if any(o is None for o in occ_list) else np.stack(occ_list),
                         np.stack(grid_parts["kp_ref"]), np.stack(grid_parts["kp_drv"]))
        return record, grid


def _no_augment_config(batch_size: int) -> Any:
    from codec.train.dataset import SamplerConfig

    return SamplerConfig(batch_size=batch_size, flip_probability=0.0, brightness=0.0, contrast=0.0, saturation=0.0)


def _short(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in ("psnr", "face_psnr", "ssim", "akd", "akd_mouth", "akd_eyes"))


def passes_gates(record: dict[str, Any], floors: dict[str, Any], min_detect_rate: float = 0.9) -> tuple[bool, str]:
    """Whether a validation record may become ``best``: outputs keep a detectable face, motion beats the
    no-motion floor on AKD overall and on the mouth, the mouth opens and closes with the driver (its
    opening error beats the no-motion floor's), and keypoints have not collapsed: at most one more
    keypoint per frame lies within COLLAPSE_DISTANCE of another than in the guidance landmarks' own layout
    (measured: 3.0 per frame there, the lips)."""
    model, floor = record["overall"], floors["no_motion"]["overall"]
    collapse_limit = floors.get("teacher_keypoints", {}).get("kp_collapsed", 0.0) + 1.0
    checks = [
        (model["detect_rate"] >= min_detect_rate, f"detect_rate {model['detect_rate']:.2f} < {min_detect_rate}"),
        (model["akd"] < floor["akd"], f"AKD {model['akd']:.2f} >= no-motion {floor['akd']:.2f}"),
        (model["akd_mouth"] < floor["akd_mouth"], f"mouth AKD {model['akd_mouth']:.2f} >= no-motion {floor['akd_mouth']:.2f}"),
        (model.get("mouth_open_error", float("inf")) < floor.get("mouth_open_error", float("inf")),  # unmeasured fails
         f"mouth-opening error {model.get('mouth_open_error', float('nan')):.2f} px >= no-motion "
         f"{floor.get('mouth_open_error', float('nan')):.2f}"
         " (the mouth does not follow the driver)"),
        (model.get("kp_collapsed", 0.0) <= collapse_limit,
         f"{model.get('kp_collapsed', 0.0):.1f} keypoints collapsed per frame (limit {collapse_limit:.1f})"),
    ]
    failed = [why for ok, why in checks if not ok]
    return (not failed, "; ".join(failed) if failed else "ok")


def replaces_best(record: dict[str, Any], best: dict[str, Any] | None, floors: dict[str, Any]) -> bool:
    """Whether a record that passed the gates becomes the new best: there is none yet, the saved best fails the
    current gates (saved under older ones, e.g. before the mouth-opening gate existed), or it scores higher."""
    if best is None or not passes_gates(best, floors)[0]:
        return True
    return float(record["score"]) > float(best["score"])


def selection_score(record: dict[str, Any]) -> float:
    """Higher is better: face-region PSNR minus the AKD in pixels (blur lowers PSNR of detail and raises AKD)."""
    model = record["overall"]
    return float(model["face_psnr"] - model["akd"])


def summary_table(record: dict[str, Any], floors: dict[str, Any], keys: Iterable[str] = METRIC_KEYS) -> str:
    """A markdown table: per person and overall, each metric next to both floors."""
    lines = ["| person | " + " | ".join(f"{k} (model / no-motion / affine)" for k in keys) + " |",
             "|---|" + "---|" * len(list(keys))]
    keys = list(keys)
    people = ["overall", *sorted(record["per_person"])]
    for person in people:
        def pick(src: dict[str, Any]) -> dict[str, float]:
            return src["overall"] if person == "overall" else src["per_person"][person]
        m, f0, f1 = pick(record), pick(floors["no_motion"]), pick(floors["affine"])
        cells = [f"{m[k]:.3f} / {f0[k]:.3f} / {f1[k]:.3f}" for k in keys]
        lines.append(f"| {person} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_landmark_fn() -> LandmarkFn:
    """Landmarks of a generated frame: mediapipe face mesh in static mode -> (478, 3) crop pixels or None."""
    from codec.face.landmarks import LandmarkDetector

    detector = LandmarkDetector(static_mode=True, max_faces=1)

    def detect(image: np.ndarray) -> np.ndarray | None:
        faces = detector.detect(np.ascontiguousarray(image))
        return faces[0].points if faces else None

    return detect
