"""The alignment discriminator: tells masked source images from masked target images (the paper's eq. 5).

Small on purpose: the denoiser it plays against has 62k weights, and a much stronger critic only learns faster to
win on cues the denoiser cannot change. Strided convolutions down to a few pixels, then a global average, give one
logit per patch for any patch size of at least 16 px. No batch normalisation, so a batch mixes domains freely and
the result does not depend on how the batch is split.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .settings import GAN_LOSSES


class AlignmentDiscriminator(nn.Module):
    """(N, 1, H, W) masked images -> (N,) logits, high for the "real" (source) domain."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        channels = [1, width, width, 2 * width, 2 * width]
        layers: list[nn.Module] = []
        for index, (inputs, outputs) in enumerate(zip(channels[:-1], channels[1:])):
            layers += [nn.Conv2d(inputs, outputs, 3, stride=1 if index == 0 else 2, padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1], 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(-2, -1)))[:, 0]


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The critic's loss: source ("real") -> 1, target ("fake") -> 0; eq. 5 is the "bce" (log D) form."""
    if kind == "bce":
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    if kind == "lsgan":
        return (real_logits - 1.0).pow(2).mean() + fake_logits.pow(2).mean()
    raise ValueError(f"Unknown GAN loss {kind!r}; choose one of {', '.join(GAN_LOSSES)}.")


def generator_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The denoiser's adversarial loss: make masked target outputs pass as source (non-saturating for "bce")."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "lsgan":
        return (fake_logits - 1.0).pow(2).mean()
    raise ValueError(f"Unknown GAN loss {kind!r}; choose one of {', '.join(GAN_LOSSES)}.")
