"""The generator in reduced precision renders what it renders in fp32 (issue 26): PSNR ≥ 40 dB on the shipped weights.

The receiver renders under autocast where it is faster: bf16 on a CPU with native bf16 kernels (AVX512-BF16 or
AMX), fp16 on CUDA (``codec.model.loading.pick_precision``); the motion encoder stays fp32 everywhere. Here the
bf16 CPU path; tests/test_gpu.py checks fp16 on CUDA with the same frames and helpers. Both sides prepare the
reference in their own precision, as a receiver would, and render the same motions: the shipped sender's fp32
motion of tests/fixtures/pretrained/'s driving frames.

Measured (bf16 on an Intel Xeon core with AMX, the three driving frames used here): 41.1 to 44.6 dB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec.metrics import psnr
from codec.model.loading import cpu_supports_bf16, default_weights_path
from codec.model.wrappers import FrameSynthesizer, MotionEncoder
from codec.motion import MotionParams

pytestmark = pytest.mark.pretrained

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "pretrained"
DRIVING_FRAMES = ("driving_1.jpg", "driving_3.jpg", "driving_5.jpg")
PSNR_MIN_DB = 40.0  # reduced precision vs fp32, every frame


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def shipped_encoder() -> MotionEncoder:
    """The shipped weights on the CPU, the encoder in fp32 (as every sender runs it)."""
    path = default_weights_path()
    assert path.is_file(), f"no shipped weights at {path}: they are part of the repository (git checkout {path})"
    encoder = MotionEncoder(path, device="cpu")
    assert encoder.precision == "fp32"
    return encoder


def reference_and_motions(encoder: MotionEncoder) -> tuple[np.ndarray, list[MotionParams]]:
    """The fixture's reference crop (256, 256, 3) uint8 and the sender's motion of each driving frame."""
    reference = read_rgb(FIXTURE_DIR / "reference.jpg")
    return reference, [encoder.encode(read_rgb(FIXTURE_DIR / name)) for name in DRIVING_FRAMES]


def render_all(synth: FrameSynthesizer, reference: np.ndarray, motions: list[MotionParams]) -> list[np.ndarray]:
    state = synth.prepare(reference)
    return [synth.render(state, motion) for motion in motions]


def assert_matches(reduced: list[np.ndarray], exact: list[np.ndarray], what: str) -> None:
    scores = [psnr(a, b) for a, b in zip(reduced, exact, strict=True)]
    assert all(a.shape == (256, 256, 3) and a.dtype == np.uint8 for a in reduced)
    assert min(scores) >= PSNR_MIN_DB, f"{what} vs fp32: PSNR {[round(s, 2) for s in scores]} dB, each must be ≥ {PSNR_MIN_DB}"


def test_bf16_render_on_the_cpu_matches_fp32() -> None:
    if not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16 kernels (AVX512-BF16 or AMX): the receiver renders in fp32 here, "
                    "so there is no reduced-precision CPU path to compare")
    encoder = shipped_encoder()
    reference, motions = reference_and_motions(encoder)
    exact = render_all(FrameSynthesizer(encoder.model, info=encoder.info, precision="fp32"), reference, motions)
    bf16 = FrameSynthesizer(encoder.model, info=encoder.info)  # 'auto': bf16 on this CPU
    assert bf16.precision == "bf16"
    assert_matches(render_all(bf16, reference, motions), exact, "bf16 on the CPU")
