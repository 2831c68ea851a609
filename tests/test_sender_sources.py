"""Sender motion sources (trace pacing; file and folder sources with stand-in cropper/encoder) and portraits."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from PIL import Image

from codec.motion import MotionParams
from codec.reference_message import decode_portrait
from codec.synthetic_trace import synthetic_trace
from sender.portrait import default_portrait, make_reference, read_photo
from sender.sources import MotionFrame, TraceSource, VideoSource, _iter_folder, create_source


class ShadeEncoder:
    """Stand-in MotionEncoder: yaw = mean brightness of the crop (so frames can be told apart)."""

    image_size = 16

    def encode(self, face_rgb: np.ndarray) -> MotionParams:
        return MotionParams(float(face_rgb.mean()), 0, 0, np.zeros(3), np.zeros((4, 3)), np.ones(4, bool))


class CentreCropper:
    def __init__(self, miss: set[int] | None = None) -> None:
        self.calls = 0
        self.miss = miss or set()

    def crop(self, frame_rgb: np.ndarray) -> SimpleNamespace:
        index, self.calls = self.calls, self.calls + 1
        return SimpleNamespace(image=frame_rgb[:16, :16], face_found=index not in self.miss)


async def collect(source: TraceSource | VideoSource, limit: int = 1000) -> list[MotionFrame]:
    out = []
    async for frame in source.frames():
        out.append(frame)
        if len(out) >= limit:
            break
    return out


async def test_trace_source_is_paced_and_is_the_trace() -> None:
    source = TraceSource(fps=50.0, num_keypoints=8, seed=3, max_frames=20)
    start = time.monotonic()
    frames = await collect(source)
    elapsed = time.monotonic() - start
    assert [f.index for f in frames] == list(range(20))
    assert 0.33 <= elapsed <= 1.0  # 19 intervals of 20 ms
    gaps = np.diff([f.capture_ms for f in frames])
    assert float(np.median(gaps)) == pytest.approx(20.0, abs=3.0)
    expected = synthetic_trace(20, 50.0, num_keypoints=8, seed=3)
    assert all(f.motion.max_abs_difference(e)["angles_deg"] == 0 for f, e in zip(frames, expected))
    assert frames[0].capture_ts_ms == int(frames[0].capture_ms) % (1 << 32)


def write_clip(path: Path, count: int, size: int = 32, fps: int = 25) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 20 + 10 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


async def test_video_file_source_crops_encodes_and_paces(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip, 8)
    source = create_source(str(clip), cropper=CentreCropper(), encoder=ShadeEncoder())
    start = time.monotonic()
    frames = await collect(source)
    assert len(frames) == 8 and source.fps == pytest.approx(25.0)
    assert time.monotonic() - start >= 7 / 25 - 0.02
    yaws = [f.motion.yaw for f in frames]
    assert yaws == sorted(yaws) and yaws[-1] - yaws[0] > 50  # brighter frame by frame


async def test_image_folder_source_holds_motion_when_no_face(tmp_path: Path) -> None:
    for i in range(5):
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(tmp_path / f"{i:03d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    source = create_source(str(tmp_path), fps=100.0, cropper=CentreCropper(miss={0, 3}), encoder=ShadeEncoder())
    frames = await collect(source)
    assert [f.index for f in frames] == [1, 2, 3, 4]  # no face in frame 0 and nothing to hold yet: skipped
    assert frames[2].motion.yaw == frames[1].motion.yaw  # frame 3: no face, the last motion holds
    assert isinstance(source, VideoSource) and source.faces_missed == 2


class LandmarkCropper(CentreCropper):
    """Stand-in cropper whose crops carry landmarks that number the call (None where no face was found)."""

    def crop(self, frame_rgb: np.ndarray) -> SimpleNamespace:
        crop = super().crop(frame_rgb)
        return SimpleNamespace(**vars(crop), landmarks=np.full((478, 3), float(self.calls)) if crop.face_found else None)


class RecordingRefiner:
    """Stand-in landmark refiner: records what it sees, adds 1 to roll (so refined frames can be told apart)."""

    def __init__(self) -> None:
        self.resets = 0
        self.seen: list[object] = []

    def reset(self) -> None:
        self.resets += 1

    def __call__(self, motion: MotionParams, landmarks_px: np.ndarray | None) -> MotionParams:
        self.seen.append(landmarks_px)
        return MotionParams(motion.yaw, motion.pitch, motion.roll + 1, motion.translation, motion.expression, motion.present)


async def test_the_refiner_sees_each_face_crops_landmarks_before_smoothing(tmp_path: Path) -> None:
    for i in range(4):
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(tmp_path / f"{i:03d}.png")

    refiner = RecordingRefiner()
    source = create_source(str(tmp_path), fps=100.0, cropper=LandmarkCropper(miss={2}), encoder=ShadeEncoder(),
                           refiner=refiner, smooth=False)
    frames = await collect(source)
    assert refiner.resets == 1  # a new stream: a new anchor
    assert [float(np.asarray(lm)[0, 0]) for lm in refiner.seen] == [1.0, 2.0, 4.0]  # frame 2 had no face: held, not refined
    assert [f.motion.roll for f in frames] == [1.0, 1.0, 1.0, 1.0]


async def test_the_calibrator_sees_each_refined_frame_with_its_face_and_landmarks(tmp_path: Path) -> None:
    for i in range(3):
        Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(tmp_path / f"{i:03d}.png")

    seen: list[tuple[float, object, float]] = []

    def calibrator(motion: MotionParams, face: np.ndarray | None, landmarks: np.ndarray | None) -> MotionParams:
        seen.append((motion.roll, None if face is None else face.shape, float(np.asarray(landmarks)[0, 0])))
        return MotionParams(motion.yaw, motion.pitch, motion.roll + 10, motion.translation, motion.expression, motion.present)

    source = create_source(str(tmp_path), fps=100.0, cropper=LandmarkCropper(), encoder=ShadeEncoder(),
                           refiner=RecordingRefiner(), calibrator=calibrator, smooth=False)
    frames = await collect(source)
    assert [roll for roll, _, _ in seen] == [1.0, 1.0, 1.0]  # after the refinement (+1)
    assert [lm for _, _, lm in seen] == [1.0, 2.0, 3.0] and all(shape is not None for _, shape, _ in seen)
    assert [f.motion.roll for f in frames] == [11.0, 11.0, 11.0]


async def test_a_failing_source_reports_its_error(tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    source = create_source(str(tmp_path / "broken.mp4"), cropper=CentreCropper(), encoder=ShadeEncoder())
    with pytest.raises(RuntimeError, match="failed"):
        await collect(source)


def test_create_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither 'default', 'webcam'"):
        create_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(ValueError, match="holds no"):
        list(_iter_folder(tmp_path))
    with pytest.raises(ValueError, match="fps must be"):
        TraceSource(fps=0.5)


def test_default_portrait_and_reference(tmp_path: Path) -> None:
    photo = default_portrait()
    assert photo.shape == (512, 512, 3) and photo.dtype == np.uint8

    def fake_crop(image: np.ndarray, size: int) -> np.ndarray:
        return np.asarray(Image.fromarray(image[:256, 128:384]).resize((size, size)))

    msg = make_reference(photo, 64, "m", "1", crop=fake_crop)
    assert (msg.width, msg.height, msg.model_id) == (64, 64, "m")
    assert decode_portrait(msg).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="expected"):
        make_reference(photo, 64, "m", "1", crop=lambda image, size: image)
    path = tmp_path / "p.png"
    Image.fromarray(photo[:80, :64]).save(path)
    assert read_photo(path).shape == (80, 64, 3)
    Image.fromarray(photo[:40, :30]).save(path)
    with pytest.raises(ValueError, match="short side must be at least 64 pixels"):
        read_photo(path)
    (tmp_path / "bad.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a readable image"):
        read_photo(tmp_path / "bad.jpg")
    with pytest.raises(ValueError, match="cannot read"):
        read_photo(tmp_path / "none.jpg")


def test_the_sender_cli_refines_a_video_source_for_a_model_trained_for_it(tmp_path: Path) -> None:
    """python -m sender: a video source gets the model's landmark refinement (built from the portrait it sends) and the
    keypoint calibration (--calibration on/off/auto);
    --no-refinement, the trace source and a model not trained for it get none."""
    import argparse
    import dataclasses

    from codec.model import PRESETS, FaceVid2VidModel, checkpoint
    from sender.__main__ import add_sender_arguments, create_sender
    from sender.session import Sender

    trained = tmp_path / "refined.safetensors"
    checkpoint.save(FaceVid2VidModel(dataclasses.replace(PRESETS["tiny"], landmark_refinement=0.5)), trained)
    plain = tmp_path / "plain.safetensors"
    checkpoint.save(FaceVid2VidModel(PRESETS["tiny"]), plain)
    Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(tmp_path / "000.png")
    parser = argparse.ArgumentParser()
    add_sender_arguments(parser)

    def refiner_of(*argv: str) -> object:
        sender = create_sender(parser.parse_args(["--device", "cpu", *argv]))
        return getattr(sender.source, "_refiner", None)

    refiner = refiner_of("--weights", str(trained), "--source", str(tmp_path))
    assert refiner is not None and refiner.fraction == 0.5 and refiner.kp_canonical.shape == (PRESETS["tiny"].num_keypoints, 3)
    assert refiner_of("--weights", str(trained), "--source", str(tmp_path), "--no-refinement") is None
    assert refiner_of("--weights", str(plain), "--source", str(tmp_path)) is None
    assert refiner_of("--weights", str(trained)) is None  # the trace: motion without a face to measure

    def calibrator_of(*argv: str) -> object:
        return getattr(create_sender(parser.parse_args(["--device", "cpu", *argv])).source, "calibrator", None)

    from sender.calibration import KeypointCalibrator

    calibrator = calibrator_of("--weights", str(plain), "--source", str(tmp_path), "--calibration", "on",
                               "--calibration-cache", str(tmp_path / "kept"))
    assert isinstance(calibrator, KeypointCalibrator) and calibrator._cache is not None
    assert calibrator._cache.dir == tmp_path / "kept" and calibrator._cache_key[0]  # kept under the model's id
    calibrator = calibrator_of("--weights", str(plain), "--source", str(tmp_path), "--calibration-cache", "off")
    assert isinstance(calibrator, KeypointCalibrator) and calibrator._cache is None  # auto: on, light on a small CPU
    assert calibrator_of("--weights", str(plain), "--source", str(tmp_path), "--calibration", "off") is None
    from sender.calibration_cache import DEFAULT_DIR

    calibrator = calibrator_of("--weights", str(plain), "--source", str(tmp_path))  # kept by default (nothing written yet)
    assert isinstance(calibrator, KeypointCalibrator) and calibrator._cache is not None and calibrator._cache.dir == DEFAULT_DIR
    assert calibrator.tracking is None  # auto: per-frame tracking with a GPU only
    tracked = calibrator_of("--weights", str(plain), "--source", str(tmp_path), "--keypoint-tracking", "on")
    assert isinstance(tracked, KeypointCalibrator) and tracked.tracking is not None and tracked.tracking.state == "on"
    assert calibrator_of("--weights", str(plain), "--calibration", "on") is None  # the trace: no camera frames
    sender = create_sender(parser.parse_args(["--device", "cpu", "--weights", str(trained), "--source", str(tmp_path)]))
    baseline = sender._expression_baseline  # the portrait's own δ: the controller ranks keypoints against it
    assert baseline is not None and baseline.shape == (PRESETS["tiny"].num_keypoints, 3)
    with pytest.raises(ValueError, match="expression_baseline must be"):  # a baseline for another K: refused at once
        Sender(sender.config, sender.source, sender.reference, expression_baseline=baseline[:-1])
