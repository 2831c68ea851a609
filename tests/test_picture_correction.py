"""The enhancement branch's pixel path (codec/model/enhancement_branch.py: PictureCorrection)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from codec.model.enhancement_branch import PictureCorrection, area_matrix


@pytest.mark.parametrize(("size_in", "size_out"), [(256, 64), (256, 48), (200, 48), (64, 16)])
def test_the_area_matrix_downscales_as_the_sender_does(size_in: int, size_out: int) -> None:
    image = np.random.default_rng(0).random((size_in, size_in, 3)).astype(np.float32)
    sender = cv2.resize(image, (size_out, size_out), interpolation=cv2.INTER_AREA)  # lowres_codec.downscale's
    area = area_matrix(size_in, size_out).numpy()
    ours = np.einsum("es,stc,ft->efc", area, image, area)
    assert np.abs(ours - sender).max() < 1e-5


def test_area_matrix_refuses_an_upscale() -> None:
    with pytest.raises(ValueError, match="size_out <= size_in"):
        area_matrix(16, 32)


@pytest.mark.parametrize("side", [16, 24, 32])  # the trained E, and larger pictures (the ladder's top rungs)
def test_an_open_gate_makes_the_output_agree_with_the_picture_at_its_scale(side: int) -> None:
    torch.manual_seed(0)
    correction = PictureCorrection(picture_size=16, channels=8).eval()
    image = torch.rand(2, 3, 64, 64) * 0.5 + 0.25  # (B, 3, S, S)
    coarse = torch.rand(2, 3, 4, 4) * 0.5 + 0.25
    picture = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear")  # (B, 3, P, P), smooth as faces

    with torch.no_grad():
        assert torch.equal(correction(image, picture), image)  # zero-initialised: no change untrained
        correction.net[-1].bias[0].fill_(20.0)  # gate tanh(20) = 1: trust the picture fully
        out = correction(image, picture, torch.tensor([1.0, 0.0]))
    before = (correction.downscale(image, side) - picture).abs().mean()
    after = (correction.downscale(out[:1], side) - picture[:1]).abs().mean()
    assert after < 0.2 * before  # back-projection: the output's E×E view moved to the picture's
    assert torch.equal(out[1], image[1])  # absent: untouched
