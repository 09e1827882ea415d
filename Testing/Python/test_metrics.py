"""Metrics: PSNR/SSIM/RMSE by hand and against skimage, ROI numbers, and the noise power spectrum (Parseval)."""

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from LDCTDenoiseLib.comparison import METRIC_LABELS, comparison_metrics, metric_label
from LDCTDenoiseLib.errors import LDCTDenoiseError
from LDCTDenoiseLib.metrics import (
    DISPLAY_WINDOW,
    FULL_RANGE,
    Roi,
    cnr,
    noise_power_spectrum,
    nps_summary,
    per_slice_metrics,
    psnr,
    rmse,
    roi_stats,
    ssim,
    summarize,
)


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A smooth 'anatomy' slice spanning air to bone and a noisy copy of it."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64]
    reference = np.where((xx - 32) ** 2 + (yy - 32) ** 2 < 26**2, 40.0, -1000.0)
    reference[20:30, 20:30] = 700.0
    reference = ndimage.gaussian_filter(reference, 1.0)
    image = reference + rng.normal(0.0, 25.0, reference.shape)
    return image.astype(np.float32), reference.astype(np.float32)


def test_psnr_by_hand() -> None:
    reference = np.zeros((32, 32), np.float32)
    image = reference + 10.0
    assert psnr(image, reference) == pytest.approx(10 * math.log10(400**2 / 100))
    assert psnr(image, reference, FULL_RANGE) == pytest.approx(10 * math.log10(4096**2 / 100))


def test_psnr_clips_to_the_window_first() -> None:
    reference = np.full((16, 16), -1000.0)
    image = np.full((16, 16), -500.0)  # both below -160 HU: identical on the display window
    assert psnr(image, reference) == math.inf
    assert psnr(image, reference, FULL_RANGE) == pytest.approx(10 * math.log10(4096**2 / 500**2))


def test_psnr_matches_skimage(pair) -> None:
    image, reference = pair
    for low, high in (DISPLAY_WINDOW, FULL_RANGE):
        expected = peak_signal_noise_ratio(
            np.clip(reference, low, high).astype(np.float64),
            np.clip(image, low, high).astype(np.float64),
            data_range=high - low,
        )
        assert psnr(image, reference, (low, high)) == pytest.approx(expected, rel=1e-9)


def _ssim_by_hand(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Wang et al. 2004 with an explicit 11x11 Gaussian (sigma 1.5), averaged away from a 5-pixel border."""
    offsets = np.arange(-5, 6)
    kernel = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
    kernel /= kernel.sum()

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.correlate(a, kernel, mode="reflect")

    x, y = x.astype(np.float64), y.astype(np.float64)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())


def test_ssim_is_the_11x11_gaussian_wang_ssim(pair) -> None:
    image, reference = pair
    for low, high in (DISPLAY_WINDOW, FULL_RANGE):
        clipped_image, clipped_reference = np.clip(image, low, high), np.clip(reference, low, high)
        by_hand = _ssim_by_hand(clipped_image, clipped_reference, high - low)
        assert ssim(image, reference, (low, high)) == pytest.approx(by_hand, abs=1e-6)
        library = structural_similarity(
            clipped_image.astype(np.float64), clipped_reference.astype(np.float64), data_range=high - low,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
        assert ssim(image, reference, (low, high)) == pytest.approx(library, abs=1e-9)


def test_identical_images(pair) -> None:
    _, reference = pair
    assert psnr(reference, reference) == math.inf
    assert ssim(reference, reference) == pytest.approx(1.0)
    assert rmse(reference, reference) == 0.0


def test_rmse_is_unclipped_hu() -> None:
    reference = np.zeros((16, 16))
    image = np.full((16, 16), 3000.0)
    assert rmse(image, reference) == pytest.approx(3000.0)


@pytest.mark.parametrize("metric", [psnr, ssim, rmse, per_slice_metrics])
def test_shape_mismatch_is_a_clear_error(metric) -> None:
    with pytest.raises(ValueError, match=r"shape \(32, 32\) differs from reference shape \(32, 31\)"):
        metric(np.zeros((32, 32)), np.zeros((32, 31)))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="2-D slice or a 3-D volume"):
        psnr(np.zeros(16), np.zeros(16))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 32)), np.zeros((8, 32)))
    with pytest.raises(ValueError, match="high > low"):
        psnr(np.zeros((8, 8)), np.ones((8, 8)), window=(240.0, -160.0))


def test_volumes_average_per_slice_values(pair) -> None:
    image, reference = pair
    volume = np.stack([image, reference + 5.0])
    references = np.stack([reference, reference])
    rows = per_slice_metrics(volume, references)
    assert [row["slice"] for row in rows] == [0, 1]
    assert set(rows[0]) == {"slice", "psnr_display", "ssim_display", "psnr_full", "ssim_full", "rmse"}
    assert rows[0]["psnr_display"] == pytest.approx(psnr(image, reference))
    assert rows[1]["rmse"] == pytest.approx(5.0)
    assert psnr(volume, references) == pytest.approx(np.mean([r["psnr_display"] for r in rows]))
    assert ssim(volume, references, FULL_RANGE) == pytest.approx(np.mean([r["ssim_full"] for r in rows]))
    assert rmse(volume, references) == pytest.approx(np.mean([r["rmse"] for r in rows]))
    assert len(per_slice_metrics(image, reference)) == 1


def test_summarize() -> None:
    assert summarize([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert summarize([4.0]) == (4.0, 0.0)
    with pytest.raises(ValueError, match="empty"):
        summarize([])


def test_roi() -> None:
    roi = Roi(x=2, y=1, width=3, height=2)
    image = np.arange(48, dtype=np.float64).reshape(6, 8)
    assert image[roi.slices()].tolist() == [[10, 11, 12], [18, 19, 20]]
    stats = roi_stats(image, roi)
    assert stats["mean"] == pytest.approx(15.0)
    assert stats["sd"] == pytest.approx(np.std([10, 11, 12, 18, 19, 20], ddof=1))
    with pytest.raises(LDCTDenoiseError, match="does not fit inside the 8x6"):
        roi_stats(image, Roi(x=6, y=0, width=3, height=2))
    with pytest.raises(LDCTDenoiseError, match="width and height >= 1"):
        Roi(x=0, y=0, width=0, height=2)
    with pytest.raises(LDCTDenoiseError, match="x and y must be >= 0"):
        Roi(x=-1, y=0, width=2, height=2)


def test_cnr_by_hand() -> None:
    rng = np.random.default_rng(2)
    image = rng.normal(40.0, 10.0, (64, 64))
    image[:, 32:] += 60.0
    lesion, background = Roi(40, 10, 16, 40), Roi(4, 10, 16, 40)
    signal, noise = image[lesion.slices()], image[background.slices()]
    expected = abs(signal.mean() - noise.mean()) / noise.std(ddof=1)
    assert cnr(image, lesion, background) == pytest.approx(expected)
    assert cnr(image, lesion, background) == pytest.approx(6.0, rel=0.15)


PIXEL_MM = 0.7


@pytest.mark.parametrize("shape", [(40, 64, 64), (30, 33, 47), (20, 128, 40), (5, 17, 16)])
def test_nps_of_white_noise_is_flat_and_integrates_to_the_variance(shape) -> None:
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 10.0, shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty annulus would warn (0/0)
        freqs, nps = noise_power_spectrum(noise, PIXEL_MM)
    summary = nps_summary(freqs, nps)
    variance = float(np.mean(np.var(noise, axis=(1, 2))))
    assert summary["integral_variance"] == pytest.approx(variance, rel=0.02)
    nyquist = 1 / (2 * PIXEL_MM)
    assert freqs[-1] < math.sqrt(2) * nyquist and np.all(np.diff(freqs) > 0)
    if shape[1] >= 32:
        # White noise: NPS = sigma² dx dy at every frequency; mean frequency half of Nyquist.
        assert np.median(nps) == pytest.approx(100.0 * PIXEL_MM**2, rel=0.05)
        assert np.all(np.abs(nps / (100.0 * PIXEL_MM**2) - 1.0) < 0.4)
        assert summary["mean_frequency"] == pytest.approx(nyquist / 2, rel=0.05)


def test_smoothed_noise_has_a_lower_mean_frequency() -> None:
    rng = np.random.default_rng(4)
    white = rng.normal(0.0, 10.0, (30, 64, 64))
    smooth = ndimage.gaussian_filter(white, (0, 1.2, 1.2))
    white_summary = nps_summary(*noise_power_spectrum(white, PIXEL_MM))
    smooth_summary = nps_summary(*noise_power_spectrum(smooth, PIXEL_MM))
    assert smooth_summary["mean_frequency"] < 0.6 * white_summary["mean_frequency"]
    assert smooth_summary["integral_variance"] == pytest.approx(np.mean(np.var(smooth, axis=(1, 2))), rel=0.02)
    assert smooth_summary["peak_frequency"] < 0.2 / PIXEL_MM


def test_nps_roi_bins_and_errors() -> None:
    rng = np.random.default_rng(5)
    noise = rng.normal(0.0, 5.0, (10, 80, 80)) + 1000.0  # a constant background is removed per ROI
    roi = Roi(x=8, y=16, width=48, height=48)
    freqs, nps = noise_power_spectrum(noise, PIXEL_MM, roi=roi, n_bins=12)
    assert freqs.shape == nps.shape == (12,)
    crops = noise[(slice(None), *roi.slices())]
    assert nps_summary(freqs, nps)["integral_variance"] == pytest.approx(np.mean(np.var(crops, axis=(1, 2))), rel=0.02)
    single_freqs, single_nps = noise_power_spectrum(noise[0], PIXEL_MM)
    assert single_freqs.shape == single_nps.shape
    with pytest.raises(ValueError, match="n_bins must be between 1 and"):
        noise_power_spectrum(noise, PIXEL_MM, roi=roi, n_bins=1000)
    with pytest.raises(ValueError, match="pixel_mm must be positive"):
        noise_power_spectrum(noise, 0.0)
    with pytest.raises(LDCTDenoiseError, match="does not fit"):
        noise_power_spectrum(noise, PIXEL_MM, roi=Roi(x=60, y=0, width=48, height=48))


def test_every_comparison_metric_has_a_unique_label_with_its_unit(pair) -> None:
    """A number comparison_metrics learns to produce must get a label here, or the Compare table shows a raw key."""
    image, reference = pair
    volume, truth = np.stack([image, image[::-1]]), np.stack([reference, reference[::-1]])
    outputs = {"input": volume, "smoothed": ndimage.gaussian_filter(volume, (0, 1, 1))}
    roi, background = Roi(x=24, y=36, width=16, height=12), Roi(x=36, y=40, width=12, height=12)
    produced = set()
    for known in (truth, None):
        for regions in ({}, {"roi": roi}, {"roi": roi, "background_roi": background}):
            for row in comparison_metrics(outputs, known, pixel_mm=0.7, slice_index=1, **regions).values():
                produced |= set(row)
    assert produced <= set(METRIC_LABELS), f"unlabelled: {sorted(produced - set(METRIC_LABELS))}"
    assert set(METRIC_LABELS) - produced == {"seconds"}  # run_methods' timing, which the command line adds
    assert len(set(METRIC_LABELS.values())) == len(METRIC_LABELS)
    units = {"psnr": "(dB)", "rmse": "(HU)", "_hu": "(HU)", "cycles_per_mm": "(cycles/mm)", "seconds": "(s)"}
    for key, label in METRIC_LABELS.items():
        unit = next((unit for part, unit in units.items() if part in key), None)
        assert label.endswith(unit) if unit else "(" not in label, (key, label)
        assert ("W/L 400/40" in label) == ("display" in key) and ("full range" in label) == ("full" in key)
        assert ("SD over slices" in label) == key.endswith("_sd")


def test_metric_label_falls_back_to_the_key_with_spaces() -> None:
    assert metric_label("roi_sd_hu") == "Noise SD (HU)" and metric_label("cnr") == "CNR"
    assert metric_label("nps_peak_cycles_per_mm") == "NPS peak (cycles/mm)"
    assert metric_label("target_psnr") == "target psnr"
