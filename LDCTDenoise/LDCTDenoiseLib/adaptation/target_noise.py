"""Draws of a target series' own noise, from its reference-free noise model: what recorruption adds to the scans and
what the label-free gain estimate probes the models with.

A draw is stationary Gaussian noise with the 2D NPS that :func:`noise_estimate.estimate_noise` measured (its shape
only: unit variance), times the local noise SD of the estimate's level map, because CT noise is not stationary (it
grows towards the centre of a large patient and behind dense structures). The level map covers the soft tissue in
blocks; blocks without enough soft tissue take the nearest measured block's level, and the map is smoothed so that
the block edges leave no texture.

Before a run learns from these draws, :func:`check_draws` measures their NPS the way the target was measured and
refuses when the two disagree by more than :data:`TOLERANCE` (the estimator's own validated accuracy: an error of
the synthesis beyond that would double the error budget), or when the estimate itself is marked unreliable.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..errors import LDCTDenoiseError
from ..metrics import noise_power_spectrum, nps_summary
from ..noise_estimate import ROI_INSIDE_SHARE, NoiseEstimate, _detrend, estimate_noise, radial_bins, soft_tissue_mask

TOLERANCE = 0.15  # relative, on the SD and on the NPS peak and mean frequency (the estimator's validated +-15 %)
CHECK_DRAWS = 8


def _unit_amplitude(nps_2d: np.ndarray, size: int) -> np.ndarray:
    """sqrt of the NPS shape on a ``size``² DFT grid (unshifted), scaled so that filtered unit white noise has unit
    variance. The estimate's grid (its ROI size) is resampled linearly in frequency when ``size`` differs."""
    if nps_2d.shape[0] != size:
        source = np.fft.fftshift(nps_2d)
        n = source.shape[0]
        frequency = np.fft.fftshift(np.fft.fftfreq(size))  # cycles/px on the new grid
        position = frequency * n + n // 2  # index on the shifted source grid
        rows, columns = np.meshgrid(position, position, indexing="ij")
        shape = ndimage.map_coordinates(source, [rows, columns], order=1, mode="nearest")
        nps_2d = np.fft.ifftshift(shape)
    power = np.maximum(np.asarray(nps_2d, np.float64), 0.0)
    power[0, 0] = 0.0
    total = power.sum()
    if not total > 0:
        raise LDCTDenoiseError("The measured noise power spectrum is empty; the scans' noise cannot be drawn.")
    return np.sqrt(power * power.size / total)


def level_volume(estimate: NoiseEstimate, shape: tuple[int, int, int]) -> np.ndarray:
    """The estimate's block level map as a per-pixel float32 noise SD (HU) of ``shape`` (z, y, x)."""
    level = np.asarray(estimate.level_map, np.float64)
    block = estimate.map_block_px
    out = np.empty(shape, np.float32)
    for index in range(shape[0]):
        blocks = level[index] if index < level.shape[0] else np.full(level.shape[1:], np.nan)
        valid = np.isfinite(blocks)
        if not valid.any():
            blocks = np.full(blocks.shape, estimate.sd_hu)
        elif not valid.all():
            nearest = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
            blocks = blocks[tuple(nearest)]
        pixels = np.repeat(np.repeat(blocks, block, axis=0), block, axis=1)
        pad = ((0, max(0, shape[1] - pixels.shape[0])), (0, max(0, shape[2] - pixels.shape[1])))
        pixels = np.pad(pixels, pad, mode="edge")[:shape[1], :shape[2]]
        out[index] = ndimage.gaussian_filter(pixels, block / 2.0, mode="nearest")
    return out


class TargetNoise:
    """The noise model of one target series: draws with its NPS shape and local level, in HU."""

    def __init__(self, estimate: NoiseEstimate, volume_shape: tuple[int, int, int]) -> None:
        self.estimate = estimate
        self.levels = level_volume(estimate, volume_shape)
        self._amplitudes: dict[tuple[int, str], torch.Tensor] = {}

    @classmethod
    def of(cls, volume: np.ndarray, pixel_mm: float) -> TargetNoise:
        return cls(estimate_noise(volume, pixel_mm), volume.shape)

    def amplitude(self, size: int, device: torch.device) -> torch.Tensor:
        key = (size, str(device))
        if key not in self._amplitudes:
            self._amplitudes[key] = torch.from_numpy(_unit_amplitude(self.estimate.nps_2d, size)).float().to(device)
        return self._amplitudes[key]

    def draw(self, levels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A noise draw (HU) shaped like ``levels`` (batch, 1, size, size): the local SD of each pixel."""
        size = levels.shape[-1]
        if levels.shape[-2] != size:
            raise LDCTDenoiseError(f"Noise draws need square images, got {tuple(levels.shape[-2:])}.")
        white = torch.randn(levels.shape, generator=generator, device=levels.device)
        stationary = torch.fft.ifft2(torch.fft.fft2(white) * self.amplitude(size, levels.device)).real
        return stationary * levels

    def card(self) -> dict:
        return self.estimate.summary()


def check_draws(noise: TargetNoise, volume: np.ndarray, seed: int = 0, name: str = "the target scans") -> dict:
    """Compare the NPS of draws with the target's measured NPS in the same soft-tissue ROIs; refuse on disagreement.

    Returns the compared numbers (for the card). Raises :class:`LDCTDenoiseError` naming what disagreed.
    """
    estimate = noise.estimate
    if not estimate.reliable:
        raise LDCTDenoiseError(
            f"The noise of {name} cannot be told apart from their anatomy (a smooth kernel at a low noise level: the "
            f"anatomy outweighs the noise at every frequency measured), so recorruption would learn the wrong noise. "
            f"Adapt with noise matching, or keep the starting model.")
    picks = np.linspace(0, volume.shape[0] - 1, min(CHECK_DRAWS, volume.shape[0])).round().astype(int)
    generator = torch.Generator().manual_seed(seed)
    draws = noise.draw(torch.from_numpy(noise.levels[picks][:, None]), generator)[:, 0].numpy()
    size = estimate.nps_2d.shape[0]  # the ROI size the estimate used (smaller for large pixels)
    step = size // 2
    rois = []
    for index, draw in zip(picks, draws):
        mask = soft_tissue_mask(volume[index], estimate.pixel_mm)
        for y in range(0, draw.shape[0] - size + 1, step):
            for x in range(0, draw.shape[1] - size + 1, step):
                if mask[y:y + size, x:x + size].mean() >= ROI_INSIDE_SHARE:
                    rois.append(draw[y:y + size, x:x + size].astype(np.float64))
    if not rois:
        raise LDCTDenoiseError(f"No soft-tissue region of {size}² px in {name} to check the noise draws in.")
    freqs, nps = noise_power_spectrum(_detrend(np.stack(rois)), estimate.pixel_mm, n_bins=radial_bins(size))
    drawn = nps_summary(freqs, nps)
    drawn_sd = float(np.sqrt(np.mean(np.concatenate([r.ravel() ** 2 for r in rois]))))
    compared = {"sd_hu": (drawn_sd, estimate.sd_hu),
                "mean_frequency": (drawn["mean_frequency"], estimate.mean_frequency)}
    result = {key: {"drawn": round(a, 4), "measured": round(b, 4)} for key, (a, b) in compared.items()}
    off = [key for key, (a, b) in compared.items() if abs(a / b - 1.0) > TOLERANCE]
    # the shape: total-variation distance of the two spectra normalised to unit area (0 alike, 1 disjoint)
    distance = 0.5 * float(np.abs(nps / nps.sum() - estimate.nps / estimate.nps.sum()).sum())
    result["shape_distance"] = round(distance, 4)
    if distance > TOLERANCE:
        off.append("shape")
        compared["shape"] = (distance, 0.0)
    if off:
        details = "; ".join(f"{key} {compared[key][0]:.3g} drawn against {compared[key][1]:.3g} measured"
                            for key in off)
        raise LDCTDenoiseError(f"The synthetic noise does not match the noise measured in {name} ({details}; "
                               f"tolerance {TOLERANCE:.0%}), so recorruption would learn the wrong noise.")
    return result

