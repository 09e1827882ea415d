"""Denoising strength: output = input + s * (denoised - input), for a real CPCE and for a baseline."""

import numpy as np
import pytest
import torch

from LDCTDenoiseLib import __version__
from LDCTDenoiseLib.baselines import make_baseline
from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.errors import LDCTDenoiseError
from LDCTDenoiseLib.inference import denoise_volume
from LDCTDenoiseLib.methods import BaselineMethod, ModelDenoiser, apply_strength, make_method
from LDCTDenoiseLib.model_registry import ModelRegistry, save_model

STRENGTHS = [0.0, 0.3, 0.7, 1.0]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry holding one real CPCE, untrained and seeded, named 'tiny'."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models")
    save_model(CPCE2D(), {"name": "tiny", "description": "test model", "training": {}, "losses": {"mse": 1.0},
                          "validation": {}, "command": "pytest"}, folder)
    return ModelRegistry([folder])


@pytest.fixture
def noisy():
    rng = np.random.default_rng(3)
    volume = np.full((3, 40, 40), 40.0, np.float32)
    volume[:, 10:30, 10:30] = 300.0
    volume += rng.normal(0, 30, volume.shape).astype(np.float32)
    volume[:, :3, :] = -3024.0  # outside the field of view
    return volume


def blend(hu, denoised, strength):
    """The definition, written out in float32 the plain way."""
    return hu + np.float32(strength) * (denoised - hu)


def test_apply_strength_is_the_blend_and_exact_at_both_ends(noisy):
    denoised = noisy * np.float32(0.5) + np.float32(20.0)
    before = noisy.copy(), denoised.copy()
    for strength in (0.25, 0.5, 0.9):
        out = apply_strength(noisy, denoised, strength)
        assert out.dtype == np.float32 and out is not denoised
        np.testing.assert_array_equal(out, blend(noisy, denoised, strength))
    np.testing.assert_array_equal(apply_strength(noisy, denoised, 1.0), denoised)
    np.testing.assert_array_equal(apply_strength(noisy, denoised, 0.0), noisy)
    assert apply_strength(noisy, denoised, 0) is not noisy  # a new volume, never the caller's input
    np.testing.assert_array_equal(noisy, before[0])
    np.testing.assert_array_equal(denoised, before[1])


def test_apply_strength_in_place_gives_the_same_values_and_refuses_to_overwrite_the_input(noisy):
    denoised = noisy[::-1].copy()
    expected = apply_strength(noisy, denoised, 0.4)
    result = apply_strength(noisy, denoised, 0.4, out=denoised)
    assert result is denoised
    np.testing.assert_array_equal(result, expected)
    with pytest.raises(LDCTDenoiseError, match="must not overlap the input"):
        apply_strength(noisy, denoised, 0.4, out=noisy)
    with pytest.raises(LDCTDenoiseError, match="shape"):
        apply_strength(noisy, denoised[:2], 0.4)



def assert_is_the_blend(out: np.ndarray, original: np.ndarray, full: np.ndarray, strength: float) -> None:
    """Exactly the full output at 1, exactly the input at 0, the blend in between."""
    if strength == 1.0:
        np.testing.assert_array_equal(out, full)
    elif strength == 0.0:
        np.testing.assert_array_equal(out, original)
    else:
        np.testing.assert_array_equal(out, blend(original, full, strength))

@pytest.mark.parametrize("strength, message", [
    (-0.05, "fraction from 0 .* to 1 .* got -0.05"),
    (1.5, "got 1.5"),
    (70, "got 70; for 70 % pass 0.7"),
    (float("nan"), "got nan"),
    ("strong", "must be a number from 0 to 1, got 'strong'"),
])
def test_strength_outside_zero_to_one_is_refused_clearly(registry, noisy, strength, message):
    with pytest.raises(LDCTDenoiseError, match=message):
        apply_strength(noisy, noisy, strength)
    with pytest.raises(LDCTDenoiseError, match=message):
        make_method("gaussian", strength=strength)
    with pytest.raises(LDCTDenoiseError, match=message):
        make_method("tiny", registry=registry, device="cpu", strength=strength)


@pytest.mark.parametrize("strength", STRENGTHS)
def test_a_real_cpce_at_each_strength_is_the_blend_of_its_input_and_full_output(registry, noisy, strength):
    before = noisy.copy()
    full = make_method("tiny", registry=registry, device="cpu", batch_size=2)(noisy)
    method = make_method("tiny", registry=registry, device="cpu", batch_size=2, strength=strength)
    assert isinstance(method, ModelDenoiser) and method.strength == strength and method.name == "tiny"
    calls = []
    out = method(noisy, progress=lambda done, total: calls.append(done))
    assert calls[-1] == noisy.shape[0]
    np.testing.assert_array_equal(noisy, before)
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert_is_the_blend(out, noisy, full, strength)
    if 0.0 < strength < 1.0:
        assert np.abs(out - noisy).max() > 1.0 and np.abs(out - full).max() > 1.0  # really between the two
    np.testing.assert_array_equal(out[:, :3], noisy[:, :3])  # outside the field of view: untouched at every strength


def test_full_strength_is_bit_identical_to_the_model_output_of_before(registry, noisy):
    """Strength 100 % is the default and changes nothing: the values are those of plain inference."""
    model, _ = registry.load("tiny", "cpu")
    plain = denoise_volume(model, noisy, device="cpu", batch_size=2)
    method = make_method("tiny", registry=registry, device="cpu", batch_size=2)
    assert method.strength == 1.0
    np.testing.assert_array_equal(method(noisy), plain)


@pytest.mark.parametrize("strength", STRENGTHS)
def test_a_baseline_at_each_strength_is_the_blend_of_its_input_and_filtered_output(noisy, strength):
    filtered = make_baseline("gaussian")(noisy)
    method = make_method("gaussian", strength=strength)
    assert isinstance(method, BaselineMethod) and method.strength == strength and method.name == "gaussian"
    out = method(noisy)
    assert_is_the_blend(out, noisy, filtered, strength)


def test_every_method_describes_itself_and_a_partial_strength(registry):
    baseline = make_method("nlm")
    assert baseline.derivation() == f"Denoised slice by slice by LDCTDenoise {__version__} with the baseline 'nlm'"
    model = make_method("tiny", registry=registry, device="cpu")
    assert model.derivation() == (f"Denoised slice by slice by LDCTDenoise {__version__} with model 'tiny' (CPCE-2D, "
                                  f"card tiny.json, weights sha256 {model.card['sha256']})")
    for method in (make_method("nlm", strength=0.7), make_method("tiny", registry=registry, strength=0.7)):
        assert method.derivation().endswith("at strength 70 % (output = input + 0.7 x (denoised - input))")
        assert method.derivation().startswith(make_method(method.name, registry=registry).derivation())
    assert "at strength 25 % (output = input + 0.25 x" in make_method("tv", strength=0.25).derivation()
    assert "at strength 0 % (output = input + 0 x" in make_method("tv", strength=0).derivation()
