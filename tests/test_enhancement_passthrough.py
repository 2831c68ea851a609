"""codec.enhancement.passthrough: which frames are shown as their decoded picture."""

from __future__ import annotations

import pytest

from codec.enhancement.passthrough import FALLBACK_KEYPOINTS, fallback_keypoints, shows_picture


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


def test_the_fallback_motion_sends_at_most_its_keypoints() -> None:
    assert FALLBACK_KEYPOINTS < 20
    assert fallback_keypoints(20) == FALLBACK_KEYPOINTS
    assert fallback_keypoints(FALLBACK_KEYPOINTS - 1) == FALLBACK_KEYPOINTS - 1
