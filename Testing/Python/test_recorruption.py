"""Recorruption from the target scans (adaptation/recorruption.py, target_noise.py) and the label-free gain estimate
(adaptation/gain.py): the noise draws have the measured NPS, the pairs' noises are uncorrelated, SURE is unbiased
against a known truth, the gate keeps the starting model when nothing was gained, and no source pairs are built."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from LDCTDenoiseLib.adaptation import AdaptationConfig, adapt, method_settings, used_loss_terms
from LDCTDenoiseLib.adaptation.gain import estimate_gain, scored_mask
from LDCTDenoiseLib.adaptation.recorruption import Recorruptor, split_holdout
from LDCTDenoiseLib.adaptation.target_noise import TargetNoise, check_draws
from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.errors import LDCTDenoiseError
from LDCTDenoiseLib.normalization import model_to_hu
from LDCTDenoiseLib.phantom import make_abdomen_phantom

PIXEL_MM = 0.7


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    volume, _ = make_abdomen_phantom(n_slices=4, size=256, pixel_mm=PIXEL_MM * 2, seed=0)
    return volume


def correlated_noise(shape: tuple[int, ...], sd: float, seed: int) -> np.ndarray:
    """FBP-like stationary noise: NPS ∝ f exp(-(f / 0.25 cycles/px)²)."""
    frequency = np.fft.fftfreq(shape[-1])
    radius = np.hypot(*np.meshgrid(frequency, frequency, indexing="ij"))
    amplitude = np.sqrt((radius + 0.01) * np.exp(-(radius / 0.25) ** 2))
    noise = np.fft.ifft2(np.fft.fft2(np.random.default_rng(seed).standard_normal(shape)) * amplitude).real
    return (noise * sd / noise.std()).astype(np.float32)


@pytest.fixture(scope="module")
def noisy(clean) -> np.ndarray:
    return clean + correlated_noise(clean.shape, 40.0, seed=1)


@pytest.fixture(scope="module")
def noise_model(noisy) -> TargetNoise:
    return TargetNoise.of(noisy, PIXEL_MM * 2)


class Blur(torch.nn.Module):
    """A linear denoiser in model units: a Gaussian blur of ``sigma`` px (identity at 0)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        radius = 6
        grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-grid ** 2 / (2 * sigma ** 2)) if sigma > 0 else (grid == 0).float()
        kernel = torch.outer(kernel, kernel)
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (6,) * 4, mode="reflect"), self.kernel)


def test_noise_draws_have_the_measured_spectrum_and_a_wrong_spectrum_is_refused(noisy, noise_model):
    checked = check_draws(noise_model, noisy)
    assert checked["sd_hu"]["drawn"] == pytest.approx(checked["sd_hu"]["measured"], rel=0.15)
    assert checked["shape_distance"] < 0.15
    white = TargetNoise(noise_model.estimate, noisy.shape)
    white.estimate = type(noise_model.estimate)(**{**noise_model.estimate.__dict__,
                                                   "nps_2d": np.ones_like(noise_model.estimate.nps_2d)})
    with pytest.raises(LDCTDenoiseError, match="does not match the noise measured"):
        check_draws(white, noisy)


def test_an_unreliable_noise_estimate_is_refused_naming_the_reason(noisy, noise_model):
    unreliable = TargetNoise(type(noise_model.estimate)(**{**noise_model.estimate.__dict__, "reliable": False}),
                             noisy.shape)
    with pytest.raises(LDCTDenoiseError, match="cannot be told apart from their anatomy"):
        check_draws(unreliable, noisy)


def test_recorrupted_input_and_target_carry_uncorrelated_noise(clean, noise_model):
    """The principle: with y = x + n and z drawn like n, (y + αz) - x and (y - z/α) - x are uncorrelated."""
    generator = torch.Generator().manual_seed(0)
    shape = (64, 1, 64, 64)
    levels = torch.full(shape, noise_model.estimate.sd_hu)
    truth = torch.zeros(shape)
    scan = noise_model.draw(levels, generator)  # x = 0, n drawn from the model itself
    inputs, targets = Recorruptor([noise_model], alpha=2.0).pairs(truth + scan, levels, np.zeros(64, int), generator)
    input_noise, target_noise = model_to_hu(inputs) - truth, model_to_hu(targets) - truth
    correlation = float((input_noise * target_noise).mean() / (input_noise.std() * target_noise.std()))
    assert abs(correlation) < 0.02
    assert float(input_noise.var() / scan.var()) == pytest.approx(1 + 2.0 ** 2, rel=0.05)
    assert float(target_noise.var() / scan.var()) == pytest.approx(1 + 1 / 2.0 ** 2, rel=0.05)


def test_held_out_slices_are_spread_through_each_series_and_never_trained_on():
    volume = np.arange(20, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32)
    training, held_out, picks = split_holdout([volume, volume[:2]], 0.15)
    assert picks[0].tolist() == [6, 13, 19][:len(picks[0])] or len(picks[0]) == 3
    assert len(picks[0]) == 3 and len(picks[1]) == 0  # two slices are too few to hold any out
    assert set(training[0][:, 0, 0]).isdisjoint(held_out[0][:, 0, 0])
    assert sorted([*training[0][:, 0, 0], *held_out[0][:, 0, 0]]) == list(range(20))
    long = np.zeros((300, 4, 4), np.float32)
    assert len(split_holdout([long], 0.15)[2][0]) == 16  # a long series holds out no more than the estimate needs


@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.5])
def test_sure_matches_the_true_error_of_a_known_denoiser(clean, noise_model, sigma):
    """With the noise drawn from the noise model itself, SURE is unbiased: it must match the error against the
    clean image (a sign or factor slip in the divergence term would miss by hundreds of HU²)."""
    generator = torch.Generator().manual_seed(3)
    scan = (clean + noise_model.draw(torch.from_numpy(noise_model.levels[:, None]), generator)[:, 0].numpy())
    model = Blur(sigma)
    estimate = estimate_gain(model, model, [scan], [noise_model], [PIXEL_MM * 2], torch.device("cpu"), seed=1)
    with torch.no_grad():
        from LDCTDenoiseLib.normalization import hu_to_model
        output = model_to_hu(model(torch.from_numpy(hu_to_model(scan))[:, None]))[:, 0].numpy()
    mask = np.stack([scored_mask(image, PIXEL_MM * 2) for image in scan])
    truth = float(np.mean(((output - clean) ** 2)[mask]))
    assert estimate.mse_start == pytest.approx(truth, rel=0.1, abs=40.0)


def test_the_gate_keeps_the_starting_model_unless_the_adapted_one_clearly_wins(noisy, noise_model):
    same = estimate_gain(Blur(1.5), Blur(1.5), [noisy], [noise_model], [PIXEL_MM * 2], torch.device("cpu"))
    assert same.gain_db == 0.0 and not same.keep_adapted
    better = estimate_gain(Blur(0.0), Blur(1.5), [noisy], [noise_model], [PIXEL_MM * 2], torch.device("cpu"))
    assert better.gain_db > 1.0 and better.keep_adapted
    worse = estimate_gain(Blur(1.5), Blur(0.0), [noisy], [noise_model], [PIXEL_MM * 2], torch.device("cpu"))
    assert worse.gain_db < -1.0 and not worse.keep_adapted
    assert "is kept" in worse.sentence("cpce2d-mayo-d45") and "cpce2d-mayo-d45" in worse.sentence("cpce2d-mayo-d45")


def test_recorruption_trains_on_the_target_alone_and_reports_its_gain(noisy, monkeypatch):
    adapt_module = sys.modules["LDCTDenoiseLib.adaptation.adapt"]

    def no_source(*args, **kwargs):
        raise AssertionError("recorruption must not build source pairs")

    monkeypatch.setattr(adapt_module, "phantom_source_bank", no_source)
    torch.manual_seed(0)
    start = CPCE2D()
    before = [parameter.detach().clone() for parameter in start.parameters()]
    config = AdaptationConfig(**dict(method_settings("recorruption"), steps=3, batch_size=4, patch_size=32,
                                     holdout_share=0.25, device="cpu"))
    result = adapt(start, [noisy], config, target_pixel_mm=[PIXEL_MM * 2])
    assert used_loss_terms(config) == ("loss", "recorruption")
    assert [list(row) for row in result.history] == [["step", "loss", "recorruption"]] * 3
    assert all(row["loss"] == row["recorruption"] for row in result.history)  # weight 1, no other term
    assert result.card["training"]["source"]["kind"].startswith("none")
    assert result.card["training"]["held_out"]["slices"] == [[2]]
    assert result.card["validation"]["estimated_gain"]["kept"] in ("adapted", "start")
    assert result.gain is not None and result.keep_adapted == result.gain.keep_adapted
    assert all(torch.equal(a, b) for a, b in zip(before, start.parameters()))  # the caller's model is untouched


def test_recorruption_patches_are_centred_in_the_lungs_too_but_never_in_the_air_around_the_patient():
    from LDCTDenoiseLib.body import body_outline
    from LDCTDenoiseLib.adaptation.patches import BodyPatchSampler

    volume = np.full((2, 96, 96), -1000.0, np.float32)
    volume[:, 16:80, 16:80] = 40.0  # the patient
    volume[:, 32:64, 32:64] = -850.0  # a lung inside
    centres = []
    for masks in (None, [body_outline(volume)]):
        sampler = BodyPatchSampler([(volume,)], 16, np.random.default_rng(0), body_from=0, centre_masks=masks)
        patches, = sampler.sample(400)
        centres.append(patches[:, 0, 7:9, 7:9].reshape(400, 4))  # rotations and flips keep the centre in here
    threshold, outline = centres
    in_lung = [(block == -850.0).all(axis=1).mean() for block in centres]
    assert in_lung[0] == 0.0 and in_lung[1] > 0.1
    assert (outline > -1000.0).any(axis=1).all()  # nothing from the air outside
    assert (threshold > -500.0).any(axis=1).all()


def test_the_user_is_told_the_intervals_and_no_runaway_db_bound():
    from LDCTDenoiseLib.adaptation.gain import GainEstimate

    def told(interval_db: tuple[float, float], difference: tuple[float, float]) -> str:
        return GainEstimate(300.0, 200.0, 1.76, interval_db, difference, 19, 10**6).sentence("cpce2d-mayo-d45")

    clear = told((0.8, 2.1), (-150.0, -40.0))
    assert "-150 to -40 HU²" in clear and "+0.80 to +2.10 dB" in clear and clear.endswith("kept.")
    assert "1.76" not in clear  # the point value moves by dB within the noise estimate's accuracy: never shown
    unclear = told((-0.64, 11.1), (-112.0, 44.0))
    assert "too uncertain to state in dB" in unclear and "cpce2d-mayo-d45 is kept" in unclear
