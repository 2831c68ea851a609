"""Which weights the wrappers use: a given file, else the shipped trained weights, else random init.

Random initialisation is seeded, so a sender and a receiver without trained weights still build the
same model (same model id) and can talk to each other; ``is_trained`` says which case applies.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from codec.model import checkpoint
from codec.model.config import ModelConfig
from codec.model.face_model import FaceVid2VidModel

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_PRESET = "cpu"
MODEL_VERSION = "1"  # bumped when the meaning of the transmitted parameters changes


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    model_version: str
    preset: str
    image_size: int
    num_keypoints: int
    weights: str  # path, or "random-init (seed 0)"
    is_trained: bool
    motion_model_id: str = ""  # the model whose motion this one reads and makes (its L and H): the id a sender
    # announces and a receiver checks. A distilled receiver (codec.train.distill) keeps its teacher's L and H, so its
    # motion model is the teacher's; "" (a model trained whole): model_id.

    def __post_init__(self) -> None:
        if not self.motion_model_id:
            object.__setattr__(self, "motion_model_id", self.model_id)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def default_weights_path(preset: str = DEFAULT_PRESET) -> Path:
    return WEIGHTS_DIR / f"{preset}.safetensors"


def cpu_supports_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX); without them bf16 is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def pick_precision(precision: str, device: torch.device) -> str:
    """'auto': fp16 autocast on CUDA, bf16 on a CPU with native bf16 kernels (render 1.4x faster measured on
    a Zen 4 core), fp32 otherwise. An explicit choice the device cannot run well raises ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_supports_bf16():
        raise ValueError("bf16 on this CPU has no native kernels and would be slower than fp32: use fp32")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 is for CUDA; on a CPU use bf16 (where supported) or fp32")
    return precision


DEVICE_HELP = "auto (CUDA when present, else CPU), cpu, cuda or cuda:N"


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """None or 'auto': CUDA when available, else CPU. An explicit CUDA device is checked here, so that asking for
    one that torch cannot use raises ValueError saying why and what to do (not torch's error at the first
    ``.to``); other devices are taken as given."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r} is not a torch device: use {DEVICE_HELP}") from None
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        why = ("this torch is a CPU-only build: install the CUDA wheel (README, 'GPU')" if torch.version.cuda is None
               else "torch finds no usable NVIDIA GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)")
        raise ValueError(f"device {device}: CUDA is not available: {why}; or use --device cpu (or auto)")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return dev


def configure_cpu_threads() -> None:
    """Use the machine's cores (at most 8) for intra-op parallelism unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))


def load_model_for_inference(
    weights: str | Path | None = None, device: str | torch.device | None = None, preset: str | None = None
) -> tuple[FaceVid2VidModel, ModelInfo]:
    """-> (model in eval mode on its device, ModelInfo). ``weights`` None: the shipped weights of
    ``preset`` (default "cpu") if present, else seeded random weights with a warning."""
    dev = pick_device(device)
    preset = preset or DEFAULT_PRESET
    path = Path(weights) if weights is not None else default_weights_path(preset)
    if weights is not None or path.is_file():
        model, model_id = checkpoint.load(path, device=dev)
        motion_model_id = checkpoint.read_metadata(path).get("motion_model_id", "")
        info = ModelInfo(model_id, MODEL_VERSION, model.config.name, model.config.image_size, model.config.num_keypoints, str(path), True,
                         motion_model_id)
        return model, info
    log.warning("no trained weights at %s: using RANDOM weights (the picture will not look like a face)", path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = FaceVid2VidModel(ModelConfig.preset(preset))
    model = model.to(dev).eval()
    info = ModelInfo(checkpoint.model_id_of(model), MODEL_VERSION, preset, model.config.image_size,
                     model.config.num_keypoints, "random-init (seed 0)", False)
    return model, info
