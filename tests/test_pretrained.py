"""The shipped weights on real validation clips: the model must beat the no-motion floor.

For a few validation people (never seen in training), the first frame of a clip is the reference and
later frames drive it through the real sender path (FaceCropper -> MotionEncoder -> landmark refinement, for a
model trained for it, anchored at the reference frame) and the receiver path
(FrameSynthesizer). Against "output = the reference" (the no-motion floor) the model must be at least
25% better on AKD and 1 dB better on face-region PSNR, averaged over the frames.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from codec.data.clips import iter_clip_frames, list_clips
from codec.data.split import validation_clips
from codec.face.crop import FaceCrop, FaceCropper
from codec.model.loading import default_weights_path
from codec.model.wrappers import FrameSynthesizer, MotionEncoder
from codec.train.validate import frame_metrics, make_landmark_fn

pytestmark = [pytest.mark.pretrained, pytest.mark.shared_data]

AKD_RATIO_MAX = 0.75  # model AKD ≤ 75% of the no-motion floor's
FACE_PSNR_GAIN_MIN = 1.0  # dB over the no-motion floor
CLIPS = 3
FRAMES_PER_CLIP = 6  # driving frames, spread over the clip's first 150 frames


@pytest.fixture(scope="module")
def shipped() -> Path:
    path = default_weights_path()
    if not path.is_file():
        pytest.skip(f"no shipped weights at {path} (train and ship them: python -m codec.train.ship)")
    return path


def _crops(clip: Path, count: int) -> list[FaceCrop]:
    cropper = FaceCropper(256)
    try:
        frames = [cropper.crop(frame) for frame in itertools.islice(iter_clip_frames(clip), 151)]
    finally:
        cropper.close()
    picks = np.linspace(0, len(frames) - 1, count + 1).round().astype(int)
    return [frames[i] for i in picks]


def test_shipped_model_beats_the_no_motion_floor(shipped: Path, shared_data: Path) -> None:
    encoder, synthesizer = MotionEncoder(shipped), FrameSynthesizer(shipped)
    detect = make_landmark_fn()
    clips = validation_clips(list_clips(shared_data / "clips"))
    chosen = sorted(clips)[:: max(1, len(clips) // CLIPS)][:CLIPS]
    model_rows, floor_rows = [], []
    for clip in chosen:
        reference_crop, *driving = _crops(clip, FRAMES_PER_CLIP)
        reference = reference_crop.image
        state = synthesizer.prepare(reference)
        refine = encoder.landmark_refiner(reference)
        refine(encoder.encode(reference), reference_crop.landmarks)  # the anchor
        for crop in driving:
            target = crop.image
            target_landmarks = detect(target)
            if target_landmarks is None:
                continue
            output = synthesizer.render(state, refine(encoder.encode(target), crop.landmarks))
            model_rows.append(frame_metrics(output, target, target_landmarks, detect(output)))
            floor_rows.append(frame_metrics(reference, target, target_landmarks, detect(reference)))
    assert len(model_rows) >= CLIPS * FRAMES_PER_CLIP // 2, "too few frames with a detectable face"

    def mean(rows: list[dict[str, float]], key: str) -> float:
        values = np.array([r[key] for r in rows])
        return float(np.nanmean(values))

    detect_rate = np.mean([np.isfinite(r["akd"]) for r in model_rows])
    akd_model, akd_floor = mean(model_rows, "akd"), mean(floor_rows, "akd")
    psnr_model, psnr_floor = mean(model_rows, "face_psnr"), mean(floor_rows, "face_psnr")
    summary = (f"AKD {akd_model:.2f} vs floor {akd_floor:.2f}; face PSNR {psnr_model:.2f} vs {psnr_floor:.2f}; "
               f"face detected in {detect_rate:.0%} of outputs")
    assert detect_rate >= 0.9, summary
    assert akd_model <= AKD_RATIO_MAX * akd_floor, summary
    assert psnr_model >= psnr_floor + FACE_PSNR_GAIN_MIN, summary
