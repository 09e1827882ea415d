"""Image-quality numbers with one fixed set of conventions, so every report and figure is comparable.

- PSNR and SSIM on the display window [-160, 240] HU (data range 400) and on the full range [-1024, 3072] HU (data
  range 4096); both images are clipped to the window first, as RED-CNN's evaluation does.
- SSIM as Wang et al. 2004: Gaussian weights, sigma 1.5, K1 0.01, K2 0.03, population covariances. skimage truncates
  that Gaussian at 3.5 sigma, a radius of int(3.5 * 1.5 + 0.5) = 5 pixels: an 11x11 window.
- RMSE in HU without clipping.
- Volumes: every metric is computed per slice and averaged over slices.
- Noise: SD in a homogeneous ROI, CNR, and the radially averaged noise power spectrum (NPS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import fft

from .errors import LDCTDenoiseError

# The display window, W/L 400/40: the only definition; figures, metrics, the written series' window and the Slicer
# views all take it from here. Integers, as DICOM's WindowWidth/WindowCenter and Slicer's display node get them.
WINDOW_WIDTH, WINDOW_CENTER = 400, 40
DISPLAY_WINDOW = (WINDOW_CENTER - WINDOW_WIDTH / 2, WINDOW_CENTER + WINDOW_WIDTH / 2)  # (-160.0, 240.0) HU
DISPLAY_WINDOW_LABEL = f"W/L {WINDOW_WIDTH}/{WINDOW_CENTER}"
FULL_RANGE = (-1024.0, 3072.0)  # data range 4096
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11  # what skimage's truncate=3.5 gives for sigma 1.5


@dataclass(frozen=True)
class Roi:
    """A rectangular region of a slice in pixels; ``x`` is the column and ``y`` the row of its top-left corner."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if min(self.x, self.y) < 0 or min(self.width, self.height) < 1:
            raise LDCTDenoiseError(
                f"Invalid ROI {self}: x and y must be >= 0, width and height >= 1 pixel."
            )

    def slices(self) -> tuple[slice, slice]:
        """(rows, columns) slices that cut the ROI out of a 2-D image."""
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)

    def check_inside(self, shape: Sequence[int]) -> None:
        """Raise when the ROI does not lie wholly inside an image whose last two dimensions are ``shape[-2:]``."""
        rows, columns = shape[-2], shape[-1]
        if self.y + self.height > rows or self.x + self.width > columns:
            raise LDCTDenoiseError(
                f"ROI {self} (columns {self.x}-{self.x + self.width - 1}, rows {self.y}-{self.y + self.height - 1}) "
                f"does not fit inside the {columns}x{rows} (columns x rows) image."
            )


def _pair(image: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64 (z, y, x), after checking they match."""
    a = np.asarray(image, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"Image shape {a.shape} differs from reference shape {b.shape}.")
    if a.ndim not in (2, 3):
        raise ValueError(f"Expected a 2-D slice or a 3-D volume (z, y, x), got shape {a.shape}.")
    return (a[None], b[None]) if a.ndim == 2 else (a, b)


def _window_width(window: tuple[float, float]) -> float:
    low, high = window
    if not high > low:
        raise ValueError(f"Window {window} must be (low, high) with high > low.")
    return float(high - low)


def _psnr_slice(a: np.ndarray, b: np.ndarray, window: tuple[float, float]) -> float:
    data_range = _window_width(window)
    mse = float(np.mean((np.clip(a, *window) - np.clip(b, *window)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


def _ssim_slice(a: np.ndarray, b: np.ndarray, window: tuple[float, float]) -> float:
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs slices of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {a.shape}.")
    # Imported here: the Slicer module loads this file (for Roi) before scikit-image, which Slicer does not bundle,
    # has been installed.
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            np.clip(a, *window),
            np.clip(b, *window),
            data_range=_window_width(window),
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
            K1=0.01,
            K2=0.03,
        )
    )


def _rmse_slice(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def psnr(image: np.ndarray, reference: np.ndarray, window: tuple[float, float] = DISPLAY_WINDOW) -> float:
    """PSNR (dB) with both images clipped to ``window`` and the window width as data range; inf when identical."""
    a, b = _pair(image, reference)
    return float(np.mean([_psnr_slice(x, y, window) for x, y in zip(a, b)]))


def ssim(image: np.ndarray, reference: np.ndarray, window: tuple[float, float] = DISPLAY_WINDOW) -> float:
    """SSIM (Wang et al. 2004 settings, 11x11 Gaussian window) with both images clipped to ``window``."""
    a, b = _pair(image, reference)
    return float(np.mean([_ssim_slice(x, y, window) for x, y in zip(a, b)]))


def rmse(image: np.ndarray, reference: np.ndarray) -> float:
    """Root-mean-square error in HU, unclipped (per slice, averaged over slices for a volume)."""
    a, b = _pair(image, reference)
    return float(np.mean([_rmse_slice(x, y) for x, y in zip(a, b)]))


def per_slice_metrics(volume: np.ndarray, reference: np.ndarray) -> list[dict]:
    """PSNR/SSIM in the display window and the full range, and RMSE, for each slice (a 2-D input is one slice)."""
    a, b = _pair(volume, reference)
    return [
        {
            "slice": index,
            "psnr_display": _psnr_slice(x, y, DISPLAY_WINDOW),
            "ssim_display": _ssim_slice(x, y, DISPLAY_WINDOW),
            "psnr_full": _psnr_slice(x, y, FULL_RANGE),
            "ssim_full": _ssim_slice(x, y, FULL_RANGE),
            "rmse": _rmse_slice(x, y),
        }
        for index, (x, y) in enumerate(zip(a, b))
    ]


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample SD (ddof=1; 0.0 for a single value) of per-slice or per-patient numbers."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("Cannot summarise an empty list of values.")
    return float(data.mean()), float(data.std(ddof=1)) if data.size > 1 else 0.0


def roi_stats(image2d: np.ndarray, roi: Roi) -> dict:
    """Mean and sample SD (ddof=1) of the HU inside ``roi``: the noise SD when the region is homogeneous."""
    image = np.asarray(image2d, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"Expected a 2-D slice, got shape {image.shape}.")
    roi.check_inside(image.shape)
    values = image[roi.slices()]
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if values.size > 1 else 0.0}


def cnr(image2d: np.ndarray, roi: Roi, background_roi: Roi) -> float:
    """Contrast-to-noise ratio |mean(roi) - mean(background)| / SD(background), SDs with ddof=1.

    The background's SD is the noise term, so the background ROI should be homogeneous tissue.
    """
    signal = roi_stats(image2d, roi)
    background = roi_stats(image2d, background_roi)
    if background["sd"] == 0.0:
        return math.inf
    return abs(signal["mean"] - background["mean"]) / background["sd"]


def noise_power_spectrum_2d(noise_images: np.ndarray, pixel_mm: float = 1.0) -> np.ndarray:
    """2-D NPS of a stack (n, y, x) of noise-only images, unshifted DFT order: (dx dy) / (Nx Ny) < |DFT(I - mean)|² >.

    In HU² mm², or HU² per pixel with ``pixel_mm`` 1 (then it sums to the variance times the pixel count).
    """
    images = np.asarray(noise_images, dtype=np.float64)
    centred = images - images.mean(axis=(-2, -1), keepdims=True)
    power = np.mean(np.abs(fft.fft2(centred, axes=(-2, -1))) ** 2, axis=0)
    return power * pixel_mm * pixel_mm / (images.shape[-2] * images.shape[-1])


def noise_power_spectrum(
    noise_images: np.ndarray, pixel_mm: float, roi: Optional[Roi] = None, n_bins: Optional[int] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged noise power spectrum: (frequency in cycles/mm, NPS in HU² mm²).

    NPS(fx, fy) = (dx dy) / (Nx Ny) * < |DFT(ROI - mean(ROI))|² > over the images (2-D, or a stack (n, y, x)), then
    averaged over annuli. The caller decides what noise-only images are: ``output - reference`` shows the noise a
    method leaves, the difference of two noise realisations divided by sqrt(2) is the most accurate (no anatomy
    leaks in; Dolly et al., JACMP 2016). Subtracting each ROI's mean removes only a constant background.

    The annuli have equal width w >= the DFT's frequency step and reach the corner frequency sqrt(2)/(2 dx), so
    every 2-D sample is counted and :func:`nps_summary` can integrate back to the variance (Parseval). The returned
    frequencies are the annulus centres (k + 1/2) w; the DC term (zero after the mean removal) is left out.
    """
    images = np.asarray(noise_images, dtype=np.float64)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"Expected noise images shaped (y, x) or (n, y, x), got shape {images.shape}.")
    if not pixel_mm > 0:
        raise ValueError(f"pixel_mm must be positive, got {pixel_mm!r}.")
    if roi is not None:
        roi.check_inside(images.shape)
        images = images[(slice(None), *roi.slices())]
    rows, columns = images.shape[1:]
    if min(rows, columns) < 2:
        raise ValueError(f"The NPS needs regions of at least 2x2 pixels, got {columns}x{rows}.")

    nps2d = noise_power_spectrum_2d(images, pixel_mm)

    fy = fft.fftfreq(rows, d=pixel_mm)
    fx = fft.fftfreq(columns, d=pixel_mm)
    radius = np.hypot(fy[:, None], fx[None, :])
    corner = math.sqrt(2.0) / (2.0 * pixel_mm)
    step = 1.0 / (min(rows, columns) * pixel_mm)
    max_bins = int(math.floor(corner / step + 1e-9))
    if n_bins is None:
        n_bins = max_bins
    elif not 1 <= n_bins <= max_bins:
        raise ValueError(f"n_bins must be between 1 and {max_bins} for a {columns}x{rows} region, got {n_bins}.")
    width = corner / n_bins

    inside = radius > 0.0
    index = np.minimum(np.ceil(radius[inside] / width).astype(int) - 1, n_bins - 1)
    sums = np.bincount(index, weights=nps2d[inside], minlength=n_bins)
    counts = np.bincount(index, minlength=n_bins)
    freqs = (np.arange(n_bins) + 0.5) * width
    return freqs, sums / counts


def _annulus_area_in_square(radius: np.ndarray, half_side: float) -> np.ndarray:
    """Area of the disc of ``radius`` inside the centred square [-a, a]² (the sampled frequency plane)."""
    r = np.asarray(radius, dtype=np.float64)
    area = np.pi * r * r
    outside = r > half_side
    ro = r[outside]
    # Each of the four sides cuts off a circular segment once the disc pokes out of the square.
    segment = ro * ro * np.arccos(half_side / ro) - half_side * np.sqrt(ro * ro - half_side * half_side)
    area[outside] = np.pi * ro * ro - 4.0 * segment
    return np.minimum(area, 4.0 * half_side * half_side)


def nps_summary(freqs: np.ndarray, nps: np.ndarray) -> dict:
    """Peak and mean frequency (cycles/mm) and the integrated variance (HU²) of a radial NPS.

    ``freqs`` and ``nps`` must come from :func:`noise_power_spectrum`. The mean frequency is sum(f NPS) / sum(NPS)
    and, like the peak, uses the annuli up to the Nyquist frequency, where they lie wholly inside the sampled
    frequency plane (the usual definition). The variance integrates every annulus weighted by its area inside that
    plane, so it equals the pixel variance of the noise images.
    """
    f = np.asarray(freqs, dtype=np.float64)
    p = np.asarray(nps, dtype=np.float64)
    if f.ndim != 1 or f.shape != p.shape or f.size == 0:
        raise ValueError(f"freqs and nps must be matching non-empty 1-D arrays, got {f.shape} and {p.shape}.")
    width = 2.0 * f[0]
    nyquist = f.size * width / math.sqrt(2.0)
    edges = np.arange(f.size + 1) * width
    areas = np.diff(_annulus_area_in_square(edges, nyquist))
    in_band = f <= nyquist
    band_f, band_p = f[in_band], p[in_band]
    total = float(band_p.sum())
    return {
        "peak_frequency": float(band_f[int(np.argmax(band_p))]),
        "mean_frequency": float((band_f * band_p).sum() / total) if total > 0 else 0.0,
        "integral_variance": float((p * areas).sum()),
    }
