"""The sender's original pictures as an ordinary video track (VP8) for viewers who ask to compare.

A viewer that wants to see what the camera saw offers the sender a peer connection with one
receive-only video transceiver; the sender answers with an ``OriginalVideoTrack`` that repeats the
source's newest picture at the call's frame rate (aiortc encodes it, VP8 by default). Sources without
pictures (the scripted trace) get a ``PosedPortrait``: the reference portrait as a card turned and
moved by the trace's head pose, a stand-in camera that shows the motion being sent.

    track = OriginalVideoTrack(lambda: source.latest_picture(), fps=25.0)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from codec.motion import MotionParams, angles_to_rotation
from signaling.paced_track import PacedVideoTrack

MAX_ORIGINAL_SIDE = 480  # larger camera pictures are scaled down before encoding
CARD_FOCAL = 4.0  # the stand-in camera's focal length, in card half-widths (moderate perspective)
CARD_SCALE = 0.86  # the card's half-width in the picture's half-widths (room to turn)
BACKGROUND_RGB = (22, 25, 31)


def fit_picture(rgb: np.ndarray, max_side: int = MAX_ORIGINAL_SIDE) -> np.ndarray:
    """(H, W, 3) uint8 -> at most ``max_side`` on its longer side, even height and width (for YUV 4:2:0)."""
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    new_w, new_h = max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
    if (new_w, new_h) == (width, height):
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))


def _perspective_coeffs(out_pts: np.ndarray, in_pts: np.ndarray) -> tuple[float, ...]:
    """PIL PERSPECTIVE data mapping output pixels to input pixels, from 4 point pairs ((4, 2) each)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(out_pts, in_pts):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return tuple(float(a) for a in np.linalg.solve(np.asarray(rows, np.float64), np.asarray(rhs, np.float64)))


class PosedPortrait:
    """The portrait turned and moved by a head pose, as a flat card seen by a pinhole camera.

    Only yaw/pitch/roll and translation show; the expression (mouth, eyes) does not.
    """

    def __init__(self, portrait_rgb: np.ndarray) -> None:
        from PIL import Image

        self._image = Image.fromarray(fit_picture(np.ascontiguousarray(portrait_rgb, dtype=np.uint8)))
        self._last: tuple[MotionParams | None, np.ndarray] | None = None

    def render(self, motion: MotionParams | None) -> np.ndarray:
        """(H, W, 3) uint8 of the portrait's size; None: the neutral pose. The last result is reused."""
        if self._last is not None and self._last[0] is motion:
            return self._last[1]
        from PIL import Image

        width, height = self._image.size
        corners = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float64)  # x right, y down, z away
        if motion is None:
            rotation, shift = np.eye(3), np.zeros(3)
        else:
            rotation = angles_to_rotation(motion.yaw, motion.pitch, motion.roll).astype(np.float64)
            shift = np.array([motion.translation[0], motion.translation[1], 0.0]) * 2.0
        points = corners @ rotation.T + shift  # (4, 3)
        projected = CARD_FOCAL * points[:, :2] / (CARD_FOCAL + points[:, 2:3])  # (4, 2)
        out_pts = (projected * CARD_SCALE + 1.0) * np.array([width, height]) / 2.0
        in_pts = (corners[:, :2] + 1.0) * np.array([width, height]) / 2.0
        try:
            coeffs = _perspective_coeffs(out_pts, in_pts)
        except np.linalg.LinAlgError:  # a degenerate pose (card seen edge-on): keep the last picture
            return self._last[1] if self._last is not None else np.asarray(self._image)
        picture = np.asarray(
            self._image.transform(
                (width, height), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR, fillcolor=BACKGROUND_RGB
            )
        )
        self._last = (motion, picture)
        return picture


class OriginalVideoTrack(PacedVideoTrack):
    """A video track repeating ``picture()`` (the newest original frame) at ``fps``; grey until there is one."""

    def __init__(self, picture: Callable[[], np.ndarray | None], fps: float) -> None:
        super().__init__(fps)
        self._picture = picture
        self._last = np.full((240, 320, 3), 32, np.uint8)
        self._last_source: np.ndarray | None = None

    def newest_picture(self) -> np.ndarray:
        picture = self._picture()
        if picture is not None and picture is not self._last_source:
            self._last, self._last_source = fit_picture(picture), picture
        return self._last
