"""The entropy-coding alternatives the motion range coder is measured against (bench only).

Each takes a packet's frames and returns the bytes of a body that carries the same information
(header excluded; the bench adds the same header to every option):

- ``raw_float_body``: the frame's float values (angles, t, δ of present keypoints), float32 or float16;
- ``fixed_width_body``: the quantized grid indices, absolute, bit-packed at the width each field's
  range needs (yaw/pitch 10-11 bits, roll 11-12, t and δ 10-13 with the presets) — quantized but
  not entropy coded;
- ``msgpack_body``: the same residuals the range coder codes, msgpack framed (no compression);
- ``zstd_body``: that msgpack body compressed by zstd level 19 in the magicless format with no
  checksum, content size or dictionary id (the per-frame overhead the issue asks to drop), with or
  without the shipped dictionary ``codec/motion_dict.zstd``.

The dictionary is trained on msgpack residual bodies of synthetic traces with seeds 100+ (the
benchmark uses seed 0) for every preset, K ∈ {20, 10, 5} and 1-3 frames per packet::

    python -m codec.baseline_coders --out codec/motion_dict.zstd

Real-trace training will replace it once the model produces traces (``--trace`` takes .npz files).
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import msgpack
import numpy as np
import zstandard

from codec.bitstream import Layout, residuals_for_packet
from codec.motion import MotionParams
from codec.quantize import PRESETS

logger = logging.getLogger(__name__)

DICTIONARY_PATH = Path(__file__).with_name("motion_dict.zstd")
ZSTD_LEVEL = 19
DICTIONARY_BYTES = 4096
DICTIONARY_SEEDS = tuple(range(100, 124))


def raw_float_body(motions: Sequence[MotionParams], dtype: type = np.float32) -> bytes:
    """Every frame's floats (3 angles, 3 translation, δ of present keypoints), concatenated."""
    parts = []
    for m in motions:
        values = np.concatenate([[m.yaw, m.pitch, m.roll], m.translation, m.expression[m.present].ravel()])
        parts.append(values.astype(dtype).tobytes())
    return b"".join(parts)


def field_bits(layout: Layout) -> list[int]:
    """Bits per coded field (wire order) for absolute two's-complement-free offset coding of ±q_max."""
    preset = layout.preset
    qmax = list(preset.angle_qmax) + [preset.translation_qmax] * 3
    qmax += [preset.expression_qmax] * (3 * sum(layout.present))
    return [math.ceil(math.log2(2 * q + 1)) for q in qmax]


def fixed_width_body(layout: Layout, frames: Sequence[Sequence[int]]) -> bytes:
    """Absolute grid indices, each offset by +q_max and written in its field's fixed bit width."""
    bits = field_bits(layout)
    order = list(range(6)) + [6 + 3 * k + c for k, p in enumerate(layout.present) if p for c in range(3)]
    preset = layout.preset
    qmax = list(preset.angle_qmax) + [preset.translation_qmax] * 3 + [preset.expression_qmax] * (3 * layout.num_keypoints)
    acc, nbits = 0, 0
    for values in frames:
        for width, field in zip(bits, order):
            acc = (acc << width) | (values[field] + qmax[field])
            nbits += width
    return acc.to_bytes((nbits + 7) // 8, "big") if nbits else b""


def msgpack_body(
    layout: Layout, frames: Sequence[Sequence[int]], intervals_ms: Sequence[int], reference_values: Sequence[int] | None
) -> bytes:
    """msgpack [[interval_ms, residual...], ...] of the residuals the range coder codes."""
    residuals = residuals_for_packet(layout, frames, reference_values)
    return msgpack.packb([[int(dt)] + r for dt, r in zip(intervals_ms, residuals)])


def _compressor(dictionary: zstandard.ZstdCompressionDict | None) -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL,
        format=zstandard.FORMAT_ZSTD1_MAGICLESS,
        write_checksum=0,
        write_content_size=0,
        write_dict_id=0,
    )
    return zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params)


@lru_cache(maxsize=1)
def load_dictionary(path: Path = DICTIONARY_PATH) -> zstandard.ZstdCompressionDict:
    """The shipped zstd dictionary (trained by this module's CLI)."""
    if not path.is_file():
        raise FileNotFoundError(f"zstd dictionary {path} is missing: run python -m codec.baseline_coders --out {path}")
    return zstandard.ZstdCompressionDict(path.read_bytes())


def zstd_body(payload: bytes, use_dictionary: bool) -> bytes:
    """zstd (magicless, no checksum/content size/dict id) of ``payload``, optionally with the dictionary."""
    return _compressor(load_dictionary() if use_dictionary else None).compress(payload)


def zstd_unbody(body: bytes, use_dictionary: bool, max_output_bytes: int = 1 << 16) -> bytes:
    """Inverse of ``zstd_body`` (for round-trip tests)."""
    decompressor = zstandard.ZstdDecompressor(
        dict_data=load_dictionary() if use_dictionary else None, format=zstandard.FORMAT_ZSTD1_MAGICLESS
    )
    return decompressor.decompressobj().decompress(body)[:max_output_bytes]


def training_samples(seeds: Sequence[int] = DICTIONARY_SEEDS, num_frames: int = 750, fps: float = 25.0) -> list[bytes]:
    """msgpack residual bodies of synthetic traces (every preset, K ∈ {20, 10, 5}, 1-3 frames/packet)."""
    from codec.synthetic_trace import synthetic_trace, trace_timestamps_ms  # noqa: PLC0415

    samples = []
    for seed in seeds:
        trace = synthetic_trace(num_frames, fps, seed=seed)
        stamps = trace_timestamps_ms(num_frames, fps)
        for preset in PRESETS.values():
            for count in (20, 10, 5):
                present = tuple(k < count for k in range(20))
                layout = Layout(preset.preset_id, present)
                values = []
                for m in trace:
                    q = preset.quantize(m.with_present(np.array(present)))
                    values.append([int(v) for v in np.concatenate([q.angles, q.translation, q.expression.ravel()])])
                for fpp in (1, 2, 3):
                    for start in range(fpp, num_frames - fpp, fpp):
                        frames = values[start : start + fpp]
                        intervals = [stamps[start + i] - stamps[start + i - 1] for i in range(fpp)]
                        samples.append(msgpack_body(layout, frames, intervals, values[start - 1]))
    return samples


def train_dictionary(out: Path, seeds: Sequence[int] = DICTIONARY_SEEDS, dict_bytes: int = DICTIONARY_BYTES) -> int:
    samples = training_samples(seeds)
    logger.info("training a %d-byte zstd dictionary on %d packet bodies", dict_bytes, len(samples))
    dictionary = zstandard.train_dictionary(dict_bytes, samples, level=ZSTD_LEVEL, threads=1)
    data = dictionary.as_bytes()
    out.write_bytes(data)
    return len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.baseline_coders", description="train the motion zstd dictionary")
    parser.add_argument("--out", type=Path, default=DICTIONARY_PATH, help="where to write the dictionary")
    parser.add_argument("--bytes", type=int, default=DICTIONARY_BYTES, help="dictionary size")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    size = train_dictionary(args.out, dict_bytes=args.bytes)
    logger.info("wrote %s (%d bytes)", args.out, size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
