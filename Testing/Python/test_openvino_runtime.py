"""The CPU runtime choice: OpenVINO when installed (the product's faster CPU path), PyTorch otherwise or when asked.

OpenVINO's fused fp32 kernels round differently from PyTorch's; the bound checked here (0.05 HU) is far below one
stored HU step and the noise (tens of HU). Measured on the shipped model: 0.002 HU at most (README, Performance).
"""

import numpy as np
import pytest
import torch
from dicom_factory import phantom_hu, write_ct_series
from LDCTDenoiseLib.cli import main
from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.dicom_reader import read_series
from LDCTDenoiseLib.errors import LDCTDenoiseError
from LDCTDenoiseLib.inference import CPU_RUNTIME_VARIABLE, cpu_runtime, denoise_volume

openvino = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")
BOUND_HU = 0.05


def body_volume(n_slices=3, size=160, seed=0):
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:size, 0:size]
    body = (rows - 80) ** 2 / 60 ** 2 + (columns - 80) ** 2 / 70 ** 2 < 1
    volume = np.where(body, 40.0, -1000.0) + rng.normal(0, 30, (n_slices, size, size))
    return volume.astype(np.float32)


def test_openvino_gives_the_pytorch_result_within_rounding_and_keeps_the_air(monkeypatch):
    torch.manual_seed(0)
    model = CPCE2D().eval()
    volume = body_volume()
    monkeypatch.setenv(CPU_RUNTIME_VARIABLE, "torch")
    reference = denoise_volume(model, volume, device="cpu", batch_size=2)
    monkeypatch.setenv(CPU_RUNTIME_VARIABLE, "openvino")
    assert cpu_runtime() == "openvino"
    output = denoise_volume(model, volume, device="cpu", batch_size=2)
    assert np.abs(output - reference).max() < BOUND_HU
    unchanged = reference == volume  # air far from the body: the input on both runtimes
    assert unchanged.mean() > 0.1 and np.array_equal(output[unchanged], volume[unchanged])


def test_openvino_computes_only_the_body_box_and_there_gives_the_whole_slice_result(monkeypatch):
    """Each slice goes to the compiled network cropped to inference.network_box (the body's box and the network's
    8 px reach); inside the body test's mask the output equals the whole slice's bit for bit, elsewhere the input."""
    from LDCTDenoiseLib import inference
    from LDCTDenoiseLib.body import network_mask

    monkeypatch.setenv(CPU_RUNTIME_VARIABLE, "openvino")
    torch.manual_seed(0)
    model = CPCE2D().eval()
    volume = (np.random.default_rng(1).normal(0, 20, (2, 200, 240)) - 1000.0).astype(np.float32)
    volume[:, 40:100, 150:230] += 1040.0  # a body near the right edge, away from the others
    compiled = inference.openvino_model(model)
    shapes = []
    monkeypatch.setattr(inference, "openvino_model", lambda _: lambda x: shapes.append(x.shape) or compiled(x))
    output = denoise_volume(model, volume, device="cpu", batch_size=2)
    whole = denoise_volume(model, volume, device="cpu", batch_size=2, body_only=False)
    mask = network_mask(volume)
    rows, columns = np.flatnonzero(mask[0].any(axis=1)), np.flatnonzero(mask[0].any(axis=0))
    box = (rows[-1] - rows[0] + 1 + 16, min(columns[-1] + 1 + 8, 240) - (columns[0] - 8))  # the right edge clips
    assert shapes[:2] == [(1, 1, *box)] * 2 and shapes[2:] == [(1, 1, 200, 240)] * 2
    np.testing.assert_array_equal(output[mask], whole[mask])
    np.testing.assert_array_equal(output[~mask], volume[~mask])


def test_network_box_holds_the_mask_and_the_network_reach_inside_the_slice():
    from LDCTDenoiseLib.inference import HALO, network_box

    rng = np.random.default_rng(3)
    for _ in range(20):
        mask = np.zeros((3, 90, 120), dtype=bool)
        top, left = rng.integers(0, 90), rng.integers(0, 120)
        mask[rng.integers(0, 3), top:top + rng.integers(1, 40), left:left + rng.integers(1, 40)] = True
        rows, columns = network_box(mask)
        inside = np.zeros((90, 120), dtype=bool)
        inside[rows, columns] = True
        reach = np.zeros_like(inside)
        ys, xs = np.nonzero(mask.any(axis=0))
        reach[max(ys.min() - HALO, 0):ys.max() + 1 + HALO, max(xs.min() - HALO, 0):xs.max() + 1 + HALO] = True
        np.testing.assert_array_equal(inside, reach)
    assert network_box(np.zeros((2, 30, 30), dtype=bool)) is None


def test_the_compiled_model_follows_weights_changed_in_place(monkeypatch):
    """An adaptation updates the same network's weights in place: the next denoising must use the new ones."""
    monkeypatch.setenv(CPU_RUNTIME_VARIABLE, "openvino")
    torch.manual_seed(0)
    model = CPCE2D().eval()
    volume = body_volume(1)
    before = denoise_volume(model, volume, device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.1)
    after = denoise_volume(model, volume, device="cpu")
    monkeypatch.setenv(CPU_RUNTIME_VARIABLE, "torch")
    assert not np.allclose(before, after, atol=1.0)
    assert np.abs(after - denoise_volume(model, volume, device="cpu")).max() < BOUND_HU


def test_denoise_on_openvino_writes_what_pytorch_writes_within_one_stored_step(profile, tmp_path, monkeypatch):
    write_ct_series(tmp_path / "in", phantom_hu(3, 48, seed=2))
    for runtime in ("torch", "openvino"):
        monkeypatch.setenv(CPU_RUNTIME_VARIABLE, runtime)
        assert main(["denoise", str(tmp_path / "in"), str(tmp_path / runtime), "--model", profile, "--device", "cpu",
                     "--quiet"]) == 0
    difference = read_series(tmp_path / "openvino").hu - read_series(tmp_path / "torch").hu
    assert np.abs(difference).max() <= 1.0 and np.mean(difference != 0) < 0.01  # a rounding flip now and then


def test_auto_compiles_only_for_volumes_that_pay_for_it_and_never_uses_the_telemetry_sending_converter(monkeypatch):
    """By default a small volume runs on PyTorch (compiling would cost more than it saves); a large one, or any volume
    once the model is compiled, on OpenVINO. OpenVINO's model converter (which sends usage telemetry unless the user
    opted out) is never called."""
    from LDCTDenoiseLib import inference

    def no_converter(*args, **kwargs):
        raise AssertionError("openvino.convert_model was called")

    monkeypatch.setattr(openvino, "convert_model", no_converter)
    monkeypatch.setenv(CPU_RUNTIME_VARIABLE, "auto")
    torch.manual_seed(0)
    model = CPCE2D().eval()
    assert not inference._use_openvino(model, 4 * 512 * 512)
    assert inference._use_openvino(model, inference.OPENVINO_MIN_PIXELS)
    denoise_volume(model, body_volume(1), device="cpu")
    assert model not in inference._COMPILED
    monkeypatch.setattr(inference, "OPENVINO_MIN_PIXELS", 1)  # a "large" volume: compiled, then reused for any size
    denoise_volume(model, body_volume(1), device="cpu")
    assert model in inference._COMPILED
    monkeypatch.setattr(inference, "OPENVINO_MIN_PIXELS", 10 ** 12)
    assert inference._use_openvino(model, 1)


def test_a_series_streamed_in_small_batches_is_compiled_for_when_the_whole_series_pays(profile, tmp_path, monkeypatch):
    """The CLI streams a series a few slices at a time; the decision to compile is taken for the whole series."""
    from LDCTDenoiseLib import inference
    from LDCTDenoiseLib.dicom_reader import open_series
    from LDCTDenoiseLib.methods import ModelDenoiser
    from LDCTDenoiseLib.pipeline import denoise_series

    monkeypatch.setenv(CPU_RUNTIME_VARIABLE, "auto")
    write_ct_series(tmp_path / "in", phantom_hu(6, 48, seed=3))
    series = open_series(tmp_path / "in")
    monkeypatch.setattr(inference, "OPENVINO_MIN_PIXELS", 6 * 48 * 48)  # the series pays; a batch of 2 alone would not
    method = ModelDenoiser(profile, device="cpu", batch_size=2)
    denoise_series(series, method, tmp_path / "out", batch_size=2, derivation_description=method.derivation())
    assert method._model in inference._COMPILED


@pytest.mark.parametrize("value, message", [("tensorrt", "use one of auto, torch, openvino")])
def test_an_unknown_runtime_is_refused(monkeypatch, value, message):
    monkeypatch.setenv(CPU_RUNTIME_VARIABLE, value)
    with pytest.raises(LDCTDenoiseError, match=message):
        cpu_runtime()
