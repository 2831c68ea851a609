"""The resumable training state in one safetensors file (no pickle): weights, optimizers, RNGs, counters.

Layout: tensors ``generator.*``, ``discriminator.*``, ``ema.*`` (the generator's weight average, when kept),
``opt_g.state.<i>.<name>``, ``opt_d.state...``, ``rng.torch``; metadata (strings): ``step``, ``cpu_seconds``,
``wall_seconds``, ``opt_g.param_groups`` and ``opt_d.param_groups`` (JSON), ``rng.numpy`` (JSON bit-generator state), ``model_config`` and
``train_config`` (JSON). Writes go to a temporary file that is fsynced and renamed over the target, so a
kill leaves either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from codec.model import checkpoint

FORMAT = "kpcall-train-state-1"


@dataclass(frozen=True)
class Counters:
    """Progress counters kept across resumes."""

    step: int
    cpu_seconds: float  # process CPU time (user + system, all threads) spent in training, summed over runs
    wall_seconds: float


def flatten_optimizer(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{prefix}.state.{index}.{name}"] = tensor.detach().cpu().contiguous()
    return tensors, json.dumps(state["param_groups"])


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], param_groups_json: str) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    head = prefix + ".state."
    for key, value in tensors.items():
        if key.startswith(head):
            index, name = key[len(head):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": json.loads(param_groups_json)}


def save_state(
    path: str | Path,
    *,
    generator: torch.nn.Module,
    discriminator: torch.nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    counters: Counters,
    rng: np.random.Generator,
    model_config: dict[str, Any],
    train_config: dict[str, Any],
    ema: torch.nn.Module | None = None,
) -> None:
    """Atomically write the whole training state to ``path``."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    modules = [("generator", generator), ("discriminator", discriminator)] + ([("ema", ema)] if ema is not None else [])
    for prefix, module in modules:
        for key, value in module.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().cpu().contiguous()
    opt_g_tensors, opt_g_groups = flatten_optimizer("opt_g", opt_g)
    opt_d_tensors, opt_d_groups = flatten_optimizer("opt_d", opt_d)
    tensors.update(opt_g_tensors)
    tensors.update(opt_d_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    metadata = {
        "format": FORMAT,
        "step": str(counters.step),
        "cpu_seconds": repr(counters.cpu_seconds),
        "wall_seconds": repr(counters.wall_seconds),
        "opt_g.param_groups": opt_g_groups,
        "opt_d.param_groups": opt_d_groups,
        "rng.numpy": json.dumps(rng.bit_generator.state),
        "model_config": json.dumps(model_config),
        "train_config": json.dumps(train_config),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not a training state (format {metadata.get('format')!r}, expected {FORMAT!r})")
    return metadata


def load_state(
    path: str | Path,
    *,
    generator: torch.nn.Module,
    discriminator: torch.nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    rng: np.random.Generator,
    ema: torch.nn.Module | None = None,
) -> Counters:
    """Restore everything ``save_state`` wrote into the given objects; returns the counters. An ``ema`` module
    gets the state's weight average, or a copy of the generator's weights when the state kept none."""
    metadata = read_metadata(path)
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            tensors[key] = handle.get_tensor(key)
    for prefix, module in (("generator", generator), ("discriminator", discriminator)):
        head = prefix + "."
        module.load_state_dict({k[len(head):]: v for k, v in tensors.items() if k.startswith(head)}, strict=True)
    if ema is not None:
        saved_ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
        ema.load_state_dict(saved_ema or generator.state_dict(), strict=True)
    opt_g.load_state_dict(unflatten_optimizer("opt_g", tensors, metadata["opt_g.param_groups"]))
    opt_d.load_state_dict(unflatten_optimizer("opt_d", tensors, metadata["opt_d.param_groups"]))
    torch.set_rng_state(tensors["rng.torch"])
    rng.bit_generator.state = json.loads(metadata["rng.numpy"])
    return Counters(int(metadata["step"]), float(metadata["cpu_seconds"]), float(metadata["wall_seconds"]))


def _load_shared_weights(path: str | Path, saved: dict[str, torch.Tensor], generator: torch.nn.Module) -> list[str]:
    """Load every entry of ``saved`` into ``generator`` (same names and shapes, cast to its dtypes); entries the
    generator has beyond them keep their initialisation. Returns their names; refuses entries it lacks."""
    own = generator.state_dict()
    unknown = sorted(set(saved) - set(own))
    if unknown:
        raise ValueError(f"{path}: generator entries {unknown[:5]} do not exist in this model: starting from "
                         "another run's weights only grows a model (adds parameters); use the preset it was trained with")
    for key, value in saved.items():
        if value.shape != own[key].shape:
            raise ValueError(f"{path}: generator.{key} has shape {tuple(value.shape)}, this model "
                             f"{tuple(own[key].shape)}: a new run cannot reshape parameters")
    generator.load_state_dict({key: value.to(own[key].dtype) for key, value in saved.items()}, strict=False)
    return sorted(set(own) - set(saved))


def start_from_model(path: str | Path, generator: torch.nn.Module) -> tuple[Counters, list[str]]:
    """Start a new run from a model file (``codec.model.checkpoint`` format, e.g. the shipped fp16 weights):
    its weights (as fp32) and the step and CPU-hours it records; wall time is counted from here when the file
    does not record it. The discriminator and the optimizers are the caller's fresh ones.
    Returns the counters and the names of generator entries the file lacks (a grown preset)."""
    metadata = checkpoint.read_metadata(Path(path))
    new = _load_shared_weights(path, load_file(str(path)), generator)
    seconds = {name: float(metadata.get(f"{name}_hours") or 0.0) * 3600 for name in ("cpu", "wall")}
    return Counters(int(metadata.get("step") or 0), seconds["cpu"], seconds["wall"]), new


def grow_from(
    path: str | Path,
    *,
    generator: torch.nn.Module,
    discriminator: torch.nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
) -> tuple[Counters, list[str]]:
    """Start a new run from the training state at ``path`` for a generator that has grown new parameters.

    Every generator parameter and buffer the state has is loaded (shapes must match) with its Adam
    moments; the new ones keep their initialisation and start with fresh moments. The discriminator,
    its optimizer and the counters (step, CPU time) are taken over unchanged, so the learning-rate
    schedule and the CPU-hour account go on. A state with a parameter this generator lacks is refused.
    Returns the counters and the names of the new generator entries.
    """
    metadata = read_metadata(path)
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            tensors[key] = handle.get_tensor(key)
    saved = {k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")}
    new = _load_shared_weights(path, saved, generator)
    # Adam state is indexed by the position of a parameter in the optimizer's groups; the state's positions are
    # this optimizer's parameters without the new ones (built alike: the same groups, frozen ones left out, and adding
    # a module does not reorder the others).
    name_of = {id(p): name for name, p in generator.named_parameters()}
    named = [(name_of[id(p)], p) for group in opt_g.param_groups for p in group["params"] if name_of[id(p)] in saved]
    old_state = unflatten_optimizer("opt_g", tensors, metadata["opt_g.param_groups"])["state"]
    if old_state and max(old_state) >= len(named):
        raise ValueError(f"{path}: its generator optimizer has state for {max(old_state) + 1} parameters, "
                         f"this model shares {len(named)} with it")
    for index, entry in old_state.items():
        name, param = named[index]
        for key in ("exp_avg", "exp_avg_sq"):
            if key in entry and entry[key].shape != param.shape:
                raise ValueError(f"{path}: optimizer state {index} ({key}) does not fit parameter {name}")
        opt_g.state[param] = {key: value.to(param.device) if key != "step" else value for key, value in entry.items()}
    discriminator.load_state_dict({k[len("discriminator."):]: v for k, v in tensors.items()
                                   if k.startswith("discriminator.")}, strict=True)
    opt_d.load_state_dict(unflatten_optimizer("opt_d", tensors, metadata["opt_d.param_groups"]))
    counters = Counters(int(metadata["step"]), float(metadata["cpu_seconds"]), float(metadata["wall_seconds"]))
    return counters, new
