"""Checkpoints: safetensors files with the ModelConfig and a model id in their metadata (never pickle).

Metadata keys: format = "kpcall-model", format_version, config (JSON of ModelConfig), model_id
("<preset>-<first 12 hex of the sha256 of the weights>"; the reference message carries it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from codec.model.config import ModelConfig
from codec.model.face_model import FaceVid2VidModel

FORMAT = "kpcall-model"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not match what was asked for."""


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().to(torch.float16).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def model_id_of(model: FaceVid2VidModel) -> str:
    return f"{model.config.name}-{weights_digest(model.state_dict())[:12]}"


def save(model: FaceVid2VidModel, path: Path, metadata: dict[str, str] | None = None, half: bool = False) -> str:
    """Write the model's weights (fp16 when ``half``) to ``path``; returns the model id."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    model_id = f"{model.config.name}-{weights_digest(state)[:12]}"
    meta = {**(metadata or {}), "format": FORMAT, "format_version": FORMAT_VERSION,
            "config": json.dumps(model.config.to_dict()), "model_id": model_id}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return model_id


def read_metadata(path: Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a kpcall model checkpoint (format={meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {meta.get('format_version')!r}; this code reads {FORMAT_VERSION!r}")
    return meta


def load(path: Path, expected_preset: str | None = None, device: str | torch.device = "cpu") -> tuple[FaceVid2VidModel, str]:
    """Build the model described in the checkpoint and load its weights -> (model in eval mode, model id)."""
    meta = read_metadata(path)
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has an unreadable model config: {exc}") from exc
    if expected_preset is not None and config.name != expected_preset:
        raise CheckpointError(f"{path} holds preset {config.name!r}, not the requested {expected_preset!r}")
    model = FaceVid2VidModel(config)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: {exc}") from exc
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match preset {config.name!r}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in state.items():
        if tensor.shape != own[name].shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(own[name].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model.to(device).eval(), meta.get("model_id", model_id_of(model))
