"""Enhancement-layer training inputs: every prepared clip coded and decoded exactly as a receiver sees it.

    python -m codec.data enhance --data /work/prepared/s256 --size 64 --qp 32 --qp 40 --qp 48 --qp 55 --qp 63

For every clip of every split of a prepared dataset (``codec/data/prepare.py``) and every qp, the
frames are area-downscaled to E×E, coded as one low-delay SVT-AV1 stream at the clip's frame rate
(``codec.enhancement.lowres_codec.LowResEncoder``: one key frame at the start, no periodic key frames,
no loss) and decoded with ``LowResDecoder``. Written next to the clip's frames::

    clips/<id>/enh<E>_qp<Q>.npy    uint8 (N, E, E, 3) RGB decoded pictures, memory-mappable
    clips/<id>/enh<E>_qp<Q>.json   {"size": E, "qp": Q, "fps", "encoder": {libsvtav1 options},
                                    "frame_bytes": [N ints: each frame's payload bytes, frame 0 the key],
                                    "psnr_db": [N floats: decoded vs the E×E downscaled frame, RGB, capped at 99]}

A clip whose two files exist for a qp, coded with the current encoder settings (the .json's "encoder"), is skipped
(resume); files of other settings (an older SVT-AV1 preset) are coded again. Each file is written under a temporary
name and renamed (the .npy first, so a .json means both are complete). At the end the per-split
means are logged and printed as JSON: bytes per frame with and without the key frame, kbps at
25 fps (bytes × 25 × 8 / 1000), and PSNR.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from codec.data.split import SPLITS
from codec.enhancement.lowres_codec import (DEFAULT_FPS, MAX_QP, MIN_QP, MIN_SIZE, LowResDecoder, LowResEncoder, downscale,
                                            psnr_db, svt_av1_options)

log = logging.getLogger(__name__)
REFERENCE_FPS = 25.0  # the frame rate of the kbps figures in the summary


@dataclass(frozen=True)
class CodedClip:
    """One clip's frames through the enhancement codec at one qp."""

    pictures: np.ndarray  # (N, E, E, 3) uint8 RGB, decoded
    frame_bytes: tuple[int, ...]  # (N,) payload bytes per frame; frame 0 is the key frame
    psnr_db: tuple[float, ...]  # (N,) decoded vs the E×E downscaled frame


@dataclass(frozen=True)
class QpSummary:
    """Means over the frames of one split at one qp."""

    split: str
    qp: int
    clips: int
    frames: int
    bytes_per_frame: float  # all frames, the clips' key frames included
    inter_bytes_per_frame: float  # without each clip's key frame (the steady state of a call)
    kbps_at_25fps: float  # inter_bytes_per_frame × 25 × 8 / 1000
    psnr_db: float  # mean of the per-frame PSNRs


def enhancement_paths(clip_dir: Path, size: int, qp: int) -> tuple[Path, Path]:
    """(pictures .npy, side-data .json) of one clip at one size and qp."""
    return clip_dir / f"enh{size}_qp{qp}.npy", clip_dir / f"enh{size}_qp{qp}.json"


def downscale_clip(frames: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, size, size, 3) uint8, each frame area-downscaled."""
    return np.stack([downscale(np.asarray(frame), size) for frame in frames])  # (N, E, E, 3)


def code_clip(small: np.ndarray, qp: int, fps: float = DEFAULT_FPS) -> CodedClip:
    """Code (N, E, E, 3) uint8 frames as one low-delay stream (key frame at 0 only) and decode them."""
    if small.ndim != 4 or small.shape[0] < 1:
        raise ValueError(f"expected (N, E, E, 3) frames, got shape {small.shape}")
    size = small.shape[1]
    decoder = LowResDecoder(size)
    pictures = np.empty_like(small)
    frame_bytes: list[int] = []
    psnrs: list[float] = []
    with LowResEncoder(size, qp, fps) as encoder:
        for i, frame in enumerate(small):
            data = encoder.encode(frame)
            picture = decoder.decode(data, i)
            if picture is None:
                raise RuntimeError(f"the decoder returned no picture for frame {i} of an in-order lossless stream")
            pictures[i] = picture
            frame_bytes.append(len(data))
            psnrs.append(round(psnr_db(picture, frame), 3))
    return CodedClip(pictures, tuple(frame_bytes), tuple(psnrs))


def _save_atomic_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _save_atomic_json(path: Path, value: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _is_current(clip_dir: Path, size: int, qp: int) -> bool:
    """Both files exist and were coded with the encoder settings a call uses now (else they are coded again: pictures
    of other settings would train the model on artifacts the receiver never sees)."""
    npy_path, json_path = enhancement_paths(clip_dir, size, qp)
    if not (npy_path.is_file() and json_path.is_file()):
        return False
    try:
        encoder = json.loads(json_path.read_text()).get("encoder")
    except (OSError, ValueError):
        return False
    if encoder != svt_av1_options(qp):
        log.info("%s was coded with %s, not %s: coding it again", json_path, encoder, svt_av1_options(qp))
        return False
    return True


def _manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in {root}: pass --data a folder written by python -m codec.data prepare")
    return json.loads(path.read_text())


def enhance(root: Path, size: int, qps: list[int], splits: tuple[str, ...] = SPLITS) -> int:
    """Write the enhancement files of every clip of ``splits`` that lacks them; returns how many
    (clip, qp) streams were coded (the rest existed)."""
    manifest = _manifest(root)
    if not MIN_SIZE <= size <= int(manifest["size"]) or size % 2:
        raise ValueError(f"--size {size} must be even and in {MIN_SIZE}..{manifest['size']} (the dataset's crop size)")
    entries = [e for e in manifest["clips"] if e["split"] in splits]
    total_frames = sum(int(e["num_frames"]) for e in entries)
    done_frames = coded = 0
    start = time.monotonic()
    for n, entry in enumerate(entries, 1):
        clip_dir = root / "clips" / str(entry["id"])
        todo = [qp for qp in qps if not _is_current(clip_dir, size, qp)]
        done_frames += int(entry["num_frames"])
        if not todo:
            continue
        frames = np.load(clip_dir / "frames.npy", mmap_mode="r")  # (N, S, S, 3)
        if frames.ndim != 4 or frames.shape[1:] != (manifest["size"], manifest["size"], 3) or frames.dtype != np.uint8:
            raise ValueError(f"{clip_dir}/frames.npy is {frames.dtype} {frames.shape}, expected uint8 (N, {manifest['size']}, "
                             f"{manifest['size']}, 3): re-run python -m codec.data prepare")
        small = downscale_clip(frames, size)  # (N, E, E, 3)
        fps = float(entry.get("fps") or DEFAULT_FPS)
        notes = []
        for qp in todo:
            clip = code_clip(small, qp, fps)
            npy_path, json_path = enhancement_paths(clip_dir, size, qp)
            _save_atomic_npy(npy_path, clip.pictures)
            _save_atomic_json(json_path, {"size": size, "qp": qp, "fps": fps, "encoder": svt_av1_options(qp),
                                          "frame_bytes": list(clip.frame_bytes), "psnr_db": list(clip.psnr_db)})
            coded += 1
            notes.append(f"qp{qp} {np.mean(clip.frame_bytes[1:] or clip.frame_bytes):.1f} B {np.mean(clip.psnr_db):.2f} dB")
        elapsed = time.monotonic() - start
        log.info("[%d/%d] %s (%s, %d frames): %s; %.0f%% of frames, %.0f s", n, len(entries), entry["id"], entry["split"],
                 small.shape[0], ", ".join(notes), 100 * done_frames / max(total_frames, 1), elapsed)
    return coded


def summarize(root: Path, size: int, qps: list[int], split: str) -> list[QpSummary]:
    """Per-qp means over the clips of ``split`` whose enhancement files exist."""
    entries = [e for e in _manifest(root)["clips"] if e["split"] == split]
    out = []
    for qp in qps:
        frame_bytes: list[int] = []
        inter_bytes: list[int] = []
        psnrs: list[float] = []
        clips = 0
        for entry in entries:
            json_path = enhancement_paths(root / "clips" / str(entry["id"]), size, qp)[1]
            if not json_path.is_file():
                continue
            side = json.loads(json_path.read_text())
            clips += 1
            frame_bytes += side["frame_bytes"]
            inter_bytes += side["frame_bytes"][1:]
            psnrs += side["psnr_db"]
        if not clips:
            continue
        inter = float(np.mean(inter_bytes)) if inter_bytes else float("nan")
        out.append(QpSummary(split, qp, clips, len(frame_bytes), round(float(np.mean(frame_bytes)), 2), round(inter, 2),
                             round(inter * REFERENCE_FPS * 8 / 1000, 2), round(float(np.mean(psnrs)), 2)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.data enhance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder (manifest.json + clips/)")
    parser.add_argument("--size", type=int, default=64, help="E: the coded picture is E×E pixels (default 64, preset cpu-enh64)")
    parser.add_argument("--qp", type=int, action="append", help=f"SVT-AV1 qp in {MIN_QP}..{MAX_QP} (repeatable; default 55)")
    parser.add_argument("--split", action="append", choices=SPLITS, help="only these splits (repeatable; default all)")
    args = parser.parse_args(argv)
    qps = sorted(set(args.qp or [55]))
    bad = [qp for qp in qps if not MIN_QP <= qp <= MAX_QP]
    if bad:
        parser.error(f"--qp {bad[0]} is out of range: use {MIN_QP}..{MAX_QP}")
    splits = tuple(args.split or SPLITS)
    coded = enhance(args.data, args.size, qps, splits)
    log.info("%s: %d streams coded", args.data, coded)
    summary = [s for split in splits for s in summarize(args.data, args.size, qps, split)]
    for s in summary:
        log.info("%s qp%d: %d clips, %d frames, %.1f B/frame (%.1f without key frames = %.2f kbps at 25 fps), %.2f dB",
                 s.split, s.qp, s.clips, s.frames, s.bytes_per_frame, s.inter_bytes_per_frame, s.kbps_at_25fps, s.psnr_db)
    print(json.dumps([asdict(s) for s in summary], indent=1))
    return 0
