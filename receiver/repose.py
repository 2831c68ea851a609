"""Re-pose a still portrait: the receiver's networks turn one photo to a chosen view.

    python -m receiver repose PHOTO --yaw 20 --pitch -5 --out OUT.png
    python -m receiver repose PHOTO --frontal --out OUT.png
    python -m receiver repose PHOTO --yaw 10 --relative --out OUT.png   # 10° more than the photo's own yaw

The photo is cropped with the call's framing rule; the output is the model's size (256² by default).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from codec.image_input import PHOTO_LIMITS, read_image_file

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m receiver repose", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photo", type=Path, help="portrait image: JPEG, PNG or WebP, 64 px to 40 Mpx, aspect ≤ 3:1")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.add_argument("--yaw", type=float, default=None, help="degrees; positive turns the face to its own right")
    p.add_argument("--pitch", type=float, default=None, help="degrees; positive tilts the face down")
    p.add_argument("--roll", type=float, default=None, help="degrees; positive rotates clockwise on screen")
    p.add_argument("--frontal", action="store_true", help="face the camera (yaw = pitch = roll = 0)")
    p.add_argument("--relative", action="store_true", help="add the angles to the photo's own pose instead of replacing it")
    p.add_argument("--weights", type=Path, default=None, help="model weights (default: the shipped ones)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")
    return p


def load_photo(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (``codec.image_input`` rules); FileNotFoundError or ImageInputError."""
    if not path.is_file():
        raise FileNotFoundError(f"photo {path} does not exist")
    return read_image_file(path, f"the photo {str(path)!r}", PHOTO_LIMITS)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    from codec.face.crop import crop_reference
    from codec.face.landmarks import FaceInputError
    from codec.model import FrameSynthesizer, ViewControl
    from codec.model.checkpoint import CheckpointError

    try:
        photo = load_photo(args.photo)
        synth = FrameSynthesizer(args.weights, device=args.device)
        crop = crop_reference(photo, output_size=synth.image_size)
        state = synth.prepare(crop.image)
        own = state.motion
        if args.frontal:
            view = ViewControl("frontal")
        elif args.relative:
            view = ViewControl("offset", args.yaw or 0.0, args.pitch or 0.0, args.roll or 0.0)
        else:
            view = ViewControl("absolute", own.yaw if args.yaw is None else args.yaw,
                               own.pitch if args.pitch is None else args.pitch, own.roll if args.roll is None else args.roll)
        frame = synth.render(state, own, view)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(args.out)
    except (FileNotFoundError, ValueError, FaceInputError, CheckpointError) as exc:
        print(f"repose: {exc}", file=sys.stderr)
        return 1
    log.info("photo pose yaw %.1f pitch %.1f roll %.1f -> %s; written %s", own.yaw, own.pitch, own.roll, view, args.out)
    if not synth.is_trained:
        log.warning("random weights in use: train or install weights for a real result")
    return 0


if __name__ == "__main__":
    sys.exit(main())
