"""The reference-free noise model (LDCTDenoiseLib.noise_estimate): known noise on a phantom, anatomy alone, the
noise-level map, bad input, and one real Mayo pair against its quarter - full truth."""

from __future__ import annotations

import numpy as np
import pytest

from LDCTDenoiseLib import noise_estimate
from LDCTDenoiseLib.errors import LDCTDenoiseError
from LDCTDenoiseLib.metrics import noise_power_spectrum, nps_summary
from LDCTDenoiseLib.phantom import make_abdomen_phantom

PIXEL_MM = 0.7
# Measured tolerances: SD and mean frequency within 10 and 15 %; the peak of a broad (flat-topped) NPS moves by one
# or two 0.03 cycles/mm bins between noise draws, in the truth as in the estimate, hence 20 % for the peak.
SD_TOLERANCE, MEAN_TOLERANCE, PEAK_TOLERANCE = 0.10, 0.15, 0.20


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    volume, _ = make_abdomen_phantom(n_slices=3, size=512, pixel_mm=PIXEL_MM, seed=0)
    return volume


def fbp_like_noise(shape: tuple[int, ...], sd: float, roll_off: float, seed: int) -> np.ndarray:
    """Stationary Gaussian noise with NPS ∝ (f + 0.02) exp(-(f / roll_off)²): a ramp times a kernel window."""
    frequency = np.fft.fftfreq(shape[-1], d=PIXEL_MM)
    radius = np.hypot(*np.meshgrid(frequency, frequency, indexing="ij"))
    amplitude = np.sqrt((radius + 0.02) * np.exp(-(radius / roll_off) ** 2))
    white = np.random.default_rng(seed).standard_normal(shape)
    noise = np.fft.ifft2(np.fft.fft2(white) * amplitude).real
    return (noise * sd / noise.std()).astype(np.float32)


def true_nps(noise: np.ndarray) -> dict:
    """Peak and mean frequency of the noise itself, in detrended 64² tiles with the estimator's binning."""
    size = noise_estimate.ROI_SIZE_PX
    tiles = [image[y:y + size, x:x + size] for image in noise
             for y in range(0, image.shape[0] - size + 1, size) for x in range(0, image.shape[1] - size + 1, size)]
    freqs, nps = noise_power_spectrum(noise_estimate._detrend(np.stack(tiles).astype(np.float64)), PIXEL_MM,
                                      n_bins=noise_estimate.N_BINS)
    return nps_summary(freqs, nps)


@pytest.mark.parametrize("sd, roll_off", [(40.0, 0.7), (40.0, 0.3)], ids=["sharp-kernel", "smooth-kernel"])
def test_fbp_like_noise_is_recovered(phantom, sd, roll_off):
    noise = fbp_like_noise(phantom.shape, sd, roll_off, seed=0)
    estimate = noise_estimate.estimate_noise(phantom + noise, PIXEL_MM)
    truth = true_nps(noise)
    assert estimate.reliable
    assert estimate.sd_hu == pytest.approx(float(noise.std()), rel=SD_TOLERANCE)
    assert estimate.mean_frequency == pytest.approx(truth["mean_frequency"], rel=MEAN_TOLERANCE)
    assert estimate.peak_frequency == pytest.approx(truth["peak_frequency"], rel=PEAK_TOLERANCE)
    assert estimate.nps_2d.shape == (noise_estimate.ROI_SIZE_PX,) * 2
    assert estimate.frequencies.shape == estimate.nps.shape


def test_white_noise_sd_is_recovered(phantom):
    noise = (np.random.default_rng(1).standard_normal(phantom.shape) * 30.0).astype(np.float32)
    estimate = noise_estimate.estimate_noise(phantom + noise, PIXEL_MM)
    assert estimate.sd_hu == pytest.approx(30.0, rel=SD_TOLERANCE)


def test_anatomy_alone_is_not_read_as_noise(phantom):
    """The noise-free phantom (organ edges, vessels, tissue texture) reads near zero (measured 5.7 HU), far below a
    real scan's noise, and adding 20 HU of noise reads 20 HU, not the anatomy on top."""
    estimate = noise_estimate.estimate_noise(phantom, PIXEL_MM)
    assert estimate.sd_hu < 8.0
    noisy = noise_estimate.estimate_noise(phantom + fbp_like_noise(phantom.shape, 20.0, 0.7, seed=2), PIXEL_MM)
    assert noisy.sd_hu == pytest.approx(20.0, rel=SD_TOLERANCE)


def test_noise_level_map_follows_non_stationary_noise(phantom):
    """Twice the noise in the right half of the image shows in the map, in the body's soft tissue."""
    noise = fbp_like_noise(phantom.shape, 20.0, 0.7, seed=3)
    gain = np.ones(phantom.shape[-1], np.float32)
    gain[phantom.shape[-1] // 2:] = 2.0
    estimate = noise_estimate.estimate_noise(phantom + noise * gain, PIXEL_MM)
    level = estimate.level_map
    half = level.shape[-1] // 2
    left, right = np.nanmedian(level[..., 2:half - 1]), np.nanmedian(level[..., half + 1:-2])
    assert right / left == pytest.approx(2.0, rel=0.15)
    assert left == pytest.approx(20.0, rel=0.2)
    assert level.shape == (3, 512 // estimate.map_block_px, 512 // estimate.map_block_px)


def test_no_soft_tissue_gives_a_clear_error():
    air = np.full((2, 256, 256), -1000.0, np.float32)
    with pytest.raises(LDCTDenoiseError, match="soft-tissue regions"):
        noise_estimate.estimate_noise(air, PIXEL_MM)
    with pytest.raises(LDCTDenoiseError, match="pixel size"):
        noise_estimate.estimate_noise(air, 0.0)


@pytest.mark.data
def test_mayo_pair_within_measured_tolerance(shared_data):
    """D45 L286 (held-out patient): SD, NPS peak and mean frequency of the quarter dose, estimated from the quarter
    dose alone, within 15 % of the truth (4/3 (var Q - var F) in soft tissue; the NPS shape of Q - F)."""
    from LDCTDenoiseLib.dicom_reader import read_series

    folder = shared_data / "mayo" / "paired" / "D45_3mm" / "L286"
    quarter, full = read_series(folder / "quarter"), read_series(folder / "full")
    pixel_mm = float(quarter.spacing[1])
    q, f = quarter.hu.astype(np.float64), full.hu.astype(np.float64)
    masks = np.stack([noise_estimate.soft_tissue_mask(image, pixel_mm) for image in full.hu])
    difference, total = (q - f)[masks], (q + f)[masks]
    true_sd = float(np.sqrt(4.0 / 3.0 * np.mean((difference - difference.mean()) * (total - total.mean()))))
    size = noise_estimate.ROI_SIZE_PX
    tiles = [d[y:y + size, x:x + size] for d, m in zip(q - f, masks)
             for y in range(0, 512 - size + 1, size // 2) for x in range(0, 512 - size + 1, size // 2)
             if m[y:y + size, x:x + size].mean() >= noise_estimate.ROI_INSIDE_SHARE]
    truth = nps_summary(*noise_power_spectrum(noise_estimate._detrend(np.stack(tiles)), pixel_mm,
                                              n_bins=noise_estimate.N_BINS))
    estimate = noise_estimate.estimate_noise(quarter.hu, pixel_mm)
    assert estimate.sd_hu == pytest.approx(true_sd, rel=0.15)
    assert estimate.peak_frequency == pytest.approx(truth["peak_frequency"], rel=0.15)
    assert estimate.mean_frequency == pytest.approx(truth["mean_frequency"], rel=0.15)
    full_estimate = noise_estimate.estimate_noise(full.hu, pixel_mm)
    assert full_estimate.sd_hu == pytest.approx(true_sd / 2.0, rel=0.15)
