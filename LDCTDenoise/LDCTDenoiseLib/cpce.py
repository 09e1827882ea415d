"""CPCE-2D (Shan et al., IEEE TMI 2018), exactly as the official ``CPCE_2D`` of hmshan/CPCE-3D.

Four 3x3 valid convolutions (32 filters, no bias) and four 3x3 valid transposed convolutions; three conveying paths
concatenate an encoder feature map with the decoder one, apply ReLU and compress 64 -> 32 channels with a 1x1
convolution; the output is a ReLU. 62,016 weights. Valid convolutions shrink by 8 px and the transposed ones grow
back, so any slice of at least 9x9 px comes out the same size.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ARCHITECTURE_CARD = {
    "name": "CPCE-2D",
    "reference": "Shan et al., IEEE TMI 37(6):1522-1534, 2018; official code hmshan/CPCE-3D models.py CPCE_2D",
    "filters": 32,
    "kernel": 3,
    "padding": "valid",
    "bias": False,
    "output_activation": "relu",
    "parameters": 62016,
}


class CPCE2D(nn.Module):
    """Conveying-path convolutional encoder-decoder for one-channel slices (N, 1, H, W) -> (N, 1, H, W)."""

    def __init__(self, filters: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters, 3, bias=False)
        self.conv2 = nn.Conv2d(filters, filters, 3, bias=False)
        self.conv3 = nn.Conv2d(filters, filters, 3, bias=False)
        self.conv4 = nn.Conv2d(filters, filters, 3, bias=False)
        self.deconv5 = nn.ConvTranspose2d(filters, filters, 3, bias=False)
        self.convey5 = nn.Conv2d(2 * filters, filters, 1, bias=False)
        self.deconv6 = nn.ConvTranspose2d(filters, filters, 3, bias=False)
        self.convey6 = nn.Conv2d(2 * filters, filters, 1, bias=False)
        self.deconv7 = nn.ConvTranspose2d(filters, filters, 3, bias=False)
        self.convey7 = nn.Conv2d(2 * filters, filters, 1, bias=False)
        self.deconv8 = nn.ConvTranspose2d(filters, 1, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 9 or x.shape[-2] < 9:
            raise ValueError(f"CPCE-2D needs slices of at least 9x9 pixels, got {tuple(x.shape[-2:])}.")
        e1 = self.conv1(x)
        e2 = self.conv2(F.relu(e1))
        e3 = self.conv3(F.relu(e2))
        e4 = self.conv4(F.relu(e3))
        d = self.deconv5(F.relu(e4))
        d = F.relu(self.convey5(F.relu(torch.cat([e3, d], dim=1))))
        d = self.deconv6(d)
        d = F.relu(self.convey6(F.relu(torch.cat([e2, d], dim=1))))
        d = self.deconv7(d)
        d = F.relu(self.convey7(F.relu(torch.cat([e1, d], dim=1))))
        return F.relu(self.deconv8(d))


def count_weights(model: nn.Module) -> int:
    """Number of trainable weights (the spec says 62,016 for CPCE-2D)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
