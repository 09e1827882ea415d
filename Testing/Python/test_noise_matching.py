"""Target-noise matching (adaptation/noise_matching.py): the reference-free NPS, the added noise, its use in adapt()."""

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from LDCTDenoiseLib.adaptation import AdaptationConfig, SourcePairs, adapt
from LDCTDenoiseLib.adaptation.noise_matching import NoiseMatcher, estimate_nps_2d, noise_summary
from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.errors import LDCTDenoiseError

SIZE = 32


def body(rng: np.random.Generator, slices: int, noise: np.ndarray | float, size: int = 160) -> np.ndarray:
    """A soft-tissue disc (40 HU) in air with ``noise`` (an array of the volume's shape, or white noise of that SD)."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    disc = np.where(np.hypot(y, x) < 0.45 * size, 40.0, -1000.0)
    if np.isscalar(noise):
        noise = noise * rng.standard_normal((slices, size, size))
    return (disc + noise).astype(np.float32)


def correlated_noise(rng: np.random.Generator, shape: tuple[int, ...], sd: float, sigma: float) -> np.ndarray:
    """Gaussian noise of SD ``sd`` smoothed in-plane: power at low frequencies, as a smooth CT kernel gives."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), (0, sigma, sigma))
    return noise * (sd / noise.std())


def test_the_nps_of_white_noise_is_flat_and_sums_to_its_variance():
    rng = np.random.default_rng(0)
    nps = estimate_nps_2d([body(rng, 4, 30.0)], SIZE)
    assert nps.shape == (SIZE, SIZE)
    # Parseval: the NPS sums to the pixel variance times the pixel count (the plane fit takes 3 of 1024 dof)
    assert np.sqrt(nps.sum() / nps.size) == pytest.approx(30.0, rel=0.05)
    off_dc = np.delete(nps.ravel(), 0)
    assert off_dc.std() / off_dc.mean() < 0.3  # flat, within the estimate's scatter


def test_matching_adds_the_missing_noise_power_and_nothing_where_the_target_is_quieter():
    rng = np.random.default_rng(1)
    source = [body(rng, 4, 20.0)]
    noisier = [body(rng, 4, 60.0)]
    matcher = NoiseMatcher(source, noisier, SIZE, torch.device("cpu"))
    # white 20 HU -> white 60 HU: about sqrt(60² - 20²) = 56.6 HU added, less the part below the frequency floor
    assert 45.0 < matcher.card["added_noise_sd_hu"] < 60.0
    patches = torch.zeros((64, 1, SIZE, SIZE))
    added = matcher(patches, torch.Generator().manual_seed(0))
    assert added.std().item() == pytest.approx(matcher.card["added_noise_sd_hu"], rel=0.05)
    assert abs(added.mean().item()) < 1.0  # the patch means stay

    quieter = NoiseMatcher(source, [body(rng, 4, 10.0)], SIZE, torch.device("cpu"))
    assert quieter.card["added_noise_sd_hu"] == 0.0


def test_matching_follows_the_target_texture():
    """A smooth-kernel target (low-frequency noise) gets low-frequency noise added, not white noise."""
    rng = np.random.default_rng(2)
    source = [body(rng, 4, 20.0)]
    shape = (4, 160, 160)
    target = [body(rng, 4, correlated_noise(rng, shape, 60.0, 1.5))]
    matcher = NoiseMatcher(source, target, SIZE, torch.device("cpu"))
    noise = matcher(torch.zeros((64, 1, SIZE, SIZE)), torch.Generator().manual_seed(0)).numpy()[:, 0]
    spectrum = (np.abs(np.fft.fft2(noise)) ** 2).mean(axis=0)
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(SIZE), np.fft.fftfreq(SIZE), indexing="ij"))
    assert spectrum[(frequency > 0.1) & (frequency < 0.2)].mean() > 10 * spectrum[frequency > 0.4].mean()


def test_scans_without_soft_tissue_are_refused_with_a_clear_error():
    air = [np.full((2, 96, 96), -1000.0, np.float32)]
    with pytest.raises(LDCTDenoiseError, match="soft-tissue regions"):
        estimate_nps_2d(air, SIZE)


def test_adapt_with_noise_matching_records_it_in_the_card():
    rng = np.random.default_rng(3)
    normal = body(rng, 3, 0.0, size=96)
    pairs = SourcePairs(normal + 20.0 * rng.standard_normal(normal.shape).astype(np.float32), normal)
    targets = [body(rng, 3, 70.0, size=96)]
    config = AdaptationConfig(steps=3, batch_size=4, patch_size=SIZE, device="cpu", match_target_noise=True,
                              adversarial_weight=0.0, anchor_weight=0.0)
    torch.manual_seed(0)  # the starting network, as every run of this test
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = adapt(CPCE2D(), targets, config, pairs)
        plain = adapt(CPCE2D(), targets, AdaptationConfig(steps=1, batch_size=4, patch_size=SIZE, device="cpu"),
                      pairs)
    card = result.card["training"]["target_noise_matching"]
    assert card["added_noise_sd_hu"] > 40.0 and card["target_noise_sd_hu"] > card["source_noise_sd_hu"]
    assert result.card["training"]["config"]["learning_rate_schedule"] == "cosine"
    assert plain.card["training"]["target_noise_matching"] == {"enabled": False}


def test_noise_summary_says_what_was_measured_and_when_the_target_gave_little_to_learn():
    assert noise_summary({"enabled": False}) == ""
    # the report's noise-matching cards: the 5 % dose target, and the kernel-only shift with the phantom pairs
    low_dose = noise_summary({"source_noise_sd_hu": 77.56, "target_noise_sd_hu": 188.89, "added_noise_sd_hu": 171.95})
    assert low_dose == ("Noise measured in flat soft tissue: target scans 189 HU, source pairs 78 HU; 172 HU was added "
                        "to the source inputs.")
    kernel = noise_summary({"source_noise_sd_hu": 77.56, "target_noise_sd_hu": 56.53, "added_noise_sd_hu": 9.72})
    assert kernel.startswith("Noise measured") and "hardly noisier than the source pairs" in kernel


def test_without_a_reliable_noise_estimate_the_gain_is_not_estimated_and_the_user_is_told_why():
    """A smooth kernel at a low noise level (anatomy of f^-3 power over 3 HU of blurred noise): SURE would rest on a
    noise level the noise model cannot measure, so no slices are held out and the user is told why, not a gain."""
    from LDCTDenoiseLib.noise_estimate import estimate_noise

    rng = np.random.default_rng(4)
    size = 160
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    frequency[0, 0] = 1.0
    disc = body(rng, 4, 0.0)
    anatomy = np.fft.ifft2(np.fft.fft2(rng.standard_normal((4, size, size))) * frequency ** -1.5).real
    anatomy *= 40.0 / anatomy.std()
    target = (disc + np.where(disc > 0, anatomy, 0.0) + correlated_noise(rng, disc.shape, 3.0, 1.5)).astype(np.float32)
    assert not estimate_noise(target, 0.7).reliable
    normal = body(rng, 3, 0.0, size=96)
    pairs = SourcePairs(normal + 20.0 * rng.standard_normal(normal.shape).astype(np.float32), normal)
    config = AdaptationConfig(steps=1, batch_size=4, patch_size=SIZE, device="cpu", match_target_noise=True,
                              adversarial_weight=0.0, holdout_share=0.25)
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="No estimate of the gain"):
        result = adapt(CPCE2D(), [target], config, pairs, target_pixel_mm=[0.7])
    assert result.gain is None and result.keep_adapted
    assert result.card["training"]["held_out"]["slices"] == [[]]  # every slice trained on: nothing to score
    assert "could not be told apart from the anatomy" in result.card["validation"]["estimated_gain"]["unavailable"]
    assert result.gain_sentence("cpce2d-mayo-d45").startswith("No estimate of the gain without a reference: the "
                                                              "noise of target series 1 could not be told apart")
