"""Our codec in the benchmark: MotionEncoder -> packetizer -> data channel -> depacketizer -> FrameSynthesizer.

Operating points: K (how many keypoints' δ are sent; 0 = head pose only), the quantizer preset and
frames per packet. Which K: the sender's own causal choice (``bench.keypoint_choice`` replays
``sender.controller`` over the clip): the keypoints whose δ strays most from the reference portrait's own δ
so far, by a running mean of ||δ_k − δ_ref,k||² (the receiver keeps δ_ref for keypoints not sent, so theirs
cost most when dropped), revised as the call goes; never ranked over the whole clip.

Every point really runs the sender and receiver code: the reference portrait crosses as its
reference message (``bench.codecs.reference``), the motion as real packets
(``bench.codecs.motion_stream``), and the receiver renders from what it decoded.

What is computed once and shared between operating points (identical inputs give identical
outputs, so this changes no number):
- the MotionEncoder's output per frame (it does not depend on K, preset or packing); its time is
  added to every point's encode time;
- the ReferenceState of each clip's decoded portrait (``prepare``), timed separately;
- a rendered frame per distinct decoded motion and enhancement picture (two points whose decoded motion
  is identical, e.g. the same K and preset at another frames-per-packet, reuse the render and its
  measured time; ``bench.codecs.ours_enhanced`` renders with the enhancement layer's pictures).

Timing: encode = MotionEncoder.encode + the sender's motion smoothing + packetizer push (quantize, code), every frame; decode =
depacketize + render (+ resize to the crop size if the model renders at another size), over the
frames rendered (only the scored ones are: every frame is depacketized, but rendering the others
would change no number but the time spent). The first frame (the reference) is the warm-up of both
networks and is not timed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from bench.codecs.base import BenchClip, Codec, StreamInfo
from bench.codecs.motion_transport import motion_wire_bytes, riding_wire_bytes
from bench.codecs.motion_stream import StreamResult, stream_motion
from bench.codecs.reference import MODEL_ID, MODEL_VERSION, SentReference, send_reference
from codec.motion import MotionParams
from codec.quantize import get_preset

logger = logging.getLogger(__name__)


class MotionEncoderLike(Protocol):
    def encode(self, face_rgb: np.ndarray) -> MotionParams: ...

    def landmark_refiner(self, reference_rgb: np.ndarray) -> Any: ...


class FrameSynthesizerLike(Protocol):
    @property
    def num_keypoints(self) -> int: ...

    @property
    def enhancement_size(self) -> int: ...

    def prepare(self, ref_rgb: np.ndarray) -> Any: ...

    def render(self, state: Any, motion: MotionParams, *, enhancement: np.ndarray | None = None) -> np.ndarray: ...


def _face_mesh() -> Any:
    """A tracking face mesh over a clip's crops: frame -> (478, 3) landmarks in crop pixels, or None."""
    from codec.face.landmarks import LandmarkDetector

    detector = LandmarkDetector(static_mode=False)

    def landmarks(frame: np.ndarray) -> np.ndarray | None:
        faces = detector.detect(frame)
        return faces[0].points if faces else None

    return landmarks


def motion_digest(motion: MotionParams) -> bytes:
    """A content hash of decoded motion: equal digests render equal frames."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.array([motion.yaw, motion.pitch, motion.roll], np.float64).tobytes())
    for array in (motion.translation, motion.expression, motion.present):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.digest()


def picture_digest(picture: np.ndarray | None) -> bytes:
    """A content hash of an enhancement picture (b"" for none): with the motion digest, it keys a render."""
    if picture is None:
        return b""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(picture.shape).encode())
    h.update(np.ascontiguousarray(picture).tobytes())
    return h.digest()


@dataclass(frozen=True, eq=False)
class _Encoded:
    motions: tuple[MotionParams, ...]  # frames 1..N-1
    encode_ms: np.ndarray  # (N-1,)
    expression_baseline: np.ndarray  # (K, 3) the decoded portrait's own δ, as the sender computes it


@dataclass(frozen=True, eq=False)
class _Reference:
    sent: SentReference
    state: Any
    prepare_ms: float


class OursFactory:
    """Holds the model (loaded once) and the caches shared by all of our operating points."""

    def __init__(
        self,
        encoder: MotionEncoderLike,
        synthesizer: FrameSynthesizerLike,
        description: dict[str, Any],
        calibration: Any = None,
    ) -> None:
        self.encoder = encoder
        self.calibration = calibration  # the sender's keypoint calibration, inline: a sender.calibration.FitProfile or None (off)
        self.synthesizer = synthesizer
        self.description = dict(description)
        self._encoded: dict[str, _Encoded] = {}
        self.calibrations: dict[str, dict[str, object]] = {}  # clip id -> the calibration's stats
        self._references: dict[str, _Reference] = {}
        self._renders: dict[tuple[str, bytes, bytes], tuple[np.ndarray, float]] = {}
        self._warmed_up: set[bool] = set()  # render paths warmed up: with an enhancement picture or without

    @classmethod
    def load(cls, weights: str | None = None, preset: str | None = None, calibration: bool = True,
             light_calibration: bool = False) -> OursFactory:
        """The project's model: ``weights`` if given, else the shipped trained weights, else random init.

        One model is shared by the encoder and the synthesizer (the same weights a sender and a
        receiver would load). ``calibration``: the sender's keypoint calibration, as a sender runs it (its full fit, or
        with ``light_calibration`` the light one a CPU under 4 cores runs).
        """
        from codec.model.loading import configure_cpu_threads, load_model_for_inference
        from codec.model.wrappers import FrameSynthesizer, MotionEncoder

        configure_cpu_threads()
        model, info = load_model_for_inference(weights, preset=preset)
        encoder = MotionEncoder(model, info=info)
        synthesizer = FrameSynthesizer(model, info=info)
        from sender.calibration import FULL, LIGHT

        profile = (LIGHT if light_calibration else FULL) if calibration else None
        return cls(encoder, synthesizer, info.as_dict(), calibration=profile)

    @property
    def model_id(self) -> str:
        return str(self.description.get("model_id", MODEL_ID))

    @property
    def motion_model_id(self) -> str:
        """The id a sender announces (its reference message names it): a distilled model's teacher's."""
        return str(self.description.get("motion_model_id") or self.model_id)

    @property
    def model_version(self) -> str:
        return str(self.description.get("model_version", MODEL_VERSION))

    @property
    def num_keypoints(self) -> int:
        """K of the model."""
        return int(self.synthesizer.num_keypoints)

    @property
    def enhancement_size(self) -> int:
        """E: side of the enhancement picture the model reads (0: no enhancement branch, motion only)."""
        return int(self.synthesizer.enhancement_size)

    def describe(self) -> dict[str, Any]:
        out = dict(self.description)
        if self._references:
            out["reference_prepare_ms"] = float(np.mean([r.prepare_ms for r in self._references.values()]))
            out["reference_payload_bytes"] = float(np.mean([r.sent.payload_bytes for r in self._references.values()]))
        out["keypoint_choice"] = "the sender's causal choice (bench.keypoint_choice), revised as each clip goes"
        out["enhancement_size"] = self.enhancement_size
        profile = None if self.calibration is None else vars(self.calibration)
        out["keypoint_calibration"] = {"on": profile is not None, "profile": profile, "clips": dict(self.calibrations)}
        return out

    def sweep(
        self, keypoints: Sequence[int], presets: Sequence[str], frames_per_packet: Sequence[int]
    ) -> list[OursCodec]:
        """One codec per (K, preset, frames per packet), K outermost."""
        return [OursCodec(self, k, p, f) for k in keypoints for p in presets for f in frames_per_packet]

    # -- shared, cached work -------------------------------------------------------------------------
    def encoded(self, clip: BenchClip) -> _Encoded:
        if clip.clip_id not in self._encoded:
            from sender.motion_filter import MotionSmoother

            # as the sender does: refinement, calibration, then smoothing
            refine = self.encoder.landmark_refiner(clip.frames[0])
            calibrate = None
            if self.calibration is not None and hasattr(self.encoder, "model"):
                from sender.calibration import KeypointCalibrator

                # inline: the fit runs when its frames are in, its offset ramps in from the next frame (a live sender
                # fits on a background thread, so its offset arrives that much later)
                calibrate = KeypointCalibrator(self.encoder.model, self.reference(clip).sent.image, self.calibration,
                                               background=False)
            face_mesh = _face_mesh() if refine.active or calibrate is not None else None
            refine(self.encoder.encode(clip.frames[0]), face_mesh(clip.frames[0]) if face_mesh else None)  # warm-up, anchor
            smoother = MotionSmoother(clip.fps)  # sender/motion_filter.py
            motions, times = [], np.zeros(clip.num_driving)
            for i in range(clip.num_driving):
                landmarks = face_mesh(clip.frames[i + 1]) if face_mesh else None  # the sender's crop has them already
                start = time.perf_counter()
                motion = refine(self.encoder.encode(clip.frames[i + 1]), landmarks)
                if calibrate is not None:
                    before, fitting = calibrate.state, time.perf_counter()
                    motion = calibrate(motion, clip.frames[i + 1], landmarks)
                    if before == "collecting" and calibrate.state != "collecting":  # the one-off fit ran: not per frame
                        start += time.perf_counter() - fitting
                motions.append(smoother(motion))
                times[i] = (time.perf_counter() - start) * 1e3
            if calibrate is not None:
                self.calibrations[clip.clip_id] = calibrate.stats()
            baseline = self.encoder.encode(self.reference(clip).sent.image).expression  # as the sender: the decoded portrait
            self._encoded[clip.clip_id] = _Encoded(tuple(motions), times, np.asarray(baseline, np.float64))
        return self._encoded[clip.clip_id]

    def reference(self, clip: BenchClip) -> _Reference:
        if clip.clip_id not in self._references:
            sent = send_reference(clip.frames[0], self.motion_model_id, self.model_version)
            self.synthesizer.prepare(sent.image)  # warm-up
            start = time.perf_counter()
            state = self.synthesizer.prepare(sent.image)
            prepare_ms = (time.perf_counter() - start) * 1e3
            self._references[clip.clip_id] = _Reference(sent, state, prepare_ms)
        return self._references[clip.clip_id]

    def render(self, clip: BenchClip, reference: _Reference, motion: MotionParams,
               enhancement: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """-> (frame (S, S, 3) uint8, render ms); enhancement: (E, E, 3) uint8 decoded picture, or None (motion only)."""
        key = (clip.clip_id, motion_digest(motion), picture_digest(enhancement))
        if key not in self._renders:
            extra = {} if enhancement is None else {"enhancement": enhancement}
            if (enhancement is not None) not in self._warmed_up:
                self.synthesizer.render(reference.state, motion, **extra)  # warm-up (of this path)
                self._warmed_up.add(enhancement is not None)
            start = time.perf_counter()
            image = np.asarray(self.synthesizer.render(reference.state, motion, **extra))
            if image.shape[:2] != (clip.size, clip.size):
                image = cv2.resize(image, (clip.size, clip.size), interpolation=cv2.INTER_LINEAR)
            elapsed = (time.perf_counter() - start) * 1e3
            if image.dtype != np.uint8 or image.shape != (clip.size, clip.size, 3):
                raise RuntimeError(f"the synthesizer returned {image.dtype} {image.shape}; expected uint8 (S, S, 3)")
            self._renders[key] = (image, elapsed)
        return self._renders[key]


class OursCodec(Codec):
    """Our codec at one (K, quantizer preset, frames per packet)."""

    codec = "ours"

    def __init__(self, factory: OursFactory, keypoints: int, preset: str, frames_per_packet: int) -> None:
        if keypoints < 0:
            raise ValueError(f"K must be ≥ 0, got {keypoints}")
        self.factory = factory
        self.keypoints = keypoints
        self.preset = get_preset(preset)
        self.frames_per_packet = frames_per_packet
        self.setting = f"K={keypoints} {self.preset.name} {frames_per_packet}f/packet"

    def params(self) -> dict[str, object]:
        return {
            "keypoints": self.keypoints,
            "preset": self.preset.name,
            "preset_id": self.preset.preset_id,
            "frames_per_packet": self.frames_per_packet,
        }

    def stream(self, clip: BenchClip) -> StreamResult:
        """The clip's motion (frames 1..N-1) through packetizer -> channel -> depacketizer at this point."""
        encoded = self.factory.encoded(clip)
        model_k = encoded.motions[0].num_keypoints
        return stream_motion(
            encoded.motions,
            clip.fps,
            self.preset.preset_id,
            self.frames_per_packet,
            None if self.keypoints >= model_k else self.keypoints,
            encoded.expression_baseline,
        )

    def run(self, clip: BenchClip, shown: np.ndarray | None = None) -> tuple[StreamInfo, np.ndarray]:
        idx = self.shown_indices(clip, shown)
        encoded = self.factory.encoded(clip)
        reference = self.factory.reference(clip)
        stream = self.stream(clip)
        reconstruction = np.empty((idx.size,) + clip.frames.shape[1:], np.uint8)
        decode_ms = np.array(stream.unpack_ms, dtype=np.float64)[idx]
        for j, i in enumerate(idx):
            image, render_ms = self.factory.render(clip, reference, stream.decoded[i])
            reconstruction[j] = image
            decode_ms[j] += render_ms
        info = StreamInfo(
            start_payload_bytes=reference.sent.payload_bytes,
            start_wire_bytes=reference.sent.wire_bytes,
            payload_bytes=sum(stream.packets),
            wire_bytes=sum(motion_wire_bytes(size) for size in stream.packets),
            riding_wire_bytes=sum(riding_wire_bytes(size) for size in stream.packets),
            packets=len(stream.packets),
            encode_ms=encoded.encode_ms + stream.pack_ms,
            decode_ms=decode_ms,
        )
        return info, reconstruction
