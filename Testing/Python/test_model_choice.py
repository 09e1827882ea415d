"""Auto, the choice of a model per series without a reference (model_choice.py, `denoise --model auto`): a clearly
better model replaces the default, a worse one never does, and where the series' noise cannot be measured the
default is kept and the user is told why."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from dicom_factory import phantom_hu, write_ct_series

from LDCTDenoiseLib.adaptation.profile import check_profile_name
from LDCTDenoiseLib.cli import main
from LDCTDenoiseLib.dicom_reader import read_series
from LDCTDenoiseLib.errors import LDCTDenoiseError
from LDCTDenoiseLib.model_choice import choose_model
from LDCTDenoiseLib.model_registry import DEFAULT_MODEL, ModelRegistry, save_model
from LDCTDenoiseLib.phantom import make_abdomen_phantom

PIXEL_MM = 1.4


@pytest.fixture(scope="module")
def scans() -> np.ndarray:
    """Four 256² phantom slices with FBP-like correlated noise of 40 HU (as test_recorruption's)."""
    clean, _ = make_abdomen_phantom(n_slices=4, size=256, pixel_mm=PIXEL_MM, seed=0)
    frequency = np.fft.fftfreq(256)
    radius = np.hypot(*np.meshgrid(frequency, frequency, indexing="ij"))
    amplitude = np.sqrt((radius + 0.01) * np.exp(-(radius / 0.25) ** 2))
    noise = np.fft.ifft2(np.fft.fft2(np.random.default_rng(1).standard_normal(clean.shape)) * amplitude).real
    return (clean + noise * 40.0 / noise.std()).astype(np.float32)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> ModelRegistry:
    """The shipped D45 model as 'good', and a copy whose output is 4 % too bright in model units (about 40 HU in soft
    tissue) as 'offset'."""
    folder = tmp_path_factory.mktemp("models")
    model, card = ModelRegistry().load(DEFAULT_MODEL)
    card = {key: card[key] for key in ("description", "training", "losses", "validation", "command")}
    save_model(model, {**card, "name": "good"}, folder)
    with torch.no_grad():
        model.deconv8.weight *= 1.04  # the last layer
    save_model(model, {**card, "name": "offset"}, folder)
    return ModelRegistry([folder])


def test_a_clearly_better_model_replaces_the_default_and_a_worse_one_never_does(scans, registry):
    chosen = choose_model(lambda index: scans[index], len(scans), PIXEL_MM, registry, default="offset", device="cpu")
    assert chosen.name == "good" and set(chosen.estimates) == {"good"}
    assert chosen.estimates["good"].difference_interval_hu2[1] < 0  # lower error across the whole interval
    assert "Auto chose good." in chosen.sentence() and "offset" in chosen.sentence()
    kept = choose_model(lambda index: scans[index], len(scans), PIXEL_MM, registry, default="good", device="cpu")
    assert kept.name == "good" and kept.estimates["offset"].difference_interval_hu2[0] > 0
    assert "No other model is clearly better: Auto chose good (the default)." in kept.sentence()
    assert kept.summary()["estimates"]["offset"]["kept"] == "start"


def test_where_the_noise_cannot_be_measured_the_default_is_kept_and_the_reason_given(registry):
    air = np.full((3, 64, 64), -1000.0, np.float32)
    chosen = choose_model(lambda index: air[index], 3, PIXEL_MM, registry, default="offset", device="cpu")
    assert chosen.name == "offset" and not chosen.estimates
    assert chosen.sentence().startswith("Auto chose offset (the default): the noise of these scans could not be")
    with pytest.raises(LDCTDenoiseError, match="Unknown model 'nope'"):
        choose_model(lambda index: air[index], 3, PIXEL_MM, registry, default="nope")


def test_auto_reads_only_a_spread_of_the_slices():
    from LDCTDenoiseLib.model_choice import spread

    assert spread(300, 32).tolist() == np.linspace(0, 299, 32).round().astype(int).tolist()
    assert spread(3, 32).tolist() == [0, 1, 2] and spread(1, 8).tolist() == [0]


def test_the_command_line_names_the_choice_and_writes_with_the_chosen_model(tmp_path, capsys, profile):
    """With the default and a profile: on scans too small to measure their noise the default is kept, said, and
    written; --archive and a profile called 'auto' are refused."""
    write_ct_series(tmp_path / "in", phantom_hu(3, 48, seed=2))
    assert main(["denoise", str(tmp_path / "in"), str(tmp_path / "out"), "--model", "auto", "--device", "cpu",
                 "--quiet"]) == 0
    said = capsys.readouterr().out
    assert f"Auto chose {DEFAULT_MODEL} (the default): the noise of these scans could not be measured" in said
    header = pydicom.dcmread(read_series(tmp_path / "out").source_files[0])
    assert f"model '{DEFAULT_MODEL}'" in header.DerivationDescription
    assert main(["denoise", str(tmp_path / "in"), str(tmp_path / "all"), "--archive", "--model", "auto"]) == 2
    assert "--model auto chooses a model for one series" in capsys.readouterr().err
    with pytest.raises(LDCTDenoiseError, match="automatic choice"):
        check_profile_name("Auto")
