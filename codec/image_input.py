"""Images a person supplies (reference photo, avatar upload, repose photo): the one safe way to decode them.

    rgb = read_image_file(path, "the reference photo 'me.jpg'")        # (H, W, 3) uint8 RGB
    rgb = read_image(data, "the uploaded portrait", PHOTO_LIMITS)       # from bytes

Rules (``PHOTO_LIMITS``; callers may pass tighter ``ImageLimits``):

* formats: JPEG, PNG or WebP only. Pillow is asked to parse nothing else (``Image.open(..., formats=...)``),
  so GIF, TIFF, BMP, PSD, EPS (Ghostscript) and the rest never reach a parser;
* size, read from the header **before** any pixel is decoded: at most ``max_pixels`` (40 Mpx), at least
  ``min_side`` (64 px) on the short side (less cannot hold a usable face), and the long side at most
  ``max_aspect`` (3) times the short one; the encoded file is at most ``max_bytes`` (64 MiB);
* EXIF orientation is applied, so a phone photo comes out upright;
* every mode becomes 8-bit RGB: 16-bit grey (``I;16``, ``I``) is scaled by 1/256 (not clipped), transparency
  (``RGBA``, ``LA``, ``P`` with a transparent colour) is composited over white, ``CMYK``/``L``/``P`` are converted.

Anything else raises ``ImageInputError`` (a ``ValueError``) whose message names the input, says what is
wrong and what is accepted. PIL's global ``Image.MAX_IMAGE_PIXELS`` is never changed.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
ACCEPTED_TEXT = "JPEG, PNG or WebP"
_SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_WITH_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageInputError(ValueError):
    """A user-supplied image is unreadable, in a refused format, or of a refused size; the message says which."""


@dataclass(frozen=True)
class ImageLimits:
    """What a user image may be; checked on the header before decoding."""

    max_pixels: int = 40_000_000  # width × height; a 40 Mpx photo decodes to ~120 MB of RGB
    min_side: int = 64  # pixels on the short side; smaller holds no usable face
    max_aspect: float = 3.0  # long side / short side
    max_bytes: int = 64 * 1024 * 1024  # encoded file size


PHOTO_LIMITS = ImageLimits()


def check_size(width: int, height: int, what: str, limits: ImageLimits = PHOTO_LIMITS) -> None:
    """ImageInputError unless a width × height image is within ``limits``."""
    short, long = min(width, height), max(width, height)
    if width * height > limits.max_pixels:
        raise ImageInputError(
            f"{what} is {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}: resize it smaller"
        )
    if short < limits.min_side:
        raise ImageInputError(
            f"{what} is {width}x{height}: its short side must be at least {limits.min_side} pixels to hold a face; use a larger photo"
        )
    if long > limits.max_aspect * short:
        raise ImageInputError(
            f"{what} is {width}x{height}, an aspect ratio of {long / short:.1f}:1; "
            f"crop it around the face to at most {limits.max_aspect:g}:1"
        )


@contextmanager
def open_image(data: bytes, what: str, limits: ImageLimits = PHOTO_LIMITS) -> Iterator[Image.Image]:
    """The image's header parsed (JPEG/PNG/WebP only) and its size checked; no pixel decoded yet."""
    if len(data) > limits.max_bytes:
        raise ImageInputError(f"{what} is {len(data)} bytes, over the limit of {limits.max_bytes}: re-encode it smaller")
    try:
        with warnings.catch_warnings():  # PIL warns from 89 Mpx on; our own, lower limit is checked just below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, Image.DecompressionBombError):  # PIL's own open-time check, far above ours
            raise ImageInputError(f"{what} is over the limit of {limits.max_pixels} pixels: resize it smaller") from None
        raise ImageInputError(f"cannot read {what}: it is not a readable image in an accepted format ({ACCEPTED_TEXT})") from None
    with img:
        check_size(img.size[0], img.size[1], what, limits)
        yield img


def decode_rgb(img: Image.Image, what: str) -> np.ndarray:
    """An opened image -> (H, W, 3) uint8 RGB, EXIF orientation applied; ImageInputError if its data is corrupt."""
    try:
        img.load()
        upright = ImageOps.exif_transpose(img)
        return _to_rgb8(upright)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageInputError(f"cannot read {what}: its image data is corrupt or truncated ({exc})") from None


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT_GREY:
        grey = np.clip(np.asarray(img).astype(np.int64), 0, 65535) >> 8  # (H, W) 16-bit -> 8-bit
        return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)  # (H, W, 3)
    if img.mode in _WITH_ALPHA or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def read_image(data: bytes, what: str, limits: ImageLimits = PHOTO_LIMITS) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB under the module's rules; ImageInputError otherwise."""
    with open_image(data, what, limits) as img:
        return decode_rgb(img, what)


def read_image_file(path: Path, what: str, limits: ImageLimits = PHOTO_LIMITS) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB; ImageInputError (naming ``what``) for a missing, huge or bad file."""
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageInputError(f"{what} is {size} bytes, over the limit of {limits.max_bytes}: re-encode it smaller")
        data = path.read_bytes()
    except OSError as exc:
        raise ImageInputError(f"cannot read {what}: {exc.strerror}") from None
    return read_image(data, what, limits)
