"""The sender's keypoint calibration in a call: a few frames of its first seconds, one fit, an offset on every later δ.

    calibrator = KeypointCalibrator(encoder.model, portrait)
    motion = calibrator(motion, face, landmarks)   # per frame, after the landmark refinement and before smoothing

Every ``spacing``-th frame with a face (and its landmarks) is kept until ``frames`` are; then the fit
(``codec.model.keypoint_calibration``) runs once on a background thread (or inline with ``background=False``, as
``bench rd`` runs it) and its offset is blended in over ``ramp`` frames, so the picture does not jump. Before fitting,
the portrait must show the person in front of the camera: dlib's identity distance between the portrait and the kept
frames under ``SAME_PERSON_DISTANCE`` (a painting, a cartoon or someone else's photo is driven as before). A fit that
does not lower G's error on its own frames is dropped. ``state`` says where it is (``stats``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from codec.face.identity import SAME_PERSON_DISTANCE, IdentityEmbedder, identity_distance
from codec.face.regions import face_hull_mask
from codec.model.keypoint_calibration import Calibration, apply_offset, calibrate_keypoints
from codec.motion import MotionParams

logger = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
MIN_CPU_CORES = 4  # "auto" fits on a CPU only with this many cores (see ``calibration_wanted``)
FRAMES = 8
SPACING = 3  # every 3rd face frame: 8 frames over the first ~1 s at 25 fps
RAMP = 12  # frames over which the offset is blended in


def calibration_wanted(mode: str, device_type: str, cpu_cores: int | None = None) -> bool:
    """Whether a sender calibrates: ``on``/``off`` as asked; ``auto`` when its model runs on a GPU (the fit takes about
    a second) or the CPU has at least ``MIN_CPU_CORES`` cores. On 2 cores shared with the call's rendering (`bench call`,
    60 s, sender and receiver on one 2-core machine) the fit, even in a niced child process, had not finished after
    60 s and the call's p95 latency went from 223 to 308 ms (concealed frames 8-14 -> 67): not worth it there by
    default."""
    if mode not in MODES:
        raise ValueError(f"--calibration must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    if cpu_cores is None:
        cpu_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return device_type != "cpu" or cpu_cores >= MIN_CPU_CORES


def make_calibrator(mode: str, encoder: Any, portrait: np.ndarray) -> KeypointCalibrator | None:
    """The sender's calibrator for ``encoder`` (a ``MotionEncoder``: its model and device) and the portrait the
    receiver decodes, or None where ``mode`` (``calibration_wanted``) or an encoder without a model says no."""
    if not hasattr(encoder, "model"):
        return None
    device_type = str(getattr(getattr(encoder, "device", None), "type", "cpu"))
    return KeypointCalibrator(encoder.model, portrait) if calibration_wanted(mode, device_type) else None


class KeypointCalibrator:
    """Per-frame hook of the sender's motion (see the module docstring); thread-safe between the frame thread and the
    fit's thread."""

    def __init__(self, model: Any, portrait: np.ndarray, frames: int = FRAMES, spacing: int = SPACING, ramp: int = RAMP,
                 background: bool = True,
                 same_person: Callable[[np.ndarray, list[np.ndarray], list[np.ndarray]], float] | None = None) -> None:
        if frames < 1 or spacing < 1 or ramp < 0:
            raise ValueError(f"calibration needs frames ≥ 1, spacing ≥ 1 and ramp ≥ 0, got {frames}, {spacing}, {ramp}")
        self._model = model
        self._portrait = np.ascontiguousarray(portrait)
        self._frames_wanted, self._spacing, self._ramp = frames, spacing, ramp
        self._background = background
        self._same_person = same_person or _identity_distance
        self._seen = 0
        self._kept: list[tuple[np.ndarray, MotionParams, np.ndarray]] = []  # (face, motion, landmarks)
        self._lock = threading.Lock()
        self._offset: np.ndarray | None = None
        self._applied = 0  # frames since the offset arrived (for the ramp)
        self.state = "collecting"  # collecting -> fitting -> applied | skipped: <reason>
        self._process: Any = None  # the fit's child process, while it runs
        self._closed = False
        self.result: Calibration | None = None

    def __call__(self, motion: MotionParams, face: np.ndarray | None, landmarks: np.ndarray | None) -> MotionParams:
        with self._lock:
            offset = self._offset
            if offset is not None:
                self._applied += 1
                fraction = min(1.0, self._applied / self._ramp) if self._ramp else 1.0
        if offset is not None:
            return apply_offset(motion, offset, fraction)
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
        if process is not None and process.is_alive():
            process.terminate()

    def _fit_in_process(self, faces: list[np.ndarray], motions: list[MotionParams], masks: list[np.ndarray]) -> Calibration:
        """The fit in a spawned child process at the lowest CPU priority: on a machine whose cores also encode (and
        perhaps render) the call it takes only the cycles those leave, and it holds no lock of the sender's
        interpreter. Measured in `bench call` (sender and receiver on the same 2 cores, 60 s): on a thread of the
        sender at normal priority it cost the receiver a quarter of its rendered frames while it ran; niced but on a
        thread, the sender's packets still came late (p95 latency 223 -> 510 ms)."""
        context = multiprocessing.get_context("spawn")  # no fork of a process with running threads
        receiving, sending = context.Pipe(duplex=False)
        process = context.Process(target=_fit_child, args=(sending, self._model, self._portrait, faces, motions, masks),
                                  name="keypoint calibration", daemon=True)
        if self._closed:
            raise RuntimeError("the source closed before the fit started")
        process.start()
        self._process = process
        sending.close()
        try:
            result = receiving.recv()  # EOFError when the child died (closed, killed, out of memory)
        except EOFError:
            raise RuntimeError(f"the fit's process ended without a result (exit code {process.exitcode})") from None
        finally:
            receiving.close()
            process.join(timeout=10)
        if isinstance(result, Exception):
            raise result
        return result

    def _fit(self, in_process: bool = False) -> None:
        faces = [face for face, _, _ in self._kept]
        landmarks = [lm for _, _, lm in self._kept]
        try:
            distance = self._same_person(self._portrait, faces, landmarks)
            if not distance < SAME_PERSON_DISTANCE:
                self.state = f"skipped: the portrait is not the person on camera (identity distance {distance:.2f})"
                logger.info("keypoint calibration %s", self.state)
                return
            size = faces[0].shape[0]
            masks = [face_hull_mask(lm[:, :2], size) for lm in landmarks]
            motions = [m for _, m, _ in self._kept]
            if in_process:
                result = self._fit_in_process(faces, motions, masks)
            else:
                result = calibrate_keypoints(self._model, self._portrait, faces, motions, masks)
        except Exception as exc:  # noqa: BLE001 - a failed fit leaves the call as it was, and says why
            self.state = f"skipped: {type(exc).__name__}: {exc}"
            logger.warning("keypoint calibration failed, sending motion as it is: %s", exc)
            return
        finally:
            self._kept.clear()
        self.result = result
        if not result.improved:
            self.state = "skipped: the fit did not lower the render's error"
            logger.info("keypoint calibration %s (%.4f -> %.4f)", self.state, result.loss_before, result.loss_after)
            return
        with self._lock:
            self._offset = result.offset
            self.state = "applied"
        logger.info("keypoint calibration applied: render error %.4f -> %.4f on %d frames, mean |offset| %.4f, %.1f s",
                    result.loss_before, result.loss_after, result.frames, float(np.abs(result.offset).mean()), result.seconds)


def _fit_child(connection: Any, *args: Any) -> None:
    """The child process: lowest CPU priority, dies with the thread that started it, sends back the fit or its error."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(19)
    with contextlib.suppress(OSError, AttributeError):  # Linux: SIGTERM when the parent goes, however it goes
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    try:
        connection.send(calibrate_keypoints(*args))
    except Exception as exc:  # noqa: BLE001 - reported to the sender, which logs it and sends motion as it is
        connection.send(RuntimeError(f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()


def _identity_distance(portrait: np.ndarray, faces: list[np.ndarray], landmarks: list[np.ndarray]) -> float:
    """dlib's distance between the portrait and the median descriptor of three kept frames (inf: no face found)."""
    embedder = IdentityEmbedder(central_fallback=True)
    reference = embedder.describe(portrait)
    picks = np.linspace(0, len(faces) - 1, min(3, len(faces))).astype(int)
    described = [embedder.describe(faces[i], landmarks=landmarks[i]) for i in picks]
    found = [d for d in described if d is not None]
    if reference is None or not found:
        return float("inf")
    return identity_distance(reference, np.median(np.stack(found), axis=0))
