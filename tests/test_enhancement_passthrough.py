"""codec.enhancement.passthrough: which frames are shown as their decoded picture."""

from __future__ import annotations

import pytest

from codec.enhancement.passthrough import shows_picture


@pytest.mark.parametrize(
    ("picture_side", "interval", "own", "shown"),
    [
        (256, 1, True, True),  # a top rung's own picture, every frame one
        (256, 2, True, False),  # pictures every 2nd frame: the frames between would alternate with renders
        (256, 1, False, False),  # an older picture serving a frame whose own was lost
        (192, 1, True, False),  # smaller than the output: the generator upsamples it better
        (64, 1, True, False),
    ],
)
def test_only_a_frames_own_picture_at_the_outputs_side_every_frame_is_shown(
    picture_side: int, interval: int, own: bool, shown: bool
) -> None:
    assert shows_picture(picture_side, 256, interval, own) is shown

