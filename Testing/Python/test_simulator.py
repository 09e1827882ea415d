"""The projection-domain low-dose simulator: physics (noise vs dose and kernel), geometry, determinism, inputs."""

import json

import numpy as np
import pytest

from LDCTDenoiseLib.errors import CancelledError, LDCTDenoiseError
from LDCTDenoiseLib.simulator import (
    KERNELS,
    FanBeamScanner,
    ScanProtocol,
    hu_to_mu,
    simulate_low_dose_slice,
    simulate_low_dose_volume,
    slice_rng,
)

SIZE = 256
PIXEL_MM = 1.0
VIEWS = 360
CENTRAL = (slice(78, 178), slice(78, 178))  # 100 x 100 px in the middle of the water disk
REALISATIONS = 3


def _water_disk(size: int = SIZE, radius_px: float = 100.0) -> np.ndarray:
    """A 200 mm water cylinder in air: long enough paths for realistic noise, no photon starvation."""
    rows, columns = np.mgrid[:size, :size] - (size - 1) / 2.0
    hu = np.full((size, size), -1000.0)
    hu[rows ** 2 + columns ** 2 <= radius_px ** 2] = 0.0
    return hu


def _noise_sd(hu: np.ndarray, protocol: ScanProtocol, seeds=range(REALISATIONS)) -> float:
    """SD of (noisy - noise-free same-kernel recon) in the central ROI, pooled over realisations."""
    variances = []
    for seed in seeds:
        low, reference = simulate_low_dose_slice(hu, PIXEL_MM, protocol, np.random.default_rng(seed))
        variances.append(np.var((low - reference)[CENTRAL].astype(np.float64)))
    return float(np.sqrt(np.mean(variances)))


@pytest.fixture(scope="module")
def regen_noise() -> dict:
    """Noise SD (HU) of the water disk at three doses, Poisson noise only (1/sqrt(dose) is exact there)."""
    disk = _water_disk()
    return {
        dose: _noise_sd(disk, ScanProtocol(dose_fraction=dose, n_views=VIEWS, electronic_noise_var=0.0))
        for dose in (1.0, 0.5, 0.25)
    }


@pytest.mark.parametrize("dose", [0.5, 0.25])
def test_noise_sd_scales_as_inverse_square_root_of_dose(regen_noise, dose):
    ratio = regen_noise[dose] / regen_noise[1.0]
    expected = np.sqrt(1.0 / dose)
    assert abs(ratio / expected - 1.0) < 0.10, (regen_noise, ratio, expected)


def test_insert_mode_adds_only_the_missing_noise(regen_noise):
    """Yu 2012: inserting to dose a adds variance (1/a - 1) x full-dose variance, what regen at a minus at 1 gives."""
    disk = _water_disk()
    insert = {  # other seeds per dose, so the ratio is measured rather than the same pattern rescaled
        dose: _noise_sd(disk, ScanProtocol(dose_fraction=dose, n_views=VIEWS, electronic_noise_var=0.0,
                                           mode="insert"), seeds=range(first_seed, first_seed + REALISATIONS))
        for dose, first_seed in ((0.5, 10), (0.25, 20))
    }
    assert abs(insert[0.25] / insert[0.5] / np.sqrt(3.0) - 1.0) < 0.10, insert
    expected_at_quarter = np.sqrt(regen_noise[0.25] ** 2 - regen_noise[1.0] ** 2)
    assert abs(insert[0.25] / expected_at_quarter - 1.0) < 0.10, (insert, regen_noise)


def test_insert_mode_at_full_dose_returns_the_input_unchanged():
    disk = _water_disk(128, 50.0)
    disk[40:50, 60:70] = 300.0
    protocol = ScanProtocol(dose_fraction=1.0, n_views=90, mode="insert")
    low, reference = simulate_low_dose_slice(disk, 2.0, protocol, np.random.default_rng(0))
    np.testing.assert_array_equal(low, disk.astype(np.float32))
    np.testing.assert_array_equal(reference, disk.astype(np.float32))


def test_sharper_kernels_and_higher_cutoffs_give_more_noise():
    """Same photons (same seed), different kernel: the noise must fall from ram-lak to hann, and with the cutoff."""
    disk = _water_disk()
    sds = {}
    for kernel in KERNELS:
        sds[kernel] = _noise_sd(disk, ScanProtocol(kernel=kernel, n_views=VIEWS), seeds=[7])
    ordered = [sds[kernel] for kernel in KERNELS]
    assert ordered == sorted(ordered, reverse=True), sds
    assert sds["ram-lak"] > 2.0 * sds["hann"], sds
    assert _noise_sd(disk, ScanProtocol(kernel="hann", cutoff=0.6, n_views=VIEWS), seeds=[7]) < sds["hann"]


def test_noise_free_reconstruction_keeps_values_and_geometry():
    """Flat water stays at 0 HU, a bone marker stays where it was (no flip or mirror), non-square slices work."""
    hu = _water_disk()[28:228, :]  # 200 x 256: not square
    marker_rows, marker_columns = slice(40, 52), slice(170, 182)  # anterior, towards the image right
    hu[marker_rows, marker_columns] = 1000.0
    protocol = ScanProtocol(dose_fraction=1.0, n_views=VIEWS)
    low, reference = simulate_low_dose_slice(hu, PIXEL_MM, protocol, np.random.default_rng(0))
    assert low.shape == reference.shape == hu.shape
    assert low.dtype == reference.dtype == np.float32

    water = reference[90:130, 100:150]
    assert abs(water.mean()) < 5.0  # 5 HU is 0.5 % of the attenuation of water

    marker = reference[marker_rows, marker_columns][2:-2, 2:-2]
    assert abs(marker.mean() - 1000.0) < 10.0  # 0.5 %

    def centroid(image: np.ndarray) -> np.ndarray:
        rows, columns = np.nonzero(image > 500.0)
        return np.array([rows.mean(), columns.mean()])

    np.testing.assert_allclose(centroid(reference), centroid(hu), atol=0.5)
    assert np.corrcoef(reference.ravel(), hu.ravel())[0, 1] > 0.99


def test_pixels_outside_the_field_of_view_keep_their_value():
    hu = _water_disk(128, 50.0)
    hu[:8, :] = -3024.0  # outside-FOV padding of a real scan
    protocol = ScanProtocol(n_views=90)
    low, reference = simulate_low_dose_slice(hu, 2.0, protocol, np.random.default_rng(0))
    assert np.all(low[:8] == -3024.0) and np.all(reference[:8] == -3024.0)
    assert abs(reference[60:70, 60:70].mean()) < 10.0  # projected as air: no effect on the water


def test_scanner_projects_the_analytic_chord_and_stacks_fbp():
    """Central ray through a centred 160 mm disk of mu = 0.02/mm integrates to 3.2; FBP of a stack = one by one."""
    scanner = FanBeamScanner(SIZE, PIXEL_MM, n_views=180)
    mu = hu_to_mu(_water_disk(SIZE, 80.0) + 25.6, 0.0195)  # 25.6 HU makes water 0.0200/mm
    mu[mu < 0.01] = 0.0
    sinogram = scanner.project(mu)
    assert sinogram.shape == (180, scanner.n_detectors)
    central = sinogram[:, (scanner.n_detectors - 1) // 2: scanner.n_detectors // 2 + 1].mean(axis=1)
    np.testing.assert_allclose(central, 3.2, rtol=0.01)
    stack = scanner.fbp(np.stack([sinogram, 2.0 * sinogram]), "shepp-logan")
    np.testing.assert_allclose(stack[1], 2.0 * scanner.fbp(sinogram, "shepp-logan"), rtol=1e-9, atol=1e-12)
    assert abs(stack[0][108:148, 108:148].mean() / 0.02 - 1.0) < 0.005


def test_volume_is_deterministic_per_seed_and_slice():
    volume = np.stack([_water_disk(128, 50.0)] * 3)
    volume[1, 60:70, 60:70] = 200.0
    protocol = ScanProtocol(n_views=64)
    first = simulate_low_dose_volume(volume, 2.0, protocol, seed=3)
    again = simulate_low_dose_volume(volume, 2.0, protocol, seed=3)
    other = simulate_low_dose_volume(volume, 2.0, protocol, seed=4)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])
    np.testing.assert_array_equal(first[1], other[1])  # the noise-free reference does not depend on the seed
    assert not np.array_equal(first[0][0], first[0][2])  # each slice has its own noise
    alone = simulate_low_dose_slice(volume[2], 2.0, protocol, slice_rng(3, 2))
    np.testing.assert_array_equal(alone[0], first[0][2])


def test_volume_reports_progress_and_can_be_cancelled():
    volume = np.stack([_water_disk(64, 25.0)] * 3)
    protocol = ScanProtocol(n_views=32)
    calls = []
    simulate_low_dose_volume(volume, 4.0, protocol, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]

    calls.clear()
    with pytest.raises(CancelledError):
        simulate_low_dose_volume(volume, 4.0, protocol, progress=lambda done, total: calls.append((done, total)),
                                 cancel=lambda: len(calls) >= 2)
    assert calls == [(0, 3), (1, 3)]


@pytest.mark.parametrize("settings, message", [
    ({"dose_fraction": 0.0}, "dose_fraction"),
    ({"dose_fraction": 1.5}, "dose_fraction"),
    ({"kernel": "sharp"}, "unknown kernel"),
    ({"cutoff": 0.0}, "cutoff"),
    ({"n_views": 4}, "n_views"),
    ({"mode": "image"}, "unknown mode"),
    ({"source_to_detector_mm": 500.0}, "source_to_detector_mm"),
])
def test_invalid_protocols_are_refused(settings, message):
    with pytest.raises(LDCTDenoiseError, match=message):
        ScanProtocol(**settings)


def test_invalid_images_are_refused():
    protocol = ScanProtocol(n_views=32)
    rng = np.random.default_rng(0)
    with pytest.raises(LDCTDenoiseError, match="2D slice"):
        simulate_low_dose_slice(np.zeros((2, 32, 32)), 1.0, protocol, rng)
    with pytest.raises(LDCTDenoiseError, match="NaN"):
        simulate_low_dose_slice(np.full((32, 32), np.nan), 1.0, protocol, rng)
    with pytest.raises(LDCTDenoiseError, match="pixel size"):
        simulate_low_dose_slice(np.zeros((32, 32)), 0.0, protocol, rng)
    with pytest.raises(LDCTDenoiseError, match="does not fit"):
        simulate_low_dose_slice(np.zeros((512, 512)), 2.0, protocol, rng)
    with pytest.raises(LDCTDenoiseError, match="3D volume"):
        simulate_low_dose_volume(np.zeros((32, 32)), 1.0, protocol)


def test_protocol_card_round_trips_through_json():
    protocol = ScanProtocol(dose_fraction=0.1, kernel="ram-lak", n_views=1152, mode="insert")
    card = json.loads(json.dumps(protocol.to_card()))
    assert card["kernel"] == "ram-lak"
    assert ScanProtocol(**card) == protocol
