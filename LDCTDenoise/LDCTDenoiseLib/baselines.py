"""Classic denoisers that the CPCE results are compared against, all behind one slice-by-slice interface.

Every method takes a float32 HU volume (z, y, x) and returns a new one of the same shape; parameters are in HU or
pixels so that they mean the same thing on every scan. Library functions that expect a unit range get the slice
through :func:`normalization.hu_to_model` (the project's one HU mapping, a linear map of [-1024, 3072] HU to [0, 1]
without an upper clip), so bone and metal are filtered, not clipped. Pixels below -1024 HU (outside the scan field of
view) are filtered as -1024 HU, as the network sees them, and get their input values back afterwards, so padding such
as -3024 HU neither bleeds into the body nor changes.

Methods whose strength must follow the noise (NLM, BM3D) read it from each slice with :func:`estimate_noise_sd`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Optional, Protocol

import numpy as np
from scipy import ndimage
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

from .errors import LDCTDenoiseError
from .normalization import HU_MIN, HU_RANGE, hu_to_model, model_to_hu
from .progress import CancelCheck, ProgressCallback, check_cancel, report

SOFT_TISSUE_HU = (-100.0, 200.0)


class Denoiser(Protocol):
    """A denoising method: HU volume in, new HU volume out, one slice at a time."""

    name: str

    def __call__(
        self,
        hu: np.ndarray,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
    ) -> np.ndarray:
        """Denoise a float32 HU volume (z, y, x); the input is never modified."""
        ...


def estimate_noise_sd(slice_hu: np.ndarray, kernel: int = 7) -> float:
    """Noise SD (HU) of one slice: the mode of the local SD over soft tissue (Christianson et al., Radiology 2015).

    CT noise is spatially correlated, so estimators that look only at the finest scale (skimage ``estimate_sigma``,
    a MAD of a high-pass) see a fraction of it: on Mayo quarter-dose B30 slices they give about 8 HU where the
    quarter-minus-full difference shows about 30 HU. The most frequent SD in small windows over soft tissue
    measures the whole pixel noise and is robust to edges, which only add a tail of large SDs. Measured on Mayo
    quarter-dose slices it falls within about 10 % of the noise SD seen in the paired difference.
    Returns 0.0 when the slice holds no soft tissue (e.g. only air), so callers can leave such slices alone.
    """
    image = np.asarray(slice_hu, dtype=np.float64)
    local_mean = ndimage.uniform_filter(image, kernel)
    local_square = ndimage.uniform_filter(image * image, kernel)
    n = kernel * kernel
    local_sd = np.sqrt(np.maximum(local_square - local_mean * local_mean, 0.0) * n / (n - 1))
    tissue = (local_mean > SOFT_TISSUE_HU[0]) & (local_mean < SOFT_TISSUE_HU[1])
    values = local_sd[tissue]
    if values.size < n:
        return 0.0
    upper = float(np.percentile(values, 90))
    if upper <= 0.0:
        return 0.0
    counts, edges = np.histogram(values, bins=200, range=(0.0, upper))
    smoothed = ndimage.gaussian_filter1d(counts.astype(np.float64), 2.0)
    peak = int(np.argmax(smoothed))
    return float(0.5 * (edges[peak] + edges[peak + 1]))


def _per_slice(
    hu: np.ndarray,
    denoise_slice: Callable[[np.ndarray], np.ndarray],
    progress: Optional[ProgressCallback],
    cancel: Optional[CancelCheck],
) -> np.ndarray:
    """Run ``denoise_slice`` on each slice with -1024 HU as the floor; restore the pixels below it afterwards."""
    volume = np.asarray(hu)
    if volume.ndim != 3:
        raise ValueError(f"Expected a HU volume shaped (z, y, x), got an array of shape {volume.shape}.")
    out = np.empty(volume.shape, dtype=np.float32)
    total = volume.shape[0]
    for index in range(total):
        check_cancel(cancel)
        original = volume[index].astype(np.float32)
        below = original < HU_MIN
        filtered = denoise_slice(np.maximum(original, HU_MIN))
        out[index] = np.where(below, original, filtered)
        report(progress, index + 1, total)
    return out


def _require_positive(method: str, **params: float) -> None:
    """Reject parameters that make no sense, naming the method and the parameter."""
    for key, value in params.items():
        if not value > 0:
            raise LDCTDenoiseError(f"{method}: {key} must be positive, got {value!r}.")


@dataclass(frozen=True)
class GaussianFilter:
    """Isotropic Gaussian smoothing in-plane: the simplest baseline, trades noise for blur evenly everywhere.

    The default is mild on purpose: on Mayo quarter-dose slices sigma >= 1 pixel blurs organ edges more than it
    removes noise (the display-window PSNR falls below the unfiltered input's).
    """

    sigma: float = 0.7  # pixels
    name: ClassVar[str] = "gaussian"

    def __post_init__(self) -> None:
        _require_positive(self.name, sigma=self.sigma)

    def __call__(
        self,
        hu: np.ndarray,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
    ) -> np.ndarray:
        return _per_slice(
            hu, lambda s: ndimage.gaussian_filter(s, self.sigma, mode="nearest"), progress, cancel
        )


def bilateral_filter(image: np.ndarray, sigma_color: float, sigma_spatial: float) -> np.ndarray:
    """Bilateral filter (Tomasi and Manduchi 1998) over a disc of radius 3 * sigma_spatial, reflected at the border.

    Written out because skimage 0.26's ``denoise_bilateral`` builds its spatial table on a (win+1)² grid but reads
    it with stride win: its kernel is skewed (an impulse spreads diagonally, the centre gets almost no weight) and
    leaves diagonal streaks in CT noise. One vectorised pass per offset keeps a 512² slice to a few tens of ms.
    """
    image = np.asarray(image, dtype=np.float32)
    reach = 3.0 * sigma_spatial
    radius = max(1, int(reach))
    padded = np.pad(image, radius, mode="reflect")
    rows, columns = image.shape
    weighted_sum = np.zeros_like(image)
    weight_sum = np.zeros_like(image)
    colour_scale = np.float32(-0.5 / sigma_color**2)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            distance_squared = dy * dy + dx * dx
            if distance_squared > reach * reach:
                continue
            neighbour = padded[radius + dy : radius + dy + rows, radius + dx : radius + dx + columns]
            difference = neighbour - image
            spatial = np.float32(-0.5 * distance_squared / sigma_spatial**2)
            weight = np.exp(difference * difference * colour_scale + spatial)
            weighted_sum += weight * neighbour
            weight_sum += weight
    return weighted_sum / weight_sum


@dataclass(frozen=True)
class BilateralFilter:
    """Edge-preserving bilateral filter: averages only neighbours within about sigma_color_hu of the pixel.

    ``sigma_color_hu`` of about 1.5 times the noise SD smooths soft tissue while keeping edges of larger contrast;
    80 HU with sigma_spatial 1.5 did best overall of 20-140 HU and 1-2 pixels on Mayo quarter-dose slices of both
    kernels (noise SD about 30-80 HU).
    """

    sigma_color_hu: float = 80.0
    sigma_spatial: float = 1.5  # pixels
    name: ClassVar[str] = "bilateral"

    def __post_init__(self) -> None:
        _require_positive(self.name, sigma_color_hu=self.sigma_color_hu, sigma_spatial=self.sigma_spatial)

    def __call__(
        self,
        hu: np.ndarray,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
    ) -> np.ndarray:
        return _per_slice(
            hu, lambda s: bilateral_filter(s, self.sigma_color_hu, self.sigma_spatial), progress, cancel
        )


@dataclass(frozen=True)
class TVFilter:
    """Total-variation denoising (Chambolle): flat regions become piecewise constant, edges stay.

    ``weight_hu`` is skimage's ``weight`` expressed in HU (the ROF trade-off scales with the intensity unit); 30 HU
    did best of 20/30/40/80 on Mayo quarter-dose slices of both kernels taken together.
    """

    weight_hu: float = 30.0
    name: ClassVar[str] = "tv"

    def __post_init__(self) -> None:
        _require_positive(self.name, weight_hu=self.weight_hu)

    def __call__(
        self,
        hu: np.ndarray,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
    ) -> np.ndarray:
        def denoise(slice_hu: np.ndarray) -> np.ndarray:
            unit = hu_to_model(slice_hu).astype(np.float64)
            return model_to_hu(denoise_tv_chambolle(unit, weight=self.weight_hu / HU_RANGE))

        return _per_slice(hu, denoise, progress, cancel)


@dataclass(frozen=True)
class NonLocalMeans:
    """Non-local means (skimage, fast mode) with the filtering strength set from each slice's noise SD.

    ``h = h_factor * sigma`` with ``sigma`` from :func:`estimate_noise_sd` also passed to skimage, which then
    subtracts the expected noise from patch distances (the scheme skimage's documentation recommends). Patch 5 and
    search distance 6 (13x13 window) keep a 512² slice well under a second.
    """

    patch_size: int = 5
    patch_distance: int = 6
    h_factor: float = 0.8
    name: ClassVar[str] = "nlm"

    def __post_init__(self) -> None:
        _require_positive(
            self.name, patch_size=self.patch_size, patch_distance=self.patch_distance, h_factor=self.h_factor
        )

    def __call__(
        self,
        hu: np.ndarray,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
    ) -> np.ndarray:
        def denoise(slice_hu: np.ndarray) -> np.ndarray:
            sigma = estimate_noise_sd(slice_hu) / HU_RANGE
            if sigma <= 0.0:
                return slice_hu
            unit = hu_to_model(slice_hu).astype(np.float64)
            filtered = denoise_nl_means(
                unit,
                patch_size=self.patch_size,
                patch_distance=self.patch_distance,
                h=self.h_factor * sigma,
                sigma=sigma,
                fast_mode=True,
            )
            return model_to_hu(filtered)

        return _per_slice(hu, denoise, progress, cancel)


@dataclass(frozen=True)
class BM3DFilter:
    """BM3D (Mäkinen, Azzari, Foi; pip package ``bm3d``) with the noise SD estimated per slice.

    The ``bm3d`` package is free for non-commercial use only, so it is an optional extra imported when first used.
    The noise is taken as white at the estimated pixel SD: a CT noise power spectrum cannot be measured from a single
    unpaired slice. ``sigma_factor`` 1.0 did better than 0.7 and as well as 1.3 on Mayo quarter-dose slices.
    Expect several seconds per 512² slice.
    """

    sigma_factor: float = 1.0
    profile: str = "np"
    name: ClassVar[str] = "bm3d"

    def __post_init__(self) -> None:
        _require_positive(self.name, sigma_factor=self.sigma_factor)
        if self.profile not in ("np", "refilter", "vn", "high", "vn_old", "deb"):
            raise LDCTDenoiseError(f"bm3d: unknown profile {self.profile!r}.")

    def __call__(
        self,
        hu: np.ndarray,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelCheck] = None,
    ) -> np.ndarray:
        try:
            import bm3d
        except ImportError as error:
            raise LDCTDenoiseError(
                "The BM3D baseline needs the optional package 'bm3d': run `pip install bm3d` "
                "(or `pip install ldct-denoise[bm3d]`). Its licence allows non-commercial use only."
            ) from error

        def denoise(slice_hu: np.ndarray) -> np.ndarray:
            sigma = self.sigma_factor * estimate_noise_sd(slice_hu) / HU_RANGE
            if sigma <= 0.0:
                return slice_hu
            unit = hu_to_model(slice_hu).astype(np.float64)
            return model_to_hu(np.asarray(bm3d.bm3d(unit, sigma_psd=sigma, profile=self.profile)))

        return _per_slice(hu, denoise, progress, cancel)


BASELINES: dict[str, Callable[..., Denoiser]] = {
    method.name: method for method in (GaussianFilter, BilateralFilter, TVFilter, NonLocalMeans, BM3DFilter)
}


def make_baseline(name: str, **params) -> Denoiser:
    """Build a baseline by its registry name; unknown names or parameters give a clear error."""
    try:
        factory = BASELINES[name]
    except KeyError:
        raise LDCTDenoiseError(
            f"Unknown baseline {name!r}; choose one of: {', '.join(BASELINES)}."
        ) from None
    try:
        return factory(**params)
    except TypeError as error:
        raise LDCTDenoiseError(f"Invalid parameters {params!r} for baseline {name!r}: {error}") from None
