"""ONNX files of the receiver's networks (``codec.export.networks``) with a manifest, for a browser receiver.

    paths = export_onnx(model, info, out_dir)   # reference.onnx, render.onnx, manifest.json

TorchScript exporter (``dynamo=False``), opset 17, static shapes (batch 1). Every float weight whose value
is exactly an fp16 number (all of them for the shipped model, which is stored in fp16) is stored as fp16
and cast to fp32 when the session is built (``store_weights_fp16``): half the bytes, bit-identical results.

manifest.json: format, model_id, motion_model_id (the sender's model whose motion it reads), model_version (a browser receiver refuses motion for another version), preset,
image_size, num_keypoints, opset, and per network its file, byte size, sha256 and the name, shape and dtype of
every input and output in order. A model with the eyelid warp has one more render input, ``eyelids_present``
(1,): 1 when the frame's transmitted δ rows include every row of the render section's ``eyelid_rows``, else 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codec.export.networks import (
    REFERENCE_INPUTS,
    REFERENCE_OUTPUTS,
    RENDER_OUTPUTS,
    ReferenceNetwork,
    RenderNetwork,
    render_inputs,
)
from codec.model.eyelid_warp import WARP_KEYPOINTS
from codec.model.face_model import FaceVid2VidModel
from codec.model.loading import ModelInfo

log = logging.getLogger(__name__)

OPSET = 17
MANIFEST_FORMAT = "kpcall-onnx"
MANIFEST_VERSION = 1
REFERENCE_FILE = "reference.onnx"
RENDER_FILE = "render.onnx"
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.json"
INDEX_FORMAT = "kpcall-onnx-variants"


@dataclass(frozen=True)
class ExportedFiles:
    """Where ``export_onnx`` wrote the networks and their manifest."""

    reference: Path
    render: Path
    manifest: Path


def example_inputs(model: FaceVid2VidModel) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Inputs to trace with: a seeded random portrait (1, 3, S, S) for the reference network, its outputs
    and a turned head for the render network. Only the shapes matter for the export."""
    generator = torch.Generator().manual_seed(0)
    size = model.config.image_size
    image = torch.rand(1, 3, size, size, generator=generator)  # (1, 3, S, S)
    with torch.no_grad():
        features, skip, image_small, kp_canonical, kp_ref, rotation_ref, angles_ref, translation_ref, expression_ref = (
            ReferenceNetwork(model).eval()(image))
    angles = angles_ref + torch.tensor([[10.0, -5.0, 3.0]])  # (1, 3)
    render = (features, skip, image, image_small, kp_canonical, kp_ref, rotation_ref, angles, translation_ref,
              expression_ref)
    if model.config.eyelid_warp > 0:
        render = render + (torch.ones(1),)  # eyelids_present
    return (image,), render


def store_weights_fp16(path: Path) -> tuple[int, int]:
    """Rewrite the ONNX file at ``path`` with every fp32 initializer that fp16 holds exactly stored as fp16
    behind a Cast to fp32 -> (initializers converted, initializers kept fp32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    onnx_model = onnx.load(str(path))
    graph = onnx_model.graph
    kept: list[onnx.TensorProto] = []
    casts: list[onnx.NodeProto] = []
    converted = unchanged = 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if values.size < 16 or not np.array_equal(half.astype(np.float32), values):
            kept.append(init)
            unchanged += 1
            continue
        stored = numpy_helper.from_array(half, init.name + "_fp16")
        kept.append(stored)
        casts.append(helper.make_node("Cast", [stored.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "_to_fp32"))
        converted += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))
    return converted, unchanged


def _export(network: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, input_names: tuple[str, ...],
            output_names: tuple[str, ...]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-level shape checks (shapes are static)
        torch.onnx.export(network.eval(), args, str(path), input_names=list(input_names),
                          output_names=list(output_names), opset_version=OPSET, dynamo=False)


def _describe(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> list[dict[str, object]]:
    return [{"name": n, "shape": list(t.shape), "dtype": "float32"} for n, t in zip(names, tensors)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_onnx(model: FaceVid2VidModel, info: ModelInfo, out_dir: Path, fp16_weights: bool = True) -> ExportedFiles:
    """Export ``model``'s reference and render networks to ``out_dir`` (created) -> the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    reference_args, render_args = example_inputs(model)
    with torch.no_grad():
        reference_outputs = ReferenceNetwork(model).eval()(*reference_args)
        rendered = RenderNetwork(model).eval()(*render_args)
    networks = {
        "reference": (ReferenceNetwork(model), reference_args, REFERENCE_FILE, REFERENCE_INPUTS, REFERENCE_OUTPUTS,
                      reference_outputs),
        "render": (RenderNetwork(model), render_args, RENDER_FILE, render_inputs(model), RENDER_OUTPUTS, (rendered,)),
    }
    manifest: dict[str, object] = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "model_id": info.model_id,
        "motion_model_id": info.motion_model_id, "model_version": info.model_version, "preset": info.preset,
        "image_size": model.config.image_size, "num_keypoints": model.config.num_keypoints, "opset": OPSET,
        "weights": "fp16 stored, fp32 compute" if fp16_weights else "fp32",
    }
    for key, (network, args, filename, inputs, outputs, results) in networks.items():
        path = out_dir / filename
        _export(network, args, path, inputs, outputs)
        if fp16_weights:
            converted, unchanged = store_weights_fp16(path)
            log.info("%s: %d weights stored as fp16, %d kept fp32", filename, converted, unchanged)
        manifest[key] = {"file": filename, "bytes": path.stat().st_size, "sha256": _sha256(path),
                         "inputs": _describe(inputs, args), "outputs": _describe(outputs, results)}
    if model.config.eyelid_warp > 0:
        manifest["render"]["eyelid_rows"] = list(WARP_KEYPOINTS)  # type: ignore[index]
    manifest_path = out_dir / MANIFEST_FILE
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportedFiles(out_dir / REFERENCE_FILE, out_dir / RENDER_FILE, manifest_path)


def export_variants(weights: list[Path], out_dir: Path, fp16_weights: bool = True) -> Path:
    """Export each model of ``weights`` (best picture first) to out_dir/<preset>/ and write out_dir/index.json:
    {"format", "version", "motion_model_id", "variants": [{"folder", "preset", "model_id", "render_bytes"}, ...]}
    in the given order. Raises ValueError when two presets repeat or the models read different motion."""
    from codec.model.loading import load_model_for_inference

    out_dir = Path(out_dir)
    variants: list[dict[str, object]] = []
    motion_model_id = ""
    for path in weights:
        model, info = load_model_for_inference(path, device="cpu")
        if any(v["preset"] == info.preset for v in variants):
            raise ValueError(f"{path}: preset {info.preset!r} is listed twice; each variant needs its own preset")
        motion_model_id = motion_model_id or info.motion_model_id
        if info.motion_model_id != motion_model_id:
            raise ValueError(f"{path} reads the motion of {info.motion_model_id}, the models before it {motion_model_id}: a browser "
                             "renders one sender's motion, so every variant must read the same (a distilled model and its teacher)")
        files = export_onnx(model, info, out_dir / info.preset, fp16_weights=fp16_weights)
        variants.append({"folder": f"{info.preset}/", "preset": info.preset, "model_id": info.model_id,
                         "render_bytes": files.render.stat().st_size})
    index = {"format": INDEX_FORMAT, "version": 1, "motion_model_id": motion_model_id, "variants": variants}
    path = out_dir / INDEX_FILE
    path.write_text(json.dumps(index, indent=2))
    return path
