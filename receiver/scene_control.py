"""What the receiver draws: the sender's own portrait or an avatar driven by its motion, from the sender's view or another.

``view`` comes from ``--view`` or a viewer's command (parsed by ``codec.model.ViewControl``); ``avatar_state``
from ``--avatar`` or a viewer's upload (decoded by ``codec.image_input``, cropped by ``codec.face.crop``,
prepared on the render thread); the avatar follows the sender's motion relative to the sender's own
portrait (``codec.model.retarget_relative``). ``scene`` puts them together for ``receiver.render_worker``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from codec.motion import MotionParams
from receiver.render_worker import Scene

MAX_AVATAR_PIXELS = 4096 * 4096

Retarget = Callable[[MotionParams, MotionParams, MotionParams], MotionParams]


class SceneControl:
    """The view and the avatar of the call; ``view_parser``, ``face_crop`` and ``retarget`` default to the model's own."""

    def __init__(
        self, prepare_portrait: Callable[[np.ndarray], Awaitable[Any]], image_size: int, event: Callable[[str, str], None],
        view_parser: Callable[[str], Any] | None = None, face_crop: Callable[[np.ndarray, int], np.ndarray] | None = None,
        retarget: Retarget | None = None,
    ) -> None:
        self._prepare_portrait = prepare_portrait  # the synthesizer's prepare, on the render thread
        self._image_size = image_size
        self._event = event
        self._view_parser = view_parser
        self._face_crop = face_crop
        self._retarget = retarget
        self.view: Any = None
        self.avatar_state: Any = None

    def scene(self, state: Any) -> Scene:
        """What to render with the active sender's prepared portrait ``state``."""
        if self.avatar_state is None:
            return Scene(state, self.view)
        retarget = self.retarget_fn()
        source_motion, avatar_motion = state.motion, self.avatar_state.motion
        return Scene(self.avatar_state, self.view, lambda motion: retarget(motion, source_motion, avatar_motion))

    def parse_view(self, text: str) -> Any:
        parser = self._view_parser
        if parser is None:
            from codec.model import ViewControl  # the model engineer's parser (ValueError on bad text)

            parser = ViewControl.parse
        return parser(text)

    def retarget_fn(self) -> Retarget:
        if self._retarget is None:
            from codec.model import retarget_relative

            self._retarget = retarget_relative
        return self._retarget

    async def load_avatar(self, data: bytes, what: str) -> None:
        """Decode, crop and prepare a portrait to drive with the sender's motion (ValueError if unusable)."""
        from codec.image_input import ImageInputError, ImageLimits, read_image

        try:  # JPEG/PNG/WebP only, size checked from the header before decoding (codec.image_input)
            rgb = await asyncio.to_thread(read_image, data, what, ImageLimits(max_pixels=MAX_AVATAR_PIXELS))
        except ImageInputError as exc:
            raise ValueError(f"{what} is not an image this receiver can read: {exc}") from None
        size = self._image_size
        crop = self._face_crop
        if crop is None:
            from codec.face.crop import crop_reference

            def crop(image: np.ndarray, output_size: int) -> np.ndarray:
                return np.asarray(crop_reference(image, output_size=output_size).image)

        face = await asyncio.to_thread(crop, rgb, size)
        self.avatar_state = await self._prepare_portrait(face)
        self.retarget_fn()  # fail now, not on the first frame, if retargeting is unavailable
        self._event("avatar", what)
