"""Target-noise matching: make the source pairs' noise look like the target scanner's, from unlabeled scans alone.

A denoiser trained at one noise level under-denoises a noisier scan; the alignment does not fix that (it moves
output texture, not the amount of noise the network removes). What the unlabeled target scans do tell, without any
normal-dose image, is their noise power spectrum (NPS): in flat soft-tissue regions the image is noise plus a smooth
background. So we estimate the 2D NPS of the target scans and of the source low-dose scans with the same estimator,
and add to every source low-dose patch stationary Gaussian noise whose NPS is the difference, at the frequencies
where the target clearly holds more noise (``EXCESS_GATE``).
The source pair then keeps its normal-dose label while its input carries the target's noise level and texture.

Why the difference of two estimates rather than a model of the target noise alone: the flat regions of real scans
still hold some anatomy (liver texture, vessels), which leaks into the lowest frequencies of any reference-free NPS
estimate. Estimating both domains the same way cancels most of that leak. Where the target has less noise than the
source at some frequency, nothing is added there (noise cannot be removed from a pair without blurring its anatomy),
so a shift towards a quieter scanner leaves the pairs nearly as they were: that is the no-harm case.

In the evaluation report (docs/evaluation/report.md) it gains most on a much noisier target and does no harm on
most smaller shifts; the numbers are in docs/measurements.md, "Noise matching". The engine's validated noise model
(``noise_estimate.py``) in place of this difference, with or without the target's local noise levels, measured no
better there (same section), so this estimate stays.

No library picks noise-only regions out of patient images (scikit-image and SimpleITK have nothing for it), so the
ROI selection is ours; the 2D NPS is the engine's metric (``metrics.noise_power_spectrum_2d``) and the FFTs are
numpy's and torch's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from ..errors import LDCTDenoiseError
from ..metrics import noise_power_spectrum_2d

SOFT_TISSUE_HU = (-150.0, 250.0)  # ROI means taken as flat soft tissue (fat to enhanced liver)
STRUCTURE_SIGMA_PX = 3.0  # smoothing that leaves mostly anatomy, to rank ROIs by how flat they are
FLATTEST_SHARE = 0.25  # the share of candidate ROIs kept, the flattest ones
MIN_ROIS = 8
# Below this share of the target's noise variance, the added noise is too little for the adaptation to learn from
# (on a kernel-only shift the adapted model then lost to the shipped one; docs/measurements.md).
LITTLE_ADDED_VARIANCE = 0.1
# Noise is added only at frequencies where the target's power is at least this many times the source's. The flat
# regions of real scans keep some anatomy, and at low frequencies it outweighs the noise; two patients' anatomy
# differ there by more than the noise, which must not be read as noise (docs/measurements.md).
EXCESS_GATE = 1.5
# Nor below this radial frequency (cycles/px), where that anatomy dominates the estimate whatever the source: a
# phantom's flat regions are truly flat, so against phantom pairs the gate alone would read a patient's low-frequency
# anatomy as noise to add.
LOW_FREQUENCY_FLOOR = 0.1


def _flat_rois(volume: np.ndarray, size: int) -> np.ndarray:
    """The flattest soft-tissue ``size``² ROIs of every slice (half-overlapping grid), each minus its fitted plane."""
    rois, structure = [], []
    step = size // 2
    y_grid, x_grid = np.mgrid[0:size, 0:size].astype(np.float64)
    design = np.stack([np.ones(size * size), y_grid.ravel(), x_grid.ravel()], axis=1)
    for image in volume:
        smooth = ndimage.gaussian_filter(image.astype(np.float64), STRUCTURE_SIGMA_PX)
        for y in range(0, image.shape[0] - size + 1, step):
            for x in range(0, image.shape[1] - size + 1, step):
                roi, background = image[y:y + size, x:x + size].astype(np.float64), smooth[y:y + size, x:x + size]
                # inside the body (judged on the smoothed image: at 5 % dose single pixels of fat reach -500 HU)
                if not SOFT_TISSUE_HU[0] <= roi.mean() <= SOFT_TISSUE_HU[1] or background.min() < -500.0:
                    continue
                rois.append(roi)
                structure.append(background.std())
    if len(rois) < MIN_ROIS:
        raise LDCTDenoiseError(f"Found {len(rois)} soft-tissue regions of {size}² px in the scans; the noise "
                               f"matching needs at least {MIN_ROIS} (are these body CT slices in HU?); without "
                               f"them, choose the alignment method.")
    keep = np.argsort(structure)[:max(MIN_ROIS, int(len(rois) * FLATTEST_SHARE))]
    flat = np.stack([rois[index] for index in keep]).reshape(len(keep), -1)
    coefficients, *_ = np.linalg.lstsq(design, flat.T, rcond=None)
    return (flat - (design @ coefficients).T).reshape(len(keep), size, size)


def estimate_nps_2d(volumes: Sequence[np.ndarray], size: int) -> np.ndarray:
    """2D NPS (``size`` x ``size``, unshifted FFT order, HU² per pixel: E|FFT|²/size²) of HU scans, reference-free."""
    return noise_power_spectrum_2d(np.concatenate([_flat_rois(np.asarray(volume, np.float32), size)
                                                   for volume in volumes]))


def _sd(nps: np.ndarray) -> float:
    """The noise SD (HU) of a 2D NPS in the units of :func:`estimate_nps_2d` (Parseval: variance = sum / pixels)."""
    return round(float(np.sqrt(nps.sum() / nps.size)), 2)


def noise_summary(card: dict) -> str:
    """One line for the user from a run's ``target_noise_matching`` card: what was measured and added, and whether
    the target was noisy enough for the adaptation to learn anything from it."""
    if not card.get("enabled", True):
        return ""
    target, added = card["target_noise_sd_hu"], card["added_noise_sd_hu"]
    line = (f"Noise measured in flat soft tissue: target scans {target:.0f} HU, source pairs "
            f"{card['source_noise_sd_hu']:.0f} HU; {added:.0f} HU was added to the source inputs.")
    if added ** 2 < LITTLE_ADDED_VARIANCE * target ** 2:
        line += (" The target is hardly noisier than the source pairs, so the adaptation had little to learn from "
                 "it: compare the profile with the model it started from before using it.")
    return line


class NoiseMatcher:
    """Adds stationary Gaussian noise with NPS = NPS_target - NPS_source to HU patches of ``size``², at the frequencies
    where the target clearly holds more noise (``EXCESS_GATE``, ``LOW_FREQUENCY_FLOOR``), and none elsewhere."""

    def __init__(self, source_low_dose: Sequence[np.ndarray], target_volumes: Sequence[np.ndarray], size: int,
                 device: torch.device) -> None:
        source_nps = estimate_nps_2d(source_low_dose, size)
        target_nps = estimate_nps_2d(target_volumes, size)
        frequency = np.fft.fftfreq(size)
        radius = np.hypot(*np.meshgrid(frequency, frequency, indexing="ij"))
        excess = (target_nps >= EXCESS_GATE * source_nps) & (radius >= LOW_FREQUENCY_FLOOR)
        added = np.where(excess, target_nps - source_nps, 0.0)
        self.amplitude = torch.from_numpy(np.sqrt(added)).float().to(device)
        self.card = {"source_noise_sd_hu": _sd(source_nps), "target_noise_sd_hu": _sd(target_nps),
                     "added_noise_sd_hu": _sd(added),
                     "roi_size_px": size}

    def __call__(self, patches_hu: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``patches_hu`` (batch, 1, size, size) plus a fresh noise draw of the added spectrum."""
        white = torch.randn(patches_hu.shape, generator=generator, device=patches_hu.device)
        noise = torch.fft.ifft2(torch.fft.fft2(white) * self.amplitude).real
        return patches_hu + noise
