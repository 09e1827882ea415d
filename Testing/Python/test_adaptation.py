"""The cross-domain adaptation package (frequency masks, VGG-19 loader, source bank, the adapt() entry point)."""

import warnings

import numpy as np
import pytest
import scipy.fft
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from LDCTDenoiseLib.adaptation import (ADAPTATION_METHODS, DEFAULT_METHOD, MASK_KINDS, AdaptationConfig, FrequencyMask,
                                       SourcePairs, adapt, apply_mask, dct2, idct2, method_settings,
                                       phantom_source_bank, radius_map)
from LDCTDenoiseLib.adaptation.frequency_mask import gaussian_kl
from LDCTDenoiseLib.adaptation.perceptual import PerceptualLoss, vgg19_features
from LDCTDenoiseLib.adaptation import source as source_module
from LDCTDenoiseLib.adaptation.adapt import used_loss_terms
from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.errors import CancelledError, LDCTDenoiseError, WeightsError
from LDCTDenoiseLib.figure import LOSS_TERM_NAMES, loss_curve
from LDCTDenoiseLib.model_registry import REQUIRED_CARD_KEYS, load_weights, save_model
from LDCTDenoiseLib.normalization import hu_to_model


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waits that cost 40x on cores shared with another job."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def seeded_torch():
    """Every CPCE2D() and torch.rand here starts from the same numbers in every run, so a test is as strong each time
    (torch 2.13 seeds its default generator differently in each process)."""
    torch.manual_seed(0)


def body_volume(rng: np.random.Generator, slices: int = 3, size: int = 48, noise: float = 40.0) -> np.ndarray:
    """A disc of soft tissue in air with a brighter insert and noise: a tiny stand-in for a CT series."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    disc = np.where(np.hypot(y, x) < 0.42 * size, 40.0, -1000.0)
    disc[np.hypot(y - 5, x + 4) < 5] = 200.0
    return (disc + noise * rng.standard_normal((slices, size, size))).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_case():
    rng = np.random.default_rng(1)
    targets = [body_volume(rng, noise=60.0), body_volume(rng, noise=60.0)]
    normal = body_volume(rng, slices=4, noise=0.0)
    pairs = SourcePairs(normal + 25.0 * rng.standard_normal(normal.shape).astype(np.float32), normal,
                        {"kind": "tiny synthetic pairs"})
    return targets, pairs


def tiny_config(**overrides) -> AdaptationConfig:
    settings = dict(steps=5, batch_size=4, patch_size=32, learning_rate=1e-3, seed=3, device="cpu", name="tiny",
                    adversarial_weight=0.1)
    settings.update(overrides)
    return AdaptationConfig(**settings)


def quiet_adapt(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return adapt(*args, **kwargs)


def test_dct_round_trip_and_agreement_with_scipy():
    image = torch.randn(2, 1, 12, 20, dtype=torch.float64)
    coefficients = dct2(image)
    expected = scipy.fft.dctn(image.numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(coefficients.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(idct2(coefficients).numpy(), image.numpy(), atol=1e-10)
    single = torch.randn(1, 1, 16, 16)
    assert torch.allclose(idct2(dct2(single)), single, atol=1e-5)


def test_radius_map_is_zero_at_dc_and_one_at_the_far_corner():
    radius = radius_map(9, 13)
    assert radius.shape == (9, 13)
    assert radius[0, 0] == 0.0
    assert radius[-1, -1] == pytest.approx(1.0)
    assert radius[0, 12] == pytest.approx(12 / np.hypot(8, 12))
    assert float(radius.max()) == pytest.approx(1.0) and float(radius.min()) == 0.0


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_every_mask_kind_has_the_right_shape_and_range(kind):
    module = FrequencyMask(kind, bands=4, fixed_cutoff=0.4, bernoulli_keep=0.3)
    low_a, low_b = torch.rand(3, 1, 16, 16), torch.rand(3, 1, 16, 16)
    mask, kl = module([low_a, low_b], torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 16, 16)
    assert float(mask.detach().min()) >= 0.0 and float(mask.detach().max()) <= 1.0
    assert torch.all(mask[:, 0, 0, 0] == 1.0)  # the DC coefficient is always kept
    assert float(kl.detach()) >= 0.0
    assert apply_mask(low_a, mask).shape == low_a.shape
    if kind == "none":
        assert torch.allclose(apply_mask(low_a, mask), low_a, atol=1e-5)
    if kind == "fixed":
        assert torch.equal(mask[0, 0], (radius_map(16, 16) <= 0.4).float())
    if kind == "adaptive":
        kl.backward()
        assert all(p.grad is not None for p in module.parameters())


def test_binary_adaptive_mask_is_binary_and_keeps_a_gradient():
    module = FrequencyMask("adaptive", bands=4, binary=True)
    mask, _ = module([torch.rand(2, 1, 16, 16)], torch.Generator().manual_seed(0))
    assert set(torch.unique(mask.detach()).tolist()) <= {0.0, 1.0}
    mask.sum().backward()
    assert module.encoder.network[0].weight.grad is not None


def test_kl_is_non_negative_and_zero_at_the_prior():
    assert float(gaussian_kl(torch.zeros(5, 8), torch.zeros(5, 8))) == 0.0
    assert float(gaussian_kl(torch.randn(5, 8), torch.randn(5, 8))) > 0.0


def torchvision_layout_weights(path, extra_keys=True):
    """A VGG-19 state dict with random weights, saved with torchvision's key layout (features.N.*, classifier.*)."""
    state = {f"features.{key}": value for key, value in vgg19_features(36).state_dict().items()}
    if extra_keys:
        state["classifier.6.bias"] = torch.zeros(1000)
    torch.save(state, path)
    return path


def test_vgg19_loader_accepts_torchvision_layout_and_measures_a_difference(tmp_path):
    loss = PerceptualLoss(torchvision_layout_weights(tmp_path / "vgg19.pth"), last_layer=8)
    image = torch.rand(2, 1, 32, 32) * 0.3
    assert float(loss(image, image)) == 0.0
    assert float(loss(image + 0.02 * torch.randn_like(image), image)) > 0.0
    card = loss.card()
    assert card["enabled"] and len(card["weights_sha256"]) == 64 and card["layer"] == "features[:9]"


def test_vgg19_loader_refuses_a_wrong_file_with_a_clear_error(tmp_path):
    not_vgg = tmp_path / "cpce.pt"
    torch.save(CPCE2D().state_dict(), not_vgg)
    with pytest.raises(WeightsError, match="not a torchvision VGG-19 weights file"):
        PerceptualLoss(not_vgg)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a weights file")
    with pytest.raises(WeightsError, match="cannot be read"):
        PerceptualLoss(garbage)
    with pytest.raises(WeightsError, match="not found"):
        PerceptualLoss(tmp_path / "missing.pth")
    state = {f"features.{key}": value for key, value in vgg19_features(8).state_dict().items()}
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    wrong_shape = tmp_path / "gray.pth"
    torch.save(state, wrong_shape)
    with pytest.raises(WeightsError, match="wrong shape"):
        PerceptualLoss(wrong_shape, last_layer=8)


def test_adapt_returns_a_changed_copy_a_complete_card_and_a_history(tiny_case, tmp_path):
    targets, pairs = tiny_case
    model = CPCE2D()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    calls = []
    with pytest.warns(UserWarning, match="perceptual loss is off"):
        result = adapt(model, targets, tiny_config(), pairs, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(step, 5) for step in range(1, 6)]
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert any(not torch.equal(before[key], value) for key, value in result.model.state_dict().items())
    assert len(result.history) == 5 and [row["step"] for row in result.history] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(list(row.values())).all() for row in result.history)
    card = result.card
    training = card["training"]
    assert training["config"]["lambda_rec"] == 0.67 and training["config"]["lambda_per"] == 0.33
    assert training["config"]["mask"] == "adaptive" and training["config"]["steps"] == 5
    assert training["perceptual"]["enabled"] is False and card["losses"]["perceptual_vgg19"] == 0.0
    assert training["source"]["kind"] == "tiny synthetic pairs" and training["source"]["slices"] == 4
    assert training["target"] == {"volumes": 2, "slices": 6, "slice_shapes": ["48x48"],
                                  "labels": "none (unlabeled low-dose scans)"}
    assert training["device"] == "cpu" and training["wall_time_s"] >= 0 and card["validation"] == {}
    card_path = save_model(result.model, card, tmp_path)
    assert set(REQUIRED_CARD_KEYS) <= set(card) | {"file", "sha256", "architecture", "normalization"}
    assert torch.equal(load_weights(card_path).conv1.weight, result.model.conv1.weight)


def test_adapt_is_deterministic_on_the_cpu(tiny_case):
    targets, pairs = tiny_case
    model = CPCE2D()
    first = quiet_adapt(model, targets, tiny_config(), pairs)
    second = quiet_adapt(model, targets, tiny_config(), pairs)
    assert first.history == [dict(row) for row in second.history]
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key])
    other = quiet_adapt(model, targets, tiny_config(seed=4), pairs)
    assert other.history != first.history


def test_each_step_loss_is_the_weighted_sum_of_its_terms_with_the_anchor_added(tiny_case):
    """L_all = w_adv·L_adv + λ0·L_rec + λ1·L_per + w_anchor·L_anchor, as each history row reports it."""
    targets, pairs = tiny_case
    config = tiny_config(anchor_weight=10.0, learning_rate=1e-2)  # a large anchor term, so its sign shows
    result = quiet_adapt(CPCE2D(), targets, config, pairs)
    assert result.history[0]["anchor"] == 0.0  # the denoiser starts as the anchor model
    assert all(config.anchor_weight * row["anchor"] > 1e-4 * row["loss"] for row in result.history[1:])
    for row in result.history:
        expected = (config.adversarial_weight * row["adversarial"] + config.lambda_rec * row["reconstruction"]
                    + config.anchor_weight * row["anchor"])  # the perceptual term is off without VGG-19 weights
        assert row["loss"] == pytest.approx(expected, rel=1e-6), row


def test_a_larger_anchor_weight_keeps_the_adapted_model_closer_to_its_start(tiny_case):
    """The anchor holds the outputs on the target scans near the starting model's (measured: 0.0002-0.02 of the
    unanchored drift over four starting networks; 13-3e6 times it with the anchor's sign flipped)."""
    targets, pairs = tiny_case
    start = CPCE2D().eval()
    patches = torch.from_numpy(hu_to_model(np.stack(targets)[:, :, :32, 8:40].reshape(-1, 1, 32, 32)))

    def drift(anchor_weight: float) -> float:
        model = quiet_adapt(start, targets, tiny_config(anchor_weight=anchor_weight, learning_rate=1e-2), pairs).model
        with torch.no_grad():
            return float(torch.mean((model(patches) - start(patches)) ** 2))

    assert drift(50.0) < 0.5 * drift(0.0)


def learning_rates(targets, pairs, config: AdaptationConfig) -> list[list[float]]:
    """The rate each optimizer stepped with, step by step, during one adaptation run."""
    rates = {}

    def record(optimizer, args, kwargs):
        rates.setdefault(id(optimizer), []).append(optimizer.param_groups[0]["lr"])

    handle = register_optimizer_step_pre_hook(record)
    try:
        quiet_adapt(CPCE2D(), targets, config, pairs)
    finally:
        handle.remove()
    return list(rates.values())


def test_the_denoisers_learning_rate_follows_the_cosine_from_its_peak_to_zero(tiny_case):
    targets, pairs = tiny_case
    (cosine,) = learning_rates(targets, pairs, tiny_config(adversarial_weight=0.0))  # only the denoiser steps
    # lr·½(1 + cos(π(s−1)/(S−1))) at step s of S = 5: the peak, half the rate at step 3, nothing at the last step
    assert cosine == pytest.approx([1e-3, 1e-3 * (0.5 + 0.5 ** 1.5), 0.5e-3, 1e-3 * (0.5 - 0.5 ** 1.5), 0.0],
                                   abs=1e-12)
    constant = tiny_config(adversarial_weight=0.0, learning_rate_schedule="constant")
    assert learning_rates(targets, pairs, constant) == [[1e-3] * 5]


def test_the_target_scans_reach_the_training(tiny_case):
    """Two target sets of one shape but other pixels give other weights (alignment, one seed): the target patches
    come from the target scans, not from the source pairs."""
    targets, pairs = tiny_case
    rng = np.random.default_rng(11)
    others = [body_volume(rng, noise=60.0) + 300.0 for _ in targets]
    assert [volume.shape for volume in others] == [volume.shape for volume in targets]
    config = tiny_config(**method_settings("alignment"))
    model = CPCE2D()
    first = quiet_adapt(model, targets, config, pairs).model.state_dict()
    again = quiet_adapt(model, targets, config, pairs).model.state_dict()
    other = quiet_adapt(model, others, config, pairs).model.state_dict()
    assert all(torch.equal(first[key], again[key]) for key in first)  # so the difference below is the targets'
    assert any(not torch.equal(first[key], other[key]) for key in first)


def test_without_the_adversarial_term_the_critic_is_skipped_and_unreported_but_the_masks_are_still_drawn(
        tiny_case, monkeypatch):
    targets, pairs = tiny_case
    draws = []
    real_forward = FrequencyMask.forward

    def counting_forward(self, *args, **kwargs):
        draws.append(1)
        return real_forward(self, *args, **kwargs)

    monkeypatch.setattr(FrequencyMask, "forward", counting_forward)
    result = quiet_adapt(CPCE2D(), targets, tiny_config(adversarial_weight=0.0), pairs)
    assert len(draws) == 5  # one per step, so runs with and without the critic share the random stream
    assert all(list(row) == ["step", "loss", "reconstruction", "anchor"] for row in result.history)
    assert all(row["reconstruction"] > 0.0 for row in result.history)
    assert "fine-tuning on the source pairs alone" in result.card["training"]["method"]


def test_used_loss_terms_follow_the_weights_and_each_has_a_legend_name():
    everything = AdaptationConfig(perceptual_weights="vgg19.pth", recorruption_weight=1.0)
    assert used_loss_terms(everything) == tuple(LOSS_TERM_NAMES)  # a new term must get a name in the loss curve
    assert used_loss_terms(AdaptationConfig(**method_settings("recorruption"))) == ("loss", "recorruption")
    assert used_loss_terms(AdaptationConfig(**method_settings("noise-matching"))) == ("loss", "reconstruction",
                                                                                      "anchor")
    assert used_loss_terms(AdaptationConfig(**method_settings("alignment"))) == (
        "loss", "reconstruction", "adversarial", "anchor", "discriminator", "kl")
    assert used_loss_terms(AdaptationConfig(lambda_per=0.0, perceptual_weights="vgg19.pth"))[:3] == (
        "loss", "reconstruction", "adversarial")
    assert "kl" not in used_loss_terms(AdaptationConfig(mask="fixed"))
    assert used_loss_terms(AdaptationConfig(lambda_rec=0.0, anchor_weight=0.0, adversarial_weight=0.0)) == ("loss",)


@pytest.mark.parametrize("method", list(ADAPTATION_METHODS))
def test_each_method_reports_and_plots_exactly_the_terms_it_uses(method):
    rng = np.random.default_rng(5)  # scans large enough to hold the flat tissue that noise matching measures
    normal = body_volume(rng, size=96, noise=0.0)
    pairs = SourcePairs(normal + 25.0 * rng.standard_normal(normal.shape).astype(np.float32), normal)
    targets = [body_volume(rng, size=96, noise=60.0)]
    config = tiny_config(steps=3, **method_settings(method))
    result = quiet_adapt(CPCE2D(), targets, config, pairs)
    terms = used_loss_terms(config)
    diagnostics = ["mask_keep"] if config.adversarial_weight > 0 else []
    assert all(list(row) == ["step", *terms, *diagnostics] for row in result.history)
    figure = loss_curve(result.history)
    axis, = figure.axes
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert legend == [LOSS_TERM_NAMES[term] for term in terms]
    assert axis.get_xlabel() == "adaptation step" and axis.get_ylabel() == "loss (log scale)"
    if method == "noise-matching":
        assert legend == ["total", "reconstruction (MSE)", "anchor"]  # no adversarial, critic or mask KL curve


def test_monitor_sees_the_model_in_eval_mode_every_n_steps_and_its_numbers_join_the_history(tiny_case):
    targets, pairs = tiny_case
    seen = []

    def monitor(model):
        seen.append((model.training, torch.is_grad_enabled()))
        return {"target_psnr": 30.0 + len(seen)}

    result = quiet_adapt(CPCE2D(), targets, tiny_config(steps=4), pairs, monitor=monitor, monitor_every=2)
    assert seen == [(False, False), (False, False)]
    assert [row.get("target_psnr") for row in result.history] == [None, 31.0, None, 32.0]


@pytest.mark.parametrize("overrides", [dict(mask="none"), dict(mask="fixed"), dict(mask="bernoulli"),
                                       dict(mask_learner="denoiser", mask_binary=True, gan_loss="lsgan",
                                            discriminator_real="source_reference", anchor_weight=0.0),
                                       dict(critic_scale_hu=0.0)])
def test_adapt_runs_every_ablation_variant(tiny_case, overrides):
    targets, pairs = tiny_case
    result = quiet_adapt(CPCE2D(), targets, tiny_config(steps=2, **overrides), pairs)
    assert len(result.history) == 2
    assert all(result.card["training"]["config"][key] == value for key, value in overrides.items())


def test_adapt_uses_the_perceptual_loss_when_weights_are_given(tiny_case, tmp_path):
    targets, pairs = tiny_case
    weights = torchvision_layout_weights(tmp_path / "vgg19.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = adapt(CPCE2D(), targets, tiny_config(steps=1, perceptual_weights=str(weights), perceptual_layer=8),
                       pairs)
    assert result.card["training"]["perceptual"]["enabled"] is True
    assert result.card["losses"]["perceptual_vgg19"] == 0.33
    assert result.history[0]["perceptual"] > 0.0


def test_cancel_stops_adaptation_and_leaves_the_model_untouched(tiny_case):
    targets, pairs = tiny_case
    model = CPCE2D()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    calls = []
    with pytest.raises(CancelledError):
        quiet_adapt(model, targets, tiny_config(), pairs, progress=lambda done, total: calls.append(done),
                    cancel=lambda: len(calls) >= 2)
    assert calls == [1, 2]
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_bad_settings_and_inputs_are_refused(tiny_case):
    targets, pairs = tiny_case
    with pytest.raises(LDCTDenoiseError, match="mask"):
        AdaptationConfig(mask="gaussian")
    with pytest.raises(LDCTDenoiseError, match="smaller than"):
        quiet_adapt(CPCE2D(), targets, tiny_config(patch_size=64), pairs)
    with pytest.raises(LDCTDenoiseError, match="no body"):
        quiet_adapt(CPCE2D(), [np.full((2, 48, 48), -1000.0, np.float32)], tiny_config(), pairs)
    with pytest.raises(LDCTDenoiseError, match="same shape"):
        SourcePairs(np.zeros((2, 32, 32)), np.zeros((2, 32, 30)))


def test_each_adaptation_method_is_a_valid_config_that_the_card_names():
    from LDCTDenoiseLib.adaptation.adapt import describe_method

    names = {method: describe_method(AdaptationConfig(**method_settings(method))) for method in ADAPTATION_METHODS}
    assert names["noise-matching"].startswith("target-noise matching") and "alignment" not in names["noise-matching"]
    assert names["alignment"].startswith("semantic information alignment")
    assert DEFAULT_METHOD in ADAPTATION_METHODS
    both = describe_method(AdaptationConfig(**dict(method_settings("alignment"), match_target_noise=True)))
    assert both == f"{names['noise-matching']} + {names['alignment']}"
    assert "source pairs alone" in describe_method(AdaptationConfig(adversarial_weight=0.0))  # the control
    with pytest.raises(LDCTDenoiseError, match="noise-matching, alignment"):
        method_settings("cyclegan")


@pytest.mark.slow
def test_phantom_source_bank_is_simulated_once_and_cached(tmp_path, monkeypatch):
    calls = []
    real_simulate = source_module.simulate_low_dose_volume

    def counting_simulate(*args, **kwargs):
        calls.append(1)
        return real_simulate(*args, **kwargs)

    monkeypatch.setattr(source_module, "simulate_low_dose_volume", counting_simulate)
    first = phantom_source_bank(n_slices=2, size=64, pixel_mm=6.0, seed=5, cache_dir=tmp_path)
    second = phantom_source_bank(n_slices=2, size=64, pixel_mm=6.0, seed=5, cache_dir=tmp_path)
    assert len(calls) == 1
    assert first.low_dose.shape == (2, 64, 64) and first.low_dose.dtype == np.float32
    np.testing.assert_array_equal(first.low_dose, second.low_dose)
    np.testing.assert_array_equal(first.normal_dose, second.normal_dose)
    assert [path.name for path in tmp_path.iterdir()] == [f"phantom-{first.description['cache_key']}.npz"]
    recipe = first.description["recipe"]
    assert recipe["protocol"]["kernel"] == "ram-lak" and recipe["protocol"]["full_dose_photons"] == 1.0e6
    assert recipe["protocol"]["dose_fraction"] == 0.25 and recipe["protocol"]["mode"] == "regen"
    assert float(np.std(first.low_dose - first.normal_dose)) > 1.0  # noise was added
    phantom_source_bank(n_slices=2, size=64, pixel_mm=6.0, seed=6, cache_dir=tmp_path)
    assert len(calls) == 2  # another seed is another bank
