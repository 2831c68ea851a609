"""The render path's faster forms (issue 20's speed goal) compute what the plain forms do, up to float rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from codec.model import PRESETS, FaceVid2VidModel
from codec.model.blocks import make_coordinate_grid
from codec.model.enhancement_branch import PictureCorrection, area_matrix, bicubic_matrix
from codec.model.motion_field import combined_flow, sparse_motions


@pytest.mark.parametrize(("size_in", "size_out"), [(64, 256), (16, 64), (48, 256)])
def test_the_bicubic_matrix_upsamples_as_interpolate_does(size_in: int, size_out: int) -> None:
    x = torch.rand(2, 3, size_in, size_in)  # (B, 3, E, E)
    up = bicubic_matrix(size_in, size_out)  # (S, E)
    assert up.shape == (size_out, size_in)
    expected = F.interpolate(x, size=(size_out, size_out), mode="bicubic", align_corners=False)
    assert torch.allclose(up @ x @ up.t(), expected, atol=1e-5)
    assert torch.allclose(PictureCorrection(size_in, 8).upscale(x, size_out), expected, atol=1e-5)


@pytest.mark.parametrize("size_in", [256, 200])
def test_downscale_is_the_area_matrix_in_fp32_under_autocast(size_in: int) -> None:
    image = torch.rand(1, 3, size_in, size_in)
    area = area_matrix(size_in, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        down = PictureCorrection(64, 8).downscale(image, 64)
    assert down.dtype == torch.float32
    assert torch.allclose(down, area @ image @ area.t(), atol=1e-6)


def test_the_combined_flow_is_the_mask_weighted_sum_of_the_keypoint_flows() -> None:
    torch.manual_seed(0)
    b, k, m, out = 2, 5, 8, 16
    masks = F.softmax(torch.randn(b, k + 1, m, m), dim=1)  # (B, K+1, m, m)
    kp_ref, kp_drv = torch.rand(b, k, 3) * 2 - 1, torch.rand(b, k, 3) * 2 - 1
    jacobian = torch.eye(2) + 0.2 * torch.randn(b, 2, 2)
    for size in (m, out):
        up = masks if size == m else F.interpolate(masks, size=(size, size), mode="bilinear", align_corners=False)
        motions = sparse_motions(make_coordinate_grid(size, size, masks), kp_ref, kp_drv, jacobian)  # (B, K+1, s, s, 2)
        expected = (up[..., None] * motions).sum(dim=1)  # (B, s, s, 2)
        assert torch.allclose(combined_flow(masks, kp_ref, kp_drv, jacobian, size), expected, atol=1e-5)


def test_sparse_motions_apply_the_jacobian_around_each_keypoint() -> None:
    grid = make_coordinate_grid(4, 4, torch.zeros(1))  # (4, 4, 2)
    kp_ref, kp_drv = torch.tensor([[[0.5, -0.5, 0.0]]]), torch.tensor([[[0.1, 0.2, 0.3]]])
    jacobian = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    motions = sparse_motions(grid, kp_ref, kp_drv, jacobian)  # (1, 2, 4, 4, 2)
    expected = (grid - kp_drv[0, 0, :2]) @ jacobian[0].t() + kp_ref[0, 0, :2]
    assert torch.equal(motions[0, 0], grid)
    assert torch.allclose(motions[0, 1], expected, atol=1e-6)


@pytest.mark.parametrize("preset", ["tiny", "tiny-enh"])
def test_inference_layout_renders_what_training_layout_does(preset: str) -> None:
    """Without autograd the CPU convolutions run channels-last (blocks.conv_layout): same image in fp32."""
    torch.manual_seed(0)
    model = FaceVid2VidModel(PRESETS[preset]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the zero-initialised heads must count too
    ref, drv = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    extra = {"enhancement": torch.rand(1, 3, 16, 16)} if PRESETS[preset].enhancement_size else {}
    with torch.enable_grad():
        trained_layout = model(ref, drv, **extra)["image"].detach()
    with torch.inference_mode():
        inference_layout = model(ref, drv, **extra)["image"]
    assert inference_layout.shape == (1, 3, 64, 64)
    assert (inference_layout - trained_layout).abs().max() < 1e-4
