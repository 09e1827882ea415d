"""What supervised training samples: body-centred patches, optionally each series equally often, and the report's
series (real Mayo pairs and simulated domains) as training items."""

import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # the research code in training/ is not an installed package

from LDCTDenoiseLib.adaptation.patches import BodyPatchSampler  # noqa: E402
from training.paired_data import PairedVolume  # noqa: E402
from training.train_supervised import load_split, paired_sampler  # noqa: E402


def volume(patient: str, slices: int, value: float) -> PairedVolume:
    """A body of ``value`` HU filling most of each 96² slice, so every slice offers many patch centres."""
    normal = np.full((slices, 96, 96), -1000.0, np.float32)
    normal[:, 8:88, 8:88] = value
    return PairedVolume(patient, normal + 10.0, normal, 0.7)


def share_of_small_volume(balance: bool, listed: bool) -> float:
    small, large = volume("small", 1, 100.0), volume("large", 9, 300.0)
    sampler = BodyPatchSampler([(item.low_dose, item.normal_dose) for item in (small, large)], 32,
                               np.random.default_rng(0), body_from=1, balance_stacks=balance, listed=listed)
    _, normal = sampler.sample(2000)
    return float(np.mean(normal[:, 0, 16, 16] == 100.0))


@pytest.mark.parametrize("listed", [False, True])
def test_patches_count_volumes_by_size_unless_balanced(listed: bool) -> None:
    # 1 slice against 9: a tenth of the patches by default, half when each series is equally likely
    assert share_of_small_volume(balance=False, listed=listed) == pytest.approx(0.1, abs=0.025)
    assert share_of_small_volume(balance=True, listed=listed) == pytest.approx(0.5, abs=0.04)


def shipped_models_draw(volumes: list[PairedVolume], patch: int, seed: int, balance: bool, batches: int):
    """The patches the shipped models' training drew, written out: every body pixel of the normal-dose image (above
    -500 HU) at least half a patch from the edges in a list; a batch of list entries (or of volumes, then one entry
    of each); then each patch's rotation and flip."""
    rng, half = np.random.default_rng(seed), patch // 2
    listed = []
    for index, item in enumerate(volumes):
        body = item.normal_dose > -500.0
        body[:, :half], body[:, -half:], body[:, :, :half], body[:, :, -half:] = False, False, False, False
        listed.append(np.stack([np.full(np.count_nonzero(body), index), *np.nonzero(body)], axis=1))
    everything = np.concatenate(listed)
    for _ in range(batches):
        if balance:
            picks = [listed[v][rng.integers(0, len(listed[v]))] for v in rng.integers(0, len(listed), 8)]
        else:
            picks = everything[rng.integers(0, len(everything), 8)]
        low, normal = np.empty((2, 8, 1, patch, patch), np.float32)
        for index, (v, z, y, x) in enumerate(picks):
            rotations, flip = rng.integers(0, 4), rng.integers(0, 2)
            for source, target in ((volumes[v].low_dose, low), (volumes[v].normal_dose, normal)):
                cut = np.rot90(source[z, y - half:y + half, x - half:x + half], rotations)
                target[index, 0] = cut[:, ::-1] if flip else cut
        yield low, normal


@pytest.mark.parametrize("balance", [False, True])
def test_training_draws_the_patches_the_shipped_models_were_trained_on(balance: bool) -> None:
    """The reproduction commands of the shipped models' cards must draw the same patches for the same seed, down to
    the border (centres at most H - 1 - half) and the order of the draws."""
    rng = np.random.default_rng(4)
    volumes = []
    for patient, slices in (("A", 2), ("B", 3)):
        normal = rng.normal(0, 40, (slices, 80, 90)).astype(np.float32)
        normal[:, :, :5] = -1000.0  # air at one side; the body reaches the other edges, as the table does
        volumes.append(PairedVolume(patient, normal + rng.normal(0, 30, normal.shape).astype(np.float32), normal, 0.7))
    sampler = paired_sampler(volumes, {"patch_size": 16, "balance_series": balance}, np.random.default_rng(7))
    for low, normal in shipped_models_draw(volumes, 16, 7, balance, batches=20):
        drawn = sampler.sample(8)
        np.testing.assert_array_equal(drawn[0], low)
        np.testing.assert_array_equal(drawn[1], normal)


def test_a_volume_without_body_is_named() -> None:
    empty = PairedVolume("P9", np.full((2, 96, 96), -1000.0, np.float32), np.full((2, 96, 96), -1000.0, np.float32),
                         0.7)
    with pytest.raises(ValueError, match="P9"):
        paired_sampler([volume("P1", 2, 50.0), empty], {"patch_size": 32}, np.random.default_rng(0))


def test_a_split_that_mixes_series_and_folder_items_is_refused() -> None:
    config = {"train": [{"patient": "L143", "series": "b30/L143"},
                        {"patient": "L096", "low_dose": "a/quarter", "normal_dose": "a/full"}]}
    with pytest.raises(SystemExit, match="mix 'series:' items with folder items"):
        load_split(config, "train")


@pytest.mark.slow
@pytest.mark.data
def test_config_items_can_be_the_reports_series(shared_data: Path, tmp_path: Path) -> None:
    """``series: <domain>/<patient>`` reads the report's slices: real pairs and simulated domains, split by patient."""
    config = {"data_root": str(shared_data), "series_cache": str(tmp_path / "cache"), "normal_dose_every": 55,
              "train": [{"patient": "L143", "series": "b30/L143"}, {"patient": "L096", "series": "vl/L096"}]}
    b30, very_low = load_split(config, "train")
    assert (b30.patient, very_low.patient) == ("L143", "L096")
    assert b30.low_dose.shape == b30.normal_dose.shape == (7, 512, 512)
    assert very_low.low_dose.shape == (2, 512, 512)  # every 55th of L096's 110 normal-dose slices
    # the simulated 5 % dose holds far more noise than the Mayo quarter dose, against its own reference
    assert np.std(very_low.low_dose - very_low.normal_dose) > 2 * np.std(b30.low_dose - b30.normal_dose)
