"""VGG-19 perceptual loss (the paper's eq. 8), from a local ImageNet weights file in torchvision's layout.

torchvision is not a dependency (Slicer's PyTorch extension does not always bring it) and nothing is downloaded at
run time, so the feature extractor is rebuilt here in plain torch with the exact module indices of
``torchvision.models.vgg19().features``: a file saved from torchvision (``features.N.weight`` / ``features.N.bias``,
classifier keys ignored) loads as is. CT slices enter as the HU window [-1000, 400] scaled to [0, 1] (the co-author's
convention, so soft tissue and lung both stay in range), replicated to three channels and normalised with the
ImageNet mean and SD the weights were trained with. The default layer is relu5_4 (``features[:36]``), as in the
CPCE and WGAN-VGG papers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import WeightsError
from ..model_registry import sha256_file
from ..normalization import HU_MIN, HU_RANGE
from .settings import DEFAULT_PERCEPTUAL_LAYER as DEFAULT_LAYER

VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
PERCEPTUAL_WINDOW_HU = (-1000.0, 400.0)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features(last_layer: int = DEFAULT_LAYER) -> nn.Sequential:
    """``torchvision.models.vgg19().features[: last_layer + 1]`` with random weights and the same indices."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG19_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    if not 0 <= last_layer < len(layers):
        raise ValueError(f"VGG-19 features have layers 0..{len(layers) - 1}, got {last_layer}.")
    return nn.Sequential(*layers[: last_layer + 1])


def _read_state(path: Path) -> dict:
    """The tensors of a weights file, memory-mapped when the format allows (the full VGG-19 file is 548 MB)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise WeightsError(f"VGG-19 weights file not found: {path}") from None
    except Exception:  # legacy (pre-zip) files cannot be memory-mapped; try a plain load before giving up
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises several types for files that are not weights
            raise WeightsError(f"{path} cannot be read as a PyTorch weights file: {error}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict of VGG-19 weights.")
    return state


class PerceptualLoss(nn.Module):
    """Frozen VGG-19 features; ``forward(output, reference)`` in model units is the MSE between their features."""

    def __init__(self, weights_path: str | Path, last_layer: int = DEFAULT_LAYER) -> None:
        super().__init__()
        self.weights_path = Path(weights_path)
        self.last_layer = last_layer
        self.features = vgg19_features(last_layer)
        expected = self.features.state_dict()
        state = _read_state(self.weights_path)
        wanted = {key: state.get(f"features.{key}") for key in expected}
        missing = sorted(f"features.{key}" for key, value in wanted.items() if value is None)
        if missing:
            raise WeightsError(f"{self.weights_path} is not a torchvision VGG-19 weights file: it lacks "
                               f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}.")
        wrong = [f"features.{key} {tuple(value.shape)} != {tuple(expected[key].shape)}"
                 for key, value in wanted.items() if tuple(value.shape) != tuple(expected[key].shape)]
        if wrong:
            raise WeightsError(f"{self.weights_path} has VGG-19 keys of the wrong shape: {'; '.join(wrong[:3])}.")
        self.features.load_state_dict({key: value.float() for key, value in wanted.items()})
        self.features.requires_grad_(False).eval()
        self.sha256 = sha256_file(self.weights_path)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "PerceptualLoss":
        """Stay in eval mode whatever the caller asks: the features are a fixed measuring instrument."""
        super().train(False)
        return self

    def _embed(self, model_units: torch.Tensor) -> torch.Tensor:
        low, high = PERCEPTUAL_WINDOW_HU
        windowed = (model_units * HU_RANGE + HU_MIN - low) / (high - low)
        return self.features((windowed.expand(-1, 3, -1, -1) - self.mean) / self.std)

    def forward(self, output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self._embed(reference)
        return F.mse_loss(self._embed(output), target)

    def card(self) -> dict:
        """What the model card records about this loss."""
        return {"enabled": True, "network": "VGG-19 (ImageNet), torchvision layout",
                "weights_file": self.weights_path.name, "weights_sha256": self.sha256,
                "layer": f"features[:{self.last_layer + 1}]", "input_window_hu": list(PERCEPTUAL_WINDOW_HU)}
