"""Inference wrappers: MotionEncoder (sender) and FrameSynthesizer (receiver).

They own the device, the precision (autocast: fp16 on CUDA, bf16 on CPUs with native bf16 kernels,
else fp32; see ``pick_precision``) and inference mode; the networks stay
free of I/O. One model can be shared by both (the benchmark does), or each loads its own.

    encoder = MotionEncoder()                      # shipped weights, else seeded random (warns)
    motion = encoder.encode(face_crop_rgb)         # (S, S, 3) uint8 -> MotionParams
    refine = encoder.landmark_refiner(reference_crop_rgb)
    motion = refine(motion, face_crop.landmarks)   # closer to the face mesh's motion (first call: the anchor)
    synth = FrameSynthesizer(cache_dir=Path("~/.cache/kpcall/references").expanduser())
    state = synth.prepare(reference_crop_rgb)      # once per reference (disk-cached)
    frame = synth.render(state, motion, view=ViewControl.parse("frontal"))  # (S, S, 3) uint8
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from codec.lru_files import LruFiles
from codec.model.eyelid_warp import eyelid_rows_present
from codec.model.face_model import FaceVid2VidModel, ReferenceFeatures
from codec.model.landmark_refinement import LandmarkRefiner
from codec.model.loading import ModelInfo, configure_cpu_threads, load_model_for_inference, pick_precision
from codec.model.view import ViewControl
from codec.motion import MotionParams, angles_to_rotation_torch, transform_keypoints_torch

log = logging.getLogger(__name__)

DEFAULT_STATE_CACHE_MAX_BYTES = 256 * 1024 * 1024  # ~90 prepared states of the shipped model (~2.9 MB each)


def _resolve(model: FaceVid2VidModel | str | Path | None, device: str | torch.device | None, preset: str | None,
             info: ModelInfo | None) -> tuple[FaceVid2VidModel, ModelInfo]:
    if isinstance(model, FaceVid2VidModel):
        if info is None:
            from codec.model.checkpoint import model_id_of
            from codec.model.loading import MODEL_VERSION

            c = model.config
            info = ModelInfo(model_id_of(model), MODEL_VERSION, c.name, c.image_size, c.num_keypoints, "in-memory", False)
        return model.eval(), info
    configure_cpu_threads()
    return load_model_for_inference(model, device=device, preset=preset)


def _to_tensor(image: np.ndarray, size: int, device: torch.device, what: str) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, size, size) float in [0, 1]; resized when needed."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise ValueError(f"{what} must be an (H, W, 3) uint8 RGB array, got {type(image).__name__} {shape}")
    if image.shape[0] != size or image.shape[1] != size:
        if max(image.shape[:2]) > 8192:
            raise ValueError(f"{what} is {image.shape[1]}x{image.shape[0]}: crop the face first (codec.face.crop)")
        interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interp)
    return torch.from_numpy(np.array(image, copy=True)).to(device).permute(2, 0, 1)[None].float().div_(255.0)


def _picture_side(picture: np.ndarray, trained: int, output: int) -> int:
    """The side at which G reads an enhancement picture: its own when square and in [trained, output], else trained."""
    shape = getattr(picture, "shape", ())
    if len(shape) == 3 and shape[0] == shape[1] and trained <= shape[0] <= output:
        return int(shape[0])
    return trained


def _motion_from_outputs(out: dict[str, torch.Tensor], index: int = 0) -> MotionParams:
    k = out["expression"].shape[1]
    return MotionParams(
        float(out["yaw"][index]), float(out["pitch"][index]), float(out["roll"][index]),
        out["translation"][index].float().cpu().numpy(), out["expression"][index].float().cpu().numpy(), np.ones(k, bool),
    )


class _Wrapper:
    def __init__(self, model: FaceVid2VidModel | str | Path | None = None, device: str | torch.device | None = None,
                 preset: str | None = None, info: ModelInfo | None = None, precision: str = "auto") -> None:
        self.model, self.info = _resolve(model, device, preset, info)
        self.device = next(self.model.parameters()).device
        self.precision = pick_precision(precision, self.device)

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def motion_model_id(self) -> str:
        """The id senders announce and receivers check (ModelInfo.motion_model_id)."""
        return self.info.motion_model_id

    @property
    def model_version(self) -> str:
        return self.info.model_version

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    @property
    def num_keypoints(self) -> int:
        return self.model.config.num_keypoints

    @property
    def is_trained(self) -> bool:
        return self.info.is_trained

    def _autocast(self) -> AbstractContextManager[object]:
        if self.precision == "fp16":
            return torch.autocast(self.device.type, dtype=torch.float16)
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()


def encoder_precision(precision: str, device: torch.device) -> str:
    """The motion encoder's precision: 'auto' is fp32 on every device (CPU and CUDA alike): the encoder is cheap
    (~4 ms on a CPU) and bf16/fp16 rounding would add noise to the transmitted motion; an explicit choice is
    checked as for the renderer (``pick_precision``)."""
    return "fp32" if precision == "auto" else pick_precision(precision, device)


class MotionEncoder(_Wrapper):
    """Sender side: a face crop -> this frame's MotionParams (H of the paper), in fp32 unless told otherwise
    (``encoder_precision``)."""

    def __init__(self, model: FaceVid2VidModel | str | Path | None = None, device: str | torch.device | None = None,
                 preset: str | None = None, info: ModelInfo | None = None, precision: str = "auto") -> None:
        super().__init__(model, device, preset, info, precision)
        self.precision = encoder_precision(precision, self.device)

    def encode(self, face_rgb: np.ndarray) -> MotionParams:
        """face_rgb: (S, S, 3) uint8 crop from codec.face.crop (other sizes are resized)."""
        image = _to_tensor(face_rgb, self.image_size, self.device, "face crop")
        with torch.inference_mode(), self._autocast():
            out = self.model.estimate_motion(image)
        return _motion_from_outputs(out)

    def canonical_keypoints(self, reference_rgb: np.ndarray) -> np.ndarray:
        """A portrait's canonical keypoints x_c (L of the paper), (K, 3) float32."""
        image = _to_tensor(reference_rgb, self.image_size, self.device, "reference image")
        with torch.inference_mode(), self._autocast():
            kp = self.model.canonical_keypoints(image)
        return kp[0].float().cpu().numpy()

    def landmark_refiner(self, reference_rgb: np.ndarray) -> LandmarkRefiner:
        """The sender's refinement of this model's motion towards the face mesh's (a no-op for a model not
        trained for it, ``ModelConfig.landmark_refinement`` = 0), with the canonical keypoints of the portrait
        the receiver renders."""
        return LandmarkRefiner(self.canonical_keypoints(reference_rgb), self.model.config.landmark_refinement, self.image_size)


@dataclass(frozen=True, eq=False)
class ReferenceState:
    """What the receiver keeps per reference: the model's reference features, the reference's own
    motion (for relative retargeting), its image hash and the model id it was computed with."""

    features: ReferenceFeatures
    motion: MotionParams
    image_hash: str
    model_id: str


def image_hash(image: np.ndarray) -> str:
    """sha256 over the shape and the pixels of an (H, W, 3) uint8 image."""
    h = hashlib.sha256(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


class FrameSynthesizer(_Wrapper):
    """Receiver side: prepare a reference once, then render one frame per MotionParams."""

    def __init__(self, model: FaceVid2VidModel | str | Path | None = None, device: str | torch.device | None = None,
                 cache_dir: Path | None = None, preset: str | None = None, info: ModelInfo | None = None,
                 precision: str = "auto", cache_max_bytes: int = DEFAULT_STATE_CACHE_MAX_BYTES) -> None:
        super().__init__(model, device, preset, info, precision)
        self.cache = ReferenceCache(cache_dir, cache_max_bytes) if cache_dir is not None else None

    def prepare(self, reference_rgb: np.ndarray) -> ReferenceState:
        """reference_rgb: (S, S, 3) uint8 face crop -> ReferenceState (from the disk cache when there)."""
        image = _to_tensor(reference_rgb, self.image_size, self.device, "reference image")
        digest = image_hash(reference_rgb)
        if self.cache is not None:
            cached = self.cache.load(digest, self.model_id, self.device)
            if cached is not None:
                return cached
        with torch.inference_mode(), self._autocast():
            features = self.model.encode_reference(image)
        features = ReferenceFeatures(**{k: _detach(v) for k, v in features.__dict__.items()})
        state = ReferenceState(features, _motion_from_outputs(features.motion), digest, self.model_id)
        if self.cache is not None:
            self.cache.save(state)
        return state

    @property
    def enhancement_size(self) -> int:
        """Side of the enhancement picture the model reads (0: motion only)."""
        return int(self.model.config.enhancement_size)

    def render(self, state: ReferenceState, motion: MotionParams, view: ViewControl | None = None,
               enhancement: np.ndarray | None = None) -> np.ndarray:
        """-> (S, S, 3) uint8 RGB frame. Keypoints whose δ is absent (not sent at a low K) keep the reference's own
        δ: those parts hold the reference's expression and follow the head pose (δ = 0 instead would pull them to
        the canonical face: measured on 120 validation pairs at K = 0, 4.5 dB lower whole-frame PSNR).

        enhancement: (P, P, 3) uint8, the enhancement layer's decoded picture of this frame, for a model with the
        branch (``enhancement_size`` E); None renders from motion alone (a missing, late or lost layer). A square
        picture from E up to the output's side is read at its own size (the branch compares it with G's output
        downscaled to P: a larger picture corrects finer detail); any other is resized to E."""
        if state.model_id != self.model_id:
            raise ValueError(f"reference state was prepared with model {state.model_id}, this synthesizer runs {self.model_id}")
        if motion.num_keypoints != self.num_keypoints:
            raise ValueError(f"motion has K = {motion.num_keypoints}, the model uses K = {self.num_keypoints}")
        if view is not None:
            motion = view.apply(motion)
        dev = self.device
        angles = torch.tensor([[motion.yaw], [motion.pitch], [motion.roll]], dtype=torch.float32, device=dev)
        rotation = angles_to_rotation_torch(angles[0], angles[1], angles[2])  # (1, 3, 3)
        translation = torch.tensor(motion.translation, device=dev)[None]  # (1, 3)
        expression = np.where(motion.present[:, None], motion.expression, state.motion.expression)  # (K, 3)
        expression = torch.tensor(expression, dtype=torch.float32, device=dev)[None]  # (1, K, 3)
        extra = {}
        if enhancement is not None:
            size = self.enhancement_size
            if not size:
                raise ValueError(f"model {self.model_id} has no enhancement branch: render without the picture")
            side = _picture_side(enhancement, size, self.model.config.image_size)
            extra["enhancement"] = _to_tensor(enhancement, side, dev, "enhancement picture")  # (1, 3, P, P)
        if self.model.config.eyelid_warp > 0 and not eyelid_rows_present(motion.present):
            extra["eyelids_present"] = torch.zeros(1, device=dev)  # the warp would read the reference's δ under a new pose
        with torch.inference_mode(), self._autocast():
            kp_drv = transform_keypoints_torch(state.features.kp_canonical, rotation, translation, expression)
            out = self.model.synthesize(state.features, kp_drv, rotation, **extra)
        image = out["image"][0].float().clamp(0, 1).mul(255).round().byte()  # (3, S, S)
        return image.permute(1, 2, 0).cpu().numpy()


def _detach(value: object) -> object:
    """A reference feature kept (and cached) in fp32 whatever precision computed it."""
    if isinstance(value, torch.Tensor):
        return value.detach().float().clone()
    if isinstance(value, dict):
        return {k: v.detach().float().clone() for k, v in value.items()}
    return value


class ReferenceCache:
    """ReferenceStates on disk (safetensors), keyed by image hash + model id; corrupt entries are ignored.
    At most ``max_bytes`` in all: after each write the least recently prepared or loaded states go first
    (``codec.lru_files``), so a peer sending ever new portraits cannot fill the disk."""

    SUFFIX = ".safetensors"

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_STATE_CACHE_MAX_BYTES) -> None:
        self.directory = Path(directory).expanduser()
        self.files = LruFiles(self.directory, self.SUFFIX, max_bytes, "prepared-state cache")
        self._lock = threading.Lock()

    def path(self, digest: str, model_id: str) -> Path:
        return self.directory / f"{digest[:32]}-{model_id}{self.SUFFIX}"

    def save(self, state: ReferenceState) -> None:
        tensors = {k: v.contiguous().cpu() for k, v in state.features.__dict__.items() if isinstance(v, torch.Tensor)}
        tensors.update({f"motion.{k}": v.contiguous().cpu() for k, v in state.features.motion.items()})
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if size > self.files.max_bytes:
            log.warning("not caching a %d-byte prepared state: the cache holds at most %d bytes", size, self.files.max_bytes)
            return
        meta = {"image_hash": state.image_hash, "model_id": state.model_id}
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                target = self.path(state.image_hash, state.model_id)
                tmp = target.with_name(target.name + ".tmp")
                save_file(tensors, str(tmp), metadata=meta)
                tmp.replace(target)
                self.files.evict(keep=target)
            except OSError as exc:
                log.warning("could not write the reference cache in %s: %s", self.directory, exc)

    def load(self, digest: str, model_id: str, device: torch.device) -> ReferenceState | None:
        path = self.path(digest, model_id)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path), device=str(device))
            motion = {k[len("motion."):]: v for k, v in tensors.items() if k.startswith("motion.")}
            fields = {k: v for k, v in tensors.items() if not k.startswith("motion.")}
            features = ReferenceFeatures(**fields, motion=motion)
        except (SafetensorError, OSError, TypeError, json.JSONDecodeError) as exc:
            log.warning("ignoring corrupt reference cache entry %s: %s", path, exc)
            return None
        try:
            self.files.touch(path)  # recently used: evicted last
        except OSError:
            pass  # evicted meanwhile: the state in hand is still good
        return ReferenceState(features, _motion_from_outputs(motion), digest, model_id)
