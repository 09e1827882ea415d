"""The digital abdomen phantom: geometry, tissue values, regions of interest, variation through slices, seeding."""

import numpy as np
import pytest

from LDCTDenoiseLib.errors import LDCTDenoiseError
from LDCTDenoiseLib.phantom import make_abdomen_phantom, phantom_rois
from LDCTDenoiseLib.simulator import ScanProtocol, simulate_low_dose_slice

SMALL = {"size": 256, "pixel_mm": 1.4}  # the same 358 mm field of view as the default, 4x fewer pixels


@pytest.fixture(scope="module")
def default_phantom() -> tuple[np.ndarray, tuple]:
    return make_abdomen_phantom()


@pytest.fixture(scope="module")
def tall_phantom() -> np.ndarray:
    """41 slices reach +-60 mm, where the organs have made nearly all of their through-plane change."""
    return make_abdomen_phantom(n_slices=41, seed=5, **SMALL)[0]


def _roi_values(volume: np.ndarray, roi) -> np.ndarray:
    """(slices, pixels) of one ROI."""
    rows, columns = roi.slices()
    return volume[:, rows, columns].reshape(volume.shape[0], -1)


def test_shape_type_and_spacing(default_phantom):
    volume, spacing = default_phantom
    assert volume.shape == (8, 512, 512)
    assert volume.dtype == np.float32
    assert spacing == (3.0, 0.7, 0.7)
    assert volume.min() >= -1000.5 and volume.max() > 900.0  # air and cortical bone
    small, small_spacing = make_abdomen_phantom(n_slices=2, **SMALL)
    assert small.shape == (2, 256, 256) and small_spacing == (3.0, 1.4, 1.4)


@pytest.mark.parametrize("name, expected, tolerance", [
    ("liver", 60.0, 5.0),
    ("lesion", 40.0, 6.0),
    ("spleen", 50.0, 6.0),
    ("fat", -105.0, 8.0),
    ("muscle", 55.0, 6.0),
    ("aorta", 180.0, 6.0),
])
def test_roi_tissue_values_in_every_slice(default_phantom, name, expected, tolerance):
    volume, _ = default_phantom
    means = _roi_values(volume, phantom_rois()[name]).mean(axis=1)
    np.testing.assert_allclose(means, expected, atol=tolerance)


def test_lesion_is_low_contrast_against_liver(default_phantom):
    volume, _ = default_phantom
    rois = phantom_rois()
    contrast = _roi_values(volume, rois["lesion"]).mean(axis=1) - _roi_values(volume, rois["liver"]).mean(axis=1)
    assert np.all((contrast > -30.0) & (contrast < -12.0)), contrast


def test_rois_stay_homogeneous_and_inside_their_organ_far_through_the_slices(tall_phantom):
    """Texture only (a few HU): no edge, vessel or lesion enters an ROI even where the organs have moved most."""
    rois = phantom_rois(**SMALL)
    expected = {"liver": 60.0, "lesion": 40.0, "spleen": 50.0, "fat": -105.0, "muscle": 55.0, "aorta": 180.0}
    max_sd = {"fat": 10.0}  # fat carries a coarser texture (5 HU) than parenchyma (3 HU)
    for name, roi in rois.items():
        values = _roi_values(tall_phantom, roi)
        assert np.all(np.abs(values.mean(axis=1) - expected[name]) < 8.0), name
        assert values.std(axis=1).max() < max_sd.get(name, 5.0), (name, values.std(axis=1).max())
    liver_sd = _roi_values(tall_phantom, rois["liver"]).std(axis=1)
    assert np.all(liver_sd > 0.3)  # textured, not piecewise constant


def test_slices_differ_smoothly(tall_phantom):
    body = tall_phantom[0] > -500.0
    neighbours = np.abs(tall_phantom[20] - tall_phantom[21])[body].mean()
    far_apart = np.abs(tall_phantom[0] - tall_phantom[40])[body].mean()
    assert far_apart > 5.0  # the anatomy moves through the volume
    assert neighbours < far_apart / 2  # ... smoothly


def test_edges_have_partial_volume():
    slice_ = make_abdomen_phantom(n_slices=1)[0][0]
    row = slice_[256, :]  # across the body outline: air -> skin -> fat
    assert np.any((row > -900.0) & (row < -200.0))


def test_texture_is_set_by_the_seed_and_anatomy_is_not():
    first = make_abdomen_phantom(n_slices=2, seed=1, **SMALL)[0]
    again = make_abdomen_phantom(n_slices=2, seed=1, **SMALL)[0]
    other = make_abdomen_phantom(n_slices=2, seed=2, **SMALL)[0]
    np.testing.assert_array_equal(first, again)
    difference = np.abs(first - other)
    body = first > -500.0
    assert difference.max() > 0.0
    assert np.median(difference[body]) < 5.0


def test_invalid_requests_are_refused():
    with pytest.raises(LDCTDenoiseError, match="340 mm"):
        make_abdomen_phantom(size=256, pixel_mm=0.7)
    with pytest.raises(LDCTDenoiseError, match="340 mm"):
        phantom_rois(size=256)
    with pytest.raises(LDCTDenoiseError, match="at least one slice"):
        make_abdomen_phantom(n_slices=0)


def test_phantom_through_the_simulator_keeps_its_values():
    volume, spacing = make_abdomen_phantom(n_slices=1, **SMALL)
    rois = phantom_rois(**SMALL)
    low, reference = simulate_low_dose_slice(volume[0], spacing[1], ScanProtocol(n_views=360),
                                             np.random.default_rng(0))
    for name in ("liver", "fat", "lesion"):
        rows, columns = rois[name].slices()
        assert abs(reference[rows, columns].mean() - volume[0][rows, columns].mean()) < 5.0, name
    rows, columns = rois["liver"].slices()
    assert (low - reference)[rows, columns].std() > 5.0  # the simulated low dose is noisy
