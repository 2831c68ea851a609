"""The sender's reference portrait: a photo (or the built-in default), face-cropped, as a ReferenceMessage.

The built-in default is scikit-image's ``astronaut`` (Eileen Collins, NASA, public domain), which ships
inside the scikit-image wheel, so a fresh machine needs no camera and no data for a demo call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from codec.image_input import PHOTO_LIMITS, read_image_file
from codec.reference_message import ReferenceMessage, encode_portrait

logger = logging.getLogger(__name__)

DEFAULT_PORTRAIT = "astronaut"


def default_portrait() -> np.ndarray:
    """scikit-image's astronaut photo: (512, 512, 3) uint8 RGB, public domain (NASA)."""
    from skimage import data

    return np.asarray(data.astronaut(), dtype=np.uint8)


def read_photo(path: Path) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB under ``codec.image_input``'s rules (JPEG/PNG/WebP, 64 px to 40 Mpx,
    aspect ≤ 3:1); ImageInputError (a ValueError) naming the file for anything unusable."""
    return read_image_file(path, f"the reference photo {str(path)!r}", PHOTO_LIMITS)


def face_crop_function() -> Callable[[np.ndarray, int], np.ndarray]:
    """``codec.face.crop.crop_reference`` as image -> (S, S, 3) crop."""
    try:
        from codec.face.crop import crop_reference
    except ImportError as exc:
        raise RuntimeError(f"the face cropper (codec.face.crop) is not available: {exc}") from None

    def crop(image: np.ndarray, output_size: int) -> np.ndarray:
        result = crop_reference(image, output_size=output_size)
        if not getattr(result, "face_found", True):
            raise ValueError("no face found in the reference photo: use a photo with one clearly visible face")
        return np.asarray(result.image, dtype=np.uint8)

    return crop


def make_reference(
    image_rgb: np.ndarray, image_size: int, model_id: str, model_version: str,
    crop: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> ReferenceMessage:
    """Crop the face to image_size² and wrap it (JPEG) in a ReferenceMessage for that model."""
    face = (crop or face_crop_function())(image_rgb, image_size)  # (S, S, 3) uint8
    if face.shape != (image_size, image_size, 3):
        raise ValueError(f"the face crop is {face.shape}, expected ({image_size}, {image_size}, 3)")
    msg = ReferenceMessage.from_image(encode_portrait(face), model_id=model_id, model_version=model_version)
    logger.info("reference portrait %s: %d bytes, %dx%d", msg.content_hash.hex()[:12], len(msg.image), msg.width, msg.height)
    return msg
