"""Exported networks against PyTorch: onnxruntime's frames vs the receiver's own render of the same motion.

    check = verify_export(files, model, reference_rgb, motions)   # ExportCheck
    check.min_psnr_db, check.max_abs_error

The PyTorch side is ``FrameSynthesizer`` in fp32 (``prepare`` then ``render``, the receiver's path); the
ONNX side runs reference.onnx once and render.onnx per motion, with absent δ rows replaced by the
reference's own δ as the receiver does. Both round to uint8 the same way. onnxruntime is a test
dependency (``pip install -e '.[test]'``), imported only here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from codec.export.networks import EYELID_INPUT, REFERENCE_OUTPUTS, RenderNetwork, render_inputs
from codec.export.onnx_export import ExportedFiles
from codec.model.eyelid_warp import eyelid_rows_present
from codec.model.face_model import FaceVid2VidModel
from codec.model.wrappers import FrameSynthesizer
from codec.motion import MotionParams


@dataclass(frozen=True)
class ExportCheck:
    """Agreement over the frames checked: per-frame PSNR (dB, uint8 frames, inf when identical) and the
    largest absolute difference of the float outputs in [0, 1] (of 1.0 = full scale)."""

    psnr_db: tuple[float, ...]
    max_abs_error: float
    reference_max_abs_error: float  # largest difference over the reference network's outputs

    @property
    def min_psnr_db(self) -> float:
        return min(self.psnr_db)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 images (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(1, 3, S, S) float in [0, 1] -> (S, S, 3) uint8, rounded as ``FrameSynthesizer.render`` rounds."""
    return (np.clip(image[0], 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)


def motion_inputs(motion: MotionParams, expression_ref: np.ndarray) -> dict[str, np.ndarray]:
    """One frame's render inputs: angles (1, 3), translation (1, 3), expression (1, K, 3) with absent rows
    taken from expression_ref (1, K, 3), the reference's own δ."""
    expression = np.where(motion.present[:, None], motion.expression, expression_ref[0])  # (K, 3)
    return {
        "angles": np.array([[motion.yaw, motion.pitch, motion.roll]], np.float32),
        "translation": motion.translation.astype(np.float32)[None],
        "expression": expression.astype(np.float32)[None],
    }


def verify_export(files: ExportedFiles, model: FaceVid2VidModel, reference_rgb: np.ndarray,
                  motions: Sequence[MotionParams]) -> ExportCheck:
    """Run both sides on ``reference_rgb`` ((S, S, 3) uint8) and every motion -> ExportCheck."""
    import onnxruntime as ort

    synth = FrameSynthesizer(model, device="cpu", precision="fp32")
    state = synth.prepare(reference_rgb)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    reference = ort.InferenceSession(str(files.reference), options, providers=["CPUExecutionProvider"])
    render = ort.InferenceSession(str(files.render), options, providers=["CPUExecutionProvider"])
    image = (reference_rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]  # (1, 3, S, S)
    outputs = dict(zip(REFERENCE_OUTPUTS, reference.run(None, {"image": image})))
    f = state.features
    expected = {"features": f.features, "skip": f.skip, "image_small": f.image_small, "kp_canonical": f.kp_canonical,
                "kp_ref": f.kp, "rotation_ref": f.rotation}
    reference_error = max(float(np.abs(outputs[k] - v.cpu().numpy()).max()) for k, v in expected.items())
    state_inputs = {k: outputs[k] for k in ("features", "skip", "image_small", "kp_canonical", "kp_ref", "rotation_ref")}
    state_inputs["image"] = image
    psnrs: list[float] = []
    max_error = 0.0
    network = RenderNetwork(model).eval()
    names = render_inputs(model)
    for motion in motions:
        feed = {**state_inputs, **motion_inputs(motion, outputs["expression_ref"])}
        if EYELID_INPUT in names:
            feed[EYELID_INPUT] = np.array([float(eyelid_rows_present(motion.present))], np.float32)
        rendered = render.run(None, feed)[0]  # (1, 3, S, S)
        with torch.inference_mode():
            want = synth.render(state, motion)  # (S, S, 3) uint8
            want_float = network(*(torch.from_numpy(feed[k]) for k in names)).numpy()  # (1, 3, S, S)
        max_error = max(max_error, float(np.abs(rendered - want_float).max()))
        psnrs.append(psnr_db(to_uint8(rendered), want))
    return ExportCheck(tuple(psnrs), max_error, reference_error)
