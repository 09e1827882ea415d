"""Projection-domain low-dose CT simulation: make a low-dose slice from a normal-dose one, as a scanner would.

Noise added in the image domain cannot reproduce what real low-dose CT looks like (streaks along long, attenuating
paths, more noise in the patient's centre, the texture set by the reconstruction kernel). So the slice is taken back
to line integrals with a fan-beam forward projector, photon noise is applied there, and it is reconstructed with a
filtered back-projection (FBP) whose kernel sets the noise texture. This is the recipe of the research notes
(``research/simulation.md`` §8, validated there against theory and a real Mayo quarter-dose pair):

- geometry: 2D fan beam, flat detector, 360 degrees; image row 0 is +y, column 0 is -x (ASTRA ``fanflat``
  convention); Joseph forward projector and a distance-weighted (1/U²) pixel-driven back-projector, in numba;
- ``"regen"`` (Zeng et al., IEEE TNS 2015): the input is treated as noise-free; counts are drawn as
  Poisson(I0·dose·e^-p) + Normal(0, σe²), clamped to >= 1 and logged against the low-dose flux;
- ``"insert"`` (Yu et al., JCAT 2012): the input is a real full-dose scan that already has its own noise; only the
  missing variance is added to the line integrals, and the reconstructed noise is added onto the input itself.

Either way the second image returned is the fair reference: the same slice without the added noise, with the same
kernel, so that ``low_dose - reference`` is pure simulated noise.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numba
import numpy as np

from .errors import LDCTDenoiseError
from .progress import CancelCheck, ProgressCallback, check_cancel, report

KERNELS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
MODES = ("regen", "insert")
AIR_HU = -1000.0
MIN_COUNTS = 1.0  # clamp before the log: zero or negative counts (electronic noise) would give inf or streaks
MIN_SLICE_PIXELS = 8


def _configure_numba_cache() -> None:
    """Send numba's compiled-code cache to a user folder when the package folder is read-only (e.g. in Slicer).

    ``cache=True`` writes next to this module; the locator is chosen when the functions are decorated, so this must
    run before them. An explicit ``NUMBA_CACHE_DIR`` is always respected.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    package_dir = Path(__file__).resolve().parent
    pycache_dir = package_dir / "__pycache__"
    writable = os.access(pycache_dir if pycache_dir.is_dir() else package_dir, os.W_OK)
    if writable:
        return
    cache_dir = Path.home() / ".cache" / "ldct-denoise" / "numba"
    os.environ["NUMBA_CACHE_DIR"] = str(cache_dir)
    numba.config.CACHE_DIR = str(cache_dir)


_configure_numba_cache()


@dataclass(frozen=True)
class ScanProtocol:
    """One simulated acquisition: dose, reconstruction kernel, views, photon flux and geometry.

    ``full_dose_photons`` (I0 per ray per view at 100 % dose) is a 2D surrogate for mAs x slice thickness x detector
    efficiency: calibrate it against a real scan's noise rather than copying a number (research notes §3.5, §6).
    The defaults are a Siemens Definition-AS-like geometry at 120 kVp.
    """

    dose_fraction: float = 0.25
    kernel: str = "hann"
    cutoff: float = 1.0
    n_views: int = 720
    full_dose_photons: float = 1.5e5
    electronic_noise_var: float = 10.0
    mu_water_per_mm: float = 0.0195
    source_to_isocenter_mm: float = 595.0
    source_to_detector_mm: float = 1085.6
    mode: str = "regen"

    def __post_init__(self) -> None:
        checks = [
            (0.0 < self.dose_fraction <= 1.0, f"dose_fraction must be in (0, 1], got {self.dose_fraction}"),
            (self.kernel in KERNELS, f"unknown kernel {self.kernel!r}; choose one of {', '.join(KERNELS)}"),
            (0.0 < self.cutoff <= 1.0, f"cutoff (fraction of Nyquist) must be in (0, 1], got {self.cutoff}"),
            (int(self.n_views) == self.n_views and self.n_views >= 16, f"n_views must be an integer >= 16, got "
                                                                       f"{self.n_views}"),
            (self.full_dose_photons > 0.0, f"full_dose_photons must be > 0, got {self.full_dose_photons}"),
            (self.electronic_noise_var >= 0.0, f"electronic_noise_var must be >= 0, got "
                                               f"{self.electronic_noise_var}"),
            (self.mu_water_per_mm > 0.0, f"mu_water_per_mm must be > 0, got {self.mu_water_per_mm}"),
            (0.0 < self.source_to_isocenter_mm < self.source_to_detector_mm,
             f"need 0 < source_to_isocenter_mm ({self.source_to_isocenter_mm}) < source_to_detector_mm "
             f"({self.source_to_detector_mm})"),
            (self.mode in MODES, f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}"),
        ]
        for passed, message in checks:
            if not passed:
                raise LDCTDenoiseError(f"Invalid scan protocol: {message}.")

    def to_card(self) -> dict:
        """Plain JSON-ready dict; ``ScanProtocol(**card)`` rebuilds the same protocol."""
        return asdict(self)


# Calibrated to the shipped model's domain, Mayo D45f (sharp kernel) quarter dose, on the digital phantom: this
# kernel and photon count give the phantom the noise level and NPS mean frequency of the Mayo D45f quarter dose
# (docs/measurements.md, "The simulator's calibration").
D45_LIKE_KERNEL = "ram-lak"
D45_LIKE_FULL_DOSE_PHOTONS = 1.0e6


def d45_like_protocol(dose_fraction: float = 0.25) -> ScanProtocol:
    """A noise-free-reference ("regen") scan whose noise matches the shipped model's domain at 25 % dose."""
    return ScanProtocol(dose_fraction=dose_fraction, kernel=D45_LIKE_KERNEL,
                        full_dose_photons=D45_LIKE_FULL_DOSE_PHOTONS, mode="regen")


def hu_to_mu(hu: np.ndarray, mu_water_per_mm: float) -> np.ndarray:
    """HU -> linear attenuation (1/mm); anything below air (FOV padding) attenuates nothing."""
    return np.maximum(mu_water_per_mm * (1.0 + np.asarray(hu, np.float64) / 1000.0), 0.0)


def mu_to_hu(mu: np.ndarray, mu_water_per_mm: float) -> np.ndarray:
    """Linear attenuation (1/mm) -> HU."""
    return 1000.0 * (np.asarray(mu) - mu_water_per_mm) / mu_water_per_mm


@numba.njit(parallel=True, fastmath=True, cache=True)
def _forward_project_joseph(image, view_geometry, pixel_mm, sinogram):
    """Joseph's method: march along the ray's main axis and interpolate linearly across the other one."""
    size = image.shape[0]
    n_views, n_detectors = sinogram.shape
    half = (size - 1) / 2.0
    for view in numba.prange(n_views):
        source_x, source_y = view_geometry[view, 0], view_geometry[view, 1]
        detector_x, detector_y = view_geometry[view, 2], view_geometry[view, 3]
        step_x, step_y = view_geometry[view, 4], view_geometry[view, 5]
        for channel in range(n_detectors):
            offset = channel - (n_detectors - 1) / 2.0
            direction_x = detector_x + offset * step_x - source_x
            direction_y = detector_y + offset * step_y - source_y
            length = math.sqrt(direction_x * direction_x + direction_y * direction_y)
            direction_x /= length
            direction_y /= length
            total = 0.0
            if abs(direction_x) >= abs(direction_y):  # mostly horizontal: one sample per column
                for column in range(size):
                    y_mm = source_y + ((column - half) * pixel_mm - source_x) / direction_x * direction_y
                    row_position = half - y_mm / pixel_mm
                    row = int(math.floor(row_position))
                    weight = row_position - row
                    if 0 <= row < size - 1:
                        total += (1.0 - weight) * image[row, column] + weight * image[row + 1, column]
                    elif row == -1:
                        total += weight * image[0, column]
                    elif row == size - 1:
                        total += (1.0 - weight) * image[size - 1, column]
                sinogram[view, channel] = total * pixel_mm / abs(direction_x)
            else:  # mostly vertical: one sample per row
                for row in range(size):
                    x_mm = source_x + (-(row - half) * pixel_mm - source_y) / direction_y * direction_x
                    column_position = half + x_mm / pixel_mm
                    column = int(math.floor(column_position))
                    weight = column_position - column
                    if 0 <= column < size - 1:
                        total += (1.0 - weight) * image[row, column] + weight * image[row, column + 1]
                    elif column == -1:
                        total += weight * image[row, 0]
                    elif column == size - 1:
                        total += (1.0 - weight) * image[row, size - 1]
                sinogram[view, channel] = total * pixel_mm / abs(direction_y)


@numba.njit(parallel=True, fastmath=True, cache=True)
def _backproject_fan(filtered, view_geometry, pixel_mm, source_to_isocenter_mm, images):
    """Pixel-driven fan-beam back-projection with the 1/U² distance weight, for a stack of filtered sinograms.

    The geometry (detector position and weight of each pixel in each view) is shared by the whole stack, so
    back-projecting the noisy and the noise-free sinogram together costs little more than one.
    """
    n_images, n_views, n_detectors = filtered.shape
    size = images.shape[1]
    half = (size - 1) / 2.0
    radius_squared = source_to_isocenter_mm * source_to_isocenter_mm
    for row in numba.prange(size):
        y_mm = -(row - half) * pixel_mm
        for view in range(n_views):
            source_x, source_y = view_geometry[view, 0], view_geometry[view, 1]
            to_detector_x = view_geometry[view, 2] - source_x
            to_detector_y = view_geometry[view, 3] - source_y
            step_x, step_y = view_geometry[view, 4], view_geometry[view, 5]
            from_source_y = y_mm - source_y
            for column in range(size):
                from_source_x = (column - half) * pixel_mm - source_x
                # detector offset (in channels) where the ray through this pixel lands
                offset = ((from_source_x * to_detector_y - from_source_y * to_detector_x)
                          / (from_source_y * step_x - from_source_x * step_y))
                channel_position = offset + (n_detectors - 1) / 2.0
                channel = int(math.floor(channel_position))
                if channel < 0 or channel >= n_detectors - 1:
                    continue
                weight = channel_position - channel
                # source-to-pixel distance along the central ray, as a fraction of the source radius
                distance_ratio = -(from_source_x * source_x + from_source_y * source_y) / radius_squared
                scale = 1.0 / (distance_ratio * distance_ratio)
                for index in range(n_images):
                    images[index, row, column] += scale * (
                        (1.0 - weight) * filtered[index, view, channel] + weight * filtered[index, view, channel + 1]
                    )


def _kernel_window(kernel: str, frequency: np.ndarray) -> np.ndarray:
    """Apodisation window on the ramp; ``frequency`` is 0 at DC and 1 at the cutoff."""
    if kernel == "ram-lak":
        return np.ones_like(frequency)
    if kernel == "shepp-logan":
        return np.sinc(frequency / 2.0)
    if kernel == "cosine":
        return np.cos(np.pi * frequency / 2.0)
    if kernel == "hamming":
        return 0.54 + 0.46 * np.cos(np.pi * frequency)
    if kernel == "hann":
        return 0.5 + 0.5 * np.cos(np.pi * frequency)
    raise LDCTDenoiseError(f"Unknown reconstruction kernel {kernel!r}; choose one of {', '.join(KERNELS)}.")


class FanBeamScanner:
    """A 2D fan-beam CT (flat detector, full 360 degree scan) for square slices of ``size`` x ``size`` pixels.

    The detector pitch at the isocentre equals the pixel size and the channels cover the image diagonal, so nothing
    in the slice is truncated (truncation was the worst bug seen while validating, research notes §6).
    """

    def __init__(
        self,
        size: int,
        pixel_mm: float,
        n_views: int = 720,
        source_to_isocenter_mm: float = 595.0,
        source_to_detector_mm: float = 1085.6,
    ) -> None:
        if size < MIN_SLICE_PIXELS:
            raise LDCTDenoiseError(f"The slice must be at least {MIN_SLICE_PIXELS} pixels wide, got {size}.")
        if not (math.isfinite(pixel_mm) and pixel_mm > 0.0):
            raise LDCTDenoiseError(f"The pixel size must be a positive number of mm, got {pixel_mm}.")
        half_diagonal_mm = size * pixel_mm / math.sqrt(2.0)
        if half_diagonal_mm >= 0.95 * source_to_isocenter_mm:
            raise LDCTDenoiseError(
                f"A {size} x {size} slice of {pixel_mm} mm pixels ({size * pixel_mm:.0f} mm wide) does not fit in "
                f"the fan of a scanner whose source is {source_to_isocenter_mm} mm from the isocentre."
            )
        self.size = int(size)
        self.pixel_mm = float(pixel_mm)
        self.n_views = int(n_views)
        self.source_to_isocenter_mm = float(source_to_isocenter_mm)
        self.source_to_detector_mm = float(source_to_detector_mm)
        magnification = source_to_detector_mm / source_to_isocenter_mm
        self.detector_pitch_mm = self.pixel_mm * magnification
        fan_half_angle = math.asin(half_diagonal_mm / source_to_isocenter_mm)
        self.n_detectors = int(
            2 * math.ceil(source_to_detector_mm * math.tan(fan_half_angle) / self.detector_pitch_mm) + 8
        )
        angles = np.linspace(0.0, 2.0 * np.pi, self.n_views, endpoint=False)
        isocenter_to_detector_mm = source_to_detector_mm - source_to_isocenter_mm
        # per view: source (x, y), detector centre (x, y), step between channels (x, y); as astra.geom_2vec('fanflat')
        self.view_geometry = np.ascontiguousarray(np.stack([
            np.sin(angles) * source_to_isocenter_mm, -np.cos(angles) * source_to_isocenter_mm,
            -np.sin(angles) * isocenter_to_detector_mm, np.cos(angles) * isocenter_to_detector_mm,
            np.cos(angles) * self.detector_pitch_mm, np.sin(angles) * self.detector_pitch_mm,
        ], axis=1))

    def project(self, mu: np.ndarray) -> np.ndarray:
        """Line integrals (dimensionless) of an attenuation image in 1/mm, shaped (n_views, n_detectors)."""
        mu = np.asarray(mu)
        if mu.shape != (self.size, self.size):
            raise LDCTDenoiseError(f"The scanner is set up for {self.size} x {self.size} slices, got {mu.shape}.")
        sinogram = np.zeros((self.n_views, self.n_detectors))
        _forward_project_joseph(np.ascontiguousarray(mu, np.float64), self.view_geometry, self.pixel_mm, sinogram)
        return sinogram

    def fbp(self, sinogram: np.ndarray, kernel: str = "ram-lak", cutoff: float = 1.0) -> np.ndarray:
        """Filtered back-projection to attenuation (1/mm); a (k, views, channels) stack gives k images at once.

        Cosine pre-weighting on the virtual detector at the isocentre, the Ram-Lak kernel built in the spatial domain
        and zero-padded to twice the detector (no DC bias), times the window, cut at ``cutoff`` x Nyquist.
        """
        if kernel not in KERNELS:
            raise LDCTDenoiseError(f"Unknown reconstruction kernel {kernel!r}; choose one of {', '.join(KERNELS)}.")
        if not 0.0 < cutoff <= 1.0:
            raise LDCTDenoiseError(f"The kernel cutoff must be in (0, 1] of Nyquist, got {cutoff}.")
        sinograms = np.asarray(sinogram, np.float64)
        single = sinograms.ndim == 2
        if single:
            sinograms = sinograms[None]
        if sinograms.ndim != 3 or sinograms.shape[1:] != (self.n_views, self.n_detectors):
            raise LDCTDenoiseError(
                f"Expected a sinogram of shape ({self.n_views}, {self.n_detectors}) or a stack of them, "
                f"got {np.shape(sinogram)}."
            )
        radius = self.source_to_isocenter_mm
        virtual_pitch_mm = self.detector_pitch_mm / (self.source_to_detector_mm / radius)
        virtual_positions = (np.arange(self.n_detectors) - (self.n_detectors - 1) / 2.0) * virtual_pitch_mm
        cosine_weights = radius / np.sqrt(radius * radius + virtual_positions ** 2)

        padded_length = max(64, 2 ** math.ceil(math.log2(2 * self.n_detectors)))
        taps = np.concatenate([np.arange(0, padded_length // 2 + 1), np.arange(-padded_length // 2 + 1, 0)])
        ram_lak = np.zeros(padded_length)
        ram_lak[0] = 1.0 / (4.0 * virtual_pitch_mm ** 2)
        odd = taps % 2 == 1
        ram_lak[odd] = -1.0 / (np.pi * taps[odd] * virtual_pitch_mm) ** 2
        response = np.real(np.fft.rfft(ram_lak)) * virtual_pitch_mm
        relative_frequency = np.fft.rfftfreq(padded_length) / 0.5 / cutoff
        response *= np.where(
            relative_frequency <= 1.0, _kernel_window(kernel, np.minimum(relative_frequency, 1.0)), 0.0
        )
        spectrum = np.fft.rfft(sinograms * cosine_weights, n=padded_length, axis=-1) * response
        # the 1/2 accounts for every ray being measured twice in a full 360 degree scan
        filtered = 0.5 * np.fft.irfft(spectrum, n=padded_length, axis=-1)[..., : self.n_detectors]

        images = np.zeros((sinograms.shape[0], self.size, self.size))
        _backproject_fan(np.ascontiguousarray(filtered), self.view_geometry, self.pixel_mm, radius, images)
        images *= 2.0 * np.pi / self.n_views
        return images[0] if single else images


def _regenerate_line_integrals(
    line_integrals: np.ndarray, protocol: ScanProtocol, rng: np.random.Generator
) -> np.ndarray:
    """Zeng 2015: draw counts at the low-dose flux and log them against that same flux (not the full-dose one)."""
    flux = protocol.full_dose_photons * protocol.dose_fraction
    counts = rng.poisson(flux * np.exp(-line_integrals)).astype(np.float64)
    if protocol.electronic_noise_var > 0.0:
        counts += math.sqrt(protocol.electronic_noise_var) * rng.standard_normal(line_integrals.shape)
    return np.log(flux / np.maximum(counts, MIN_COUNTS))


def _insertion_noise(line_integrals: np.ndarray, protocol: ScanProtocol, rng: np.random.Generator) -> np.ndarray:
    """Yu 2012: the extra line-integral noise that takes a real scan at flux I0 down to ``dose_fraction`` of it."""
    dose = protocol.dose_fraction
    if dose >= 1.0:
        return np.zeros_like(line_integrals)
    inverse_counts = np.exp(line_integrals) / protocol.full_dose_photons
    added_variance = (1.0 - dose) / dose * inverse_counts * (
        1.0 + (1.0 + dose) / dose * protocol.electronic_noise_var * inverse_counts
    )
    return np.sqrt(added_variance) * rng.standard_normal(line_integrals.shape)


def _simulate_square_slice(
    hu: np.ndarray, scanner: FanBeamScanner, protocol: ScanProtocol, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Core of the simulation on a square float64 HU slice already padded with air."""
    mu_water = protocol.mu_water_per_mm
    line_integrals = scanner.project(hu_to_mu(np.maximum(hu, AIR_HU), mu_water))
    if protocol.mode == "regen":
        noisy = _regenerate_line_integrals(line_integrals, protocol, rng)
        low_mu, reference_mu = scanner.fbp(np.stack([noisy, line_integrals]), protocol.kernel, protocol.cutoff)
        return mu_to_hu(low_mu, mu_water), mu_to_hu(reference_mu, mu_water)
    noise_mu = scanner.fbp(_insertion_noise(line_integrals, protocol, rng), protocol.kernel, protocol.cutoff)
    return hu + 1000.0 * noise_mu / mu_water, hu


def _pad_to_square(hu: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Centre a slice in a square of air, so the scanner's circular field of view holds all of it."""
    rows, columns = hu.shape
    size = max(rows, columns)
    top, left = (size - rows) // 2, (size - columns) // 2
    square = np.full((size, size), AIR_HU)
    crop = (slice(top, top + rows), slice(left, left + columns))
    square[crop] = hu
    return square, crop


def _check_slice(hu: np.ndarray, ndim: int, what: str) -> np.ndarray:
    hu = np.asarray(hu)
    if hu.ndim != ndim:
        raise LDCTDenoiseError(f"The simulator needs a {ndim}D {what}, got an array of shape {hu.shape}.")
    if min(hu.shape[-2:]) < MIN_SLICE_PIXELS:
        raise LDCTDenoiseError(f"Slices must be at least {MIN_SLICE_PIXELS} x {MIN_SLICE_PIXELS} pixels, "
                               f"got {hu.shape[-2:]}.")
    if not np.all(np.isfinite(hu)):
        raise LDCTDenoiseError("The HU image contains NaN or infinite values.")
    return hu


def _finish(
    hu: np.ndarray, low_dose: np.ndarray, reference: np.ndarray, crop: tuple[slice, slice]
) -> tuple[np.ndarray, np.ndarray]:
    """Crop back to the input's shape and restore the out-of-field-of-view pixels."""
    outside = hu < AIR_HU
    low_dose = np.where(outside, hu, low_dose[crop]).astype(np.float32)
    reference = np.where(outside, hu, reference[crop]).astype(np.float32)
    return low_dose, reference


def simulate_low_dose_slice(
    hu: np.ndarray, pixel_mm: float, protocol: ScanProtocol, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one (y, x) HU slice; returns float32 (low-dose HU, reference HU).

    The reference is the noise-free re-reconstruction with the same kernel ("regen") or the input itself
    ("insert", where the noise is added onto the real scan). Pixels below -1000 HU (outside the field of view) are
    projected as air and keep their input value in both outputs, so a real scan's padding survives.
    """
    hu = _check_slice(hu, 2, "slice (y, x)")
    square, crop = _pad_to_square(hu.astype(np.float64))
    scanner = FanBeamScanner(square.shape[0], float(pixel_mm), protocol.n_views,
                             protocol.source_to_isocenter_mm, protocol.source_to_detector_mm)
    return _finish(hu, *_simulate_square_slice(square, scanner, protocol, rng), crop)


def slice_rng(seed: int, slice_index: int) -> np.random.Generator:
    """The generator slice ``slice_index`` of a volume simulated with ``seed`` uses, to redo one slice on its own."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(slice_index,)))


def simulate_low_dose_volume(
    hu: np.ndarray,
    pixel_mm: float,
    protocol: ScanProtocol,
    seed: int = 0,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate every slice of a (z, y, x) HU volume; returns float32 (low-dose HU, reference HU) volumes.

    Slice ``z`` draws its noise from its own generator, :func:`slice_rng` (``seed``, ``z``), so a slice's noise depends
    only on the seed and its index, not on how the volume is batched.
    """
    hu = _check_slice(hu, 3, "volume (z, y, x)")
    n_slices, rows, columns = hu.shape
    size = max(rows, columns)
    scanner = FanBeamScanner(size, float(pixel_mm), protocol.n_views,
                             protocol.source_to_isocenter_mm, protocol.source_to_detector_mm)
    low_dose = np.empty(hu.shape, np.float32)
    reference = np.empty(hu.shape, np.float32)
    report(progress, 0, n_slices)
    for index in range(n_slices):
        check_cancel(cancel)
        rng = slice_rng(seed, index)
        square, crop = _pad_to_square(hu[index].astype(np.float64))
        low_dose[index], reference[index] = _finish(
            hu[index], *_simulate_square_slice(square, scanner, protocol, rng), crop
        )
        report(progress, index + 1, n_slices)
    return low_dose, reference
