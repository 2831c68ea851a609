"""Multi-scale VGG19 perceptual loss (the paper's), usable only with a local weights file.

VGG19 weights cannot be downloaded on this machine. A user who has torchvision's ImageNet VGG19
weights (``vgg19-dcbb9e9d.pth``, keys ``features.<i>.weight``/``bias``; a .pth is read with
``weights_only=True``, or the same keys in a .safetensors file) passes them with ``--vgg19 PATH``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

# torchvision's VGG19 "E" configuration: conv widths, "M" = max-pool
_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
_TAPS = (1, 6, 11, 20, 29)  # indices (after ReLU) of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """Frozen VGG19 up to relu5_1, returning the five tapped activations."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for spec in _LAYERS:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(spec), 3, padding=1), nn.ReLU(inplace=False)]
                channels = int(spec)
        self.features = nn.Sequential(*layers[: _TAPS[-1] + 1])
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W) in [0, 1] -> five feature maps."""
        x = (x - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                taps.append(x)
        return taps


def load_vgg19(path: str | Path) -> VGG19Features:
    """Load torchvision-format VGG19 weights from a local .pth or .safetensors file; frozen, eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VGG19 weights not found at {path}; omit --vgg19 to train without the perceptual loss")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    net = VGG19Features()
    wanted = {k: v for k, v in state.items() if k.startswith("features.") and int(k.split(".")[1]) <= _TAPS[-1]}
    missing = set(net.features.state_dict()) - {k[len("features."):] for k in wanted}
    if missing:
        raise ValueError(f"{path} lacks VGG19 feature weights {sorted(missing)[:4]}...: is it torchvision's vgg19?")
    net.features.load_state_dict({k[len("features."):]: v for k, v in wanted.items()})
    net.eval().requires_grad_(False)
    return net


def perceptual_loss(vgg: VGG19Features, output: torch.Tensor, target: torch.Tensor, num_scales: int = 4) -> torch.Tensor:
    """Paper's multi-scale perceptual loss: L1 of VGG19 features over an image pyramid, scales averaged."""
    total = output.new_zeros(())
    for scale in range(num_scales):
        if scale:
            output, target = F.avg_pool2d(output, 2), F.avg_pool2d(target, 2)
        with torch.no_grad():
            target_features = vgg(target)
        for weight, a, b in zip(_WEIGHTS, vgg(output), target_features, strict=True):
            total = total + weight * (a - b).abs().mean()
    return total / num_scales
