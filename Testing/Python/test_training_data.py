"""What supervised training samples: body-centred patches, optionally each series equally often, and the report's
series (real Mayo pairs and simulated domains) as training items."""

import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # the research code in training/ is not an installed package

from training.paired_data import BodyPatchSampler, PairedVolume  # noqa: E402
from training.train_supervised import load_split  # noqa: E402


def volume(patient: str, slices: int, value: float) -> PairedVolume:
    """A body of ``value`` HU filling most of each 96² slice, so every slice offers many patch centres."""
    normal = np.full((slices, 96, 96), -1000.0, np.float32)
    normal[:, 8:88, 8:88] = value
    return PairedVolume(patient, normal + 10.0, normal, 0.7)


def share_of_small_volume(balance: bool) -> float:
    small, large = volume("small", 1, 100.0), volume("large", 9, 300.0)
    sampler = BodyPatchSampler([small, large], 32, np.random.default_rng(0), balance_volumes=balance)
    _, normal = sampler.sample(2000)
    return float(np.mean(normal[:, 0, 16, 16] == 100.0))


def test_patches_count_volumes_by_size_unless_balanced() -> None:
    # 1 slice against 9: a tenth of the patches by default, half when each series is equally likely
    assert share_of_small_volume(balance=False) == pytest.approx(0.1, abs=0.025)
    assert share_of_small_volume(balance=True) == pytest.approx(0.5, abs=0.04)


def test_a_volume_without_body_is_named() -> None:
    empty = PairedVolume("P9", np.full((2, 96, 96), -1000.0, np.float32), np.full((2, 96, 96), -1000.0, np.float32),
                         0.7)
    with pytest.raises(ValueError, match="P9"):
        BodyPatchSampler([volume("P1", 2, 50.0), empty], 32, np.random.default_rng(0))


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
