"""Recorruption: fine-tuning a denoiser on the unlabeled target scans themselves (Recorrupted-to-Recorrupted, Pang et
al., CVPR 2021; Noisier2Noise, Moran et al., CVPR 2020).

For a target patch y = x + n with noise covariance Σ and an independent draw z with the same covariance, the pair
(y + αz, y - z/α) has independent noises (their cross-covariance is Σ - Σ = 0; Gaussian, so independent), so
E‖f(y + αz) - (y - z/α)‖² = E‖f(y + αz) - x‖² + a constant: training towards the noisy target is, in expectation,
supervised training at the noise level (1 + α²)Σ. This holds for spatially correlated noise, which the blind-spot
methods do not allow (a structured blind spot loses several dB on these scans, docs/evaluation/report.md), on
condition that z has the target's own noise statistics: ``target_noise.py`` draws it from the reference-free noise
model of each series and checks the draws' NPS against the measured one before training.

The model learns on real target anatomy (no phantom pairs), at a noise level above the scan's; the scan itself is
then denoised directly. Whether that helped is estimated on held-out slices without a reference (``gain.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..normalization import hu_to_model
from .target_noise import TargetNoise


MAX_HELD_OUT_SLICES = 16  # per series: millions of pixels of tissue, enough for the interval (docs/measurements.md)


def split_holdout(volumes: Sequence[np.ndarray], share: float) -> tuple[list[np.ndarray], list[np.ndarray],
                                                                         list[np.ndarray]]:
    """(training volumes, held-out volumes, held-out slice indices per volume): ``share`` of each series' slices,
    evenly spread through it, at least one when the share is positive and the series has 3 slices or more, and at
    most :data:`MAX_HELD_OUT_SLICES` (the estimate costs seconds per 512² slice on a CPU)."""
    training, held_out, indices = [], [], []
    for volume in volumes:
        count = min(int(round(share * volume.shape[0])), MAX_HELD_OUT_SLICES)
        count = max(count, 1) if share > 0 and volume.shape[0] >= 3 else count
        picks = (np.linspace(0, volume.shape[0] - 1, count + 2)[1:-1].round().astype(int) if count
                 else np.zeros(0, dtype=int))
        keep = np.setdiff1d(np.arange(volume.shape[0]), picks)
        training.append(volume[keep])
        held_out.append(volume[picks])
        indices.append(picks)
    return training, held_out, indices


class Recorruptor:
    """The recorruption loss of a denoiser on HU target patches, each with its own series' noise model."""

    def __init__(self, noises: Sequence[TargetNoise], alpha: float) -> None:
        self.noises = list(noises)
        self.alpha = float(alpha)

    def pairs(self, patches_hu: torch.Tensor, levels: torch.Tensor, stacks: np.ndarray,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(y + αz, y - z/α) in model units; ``levels`` the per-pixel noise SD of each patch, ``stacks`` its series."""
        draws = torch.empty_like(patches_hu)
        for stack in np.unique(stacks):
            rows = torch.from_numpy(np.flatnonzero(stacks == stack)).to(patches_hu.device)
            draws[rows] = self.noises[int(stack)].draw(levels[rows], generator)
        return (hu_to_model(patches_hu + self.alpha * draws), hu_to_model(patches_hu - draws / self.alpha))

    def loss(self, denoiser: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(denoiser(inputs), targets)

    def card(self) -> dict:
        return {"enabled": True, "alpha": self.alpha, "noise": [noise.card() for noise in self.noises]}
