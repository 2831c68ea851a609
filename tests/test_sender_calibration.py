"""sender/calibration.py: frames kept at the spacing asked, one fit, its offset blended in; skipped (motion unchanged)
for another person's portrait, a fit that does not help, or a failure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.model import FaceVid2VidModel, ModelConfig
from codec.model.keypoint_calibration import apply_offset
from codec.motion import MotionParams
from sender.calibration import KeypointCalibrator


@pytest.fixture(scope="module")
def model() -> FaceVid2VidModel:
    torch.manual_seed(0)
    return FaceVid2VidModel(ModelConfig.preset("tiny")).eval()


def _landmarks(size: int = 64) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    return np.stack([size / 2 + size / 3 * np.cos(angles), size / 2 + size / 3 * np.sin(angles)], 1)  # (478, 2)


def _frames(model: FaceVid2VidModel, count: int, hidden: np.ndarray, portrait: np.ndarray,
            rng: np.random.Generator) -> list[tuple[MotionParams, np.ndarray]]:
    from codec.model.wrappers import FrameSynthesizer

    synth = FrameSynthesizer(model, device="cpu", precision="fp32")
    state = synth.prepare(portrait)
    k = model.config.num_keypoints
    out = []
    for _ in range(count):
        motion = MotionParams(float(rng.normal(0, 4)), float(rng.normal(0, 4)), 0.0, np.zeros(3, np.float32),
                              rng.normal(0, 0.02, (k, 3)).astype(np.float32), np.ones(k, bool))
        out.append((motion, synth.render(state, apply_offset(motion, hidden))))
    return out


def test_kept_frames_fit_once_and_the_offset_ramps_in(model: FaceVid2VidModel) -> None:
    rng = np.random.default_rng(0)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    hidden = rng.normal(0, 0.03, (model.config.num_keypoints, 3)).astype(np.float32)
    asked: list[int] = []

    def same_person(p: np.ndarray, faces: list[np.ndarray], landmarks: list[np.ndarray]) -> float:
        asked.append(len(faces))
        return 0.2

    calibrator = KeypointCalibrator(model, portrait, frames=3, spacing=2, ramp=4, background=False,
                                    same_person=same_person)
    frames = _frames(model, 12, hidden, portrait, rng)
    outputs = []
    for i, (motion, face) in enumerate(frames):
        no_face = i == 1  # a frame without a face (or landmarks) is neither kept nor counted
        outputs.append(calibrator(motion, None if no_face else face, None if no_face else _landmarks()))
        if i < 5:
            assert calibrator.state == "collecting"
        if i <= 5:
            assert outputs[-1] is motion
    # faces at frames 0, 2, 3, 4, 5, ...: every 2nd kept (0, 3, 5), the fit ran on the third, inline
    assert asked == [3] and calibrator.state == "applied" and calibrator.result is not None
    offset = calibrator.result.offset
    stats = calibrator.stats()
    assert stats["state"] == "applied" and stats["loss_after"] < stats["loss_before"]
    for j, (fraction, (motion, _)) in enumerate(zip((0.25, 0.5, 0.75, 1.0, 1.0, 1.0), frames[6:])):
        np.testing.assert_allclose(outputs[6 + j].expression, motion.expression + fraction * offset, atol=1e-6)


@pytest.mark.parametrize("case", ["another person", "no gain", "failure"])
def test_a_skipped_calibration_leaves_the_motion_alone(model: FaceVid2VidModel, case: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    frames = _frames(model, 6, np.zeros((model.config.num_keypoints, 3), np.float32), portrait, rng)
    if case == "no gain":
        from codec.model.keypoint_calibration import Calibration

        monkeypatch.setattr("sender.calibration.calibrate_keypoints",
                            lambda *a, **k: Calibration(np.ones((20, 3), np.float32), 0.1, 0.1, 2, 0.0))
    if case == "failure":
        monkeypatch.setattr("sender.calibration.calibrate_keypoints",
                            lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")))
    distance = 0.9 if case == "another person" else 0.1
    calibrator = KeypointCalibrator(model, portrait, frames=2, spacing=1, background=False,
                                    same_person=lambda *a: distance)
    for motion, face in frames:
        assert calibrator(motion, face, _landmarks()) is motion
    reason = {"another person": "not the person on camera", "no gain": "did not lower",
              "failure": "RuntimeError: out of memory"}[case]
    assert calibrator.state.startswith("skipped") and reason in calibrator.state


def test_the_fit_runs_off_the_frame_thread(model: FaceVid2VidModel) -> None:
    import threading

    rng = np.random.default_rng(2)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    frames = _frames(model, 3, np.zeros((model.config.num_keypoints, 3), np.float32), portrait, rng)
    release = threading.Event()

    def same_person(*args: object) -> float:
        release.wait(10)
        return 0.9

    calibrator = KeypointCalibrator(model, portrait, frames=2, spacing=1, same_person=same_person)
    for motion, face in frames:
        assert calibrator(motion, face, _landmarks()) is motion  # returns at once while the fit waits
    assert calibrator.state == "fitting"
    release.set()
    for _ in range(100):
        if calibrator.state != "fitting":
            break
        threading.Event().wait(0.05)
    assert calibrator.state.startswith("skipped")


def test_bad_settings_are_refused(model: FaceVid2VidModel) -> None:
    with pytest.raises(ValueError, match="frames ≥ 1"):
        KeypointCalibrator(model, np.zeros((64, 64, 3), np.uint8), frames=0)


def test_a_background_fit_on_the_cpu_runs_in_a_child_process_and_its_offset_arrives(model: FaceVid2VidModel) -> None:
    """The real path of a call: the identity check on the sender's thread, the fit in a spawned, niced process."""
    import time

    rng = np.random.default_rng(3)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    hidden = rng.normal(0, 0.03, (model.config.num_keypoints, 3)).astype(np.float32)
    frames = _frames(model, 8, hidden, portrait, rng)
    calibrator = KeypointCalibrator(model, portrait, frames=2, spacing=1, ramp=0, same_person=lambda *a: 0.1)
    for motion, face in frames[:2]:
        calibrator(motion, face, _landmarks())
    deadline = time.monotonic() + 120
    while calibrator.state == "fitting" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert calibrator.state == "applied", calibrator.state
    motion = frames[2][0]
    np.testing.assert_allclose(calibrator(motion, None, None).expression, motion.expression + calibrator.result.offset,
                               atol=1e-6)


def test_auto_calibrates_with_a_gpu_or_four_cores() -> None:
    from sender.calibration import calibration_wanted

    assert calibration_wanted("auto", "cuda", cpu_cores=2) and calibration_wanted("auto", "cpu", cpu_cores=4)
    assert not calibration_wanted("auto", "cpu", cpu_cores=2)
    assert calibration_wanted("on", "cpu", cpu_cores=1) and not calibration_wanted("off", "cuda", cpu_cores=16)
    with pytest.raises(ValueError, match="auto, on, off"):
        calibration_wanted("sometimes", "cpu")


def test_closing_the_source_ends_a_fit_still_running_in_its_process(model: FaceVid2VidModel) -> None:
    import time

    rng = np.random.default_rng(4)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    frames = _frames(model, 3, np.zeros((model.config.num_keypoints, 3), np.float32), portrait, rng)
    calibrator = KeypointCalibrator(model, portrait, frames=2, spacing=1, same_person=lambda *a: 0.1)
    for motion, face in frames[:2]:
        calibrator(motion, face, _landmarks())
    deadline = time.monotonic() + 30
    while calibrator._process is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process = calibrator._process
    calibrator.close()  # the child is still importing torch: it has no result yet
    process.join(10)
    assert not process.is_alive()
    while calibrator.state == "fitting" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calibrator.state.startswith("skipped") and "without a result" in calibrator.state
    assert calibrator(frames[2][0], None, None) is frames[2][0]
