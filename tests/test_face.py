"""codec.face: crop stability, no-face handling, head-pose sign conventions, regions, AKD, metrics."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from codec.face.crop import FaceCropper, crop_reference, extract_crop, OneEuroFilter
from codec.face.head_pose import head_pose_from_landmarks, rotation_from_landmarks
from codec.face.landmarks import FaceInputError, LandmarkDetector, NoFaceError
from codec.face.metrics import akd
from codec.face.regions import FACE_OVAL, LEFT_EYE, MOUTH, RIGHT_EYE, face_hull_mask
from codec.metrics import psnr, ssim
from codec.motion import angles_to_rotation, rotation_to_angles


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut())


@pytest.fixture(scope="module")
def static_detector() -> LandmarkDetector:
    detector = LandmarkDetector(static_mode=True)
    yield detector
    detector.close()


def test_detects_478_landmarks_on_portrait(astronaut: np.ndarray, static_detector: LandmarkDetector) -> None:
    faces = static_detector.detect(astronaut)
    assert len(faces) == 1 and faces[0].points.shape == (478, 3)
    x0, y0, x1, y1 = faces[0].box
    assert 150 < (x0 + x1) / 2 < 250 and 50 < (y0 + y1) / 2 < 200  # the astronaut's face


def test_bad_inputs_are_refused(static_detector: LandmarkDetector) -> None:
    with pytest.raises(FaceInputError, match="uint8"):
        static_detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(FaceInputError, match=r"\(H, W, 3\)"):
        static_detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(FaceInputError, match="over the limit"):
        static_detector.detect(np.broadcast_to(np.zeros(3, np.uint8), (10_000, 6_000, 3)))
    with pytest.raises(NoFaceError, match="no face"):
        crop_reference(np.full((200, 200, 3), 128, np.uint8), detector=static_detector)


def test_head_pose_sign_conventions(astronaut: np.ndarray, static_detector: LandmarkDetector) -> None:
    """A mirrored face flips yaw and roll and keeps pitch; rotating the landmarks in 3D by a known
    rotation is recovered (the codec.motion convention)."""
    points = static_detector.detect(astronaut)[0].points
    yaw, pitch, roll = head_pose_from_landmarks(points)
    assert abs(yaw) < 15 and abs(roll) < 15
    mirrored = static_detector.detect(np.ascontiguousarray(astronaut[:, ::-1]))[0].points
    m_yaw, m_pitch, m_roll = head_pose_from_landmarks(mirrored)
    assert m_yaw == pytest.approx(-yaw, abs=3) and m_roll == pytest.approx(-roll, abs=3)
    assert m_pitch == pytest.approx(pitch, abs=3)
    centre = points.mean(0)
    base = rotation_from_landmarks(points)
    for angles in ((20, 0, 0), (0, 15, 0), (0, 0, 25)):
        turned = (points - centre) @ angles_to_rotation(*angles).T.astype(np.float64) + centre
        relative = rotation_from_landmarks(turned) @ base.T  # the extra rotation that was applied
        assert np.allclose(rotation_to_angles(relative), angles, atol=0.5), (angles, rotation_to_angles(relative))


def test_crop_reference_framing(astronaut: np.ndarray, static_detector: LandmarkDetector) -> None:
    crop = crop_reference(astronaut, output_size=256, detector=static_detector)
    assert crop.image.shape == (256, 256, 3) and crop.face_found
    oval = crop.landmarks[FACE_OVAL, :2]
    size = (oval.max(0) - oval.min(0)).max()
    assert 256 / 2.0 < size < 256 / 1.4  # the face fills about 1/MARGIN of the crop
    assert 96 < oval[:, 0].mean() < 160


def _static_clip(image: np.ndarray, frames: int, noise: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8) for _ in range(frames)]


def test_crop_is_stable_at_rest_and_follows_motion(astronaut: np.ndarray) -> None:
    cropper = FaceCropper(output_size=128, fps=25)
    boxes = np.array([cropper.crop(f).box for f in _static_clip(astronaut, 30, noise=4.0)])
    jitter = boxes[10:].std(0) / boxes[10:, 2].mean()
    assert jitter.max() < 0.003, jitter  # < 0.3% of the box side at rest
    shifted = np.roll(astronaut, 40, axis=1)  # the face jumps 40 px to the right
    xs = [cropper.crop(f).box[0] for f in _static_clip(shifted, 25, noise=4.0, seed=1)]
    assert xs[-1] - boxes[-1, 0] == pytest.approx(40, abs=4)  # followed within a second
    cropper.close()


def test_no_face_holds_last_box(astronaut: np.ndarray) -> None:
    cropper = FaceCropper(output_size=64)
    first = cropper.crop(astronaut)
    assert first.face_found
    blank = cropper.crop(np.zeros_like(astronaut))
    assert not blank.face_found and blank.landmarks is None and blank.box == first.box
    fresh = FaceCropper(output_size=64)
    none_yet = fresh.crop(np.zeros((100, 200, 3), np.uint8))
    assert not none_yet.face_found and none_yet.image.shape == (64, 64, 3)
    cropper.close()
    fresh.close()


def test_small_face_in_wide_frame_is_found(astronaut: np.ndarray, static_detector: LandmarkDetector) -> None:
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    small = extract_crop(astronaut, 256, 256, 512, 360)[0]  # the whole portrait at 360 px (face ~120 px)
    canvas[600:960, 1400:1760] = small
    faces = static_detector.detect(canvas)
    assert faces, "a half-body-sized face in a 1080p frame must be found"
    x0, y0, x1, y1 = faces[0].box
    assert 1400 < (x0 + x1) / 2 < 1760 and 600 < (y0 + y1) / 2 < 960


def test_one_euro_filter_smooths_noise_and_tracks_steps() -> None:
    f = OneEuroFilter(rate_hz=25, min_cutoff_hz=0.4, beta=0.8)
    rng = np.random.default_rng(0)
    out = [f(np.array([100.0 + rng.normal(0, 1)]), scale=100)[0] for _ in range(50)]
    assert np.std(out[20:]) < 0.3
    out = [f(np.array([150.0]), scale=100)[0] for _ in range(25)]
    assert out[-1] == pytest.approx(150, abs=1.5)


def test_regions_and_metrics() -> None:
    assert len(MOUTH) == 40 and len(LEFT_EYE) == len(RIGHT_EYE) and not set(LEFT_EYE) & set(RIGHT_EYE)
    pts = np.array([[10, 10], [50, 10], [50, 40], [10, 40]], np.float32)
    mask = face_hull_mask(pts, 64)
    assert mask.shape == (64, 64) and 1100 < mask.sum() < 1400
    assert akd(pts, pts + [3, 4]) == pytest.approx(5.0)
    assert akd(pts, pts + [3, 4], subset=np.array([0, 1])) == pytest.approx(5.0)
    a = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    assert psnr(a, a) == float("inf") and 25 < psnr(a, b) < 30
    assert ssim(a, a) == pytest.approx(1.0) and ssim(a, b, mask) < 1.0
    with pytest.raises(ValueError, match="same|must both"):
        psnr(a, b[:10])


@pytest.mark.shared_data
def test_shared_clips_crop_stably(shared_data: Path) -> None:
    """On a real near-static talking-head clip the crop box jitters less than 1% of its side."""
    from codec.data.clips import iter_clip_frames

    clip = shared_data / "clips" / "dreamtalk" / "M030_front_neutral_level1_001.mp4"
    cropper = FaceCropper(output_size=128, fps=30)
    crops = [cropper.crop(f) for f in islice(iter_clip_frames(clip), 60)]
    cropper.close()
    assert all(c.face_found for c in crops)
    boxes = np.array([c.box for c in crops])
    step = np.abs(np.diff(boxes, axis=0)).max(0) / boxes[:, 2].mean()
    assert step.max() < 0.01, step
    wide = shared_data / "wide" / "liveportrait_s13.mp4"
    frame = next(iter(iter_clip_frames(wide)))
    crop = crop_reference(frame, output_size=128)
    assert crop.face_found and crop.box[2] < min(frame.shape[:2])
