"""CPCE-2D definition, normalisation, and batched inference."""

import numpy as np
import pytest
import torch

from LDCTDenoiseLib.cpce import CPCE2D, count_weights
from LDCTDenoiseLib.errors import CancelledError, LDCTDenoiseError
from LDCTDenoiseLib.inference import denoise_volume, select_device
from LDCTDenoiseLib.normalization import HU_MIN, hu_to_model, model_to_hu


@pytest.fixture(autouse=True)
def seeded_torch():
    """Every CPCE2D() and torch.rand here starts from the same numbers in every run (torch 2.13 seeds its default
    generator differently in each process), so a test checks the same network each time."""
    torch.manual_seed(0)


def test_cpce2d_has_the_official_62016_weights_and_no_biases():
    model = CPCE2D()
    assert count_weights(model) == 62016
    assert all("bias" not in name for name, _ in model.named_parameters())
    kernels = {name: tuple(p.shape[-2:]) for name, p in model.named_parameters()}
    assert sum(shape == (1, 1) for shape in kernels.values()) == 3
    assert sum(shape == (3, 3) for shape in kernels.values()) == 8


@pytest.mark.parametrize("shape", [(64, 64), (9, 9), (37, 120)])
def test_cpce2d_keeps_the_slice_size_and_output_is_non_negative(shape):
    with torch.no_grad():
        output = CPCE2D()(torch.rand(2, 1, *shape))
    assert output.shape == (2, 1, *shape)
    assert float(output.min()) >= 0.0


def test_cpce2d_rejects_slices_smaller_than_its_receptive_field():
    with pytest.raises(ValueError, match="at least 9x9"):
        CPCE2D()(torch.rand(1, 1, 8, 64))


def test_normalisation_round_trip_numpy_and_torch():
    hu = np.array([-1024.0, -1000.0, 0.0, 40.0, 1500.0, 3071.0], np.float32)
    np.testing.assert_allclose(model_to_hu(hu_to_model(hu)), hu, atol=1e-3)
    tensor = torch.from_numpy(hu)
    torch.testing.assert_close(model_to_hu(hu_to_model(tensor)), tensor, atol=1e-3, rtol=0)
    assert hu_to_model(np.array([-3024.0]))[0] == 0.0


def _noisy_volume(n_slices=5, size=48, seed=0):
    rng = np.random.default_rng(seed)
    volume = np.full((n_slices, size, size), 40.0, np.float32)
    volume += rng.normal(0, 30, volume.shape).astype(np.float32)
    volume[:, :4, :] = -3024.0  # outside the field of view
    return volume


def test_denoise_volume_is_deterministic_batches_agree_and_input_is_untouched():
    torch.manual_seed(1)
    model = CPCE2D()
    volume = _noisy_volume()
    before = volume.copy()
    one = denoise_volume(model, volume, device="cpu", batch_size=1)
    three = denoise_volume(model, volume, device="cpu", batch_size=3)
    again = denoise_volume(model, volume, device="cpu", batch_size=3)
    np.testing.assert_array_equal(volume, before)
    np.testing.assert_array_equal(three, again)
    np.testing.assert_allclose(one, three, atol=1e-3)
    assert one.dtype == np.float32 and one.shape == volume.shape


def test_denoise_volume_keeps_pixels_outside_the_field_of_view():
    output = denoise_volume(CPCE2D(), _noisy_volume(), device="cpu")
    assert np.all(output[:, :4, :] == -3024.0)
    assert np.all(output[:, 4:, :] >= HU_MIN)


def test_denoise_single_slice_and_progress_reaches_the_end():
    calls = []
    volume = _noisy_volume(n_slices=7)
    denoise_volume(CPCE2D(), volume, device="cpu", batch_size=3, progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 7) and calls[-1] == (7, 7) and len(calls) == 4
    assert denoise_volume(CPCE2D(), volume[0], device="cpu").shape == volume[0].shape


def test_denoise_cancel_stops_before_the_next_batch():
    done = []
    with pytest.raises(CancelledError):
        denoise_volume(CPCE2D(), _noisy_volume(n_slices=6), device="cpu", batch_size=2,
                       progress=lambda d, t: done.append(d), cancel=lambda: len(done) >= 2)
    assert done[-1] == 2


@pytest.mark.parametrize("shape", [(1, 1, 300, 277), (3, 1, 160, 144), (2, 1, 40, 50)])
def test_tiled_forward_equals_the_whole_slice(shape):
    """Tiles with an 8 px halo of real pixels give the whole-slice result, borders and ragged edges included."""
    from LDCTDenoiseLib.inference import forward_tiled

    torch.manual_seed(0)
    model = CPCE2D().eval()
    x = torch.rand(*shape)
    with torch.inference_mode():
        torch.testing.assert_close(forward_tiled(model, x, tile=64), model(x), rtol=0, atol=1e-6)


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(LDCTDenoiseError, match="no CUDA GPU"):
            select_device("cuda")
    with pytest.raises(LDCTDenoiseError, match="Unknown device"):
        select_device("tpu")
    with pytest.raises(LDCTDenoiseError, match="Batch size"):
        denoise_volume(CPCE2D(), _noisy_volume(), device="cpu", batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_matches_cpu_within_a_hounsfield_unit():
    torch.manual_seed(0)
    model = CPCE2D()
    volume = _noisy_volume(size=128)
    cpu = denoise_volume(model, volume, device="cpu")
    gpu = denoise_volume(model, volume, device="cuda")
    assert np.abs(cpu - gpu).max() < 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_of_the_shipped_model_is_far_below_the_noise():
    """The GPU path (channels_last, cuDNN's TF32) against the CPU's tiled fp32, on realistic 512² phantom slices."""
    from LDCTDenoiseLib.model_registry import DEFAULT_MODEL, ModelRegistry
    from LDCTDenoiseLib.phantom import make_abdomen_phantom

    model, _ = ModelRegistry().load(DEFAULT_MODEL)
    phantom, _ = make_abdomen_phantom(2)
    noisy = phantom + np.random.default_rng(0).normal(0, 60, phantom.shape).astype(np.float32)
    cpu = denoise_volume(model, noisy, device="cpu")
    gpu = denoise_volume(model, noisy, device="cuda", batch_size=2)
    body = phantom > -500
    error = (gpu - cpu)[body]
    assert np.sqrt(np.mean(error ** 2)) < 1.0 and np.abs(error).max() < 10.0


def _small_body_volume(n_slices=2, size=320, seed=0):
    """A disc of soft tissue (radius 60 px) off centre in air, with noise: most of the slice is far from the body."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:size, 0:size]
    disc = (rows - 110) ** 2 + (columns - 200) ** 2 < 60 ** 2
    volume = np.where(disc, 40.0, -1000.0)[None] + rng.normal(0, 20, (n_slices, size, size))
    return volume.astype(np.float32), disc


def test_the_body_mask_holds_every_pixel_denser_than_air_and_8_px_around_it():
    from LDCTDenoiseLib.body import network_mask
    from scipy import ndimage

    volume, disc = _small_body_volume()
    volume[:, 300:302, 20:120] = 300.0  # a thin line (a table edge, a catheter) far from the body
    dense = disc | (volume[0] > -500)
    mask = network_mask(volume)
    assert mask[:, ndimage.binary_dilation(dense, iterations=8)].all()
    assert mask.mean() < 0.6  # and not the air far from it


def test_only_the_body_goes_through_the_network_and_there_the_output_is_unchanged():
    """The body test (body.network_mask: 8 px blocks above -500 HU, filled, grown by 16 px) decides what the network
    computes; inside it the output equals the path that computes every tile, bit for bit; outside it is the input."""
    from LDCTDenoiseLib.body import network_mask

    model = CPCE2D().eval()
    volume, disc = _small_body_volume()
    windows = []
    model.register_forward_pre_hook(lambda module, inputs: windows.append(inputs[0].shape[0]))
    output = denoise_volume(model, volume, device="cpu", batch_size=2)
    computed = sum(windows)
    windows.clear()
    every_tile = denoise_volume(model, volume, device="cpu", batch_size=2, body_only=False)
    mask = network_mask(volume)
    np.testing.assert_array_equal(output[mask], every_tile[mask])
    np.testing.assert_array_equal(output[~mask], volume[~mask])
    assert computed == 2 * 3 and sum(windows) == 2 * 9  # 3 of the 9 128² tiles of each slice hold the body


def test_a_batch_cropped_to_its_body_box_gives_the_whole_batch_result_inside_the_mask():
    """The GPU path's crop (inference.forward_cropped), run here on the CPU in float64 so that rounding cannot hide a
    missing or short halo: inside the mask the cropped batch equals the whole one, outside the box it is the input."""
    from LDCTDenoiseLib.body import network_mask
    from LDCTDenoiseLib.inference import forward_cropped, network_box

    torch.manual_seed(0)
    model = CPCE2D().double().eval()
    volume, _ = _small_body_volume(n_slices=2, size=200)
    volume[1] = np.roll(volume[1], 40, axis=1)  # the two slices' bodies differ: the box is their union's
    x = torch.from_numpy(hu_to_model(volume)).double()[:, None]
    mask = network_mask(volume)
    with torch.no_grad():
        cropped, whole = forward_cropped(model, x, mask), model(x)
    np.testing.assert_allclose(cropped[:, 0].numpy()[mask], whole[:, 0].numpy()[mask], rtol=0, atol=1e-9)
    outside = np.ones(mask.shape[1:], dtype=bool)
    outside[network_box(mask)] = False
    assert outside.mean() > 0.1  # the box leaves out part of the batch
    np.testing.assert_array_equal(cropped[:, 0].numpy()[:, outside], x[:, 0].numpy()[:, outside])
    assert torch.equal(forward_cropped(model, x, np.zeros_like(mask)), x)


@pytest.mark.parametrize("seed", range(5))
def test_tile_origins_cover_every_masked_pixel_with_cores_inside_the_slice(seed):
    from LDCTDenoiseLib.inference import tile_origins

    rng = np.random.default_rng(seed)
    height, width = rng.integers(130, 400, size=2)
    mask = np.zeros((height, width), dtype=bool)
    for _ in range(rng.integers(1, 4)):  # a few rectangles anywhere, touching the borders sometimes
        top, left = rng.integers(0, height), rng.integers(0, width)
        mask[top:top + rng.integers(1, 200), left:left + rng.integers(1, 200)] = True
    covered = np.zeros_like(mask)
    for top, left in tile_origins(mask, 64):
        assert 0 <= top <= height - 64 and 0 <= left <= width - 64
        covered[top:top + 64, left:left + 64] = True
    assert covered[mask].all()
    assert tile_origins(np.zeros((100, 100), dtype=bool), 64) == []
