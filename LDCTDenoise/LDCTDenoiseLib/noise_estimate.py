"""Reference-free noise model of a CT series: noise SD in soft tissue, its NPS, and a coarse noise-level map.

Why a new estimator: the NPS of the flattest soft-tissue ROIs (``adaptation/noise_matching.py``) counts the
anatomy left in those ROIs as noise. Measured on the Mayo pairs, that anatomy outweighs the noise below about
0.2 cycles/mm at quarter dose and below 0.3-0.45 cycles/mm at full dose, so that estimate reads 1.1-2.3x the true SD
at quarter dose and 1.2-4.2x at full dose, with its NPS peak in the lowest bin. Differences of neighbouring slices
are no way out here: the Mayo pair slices lie 4-186 mm apart, and on L096's normal-dose series (3 mm slices every
6 mm) they read 54 HU (46 HU with a MAD) where this model and the paired truth of that scan give 37-41 HU, because
anatomy changes over 6 mm. This model works on single slices.

The method (chosen by measurement against the Mayo pairs and the simulator, ``training/validate_noise_estimate.py``,
results in ``docs/evaluation/noise-estimate.md``):

1. ROIs of ``ROI_SIZE_PX``² wholly inside soft tissue (the image smoothed, in [-100, 200] HU, inside the body),
   the flatter half of them (by the SD of their smoothed, plane-detrended content), each minus its fitted plane.
2. Their radial NPS ``P(f)`` (the engine's ``metrics.noise_power_spectrum``) is noise plus anatomy. Soft-tissue
   anatomy in such ROIs (organ edges, vessels, parenchyma) has a power-law spectrum close to ``A f^-3`` (measured on
   the Mayo full-dose images: exponent 3.0-3.3 between 0.09 and 0.3 cycles/mm) while FBP noise rises from low
   frequencies. ``A`` is the smallest ``P(f) f^3`` over the low band, where anatomy dominates, and is subtracted.
3. Below the frequency where the anatomy still makes more than ``ANATOMY_SHARE_LIMIT`` of ``P``, the noise is
   extended downwards with the FBP shape: linear in ``f`` (the ramp) from the cutoff towards a floor of
   ``RAMP_FLOOR`` times the cutoff's value at f = 0 (helical interpolation and slice averaging keep some power at
   the lowest frequencies; measured 0.15-0.3 on the Mayo pairs).
4. The noise-level map: the robust (MAD) SD of a high-pass residual in blocks of soft tissue, divided by the share
   of the noise variance that the high-pass keeps (computed from the NPS of step 3). The series' noise SD is the
   root mean square of that map over the soft tissue, so it describes the same pixels a soft-tissue mask does
   (integrating the NPS instead describes only the flatter ROIs and measured further from the truth).

Where it is weak: a smooth kernel at a low noise level (Mayo B30 full dose) has its noise peak where anatomy still
dominates; when the anatomy outweighs the noise at every frequency of the band the estimate is marked ``reliable =
False`` (L192 B30 full dose reads 1.7x too high). The peak of a flat-topped NPS (sharp kernels) is ill-defined: bins
within 5 % of the maximum span 0.1-0.2 cycles/mm, so a peak can move by that much in the truth and the estimate alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage

from .body import BODY_HU
from .errors import LDCTDenoiseError
from .metrics import noise_power_spectrum, noise_power_spectrum_2d, nps_summary

SOFT_TISSUE_HU = (-100.0, 200.0)  # fat-muscle boundary to enhanced liver, judged on the smoothed image
SMOOTH_MM = 2.0  # smoothing before the masks, so that noise (even 5 % dose) does not cut them up
ERODE_MM = 3.0  # keep away from tissue boundaries
ROI_SIZE_PX = 64  # 42-52 mm at the Mayo pixel sizes (0.66-0.82 mm)
SMALL_ROI_SIZE_PX = 32
ROI_INSIDE_SHARE = 0.98  # an ROI counts as soft tissue when this share of its pixels lies in the mask
FLAT_SHARE = 0.5  # keep the flatter half of the soft-tissue ROIs
STRUCTURE_SIGMA_PX = 4.0
MIN_ROIS = 4
DETREND_BINS = 4.0  # the plane fit removes power below about this many DFT steps of an ROI
ANATOMY_EXPONENT = 3.0
ANATOMY_BAND_CYCLES_PER_MM = (0.04, 0.3)  # where A is read, from the minimum of P(f) f^3
ANATOMY_SHARE_LIMIT = 0.5
RAMP_FLOOR = 0.25
HIGH_PASS_SIGMA_PX = 1.0
MAP_BLOCK_PX = 32
MIN_BLOCK_PIXELS = 64
MAD_TO_SD = 1.4826
N_BINS = 32  # radial bins of the NPS (0.022 cycles/px wide): 16 and 24 measured worse (peak, B30)


@dataclass
class NoiseEstimate:
    """What :func:`estimate_noise` measured; NPS in HU² mm² against cycles/mm, the 2D one in unshifted FFT order."""

    sd_hu: float
    frequencies: np.ndarray
    nps: np.ndarray
    nps_2d: np.ndarray
    pixel_mm: float
    peak_frequency: float
    mean_frequency: float
    cutoff_frequency: float  # below it the NPS is the ramp extension, not a measurement
    level_map: np.ndarray  # (z, rows/block, columns/block) noise SD in HU, NaN where there is too little soft tissue
    map_block_px: int
    n_rois: int
    roi_sd_hu: float  # SD integrated from the NPS (the flat ROIs' noise, detrended)
    # False when the anatomy outweighed the noise at every frequency of the anatomy band: a smooth kernel at a low
    # noise level (Mayo B30 full dose of L192 read 2.1x too high); do not act on such an estimate
    reliable: bool = True
    details: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """The numbers, rounded, for reports and cards."""
        return {"sd_hu": round(self.sd_hu, 2), "peak_frequency": round(self.peak_frequency, 4),
                "mean_frequency": round(self.mean_frequency, 4),
                "cutoff_frequency": round(self.cutoff_frequency, 4), "roi_sd_hu": round(self.roi_sd_hu, 2),
                "n_rois": self.n_rois, "reliable": self.reliable}


def soft_tissue_mask(image: np.ndarray, pixel_mm: float, erode_mm: float = ERODE_MM) -> np.ndarray:
    """Soft tissue inside the body of one slice: smoothed HU in ``SOFT_TISSUE_HU``, eroded by ``erode_mm``."""
    smooth = ndimage.gaussian_filter(np.asarray(image, np.float64), SMOOTH_MM / pixel_mm)
    body = ndimage.binary_fill_holes(ndimage.binary_opening(smooth > BODY_HU, iterations=3))
    mask = body & (smooth >= SOFT_TISSUE_HU[0]) & (smooth <= SOFT_TISSUE_HU[1])
    iterations = int(round(erode_mm / pixel_mm))
    return ndimage.binary_erosion(mask, iterations=iterations) if iterations > 0 else mask


def _detrend(rois: np.ndarray) -> np.ndarray:
    """Each ROI minus its least-squares plane (removes the slow background of the organ it lies in)."""
    size = rois.shape[-1]
    y_grid, x_grid = np.mgrid[0:size, 0:size].astype(np.float64)
    design = np.stack([np.ones(size * size), y_grid.ravel(), x_grid.ravel()], axis=1)
    flat = rois.reshape(len(rois), -1).T
    coefficients, *_ = np.linalg.lstsq(design, flat, rcond=None)
    return (flat - design @ coefficients).T.reshape(rois.shape)


def _soft_tissue_rois(volume: np.ndarray, masks: np.ndarray, size: int) -> np.ndarray:
    """The flatter half of the ``size``² ROIs (half-overlapping grid) lying in soft tissue, detrended."""
    rois, structure = [], []
    step = size // 2
    for image, mask in zip(volume, masks):
        inside = ndimage.uniform_filter(mask.astype(np.float64), size, mode="constant")
        smooth = ndimage.gaussian_filter(image.astype(np.float64), STRUCTURE_SIGMA_PX)
        for y in range(0, image.shape[0] - size + 1, step):
            for x in range(0, image.shape[1] - size + 1, step):
                if inside[y + size // 2, x + size // 2] < ROI_INSIDE_SHARE:
                    continue
                rois.append(image[y:y + size, x:x + size].astype(np.float64))
                structure.append(smooth[y:y + size, x:x + size])
    if len(rois) < MIN_ROIS:
        raise LDCTDenoiseError(f"Found {len(rois)} soft-tissue regions of {size}² px in the series; the noise "
                               f"estimate needs at least {MIN_ROIS} (are these body CT slices in HU?).")
    flatness = _detrend(np.stack(structure)).std(axis=(1, 2))
    keep = np.argsort(flatness)[:max(MIN_ROIS, int(round(len(rois) * FLAT_SHARE)))]
    return _detrend(np.stack([rois[index] for index in keep]))


def _smooth_bins(values: np.ndarray) -> np.ndarray:
    """A 3-bin running mean (the ends keep their own two-bin mean), to read the anatomy level off noisy bins."""
    padded = np.concatenate([values[:1], values, values[-1:]])
    return (padded[:-2] + padded[1:-1] + padded[2:]) / 3.0


def noise_spectrum(freqs: np.ndarray, measured: np.ndarray,
                   lowest: float) -> tuple[np.ndarray, float, float, bool]:
    """Radial noise NPS from the radial NPS of flat soft-tissue ROIs: (noise NPS, cutoff, anatomy A, separated).

    ``separated`` is False when the anatomy dominates every frequency of the band (see the fallback below).

    Subtracts the anatomy's ``A f^-ANATOMY_EXPONENT`` and extends the noise below the cutoff with the ramp shape.
    ``lowest`` (cycles/mm): below it the ROIs' plane detrending has removed part of the anatomy, so A is not read there.
    """
    smooth = _smooth_bins(measured)
    low = max(ANATOMY_BAND_CYCLES_PER_MM[0], lowest)
    band = (freqs >= low) & (freqs <= ANATOMY_BAND_CYCLES_PER_MM[1])
    if not band.any():
        band = np.arange(freqs.size) == 1
    amplitude = float(np.min(smooth[band] * freqs[band] ** ANATOMY_EXPONENT))
    anatomy = amplitude * freqs ** -ANATOMY_EXPONENT
    # Scan upwards from the anatomy band: the first frequency where the anatomy no longer dominates is the cutoff.
    # (At high frequencies a smooth kernel blurs the anatomy as much as the noise, so A f^-3 overstates it there;
    # it is subtracted only up to twice the cutoff, where it is already below an eighth of the cutoff's share.)
    candidates = np.nonzero((freqs >= low)
                            & (anatomy <= ANATOMY_SHARE_LIMIT * smooth))[0]
    if candidates.size:
        start = int(candidates[0])
        anatomy[freqs > 2.0 * freqs[start]] = 0.0
    else:
        # A smooth kernel at a low noise level: A f^-3 stays above half the measurement everywhere (on Mayo B30 full
        # dose of L192 the noise is 20-60 % of the flat ROIs' power between 0.2 and 0.5 cycles/mm). The cutoff becomes
        # the frequency where the anatomy model takes the smallest share, what lies above it is taken as noise, and
        # the estimate is marked unreliable.
        usable = np.nonzero(freqs >= low)[0]
        start = int(usable[np.argmax(smooth[usable] * freqs[usable] ** ANATOMY_EXPONENT)])
        anatomy[:] = 0.0
    cutoff = float(freqs[start])
    noise = np.maximum(measured - anatomy, 0.0)
    if start > 0:
        level = float(np.maximum(smooth[start] - anatomy[start], 0.0))
        noise[:start] = level * (RAMP_FLOOR + (1.0 - RAMP_FLOOR) * freqs[:start] / cutoff)
    return noise, cutoff, amplitude, bool(candidates.size)


def _radial_gain_2d(nps2d_measured: np.ndarray, pixel_mm: float, freqs: np.ndarray, measured: np.ndarray,
                    noise: np.ndarray) -> np.ndarray:
    """The 2D noise NPS: the measured 2D NPS times the radial noise/measured ratio (keeps the anisotropy)."""
    size = nps2d_measured.shape[0]
    frequency = np.fft.fftfreq(size, d=pixel_mm)
    radius = np.hypot(*np.meshgrid(frequency, frequency, indexing="ij"))
    ratio = np.divide(noise, measured, out=np.zeros_like(noise), where=measured > 0)
    return nps2d_measured * np.interp(radius, freqs, ratio)


def _high_pass_share(nps2d: np.ndarray) -> float:
    """The share of the noise variance that ``image - gaussian(image, HIGH_PASS_SIGMA_PX)`` keeps."""
    size = nps2d.shape[0]
    frequency = np.fft.fftfreq(size)  # cycles per pixel
    radius2 = np.add.outer(frequency ** 2, frequency ** 2)
    transfer = 1.0 - np.exp(-2.0 * np.pi ** 2 * HIGH_PASS_SIGMA_PX ** 2 * radius2)
    total = float(nps2d.sum())
    return float((nps2d * transfer ** 2).sum() / total) if total > 0 else 1.0


def noise_level_map(volume: np.ndarray, masks: np.ndarray, high_pass_share: float,
                    block: int = MAP_BLOCK_PX) -> tuple[np.ndarray, np.ndarray]:
    """Noise SD (HU) per ``block``² block of soft tissue, and the soft-tissue pixel count of each block.

    The MAD of the high-pass residual ignores the few anatomy edges left in a block; dividing by the high-pass
    share of the noise variance turns it into the full noise SD.
    """
    n_slices, rows, columns = volume.shape
    shape = (n_slices, rows // block, columns // block)
    level, counts = np.full(shape, np.nan), np.zeros(shape, dtype=np.int64)
    for index, (image, mask) in enumerate(zip(volume, masks)):
        image = image.astype(np.float64)
        residual = image - ndimage.gaussian_filter(image, HIGH_PASS_SIGMA_PX)
        for by in range(shape[1]):
            for bx in range(shape[2]):
                window = (slice(by * block, (by + 1) * block), slice(bx * block, (bx + 1) * block))
                values = residual[window][mask[window]]
                counts[index, by, bx] = values.size
                if values.size >= MIN_BLOCK_PIXELS:
                    mad = np.median(np.abs(values - np.median(values)))
                    level[index, by, bx] = MAD_TO_SD * mad / np.sqrt(high_pass_share)
    return level, counts


def radial_bins(roi_size: int, n_bins: Optional[int] = N_BINS) -> Optional[int]:
    """``n_bins``, or fewer for small ROIs (the NPS's annuli cannot be narrower than the ROI's frequency step)."""
    return None if n_bins is None else min(n_bins, int(np.floor(np.sqrt(2.0) / 2.0 * roi_size)))


def estimate_noise(volume: np.ndarray, pixel_mm: float, roi_size: int = ROI_SIZE_PX,
                   masks: Optional[np.ndarray] = None, n_bins: Optional[int] = N_BINS) -> NoiseEstimate:
    """Reference-free noise model of a float HU series (z, y, x) with square pixels of ``pixel_mm``.

    ``masks`` (optional, same shape, bool) replaces the soft-tissue mask the estimate finds itself.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim == 2:
        volume = volume[None]
    if volume.ndim != 3:
        raise LDCTDenoiseError(f"Expected a volume (z, y, x), got shape {volume.shape}.")
    if not pixel_mm > 0:
        raise LDCTDenoiseError(f"The pixel size must be positive, got {pixel_mm!r}.")
    if masks is None:
        masks = np.stack([soft_tissue_mask(image, pixel_mm) for image in volume])
    try:
        rois = _soft_tissue_rois(volume, masks, roi_size)
    except LDCTDenoiseError:
        if roi_size <= SMALL_ROI_SIZE_PX:
            raise
        # large pixels or a small patient: smaller ROIs (coarser NPS bins) rather than no estimate
        roi_size = SMALL_ROI_SIZE_PX
        rois = _soft_tissue_rois(volume, masks, roi_size)
    freqs, measured = noise_power_spectrum(rois, pixel_mm, n_bins=radial_bins(roi_size, n_bins))
    noise, cutoff, amplitude, separated = noise_spectrum(freqs, measured, DETREND_BINS / (roi_size * pixel_mm))
    nps2d = _radial_gain_2d(noise_power_spectrum_2d(rois, pixel_mm), pixel_mm, freqs, measured, noise)
    summary = nps_summary(freqs, noise)
    share = _high_pass_share(nps2d)
    level, counts = noise_level_map(volume, masks, share)
    valid = np.isfinite(level)
    if valid.any():
        sd = float(np.sqrt(np.sum(level[valid] ** 2 * counts[valid]) / counts[valid].sum()))
    else:
        sd = float(np.sqrt(summary["integral_variance"]))
    return NoiseEstimate(sd_hu=sd, frequencies=freqs, nps=noise, nps_2d=nps2d, pixel_mm=float(pixel_mm),
                         peak_frequency=summary["peak_frequency"], mean_frequency=summary["mean_frequency"],
                         cutoff_frequency=cutoff, level_map=level, map_block_px=MAP_BLOCK_PX,
                         n_rois=len(rois), roi_sd_hu=float(np.sqrt(summary["integral_variance"])),
                         reliable=separated,
                         details={"anatomy_amplitude": amplitude, "high_pass_share": share,
                                  "measured_nps": measured})
