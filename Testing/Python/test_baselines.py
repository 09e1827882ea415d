"""Classic baselines on a synthetic disc phantom with correlated (CT-like) noise."""

import sys

import numpy as np
import pytest
from scipy import ndimage

from LDCTDenoiseLib.baselines import (
    BASELINES,
    BM3DFilter,
    bilateral_filter,
    estimate_noise_sd,
    make_baseline,
)
from LDCTDenoiseLib.errors import CancelledError, LDCTDenoiseError

TISSUE_HU = 40.0
NOISE_SD = 30.0


def correlated_noise(rng: np.random.Generator, shape: tuple[int, ...], sd: float) -> np.ndarray:
    """White noise blurred in-plane (as a CT reconstruction kernel does), rescaled to ``sd``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), (0, 0.8, 0.8)[-len(shape):])
    return noise * (sd / noise.std())


def disc_phantom(size: int, slices: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) volumes: a 40 HU disc with a 140 HU insert in air, -3024 HU padding in the corners."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    clean = np.full((size, size), -1000.0)
    clean[xx**2 + yy**2 < (0.45 * size) ** 2] = TISSUE_HU
    clean[(xx - 0.2 * size) ** 2 + yy**2 < (0.08 * size) ** 2] = 140.0
    rng = np.random.default_rng(seed)
    noisy = clean + correlated_noise(rng, (slices, size, size), NOISE_SD)
    noisy[:, xx**2 + yy**2 > (0.5 * size) ** 2 * 1.9] = -3024.0  # outside the scan field of view
    return noisy.astype(np.float32), np.broadcast_to(clean, noisy.shape)


def homogeneous_region(size: int) -> tuple[slice, slice, slice]:
    """A square of 40 HU tissue left of the centre, away from the insert and the disc's edge."""
    return slice(None), slice(int(0.4 * size), int(0.6 * size)), slice(int(0.2 * size), int(0.4 * size))


FAST_METHODS = ["gaussian", "bilateral", "tv", "nlm"]


@pytest.mark.parametrize("name", FAST_METHODS)
def test_reduces_noise_keeps_mean_shape_dtype_and_input(name) -> None:
    noisy, _ = disc_phantom(128)
    before = noisy.copy()
    out = make_baseline(name)(noisy)
    assert out.shape == noisy.shape and out.dtype == np.float32
    np.testing.assert_array_equal(noisy, before)
    region = homogeneous_region(128)
    assert out[region].std() < 0.85 * noisy[region].std()
    assert abs(out[region].mean() - noisy[region].mean()) < 3.0
    assert abs(out[region].mean() - TISSUE_HU) < 5.0
    padding = noisy < -1024
    np.testing.assert_array_equal(out[padding], noisy[padding])


@pytest.mark.parametrize("name", FAST_METHODS)
def test_progress_and_cancel(name) -> None:
    noisy, _ = disc_phantom(48, slices=3)
    calls: list[tuple[int, int]] = []
    make_baseline(name)(noisy, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]

    seen: list[int] = []
    with pytest.raises(CancelledError):
        make_baseline(name)(noisy, progress=lambda done, total: seen.append(done), cancel=lambda: len(seen) >= 1)
    assert seen == [1]


def test_bm3d_reduces_noise_on_a_small_slice() -> None:
    pytest.importorskip("bm3d")
    noisy, _ = disc_phantom(64, slices=1)
    before = noisy.copy()
    calls: list[tuple[int, int]] = []
    out = make_baseline("bm3d")(noisy, progress=lambda done, total: calls.append((done, total)))
    np.testing.assert_array_equal(noisy, before)
    assert out.shape == noisy.shape and out.dtype == np.float32 and calls == [(1, 1)]
    region = homogeneous_region(64)
    assert out[region].std() < 0.85 * noisy[region].std()
    assert abs(out[region].mean() - noisy[region].mean()) < 3.0
    with pytest.raises(CancelledError):
        BM3DFilter()(noisy, cancel=lambda: True)


def test_bm3d_missing_names_the_package_and_its_licence(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bm3d", None)  # makes `import bm3d` fail as on a machine without it
    with pytest.raises(LDCTDenoiseError, match=r"pip install bm3d.*non-commercial"):
        BM3DFilter()(np.zeros((1, 16, 16), np.float32))


def test_noise_estimate_measures_the_pixel_noise() -> None:
    rng = np.random.default_rng(7)
    tissue = np.full((1, 256, 256), TISSUE_HU)
    white = (tissue + rng.normal(0.0, NOISE_SD, tissue.shape))[0]
    correlated = (tissue + correlated_noise(rng, tissue.shape, NOISE_SD))[0]
    assert estimate_noise_sd(white) == pytest.approx(NOISE_SD, rel=0.1)
    # Correlation hides part of the noise from a 7x7 window, but far less than from a high-pass estimator.
    assert estimate_noise_sd(correlated) == pytest.approx(NOISE_SD, rel=0.2)
    assert estimate_noise_sd(np.full((64, 64), -1000.0)) == 0.0


def test_slices_without_tissue_pass_through_unchanged() -> None:
    air = np.full((1, 32, 32), -1000.0, np.float32)
    np.testing.assert_array_equal(make_baseline("nlm")(air), air)


def test_bilateral_kernel_is_centred_and_symmetric() -> None:
    impulse = np.zeros((21, 21), np.float32)
    impulse[10, 10] = 1.0
    response = bilateral_filter(impulse, sigma_color=1e6, sigma_spatial=1.5)  # colour term ~1: a Gaussian
    assert np.unravel_index(np.argmax(response), response.shape) == (10, 10)
    np.testing.assert_allclose(response, response[::-1, :], atol=1e-7)
    np.testing.assert_allclose(response, response.T, atol=1e-7)
    edge = np.where(np.arange(32)[None, :] < 16, 0.0, 400.0).repeat(32, axis=0).astype(np.float32)
    np.testing.assert_allclose(bilateral_filter(edge, sigma_color=40.0, sigma_spatial=1.5), edge, atol=1e-3)


def test_registry_and_errors() -> None:
    assert list(BASELINES) == ["gaussian", "bilateral", "tv", "nlm", "bm3d"]
    assert make_baseline("gaussian", sigma=2.0).sigma == 2.0
    for name in BASELINES:
        assert make_baseline(name).name == name
    with pytest.raises(LDCTDenoiseError, match="Unknown baseline 'wiener'.*gaussian, bilateral, tv, nlm, bm3d"):
        make_baseline("wiener")
    with pytest.raises(LDCTDenoiseError, match="Invalid parameters.*'tv'"):
        make_baseline("tv", sigma=1.0)
    with pytest.raises(LDCTDenoiseError, match="gaussian: sigma must be positive"):
        make_baseline("gaussian", sigma=-1.0)
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        make_baseline("gaussian")(np.zeros((8, 8), np.float32))
