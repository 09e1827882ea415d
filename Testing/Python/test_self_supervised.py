"""Structured blind-spot training (training/self_supervised.py): noise-correlation radius, masking, loss, and a short
real training run on a synthetic phantom with correlated noise."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # the research code in training/ is not an installed package

from LDCTDenoiseLib.cpce import CPCE2D  # noqa: E402
from LDCTDenoiseLib.errors import LDCTDenoiseError  # noqa: E402
from LDCTDenoiseLib.inference import denoise_volume  # noqa: E402
from training.self_supervised import (  # noqa: E402
    blind_spot_batch, blind_spot_loss, mask_spacing, noise_correlation_radius, train_blind_spot)


def phantom(size: int, slices: int, sigma: float, seed: int = 0, sd: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) HU volumes: discs of -100 to 200 HU in a 40 HU body ellipse on -1000 HU air, plus Gaussian noise
    of ``sd`` HU filtered by a Gaussian of ``sigma`` px (0: white noise)."""
    rows, columns = np.mgrid[0:size, 0:size] / size
    clean = np.full((size, size), -1000.0)
    clean[((rows - 0.5) / 0.45) ** 2 + ((columns - 0.5) / 0.48) ** 2 < 1] = 40.0
    for y, x, radius, hu in [(0.35, 0.35, 0.1, 200.0), (0.6, 0.65, 0.13, -100.0), (0.65, 0.3, 0.08, 100.0)]:
        clean[(rows - y) ** 2 + (columns - x) ** 2 < radius**2] = hu
    clean = np.repeat(clean[None], slices, axis=0)
    noise = np.random.default_rng(seed).normal(size=clean.shape)
    if sigma:
        noise = ndimage.gaussian_filter(noise, (0, sigma, sigma))
    return clean.astype(np.float32), (clean + noise * sd / noise.std()).astype(np.float32)


def test_radius_is_large_for_correlated_noise_and_small_for_white_noise():
    _, correlated = phantom(256, 2, sigma=1.5)
    _, white = phantom(256, 2, sigma=0.0)
    assert noise_correlation_radius([correlated]) >= 2
    assert noise_correlation_radius([white]) <= 1


def test_radius_needs_body_tiles():
    with pytest.raises(LDCTDenoiseError, match="inside the body"):
        noise_correlation_radius([np.full((1, 64, 64), -1000.0, np.float32)])
    _, small = phantom(128, 1, sigma=0.0)  # 4 tiles: too few for a trustworthy median
    with pytest.raises(LDCTDenoiseError, match="at least"):
        noise_correlation_radius([small])


@pytest.mark.parametrize("replacement", ["local", "patch"])
@pytest.mark.parametrize("radius", [0, 2, 3])
def test_blind_spot_hides_each_box_with_pixels_from_outside_every_box(radius, replacement):
    batch, size = 3, 40
    patches = np.arange(batch * size * size, dtype=np.float32).reshape(batch, 1, size, size)  # every value unique
    masked, centres = blind_spot_batch(patches, radius, np.random.default_rng(1), replacement=replacement)
    spacing = mask_spacing(radius)
    assert masked.shape == centres.shape == patches.shape and centres.dtype == bool
    assert np.array_equal(patches, np.arange(patches.size, dtype=np.float32).reshape(patches.shape))  # not modified
    for b in range(batch):
        ys, xs = np.nonzero(centres[b, 0])
        assert len(ys) == (size // spacing) ** 2
        boxes = np.zeros((size, size), dtype=int)
        for y, x in zip(ys, xs):
            assert radius <= y < size - radius and radius <= x < size - radius
            boxes[y - radius:y + radius + 1, x - radius:x + radius + 1] += 1
        assert boxes.max() == 1  # boxes never overlap
        assert np.count_nonzero(boxes) == len(ys) * (2 * radius + 1) ** 2
        unchanged = masked[b, 0] == patches[b, 0]
        assert np.array_equal(unchanged, boxes == 0)  # every box pixel, centre included, replaced; nothing else
        for y, x in zip(ys, xs):
            for value in masked[b, 0, y - radius:y + radius + 1, x - radius:x + radius + 1].ravel():
                source_b, source_y, source_x = np.unravel_index(int(value), (batch, size, size))
                assert source_b == b  # drawn from the same patch
                distance = max(abs(source_y - y), abs(source_x - x))
                assert distance > radius  # outside its own box: its noise is not the centre's
                assert boxes[source_y, source_x] == 0  # and not hidden in another box either
                if replacement == "local":
                    assert distance <= 2 * radius + 2  # from the ring just outside the box


def test_blind_spot_mask_fraction_and_randomness():
    patches = np.zeros((4, 1, 64, 64), np.float32)
    first = blind_spot_batch(patches, 2, np.random.default_rng(0))[1]
    second = blind_spot_batch(patches, 2, np.random.default_rng(1))[1]
    assert first.mean() == pytest.approx(1 / mask_spacing(2) ** 2)
    assert not np.array_equal(first, second)  # jittered: the centres move from draw to draw
    assert np.array_equal(first, blind_spot_batch(patches, 2, np.random.default_rng(0))[1])  # seeded


def test_blind_spot_rejects_a_box_larger_than_the_patch():
    with pytest.raises(LDCTDenoiseError):
        blind_spot_batch(np.zeros((1, 1, 8, 8), np.float32), 3, np.random.default_rng(0))


def test_loss_counts_only_centres_and_compares_with_the_original_input():
    original = torch.rand(2, 1, 16, 16)
    centres = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    centres[0, 0, 3, 4] = centres[1, 0, 10, 12] = True
    output = original.clone()
    output[~centres] += 5.0  # anything away from the centres is ignored
    assert blind_spot_loss(output, original, centres).item() == 0.0
    output[0, 0, 3, 4] += 0.5
    output[1, 0, 10, 12] -= 0.1
    assert blind_spot_loss(output, original, centres).item() == pytest.approx((0.5**2 + 0.1**2) / 2)


def test_short_training_on_correlated_noise_beats_the_noisy_input():
    torch.set_num_threads(1)
    clean, noisy = phantom(128, 2, sigma=1.0)
    model, info = train_blind_spot([noisy], iterations=40, device="cpu", batch_size=8, patch_size=32, radius=2,
                                   learning_rate=5e-3)
    assert isinstance(model, CPCE2D) and not model.training
    assert next(model.parameters()).device.type == "cpu"
    assert info["radius"] == 2 and not info["radius_estimated"] and info["iterations"] == 40
    assert info["mask_fraction"] == pytest.approx(1 / 64) and info["seconds"] > 0
    denoised = denoise_volume(model, noisy, device="cpu")
    inside = ndimage.binary_erosion(clean > -500, np.ones((1, 9, 9)))  # the body, away from the air boundary
    noisy_rmse = np.sqrt(np.mean((noisy - clean)[inside] ** 2))
    denoised_rmse = np.sqrt(np.mean((denoised - clean)[inside] ** 2))
    assert denoised_rmse < 0.85 * noisy_rmse


def test_training_is_reproducible_on_cpu_and_estimates_the_radius():
    torch.set_num_threads(1)
    _, noisy = phantom(256, 1, sigma=0.0)
    runs = [train_blind_spot([noisy], iterations=2, device="cpu", batch_size=2, patch_size=32, seed=3)
            for _ in range(2)]
    assert runs[0][1]["radius_estimated"] and runs[0][1]["radius"] <= 1
    for first, second in zip(runs[0][0].parameters(), runs[1][0].parameters()):
        assert torch.equal(first, second)


class Stop(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    """The report's self-supervised baseline takes hours on a CPU: a killed run must resume, not start over, and end
    where an uninterrupted run ends (patches, masks, optimiser and learning-rate schedule all restored)."""
    import training.self_supervised as self_supervised

    monkeypatch.setattr(self_supervised, "CHECKPOINT_EVERY", 2)
    _, noisy = phantom(64, 2, sigma=1.0)
    settings = {"iterations": 6, "batch_size": 2, "patch_size": 16, "radius": 1, "device": "cpu", "seed": 3}
    whole, whole_info = train_blind_spot([noisy], **settings)

    def stop_in_the_sixth(done: int, total: int) -> None:
        if done == 5:
            raise Stop

    checkpoint = tmp_path / "checkpoints" / "job.pt"
    with pytest.raises(Stop):
        train_blind_spot([noisy], **settings, progress=stop_in_the_sixth, checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=False)["iteration"] == 4

    torch.manual_seed(123)  # the resumed run must restore the generators, not rely on the caller's
    resumed, info = train_blind_spot([noisy], **settings, checkpoint=checkpoint)
    assert info["final_loss_rmse_hu"] == pytest.approx(whole_info["final_loss_rmse_hu"])
    for name, weight in whole.state_dict().items():
        assert torch.equal(weight, resumed.state_dict()[name]), name
