"""The avatar upload path (a viewer's portrait, --avatar): JPEG/PNG/WebP only, sane sizes, every mode to 8-bit RGB."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from receiver.render_worker import RenderWorker
from receiver.session import Receiver, ReceiverConfig
from tests.call_fakes import FakeSynthesizer

PSD_HEADER = b"8BPS\x00\x01" + b"\x00" * 6 + b"\x00\x03" + (256).to_bytes(4, "big") * 2 + b"\x00\x08\x00\x03" + b"\x00" * 64
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 256 256\nnewpath 0 0 moveto 256 256 lineto stroke showpage\n%%EOF\n"


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def portrait(w: int = 96, h: int = 128) -> Image.Image:
    return Image.fromarray((np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8))


async def load(data: bytes, tmp_path: Path) -> tuple[Receiver, list[np.ndarray]]:
    """Run the receiver's avatar path on ``data``; the RGB images it handed to the face crop."""
    seen: list[np.ndarray] = []

    def crop(rgb: np.ndarray, size: int) -> np.ndarray:
        seen.append(rgb)
        return np.asarray(Image.fromarray(rgb).resize((size, size)))

    synth = FakeSynthesizer()
    receiver = Receiver(ReceiverConfig("http://127.0.0.1:9", cache_dir=tmp_path), synth, face_crop=crop, retarget=lambda a, b, c: a)
    receiver._worker = RenderWorker(synth, asyncio.get_running_loop(), receiver._rendered.put_nowait)
    receiver._worker.start()
    try:
        await receiver._load_avatar(data, "the uploaded portrait")
    finally:
        await receiver._worker.close()
    return receiver, seen


@pytest.mark.parametrize(
    "data",
    [encoded(portrait(), "GIF"), encoded(portrait(), "TIFF"), encoded(portrait(), "BMP"), PSD_HEADER, EPS],
    ids=["GIF", "TIFF", "BMP", "PSD", "EPS"],
)
async def test_only_jpeg_png_webp_avatars_are_parsed(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"the uploaded portrait .*not a readable image in an accepted format \(JPEG, PNG or WebP\)"):
        await load(data, tmp_path)


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((1, 1), r"is 1x1: its short side must be at least 64 pixels to hold a face"),
        ((512, 2048), r"is 512x2048, an aspect ratio of 4.0:1; crop it around the face to at most 3:1"),
        ((5000, 4000), r"is 5000x4000 = 20000000 pixels, over the limit of 16777216: resize it smaller"),
    ],
)
async def test_degenerate_or_huge_avatars_are_refused(size: tuple[int, int], message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        await load(encoded(Image.new("1", size), "PNG"), tmp_path)


async def test_a_sixteen_bit_grey_avatar_is_scaled_not_saturated(tmp_path: Path) -> None:
    grey16 = np.full((80, 80), 0x4000, np.uint16)  # a quarter of full scale: 64 in 8 bits
    receiver, seen = await load(encoded(Image.fromarray(grey16), "PNG"), tmp_path)
    assert receiver.avatar_state is not None
    (rgb,) = seen
    assert rgb.shape == (80, 80, 3) and rgb.dtype == np.uint8 and np.all(rgb == 64)
