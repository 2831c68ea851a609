"""sender/calibration.py: frames kept at the spacing asked, one fit, its offset blended in; skipped (motion unchanged)
for another person's portrait, a fit that does not help, or a failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codec.model import FaceVid2VidModel, ModelConfig
from codec.model.keypoint_calibration import apply_offset, calibrate_keypoints
from codec.model.wrappers import image_hash
from codec.motion import MotionParams
from sender.calibration import FitProfile, KeypointCalibrator


@pytest.fixture(scope="module")
def model() -> FaceVid2VidModel:
    torch.manual_seed(0)
    return FaceVid2VidModel(ModelConfig.preset("tiny")).eval()



def _profile(frames: int, spacing: int) -> FitProfile:
    return FitProfile(frames=frames, spacing=spacing, steps=20, learning_rate=0.002)

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

    calibrator = KeypointCalibrator(model, portrait, _profile(3, 2), ramp=4, background=False,
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
    assert 0 <= stats["seconds_to_offset"] < 60  # from the first frame seen to the offset's arrival
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

        monkeypatch.setattr("sender.calibration_job.calibrate_keypoints",
                            lambda *a, **k: Calibration(np.ones((20, 3), np.float32), 0.1, 0.1, 2, 0.0))
    if case == "failure":
        monkeypatch.setattr("sender.calibration_job.calibrate_keypoints",
                            lambda *a, **k: (_ for _ in ()).throw(RuntimeError("out of memory")))
    distance = 0.9 if case == "another person" else 0.1
    calibrator = KeypointCalibrator(model, portrait, _profile(2, 1), background=False,
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

    calibrator = KeypointCalibrator(model, portrait, _profile(2, 1), same_person=same_person)
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
        KeypointCalibrator(model, np.zeros((64, 64, 3), np.uint8), _profile(0, 1))


def test_a_background_fit_on_the_cpu_runs_in_a_child_process_and_its_offset_arrives(model: FaceVid2VidModel) -> None:
    """The real path of a call: the fit in an idle-priority child process (here with the identity measured by the
    caller's ``same_person``). The
    sender's own model is left where it is: handing the module to a multiprocessing child would move its weights into shared memory
    under the frame thread reading them (a NaN motion in a call, once)."""
    import time

    before = {name: (p.data_ptr(), p.is_shared()) for name, p in model.named_parameters()}
    rng = np.random.default_rng(3)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    hidden = rng.normal(0, 0.03, (model.config.num_keypoints, 3)).astype(np.float32)
    frames = _frames(model, 8, hidden, portrait, rng)
    calibrator = KeypointCalibrator(model, portrait, _profile(2, 1), ramp=0, same_person=lambda *a: 0.1)
    for motion, face in frames[:2]:
        calibrator(motion, face, _landmarks())
    deadline = time.monotonic() + 120
    while calibrator.state == "fitting" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert calibrator.state == "applied", calibrator.state
    motion = frames[2][0]
    np.testing.assert_allclose(calibrator(motion, None, None).expression, motion.expression + calibrator.result.offset,
                               atol=1e-6)
    assert {name: (p.data_ptr(), p.is_shared()) for name, p in model.named_parameters()} == before


def test_the_full_fit_with_a_gpu_or_four_cores_the_light_one_below() -> None:
    from sender.calibration import FULL, LIGHT, fit_profile

    assert fit_profile("auto", "cuda", cpu_cores=2) is FULL and fit_profile("auto", "cpu", cpu_cores=4) is FULL
    assert fit_profile("auto", "cpu", cpu_cores=2) is LIGHT and fit_profile("on", "cpu", cpu_cores=1) is LIGHT
    assert fit_profile("off", "cuda", cpu_cores=16) is None
    assert LIGHT.frames * LIGHT.steps * 4 == FULL.frames * FULL.steps and LIGHT.threads == 1  # a quarter, on one core
    with pytest.raises(ValueError, match="auto, on, off"):
        fit_profile("sometimes", "cpu")


def test_closing_the_source_ends_a_fit_still_running_in_its_process(model: FaceVid2VidModel) -> None:
    import time

    rng = np.random.default_rng(4)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    frames = _frames(model, 3, np.zeros((model.config.num_keypoints, 3), np.float32), portrait, rng)
    calibrator = KeypointCalibrator(model, portrait, _profile(2, 1), same_person=lambda *a: 0.1)
    for motion, face in frames[:2]:
        calibrator(motion, face, _landmarks())
    deadline = time.monotonic() + 30
    while calibrator._process is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process = calibrator._process
    calibrator.close()  # the child is still importing torch: it has no result yet
    process.wait(10)
    assert process.poll() is not None
    while calibrator.state == "fitting" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calibrator.state.startswith("skipped") and "without a result" in calibrator.state
    assert calibrator(frames[2][0], None, None) is frames[2][0]


def test_the_next_call_with_the_same_portrait_applies_the_kept_offset_without_fitting(
        model: FaceVid2VidModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """First call: fit, keep the offset. Second call (same model id, same portrait): the kept offset is checked on
    its frames and applied, no fit. Another portrait, or a kept offset that no longer helps: fit again."""
    from sender.calibration_cache import CalibrationCache

    rng = np.random.default_rng(5)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    hidden = rng.normal(0, 0.03, (model.config.num_keypoints, 3)).astype(np.float32)
    frames = _frames(model, 4, hidden, portrait, rng)
    cache = CalibrationCache(tmp_path / "calibration")

    def call(portrait: np.ndarray) -> KeypointCalibrator:
        calibrator = KeypointCalibrator(model, portrait, _profile(2, 1), ramp=0, background=False,
                                        same_person=lambda *a: 0.1, cache=cache, model_id="model-a")
        for motion, face in frames[:3]:
            calibrator(motion, face, _landmarks())
        return calibrator

    first = call(portrait)
    assert first.state == "applied" and first.result is not None
    np.testing.assert_array_equal(cache.load("model-a", image_hash(portrait)), first.result.offset)
    fits: list[int] = []
    real_fit = calibrate_keypoints

    def counting_fit(*args: object, **kwargs: object) -> object:
        if kwargs.get("steps", 1):  # a fit; steps=0 is the check of a kept offset
            fits.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr("sender.calibration_job.calibrate_keypoints", counting_fit)
    second = call(portrait)
    assert second.state == "applied: kept from an earlier call" and not fits
    assert second.stats()["state"] == second.state and second.stats()["seconds_to_offset"] >= 0
    assert second.result is not None and second.result.loss_after < second.result.loss_before
    np.testing.assert_array_equal(second.result.offset, first.result.offset)
    other = portrait.copy()
    other[0, 0] ^= 1
    assert call(other).state == "applied" and fits == [1]  # another portrait: its own fit
    cache.store("model-a", image_hash(portrait), -4 * first.result.offset)  # a kept offset that makes things worse
    assert call(portrait).state == "applied" and fits == [1, 1]


def test_the_calibration_cache_ignores_what_is_not_its_offset(tmp_path: Path) -> None:
    from sender.calibration_cache import CalibrationCache

    cache = CalibrationCache(tmp_path, max_bytes=3000)
    assert cache.load("m", "p") is None
    offset = np.full((20, 3), 0.01, np.float32)
    path = cache.store("m", "p", offset)
    np.testing.assert_array_equal(cache.load("m", "p"), offset)
    assert cache.load("m", "q") is None and cache.load("n", "p") is None
    path.write_bytes(b"not a zip")  # a damaged file: fit again, and the next store replaces it
    assert cache.load("m", "p") is None
    cache.store("m", "p", offset)
    np.testing.assert_array_equal(cache.load("m", "p"), offset)
    with pytest.raises(ValueError, match=r"\(K, 3\) finite"):
        cache.store("m", "p", np.full((20, 3), np.nan, np.float32))
    for i in range(10):  # capped in bytes: the least recently used go first
        cache.store("m", f"p{i}", offset)
    assert cache.load("m", "p9") is not None and cache.load("m", "p0") is None
    assert sum(f.stat().st_size for f in tmp_path.iterdir()) <= 3000


def test_a_kept_offset_is_checked_in_the_child_process_on_a_cpu(model: FaceVid2VidModel, tmp_path: Path) -> None:
    """In a call on a CPU the check of a kept offset runs where the fit would (the idle-priority child process),
    not on a thread of the sender."""
    import threading
    import time

    from sender.calibration_cache import CalibrationCache

    rng = np.random.default_rng(6)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    hidden = rng.normal(0, 0.03, (model.config.num_keypoints, 3)).astype(np.float32)
    frames = _frames(model, 4, hidden, portrait, rng)
    cache = CalibrationCache(tmp_path)
    first = KeypointCalibrator(model, portrait, _profile(2, 1), ramp=0, background=False, same_person=lambda *a: 0.1,
                               cache=cache, model_id="m")
    for motion, face in frames[:2]:
        first(motion, face, _landmarks())
    assert first.state == "applied"
    checked_here: list[str] = []
    second = KeypointCalibrator(model, portrait, _profile(2, 1), ramp=0, same_person=lambda *a: 0.1, cache=cache,
                                model_id="m")
    import sender.calibration_job as calibration

    real = calibration.check_offset

    def spy(*args: object, **kwargs: object) -> object:
        checked_here.append(threading.current_thread().name)
        return real(*args, **kwargs)

    calibration.check_offset = spy  # type: ignore[assignment]
    try:
        for motion, face in frames[:2]:
            second(motion, face, _landmarks())
        deadline = time.monotonic() + 120
        while second.state == "fitting" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        calibration.check_offset = real  # type: ignore[assignment]
    assert second.state == "applied: kept from an earlier call", second.state
    assert not checked_here  # not in this process
    assert second.result is not None and second._process is not None


def test_the_identity_check_runs_in_the_child_process_on_a_cpu(model: FaceVid2VidModel,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """dlib holds Python's lock while it works: with no ``same_person`` given (a call), the portrait's identity is
    measured in the idle child with the fit, never on a thread of the sender."""
    import time

    def not_here(*args: object) -> float:
        raise AssertionError("the identity check ran in the sender's process")

    monkeypatch.setattr("sender.calibration_job.identity_distance_to_faces", not_here)
    rng = np.random.default_rng(7)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    frames = _frames(model, 3, np.zeros((model.config.num_keypoints, 3), np.float32), portrait, rng)
    calibrator = KeypointCalibrator(model, portrait, _profile(2, 1))
    for motion, face in frames[:2]:
        calibrator(motion, face, _landmarks())
    deadline = time.monotonic() + 120
    while calibrator.state == "fitting" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert calibrator.state != "fitting" and "AssertionError" not in calibrator.state, calibrator.state
    assert calibrator._process is not None  # the job ran in the child, dlib's distance with it:
    assert np.isfinite(calibrator.stats()["identity_distance"])


def test_a_job_checks_identity_then_the_kept_offset_then_fits(model: FaceVid2VidModel) -> None:
    from sender.calibration_job import CalibrationJob, run_job

    rng = np.random.default_rng(8)
    portrait = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    hidden = rng.normal(0, 0.03, (model.config.num_keypoints, 3)).astype(np.float32)
    frames = _frames(model, 2, hidden, portrait, rng)
    faces, motions = [f for _, f in frames], [m for m, _ in frames]

    def job(kept: np.ndarray | None, distance: float | None = None) -> CalibrationJob:
        return CalibrationJob(portrait, faces, motions, [_landmarks()] * 2, kept, 5, 0.002, distance)

    stranger = run_job(model, job(hidden), same_person=lambda *a: 0.9)
    assert not stranger.same_person and stranger.checked is None and stranger.fitted is None
    fitted = run_job(model, job(None, distance=0.1))
    assert fitted.same_person and fitted.checked is None and fitted.fitted is not None
    kept = run_job(model, job(hidden, distance=0.1))  # the offset that made these frames: it helps, no fit
    assert kept.checked is not None and kept.checked.improved and kept.fitted is None
    stale = run_job(model, job(-4 * hidden, distance=0.1))  # a kept offset that hurts: checked, then a fit
    assert stale.checked is not None and not stale.checked.improved and stale.fitted is not None
