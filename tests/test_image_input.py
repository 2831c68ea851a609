"""codec.image_input: every user image (reference photo, repose photo) is JPEG/PNG/WebP, size-checked before decoding."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from codec.image_input import PHOTO_LIMITS, ImageInputError, ImageLimits, read_image, read_image_file
from receiver.repose import load_photo
from sender.portrait import read_photo

Loader = Callable[[Path], np.ndarray]
LOADERS: dict[str, Loader] = {
    "image_input": lambda path: read_image_file(path, "the photo"),
    "repose": load_photo,
    "sender_reference": read_photo,
}


def _save(tmp_path: Path, image: Image.Image, name: str, **params: object) -> Path:
    path = tmp_path / name
    image.save(path, **params)
    return path


def _portrait(w: int = 96, h: int = 128) -> Image.Image:
    return Image.fromarray((np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8))


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path, loader: Loader, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _save(tmp_path, Image.new("1", (7000, 7000)), "bomb.png", optimize=True)  # 49 Mpx, ~180 MB as RGB
    assert bomb.stat().st_size < 20_000
    decoded: list[object] = []
    real_load = ImageFile.ImageFile.load

    def spy_load(self: ImageFile.ImageFile) -> object:
        decoded.append(self)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    with pytest.raises(ImageInputError, match=r"is 7000x7000 = 49000000 pixels, over the limit of 40000000: resize it smaller"):
        loader(bomb)
    assert decoded == []  # rejected before any pixel was decoded


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
def test_pil_global_pixel_limit_is_left_alone(tmp_path: Path, loader: Loader, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 123_456_789)  # whatever the embedding program chose
    assert loader(_save(tmp_path, _portrait(), "p.png")).shape == (128, 96, 3)
    assert Image.MAX_IMAGE_PIXELS == 123_456_789


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "BMP"])
def test_only_jpeg_png_webp_are_parsed(tmp_path: Path, loader: Loader, fmt: str) -> None:
    path = _save(tmp_path, _portrait(), f"p.{fmt.lower()}", format=fmt)
    with pytest.raises(ImageInputError, match=r"not a readable image in an accepted format \(JPEG, PNG or WebP\)"):
        loader(path)


@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((1, 1), r"is 1x1: its short side must be at least 64 pixels to hold a face"),
        ((63, 100), r"is 63x100: its short side must be at least 64 pixels"),
        ((512, 2048), r"is 512x2048, an aspect ratio of 4.0:1; crop it around the face to at most 3:1"),
        ((700, 200), r"is 700x200, an aspect ratio of 3.5:1"),
    ],
)
def test_degenerate_sizes_are_refused(tmp_path: Path, loader: Loader, size: tuple[int, int], message: str) -> None:
    with pytest.raises(ImageInputError, match=message):
        loader(_save(tmp_path, Image.new("RGB", size, (90, 90, 90)), "p.png"))


def test_limits_edges_are_accepted() -> None:
    assert PHOTO_LIMITS.max_pixels == 40_000_000 and PHOTO_LIMITS.min_side == 64 and PHOTO_LIMITS.max_aspect == 3.0
    for size in [(64, 64), (64, 192), (192, 64)]:
        out = io.BytesIO()
        Image.new("RGB", size).save(out, format="PNG")
        assert read_image(out.getvalue(), "p").shape == (size[1], size[0], 3)


def test_sixteen_bit_grey_is_scaled_not_saturated(tmp_path: Path) -> None:
    grey16 = np.full((80, 80), 0x8000, np.uint16)
    grey16[:, :40] = 0x2000
    path = _save(tmp_path, Image.fromarray(grey16), "grey16.png")
    assert Image.open(path).mode == "I;16"
    for loader in LOADERS.values():
        rgb = loader(path)
        assert rgb.shape == (80, 80, 3) and rgb.dtype == np.uint8
        assert np.all(rgb[:, 40:] == 128) and np.all(rgb[:, :40] == 32)


def test_exif_rotated_jpeg_comes_out_upright(tmp_path: Path) -> None:
    upright = np.zeros((120, 80, 3), np.uint8)  # (H, W, 3): red top half, blue bottom half
    upright[:60, :, 0] = 255
    upright[60:, :, 2] = 255
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 120 wide, 80 high, as a phone stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    path = _save(tmp_path, stored, "phone.jpg", format="JPEG", quality=95, exif=exif.tobytes())
    for loader in LOADERS.values():
        rgb = loader(path).astype(int)
        assert rgb.shape == (120, 80, 3)
        assert rgb[30, 40, 0] > 200 and rgb[30, 40, 2] < 50
        assert rgb[90, 40, 2] > 200 and rgb[90, 40, 0] < 50


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("LA", (64, 64), (100, 255)), (100, 100, 100)),
        (Image.new("RGBA", (64, 64), (10, 20, 30, 0)), (255, 255, 255)),  # fully transparent -> white
        (Image.new("RGBA", (64, 64), (10, 20, 30, 255)), (10, 20, 30)),
        (Image.new("L", (64, 64), 77), (77, 77, 77)),
        (Image.new("1", (64, 64), 1), (255, 255, 255)),
        (Image.new("RGB", (64, 64), (200, 40, 60)).quantize(8), (200, 40, 60)),  # mode P
    ],
    ids=["LA", "RGBA-clear", "RGBA-opaque", "L", "1", "P"],
)
def test_every_png_mode_becomes_8_bit_rgb(image: Image.Image, expected: tuple[int, int, int]) -> None:
    out = io.BytesIO()
    image.save(out, format="PNG")
    rgb = read_image(out.getvalue(), "p")
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert tuple(int(v) for v in rgb[5, 5]) == expected


def test_cmyk_jpeg_becomes_rgb() -> None:
    out = io.BytesIO()
    Image.new("CMYK", (64, 64), (0, 255, 255, 0)).save(out, format="JPEG", quality=95)  # red
    rgb = read_image(out.getvalue(), "p").astype(int)
    assert rgb.shape == (64, 64, 3) and rgb[5, 5, 0] > 200 and rgb[5, 5, 1] < 50 and rgb[5, 5, 2] < 50


@pytest.mark.parametrize(("fmt", "params"), [("PNG", {}), ("WEBP", {"lossless": True}), ("JPEG", {"quality": 95})])
def test_valid_photos_keep_their_pixels(tmp_path: Path, fmt: str, params: dict[str, object]) -> None:
    image = _portrait()
    path = _save(tmp_path, image, f"p.{fmt.lower()}", format=fmt, **params)
    with Image.open(path) as reference:
        expected = np.asarray(reference.convert("RGB"))
    for loader in LOADERS.values():
        assert np.array_equal(loader(path), expected)


def test_errors_name_the_input_and_are_value_errors(tmp_path: Path) -> None:
    assert issubclass(ImageInputError, ValueError)
    with pytest.raises(ImageInputError, match=r"cannot read the photo: "):
        read_image_file(tmp_path / "missing.jpg", "the photo")
    truncated = io.BytesIO()
    _portrait().save(truncated, format="PNG")
    with pytest.raises(ImageInputError, match=r"cannot read the photo: its image data is corrupt or truncated"):
        read_image(truncated.getvalue()[:-2000], "the photo")
    with pytest.raises(ImageInputError, match=r"the photo is 11 bytes, over the limit of 10"):
        read_image(b"x" * 11, "the photo", ImageLimits(max_bytes=10))


_PEAK_RSS = """
import resource, sys
from pathlib import Path
from receiver.repose import load_photo
from codec.image_input import ImageInputError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_photo(Path(sys.argv[1]))
except ImageInputError as exc:
    print(str(exc).split(": ", 1)[0])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_100_mpx_photo_is_refused_without_its_memory_or_a_warning(tmp_path: Path) -> None:
    """Issue 22: a 79 KB file of 100 Mpx took repose to 1.2 GB RSS. Refused from its header it costs ~2 MB (measured)."""
    bomb = _save(tmp_path, Image.new("1", (10_000, 10_000)), "bomb.png", optimize=True)  # 100 Mpx, 300 MB as RGB
    assert bomb.stat().st_size < 20_000
    run = subprocess.run([sys.executable, "-W", "error::Warning", "-c", _PEAK_RSS, str(bomb)],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    refusal, peak_growth_kib = run.stdout.splitlines()
    assert refusal.endswith("is 10000x10000 = 100000000 pixels, over the limit of 40000000")
    assert int(peak_growth_kib) < 30 * 1024  # the RGB decode alone would be 300 MB
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either: our limit is the one that speaks
        with pytest.raises(ImageInputError):
            read_image(bomb.read_bytes(), "the photo")
