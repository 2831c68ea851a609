"""The sender's keypoint calibration in a call: a few frames of its first seconds, one fit, an offset on every later δ.

    calibrator = KeypointCalibrator(encoder.model, portrait)
    motion = calibrator(motion, face, landmarks)   # per frame, after the landmark refinement and before smoothing

Every ``spacing``-th frame with a face (and its landmarks) is kept until ``frames`` are (a ``FitProfile``); then the fit
(``codec.model.keypoint_calibration``) runs once on a background thread (or inline with ``background=False``, as
``bench rd`` runs it) and its offset is blended in over ``ramp`` frames, so the picture does not jump. Before fitting,
the portrait must show the person in front of the camera: dlib's identity distance between the portrait and the kept
frames under ``SAME_PERSON_DISTANCE`` (a painting, a cartoon or someone else's photo is driven as before). A fit that
does not lower G's error on its own frames is dropped. With a ``CalibrationCache``, a fitted offset is kept for the
next call with the same portrait and model, which checks it on its own kept frames (two renders) and applies it at
once instead of fitting. Given a ``TrackingHook`` (``sender.keypoint_tracking``), frames after the offset also get
their own correction. The check of identity, kept offset and fit is one job (``sender.calibration_job``), run on a CPU
in an idle-priority child process. ``state`` says where it is (``stats``).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from codec.face.identity import SAME_PERSON_DISTANCE
from codec.model.keypoint_calibration import LEARNING_RATE, STEPS, Calibration, apply_offset
from codec.model.wrappers import image_hash
from codec.motion import MotionParams
from sender.calibration_cache import CalibrationCache
from sender.calibration_job import CalibrationJob, CalibrationOutcome, SamePerson, run_job
from sender.keypoint_tracking import TrackingHook, tracking_wanted

logger = logging.getLogger(__name__)
_REPO_ROOT = Path(__file__).resolve().parent.parent  # where the worker's packages are, installed or not

MODES = ("auto", "on", "off")
MIN_CPU_CORES = 4  # the full fit on a CPU needs this many cores; fewer get the light one (see ``fit_profile``)
RAMP = 12  # frames over which the offset is blended in


@dataclass(frozen=True)
class FitProfile:
    """What the fit costs: every ``spacing``-th face frame kept until ``frames`` are, ``steps`` Adam steps at
    ``learning_rate`` (each a forward and backward pass of G over all kept frames), ``threads`` torch threads in the
    fit's child process on a CPU (None: torch's default)."""

    frames: int
    spacing: int
    steps: int
    learning_rate: float
    threads: int | None = None


# 8 frames over the first ~1 s at 25 fps, 20 steps: ~1 s on a GPU, 14 s alone on 2 CPU cores.
FULL = FitProfile(frames=8, spacing=3, steps=STEPS, learning_rate=LEARNING_RATE)
# A quarter of the work, on one core: 4 frames over the same second, 10 steps at twice the rate. Validation people
# (7 clips, held-out frames): face PSNR 25.62 -> 26.01 dB against 26.08 for FULL.
LIGHT = FitProfile(frames=4, spacing=6, steps=10, learning_rate=2 * LEARNING_RATE, threads=1)


def fit_profile(mode: str, device_type: str, cpu_cores: int | None = None) -> FitProfile | None:
    """The fit a sender runs, or None for none: ``off`` none; otherwise ``FULL`` when its model runs on a GPU (about a
    second) or the CPU has at least ``MIN_CPU_CORES`` cores, else ``LIGHT`` (see its measurements in the README: on 2
    cores shared with the call, the full fit had not finished after 60 s and raised the call's p95 latency from 223 to
    308 ms)."""
    if mode not in MODES:
        raise ValueError(f"--calibration must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return None
    if cpu_cores is None:
        cpu_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return FULL if device_type != "cpu" or cpu_cores >= MIN_CPU_CORES else LIGHT


def make_calibrator(mode: str, encoder: Any, portrait: np.ndarray, cache: CalibrationCache | None = None,
                    tracking: str = "off") -> KeypointCalibrator | None:
    """The sender's calibrator for ``encoder`` (a ``MotionEncoder``: its model, id and device) and the portrait the
    receiver decodes, or None where ``mode`` (``fit_profile``) or an encoder without a model says no; ``cache``: the
    offsets kept across calls (``sender.calibration_cache``), or None; ``tracking``: ``--keypoint-tracking``
    (``sender.keypoint_tracking.tracking_wanted``), per-frame corrections once the offset is on."""
    if not hasattr(encoder, "model"):
        return None
    device_type = str(getattr(getattr(encoder, "device", None), "type", "cpu"))
    track = tracking_wanted(tracking, device_type)  # checks the mode even where no calibration runs
    profile = fit_profile(mode, device_type)
    if profile is None:
        return None
    return KeypointCalibrator(encoder.model, portrait, profile, cache=cache, model_id=str(getattr(encoder, "model_id", "")),
                              tracking=TrackingHook(encoder.model, portrait) if track else None)


class KeypointCalibrator:
    """Per-frame hook of the sender's motion (see the module docstring); thread-safe between the frame thread and the
    fit's thread."""

    def __init__(self, model: Any, portrait: np.ndarray, profile: FitProfile = FULL, ramp: int = RAMP,
                 background: bool = True,
                 same_person: SamePerson | None = None,
                 cache: CalibrationCache | None = None, model_id: str = "",
                 tracking: TrackingHook | None = None) -> None:
        if profile.frames < 1 or profile.spacing < 1 or profile.steps < 0 or ramp < 0:
            raise ValueError(f"calibration needs frames ≥ 1, spacing ≥ 1, steps ≥ 0 and ramp ≥ 0, got {profile} and "
                             f"ramp {ramp}")
        self._model = model
        self._portrait = np.ascontiguousarray(portrait)
        self.profile = profile
        self._frames_wanted, self._spacing, self._ramp = profile.frames, profile.spacing, ramp
        self._background = background
        self._same_person = same_person  # None: dlib's distance, measured with the job (in the child on a CPU)
        self._cache = cache if cache is not None and model_id else None  # an offset is only kept under its model's id
        self._cache_key = (model_id, image_hash(self._portrait))
        self.tracking = tracking  # per-frame corrections once the offset is on (the person on camera checked)
        self._seen = 0
        self._kept: list[tuple[np.ndarray, MotionParams, np.ndarray]] = []  # (face, motion, landmarks)
        self._lock = threading.Lock()
        self._offset: np.ndarray | None = None
        self._applied = 0  # frames since the offset arrived (for the ramp)
        self.state = "collecting"  # collecting -> fitting -> applied | applied: kept from an earlier call | skipped: <reason>
        self._process: Any = None  # the fit's child process, while it runs
        self._first_frame_at: float | None = None  # monotonic time of the first frame seen
        self.seconds_to_offset: float | None = None  # from the first frame to the offset's arrival
        self.identity_distance: float | None = None  # portrait to the person on camera, once measured
        self._closed = False
        self.result: Calibration | None = None

    def __call__(self, motion: MotionParams, face: np.ndarray | None, landmarks: np.ndarray | None) -> MotionParams:
        if self._first_frame_at is None:
            self._first_frame_at = time.monotonic()
        with self._lock:
            offset = self._offset
            if offset is not None:
                self._applied += 1
                fraction = min(1.0, self._applied / self._ramp) if self._ramp else 1.0
        if offset is not None:
            motion = apply_offset(motion, offset, fraction)
            return motion if self.tracking is None else self.tracking(motion, face, landmarks)
        if self.state == "collecting" and face is not None and landmarks is not None and bool(motion.present.all()):
            self._seen += 1
            if (self._seen - 1) % self._spacing == 0:
                self._kept.append((np.array(face, copy=True), motion, np.asarray(landmarks)))
                if len(self._kept) == self._frames_wanted:
                    self.state = "fitting"
                    if self._background:
                        threading.Thread(target=self._fit_in_background, name="keypoint calibration", daemon=True).start()
                    else:
                        self._fit()
        return motion

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {"state": self.state}
        if self.identity_distance is not None:
            # inf (no face found) as None: these stats go out as JSON
            out["identity_distance"] = round(self.identity_distance, 3) if np.isfinite(self.identity_distance) else None
        if self.seconds_to_offset is not None:
            out["seconds_to_offset"] = round(self.seconds_to_offset, 2)
        if self.tracking is not None:
            out["tracking"] = self.tracking.stats()
        if self.result is not None:
            out.update(loss_before=self.result.loss_before, loss_after=self.result.loss_after,
                       seconds=round(self.result.seconds, 2), mean_abs_offset=float(np.abs(self.result.offset).mean()))
        return out

    def _fit_in_background(self) -> None:
        parameter = next(iter(self._model.parameters()), None) if hasattr(self._model, "parameters") else None
        self._fit(in_process=parameter is not None and parameter.device.type == "cpu")  # a GPU fits in ~1 s: here

    def close(self) -> None:
        """Stop a fit still running in its child process (the source is closing); the motion stays as it is."""
        self._closed = True
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()

    def _in_child(self, job: CalibrationJob) -> CalibrationOutcome:
        """The job in a child process at the lowest CPU priority: on a machine whose cores also encode (and perhaps
        render) the call it takes only the cycles those leave, and it holds no lock of the sender's interpreter. Measured
        in `bench call` (sender and receiver on the same 2 cores, 60 s): on a thread of the sender at normal priority the
        fit cost the receiver a quarter of its rendered frames while it ran; niced but on a thread, the sender's packets
        still came late (p95 latency 223 -> 510 ms); the identity check alone on the sender's thread raised the first
        10 s's p95 to ~450 ms (``sender.calibration_job``).

        The child (``sender.calibration_worker``) is a fresh interpreter that lowers its own priority before it imports
        anything heavy, and gets the model as bytes (its config and a serialized copy of its weights), never the module
        itself: handing a torch module to a ``multiprocessing`` child moves its parameters into shared memory in place,
        under the frame thread that is reading them to encode (a call's motion went NaN once in ``bench call``)."""
        weights = io.BytesIO()
        torch.save(self._model.state_dict(), weights)  # reads the weights only, as the encoder does
        request = pickle.dumps({"threads": self.profile.threads, "config": self._model.config,
                                "weights": weights.getvalue(), "job": job})
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_REPO_ROOT),
                                                                                 os.environ.get("PYTHONPATH")])))
        process = subprocess.Popen([sys.executable, "-m", "sender.calibration_worker"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
        self._process = process
        if self._closed:  # closed before or while it started
            process.terminate()
        out, err = process.communicate(request)
        if process.returncode != 0 or not out:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"the fit's process ended without a result (exit code {process.returncode}) {tail[0]}")
        result = pickle.loads(out)  # from the child we started, on our own pipe
        if isinstance(result, Exception):
            raise result
        return result

    def _arrived(self) -> None:
        if self._first_frame_at is not None:
            self.seconds_to_offset = time.monotonic() - self._first_frame_at

    def _fit(self, in_process: bool = False) -> None:
        """The job (``sender.calibration_job``): in the idle child process on a CPU (``in_process``), else here (a
        GPU, ``bench rd``). A ``same_person`` given to the calibrator is asked here, before the job."""
        try:
            kept = self._cache.load(*self._cache_key) if self._cache is not None else None
            faces = [face for face, _, _ in self._kept]
            landmarks = [lm for _, _, lm in self._kept]
            distance = None if self._same_person is None else self._same_person(self._portrait, faces, landmarks)
            job = CalibrationJob(self._portrait, faces, [m for _, m, _ in self._kept], landmarks, kept,
                                 self.profile.steps, self.profile.learning_rate, distance)
            if distance is not None and not distance < SAME_PERSON_DISTANCE:
                outcome = CalibrationOutcome(distance)
            elif in_process:
                outcome = self._in_child(job)
            else:
                outcome = run_job(self._model, job)
        except Exception as exc:  # noqa: BLE001 - a failed fit leaves the call as it was, and says why
            self.state = f"skipped: {type(exc).__name__}: {exc}"
            logger.warning("keypoint calibration failed, sending motion as it is: %s", exc)
            return
        finally:
            self._kept.clear()
        self.identity_distance = outcome.distance
        if not outcome.same_person:
            self.state = f"skipped: the portrait is not the person on camera (identity distance {outcome.distance:.2f})"
            logger.info("keypoint calibration %s", self.state)
            return
        if outcome.checked is not None and outcome.fitted is None:  # the kept offset still helps
            self._apply(outcome.checked, "applied: kept from an earlier call")
            logger.info("keypoint calibration applied from an earlier call: render error %.4f -> %.4f on %d frames",
                        outcome.checked.loss_before, outcome.checked.loss_after, outcome.checked.frames)
            return
        if outcome.checked is not None:
            logger.info("keypoint calibration: the kept offset no longer helps (%.4f -> %.4f): fitted again",
                        outcome.checked.loss_before, outcome.checked.loss_after)
        result = outcome.fitted
        assert result is not None  # run_job fits whenever the person matches and no kept offset helped
        self.result = result
        if not result.improved:
            self.state = "skipped: the fit did not lower the render's error"
            logger.info("keypoint calibration %s (%.4f -> %.4f)", self.state, result.loss_before, result.loss_after)
            return
        self._apply(result, "applied")
        if self._cache is not None:
            try:
                self._cache.store(*self._cache_key, result.offset)
            except OSError as exc:
                logger.warning("keypoint calibration: could not keep the offset for the next call: %s", exc)
        logger.info("keypoint calibration applied: render error %.4f -> %.4f on %d frames, mean |offset| %.4f, %.1f s",
                    result.loss_before, result.loss_after, result.frames, float(np.abs(result.offset).mean()), result.seconds)

    def _apply(self, result: Calibration, state: str) -> None:
        self.result = result
        with self._lock:
            self._offset = result.offset
            self.state = state
            self._arrived()
