"""Inference speed and memory on this machine, measured against the machine's own matrix-multiply limit.

    .venv/bin/python Testing/benchmark.py [--json runs/benchmark.json] [--series-slices 300] [--device cpu]
    .venv/bin/python Testing/benchmark.py --series-only   # only the end-to-end series run (a few minutes on a CPU)
    .venv/bin/python Testing/benchmark.py --adaptation-only   # only the adaptation's speed and gain (minutes)
    .venv/bin/python Testing/benchmark.py --inference-only    # only the per-slice paths and the body test

Prints a table and writes it as JSON. These are measurements, never assertions: the test suite does not time
anything. Every faster path is also compared with the plain fp32 reference in HU over the body, since a speed-up
that changes the image is not one.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.inference import CPU_RUNTIME_VARIABLE, denoise_volume, forward_tiled, select_device
from LDCTDenoiseLib.model_registry import DEFAULT_MODEL, ModelRegistry
from LDCTDenoiseLib.normalization import hu_to_model, model_to_hu
from LDCTDenoiseLib.phantom import make_abdomen_phantom
from LDCTDenoiseLib.simulator import ScanProtocol, simulate_low_dose_volume

REPO_ROOT = Path(__file__).resolve().parents[1]
SLICE = 512
BODY_HU = -500.0
MEMORY_TARGET_EXTRA_MIB = 1024  # peak RSS target of `denoise`: 2 x the series as float32 + 1 GiB
# Runs a command and prints its peak RSS in KiB. A child's ru_maxrss starts at its parent's peak (fork or vfork, then
# exec, keeps the parent's high-water mark), and this process held the whole test series: measured from here, the
# command would be charged with it. A small launcher process reports the command's own peak.
PEAK_RSS_LAUNCHER = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
                     "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(dtype: torch.dtype, device: torch.device, size: int = 2048, seconds: float = 2.0) -> float:
    """Sustained GFLOP/s of a square matrix multiply: the practical limit the network's convolutions work against."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.matmul(a, b)
    synchronize(device)
    runs, tic = 0, time.perf_counter()
    while time.perf_counter() - tic < seconds:
        torch.matmul(a, b)
        runs += 1
    synchronize(device)
    return 2.0 * size ** 3 * runs / (time.perf_counter() - tic) / 1e9


def macs_per_slice(size: int = SLICE) -> int:
    """Multiply-adds of one size x size slice, counted layer by layer (valid borders included)."""
    model, total = CPCE2D(), 0

    def count(layer, inputs, output) -> None:
        nonlocal total
        weight = layer.weight
        if isinstance(layer, torch.nn.ConvTranspose2d):  # every input pixel scatters into Cout x k x k outputs
            total += inputs[0][0].numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]
        else:
            total += output[0].numel() * weight.shape[1] * weight.shape[2] * weight.shape[3]

    for layer in model.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            layer.register_forward_hook(count)
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    return total


def test_volume(n_slices: int) -> np.ndarray:
    """Realistic low-dose slices: the phantom with 60 HU of noise (the network's cost does not depend on content)."""
    phantom, _ = make_abdomen_phantom(min(n_slices, 8))
    tiled = np.resize(phantom, (n_slices, SLICE, SLICE))
    return (tiled + np.random.default_rng(0).normal(0, 60, tiled.shape)).astype(np.float32)


def seconds_per_slice(run: Callable[[np.ndarray], np.ndarray], volume: np.ndarray, device: torch.device,
                      repeats: int = 2) -> tuple[float, np.ndarray]:
    """Best of ``repeats`` timed runs after one warm-up, per slice; and the output."""
    output = run(volume)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        tic = time.perf_counter()
        output = run(volume)
        synchronize(device)
        best = min(best, (time.perf_counter() - tic) / len(volume))
    return best, output


def naive(model: torch.nn.Module, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """The obvious loop: eager fp32, default memory format, one slice at a time."""
    def run(volume: np.ndarray) -> np.ndarray:
        out = np.empty_like(volume)
        with torch.no_grad():
            for index, slice_hu in enumerate(volume):
                x = torch.from_numpy(hu_to_model(slice_hu))[None, None].to(device)
                out[index] = model_to_hu(model(x)[0, 0].float().cpu().numpy())
        return out
    return run


def onnx_runtime(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model exported to ONNX and run by ONNX Runtime on the CPU with this process's thread count."""
    import onnxruntime

    path = Path(tempfile.mkdtemp(prefix="ldct-onnx-")) / "cpce2d.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(model.cpu().eval(), torch.zeros(1, 1, SLICE, SLICE), str(path), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": axes, "y": axes}, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def openvino_runtime(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model converted by OpenVINO (its fused CPU kernels) in fp32, this process's thread count, any shape."""
    import openvino

    converted = openvino.convert_model(model.cpu().eval(), example_input=torch.zeros(1, 1, SLICE, SLICE),
                                       input=[openvino.PartialShape([-1, 1, -1, -1])])
    compiled = openvino.Core().compile_model(converted, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                                "INFERENCE_PRECISION_HINT": "f32"})
    return lambda x: torch.from_numpy(compiled(x.numpy())[0])


def variant(model: torch.nn.Module, device: torch.device, batch: int, *, channels_last: bool = False,
            bf16: bool = False, compiled: bool = False, onnx: bool = False, openvino: bool = False,
            tile: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A candidate path, timed against the engine's and the naive one: the record of what was tried.

    ``tile``: the engine's CPU tiling (``inference.forward_tiled``) with another tile size; 0 = whole slices.
    """
    net = model.to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compiled:
        net = torch.compile(net)
    if onnx:
        net = onnx_runtime(model)
    if openvino:
        net = openvino_runtime(model)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return net(x).float()

    def run(volume: np.ndarray) -> np.ndarray:
        out = np.empty_like(volume)
        with torch.inference_mode():
            for start in range(0, len(volume), batch):
                chunk = torch.from_numpy(hu_to_model(volume[start:start + batch]))[:, None].to(device)
                result = forward_tiled(forward, chunk, tile) if tile else forward(chunk)
                out[start:start + len(chunk)] = model_to_hu(result[:, 0].cpu().numpy())
        return out
    return run


def hu_error(output: np.ndarray, reference: np.ndarray, body: np.ndarray) -> dict:
    difference = (output - reference)[body]
    return {"rms_hu": float(np.sqrt(np.mean(difference ** 2))), "max_hu": float(np.abs(difference).max())}


def real_series() -> list[tuple[str, np.ndarray]]:
    """A few real series of ../shared/data (absent: none), with patients of several sizes in their field of view."""
    from LDCTDenoiseLib.dicom_reader import read_series

    data = Path(os.environ.get("LDCTDENOISE_DATA", REPO_ROOT.parent / "shared" / "data"))
    found = []
    for name in ("mayo/target_unlabeled/L109_QD_3mm_B30", "fixtures/totalseg_example_ct_dicom",
                 "fixtures/dcm_qa_ct_GE_tilt"):
        if (data / name).is_dir():
            hu = read_series(data / name).hu
            found.append((name, hu[:: max(1, len(hu) // 20)]))
    return found


def body_test_coverage(volumes: list) -> list[dict]:
    """What the body test sends to the network: share of pixels in the mask and of 128² tiles computed."""
    from LDCTDenoiseLib.body import network_mask
    from LDCTDenoiseLib.inference import TILE, tile_origins

    rows = []
    for item in volumes:
        name, hu = item if isinstance(item, tuple) else ("the benchmark's phantom series", item)
        mask = network_mask(hu)
        grid = -(-hu.shape[1] // TILE) * -(-hu.shape[2] // TILE)
        tiles = sum(len(tile_origins(slice_mask, TILE)) for slice_mask in mask) / (grid * len(hu))
        rows.append({"series": name, "mask_fraction": float(mask.mean()), "tile_fraction": float(tiles)})
    return rows


def engine_runtimes(device: torch.device) -> list[str]:
    """The runtimes the engine can use here: on the CPU, PyTorch and (when installed) OpenVINO; on a GPU, CUDA."""
    if device.type != "cpu":
        return [device.type]
    return ["torch", "openvino"] if all(importlib.util.find_spec(name) for name in ("openvino", "onnx")) else ["torch"]


@contextlib.contextmanager
def cpu_runtime_set(runtime: str):
    """The engine's CPU runtime set to ``runtime`` (the environment variable child processes see too)."""
    before = os.environ.get(CPU_RUNTIME_VARIABLE)
    if runtime in ("torch", "openvino"):
        os.environ[CPU_RUNTIME_VARIABLE] = runtime
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CPU_RUNTIME_VARIABLE, None)
        else:
            os.environ[CPU_RUNTIME_VARIABLE] = before


def series_end_to_end(n_slices: int, device: str) -> dict:
    """Write an n-slice 512² DICOM series, then time ``ldct-denoise denoise`` on it in a fresh process with its peak
    resident memory: what a user waits for and what the machine must hold. The command streams the series (read,
    denoise, write a batch at a time), so its memory should not grow with the number of slices."""
    from LDCTDenoiseLib.dicom_writer import write_derived_series
    from LDCTDenoiseLib.synthetic_series import synthetic_ct_volume

    with tempfile.TemporaryDirectory() as work:
        volume = synthetic_ct_volume(test_volume(n_slices), (3.0, 0.7, 0.7), series_description="benchmark")
        write_derived_series(volume, volume.hu, Path(work) / "in", derivation_description="benchmark input",
                             series_description_suffix="")
        command = [sys.executable, "-m", "LDCTDenoiseLib.cli", "denoise", str(Path(work) / "in"),
                   str(Path(work) / "out"), "--device", device, "--quiet"]
        tic = time.perf_counter()
        launched = subprocess.run([sys.executable, "-c", PEAK_RSS_LAUNCHER, *command], check=True,
                                  stdout=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - tic
    series_mib = n_slices * SLICE * SLICE * 2 / 2 ** 20  # int16 on disk and in a viewer
    peak_mib = int(launched.stdout.split()[-1]) / 1024
    target_mib = 2 * (2 * series_mib) + MEMORY_TARGET_EXTRA_MIB
    return {"slices": n_slices, "seconds": seconds, "peak_rss_mib": peak_mib, "series_mib_int16": series_mib,
            "series_mib_float32": 2 * series_mib, "peak_rss_target_mib": target_mib,
            "peak_rss_target_met": bool(peak_mib <= target_mib)}


def print_series(series: dict) -> None:
    print(f"{series['slices']}-slice 512² series end to end (read + denoise + write, streamed, new process): "
          f"{series['seconds']:.1f} s, peak RSS {series['peak_rss_mib']:.0f} MiB "
          f"(series {series['series_mib_float32']:.0f} MiB as float32; target <= 2 x series + 1 GiB = "
          f"{series['peak_rss_target_mib']:.0f} MiB: {'met' if series['peak_rss_target_met'] else 'MISSED'})")


def cpu_name() -> str:
    """The CPU's model name and its widest vector and matrix extensions (the machine behind this project's runs has
    changed between days, so each run says which it was)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set((re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE) or ["", ""])[1].split())
    extensions = [name for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if name in flags]
    return f"{model[1] if model else platform.processor()} ({', '.join(extensions) or 'no AVX2'})"


def machine_info(device: torch.device) -> dict:
    return {"platform": platform.platform(), "processor": cpu_name(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()}


def write_report(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def simulator_seconds_per_slice(n_slices: int = 3) -> float:
    phantom, _ = make_abdomen_phantom(n_slices)
    simulate_low_dose_volume(phantom[:1], 0.7, ScanProtocol())  # compiles the numba kernels once
    tic = time.perf_counter()
    simulate_low_dose_volume(phantom, 0.7, ScanProtocol())
    return (time.perf_counter() - tic) / n_slices


def adaptation_speed_and_gain(steps: int, monitor_every: int, device: str) -> dict:
    """Steps per second of the product's adaptation (its default method) on one series of a large simulated shift,
    and the time to 80 % of its final gain (training/adaptation_synthetic_shift.py: target scored every few steps)."""
    sys.path.insert(0, str(REPO_ROOT))
    from LDCTDenoiseLib.adaptation import DEFAULT_METHOD, method_settings
    from training.adaptation_synthetic_shift import run

    return run(f"product default ({DEFAULT_METHOD})", steps, method_settings(DEFAULT_METHOD),
               monitor_every=monitor_every, device=device)


def print_adaptation(adaptation: dict) -> None:
    gain = adaptation["adapted"] - adaptation["base"]
    to_80 = adaptation["time_to_80pct_gain_s"]
    print(f"adaptation ({adaptation['name']}, one 4-slice series of a simulated 10 % dose smooth-kernel scanner): "
          f"{adaptation['steps_per_s']:.2f} steps/s; window PSNR {adaptation['base']:.2f} -> "
          f"{adaptation['adapted']:.2f} dB after {adaptation['steps']} steps ({gain:+.2f} dB); "
          + (f"80 % of the gain after {to_80:.0f} s" if to_80 is not None else "no gain, so no time to 80 %"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=Path("runs/benchmark.json"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--slices", type=int, default=16, help="slices per timed inference run")
    parser.add_argument("--series-slices", type=int, default=300, help="slices of the end-to-end series run")
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument("--skip", default="", help="comma-separated words: candidates whose name has one are skipped")
    parser.add_argument("--series-only", action="store_true",
                        help="only the end-to-end series run (time and peak memory of `ldct-denoise denoise`)")
    parser.add_argument("--adaptation-steps", type=int, default=300, help="steps of the adaptation run")
    parser.add_argument("--adaptation-only", action="store_true", help="only the adaptation's speed and gain")
    parser.add_argument("--inference-only", action="store_true",
                        help="only the per-slice inference rows and the body test (no series, simulator, adaptation)")
    args = parser.parse_args(argv)

    device = select_device(args.device)
    monitor_every = max(1, args.adaptation_steps // 15)
    if args.adaptation_only:
        report = {"machine": machine_info(device),
                  "adaptation": adaptation_speed_and_gain(args.adaptation_steps, monitor_every, str(device))}
        print_adaptation(report["adaptation"])
        write_report(report, args.json)
        return
    if args.series_only:
        report = {"machine": machine_info(device), "series_end_to_end": {}}
        print(f"{report['machine']['device_name']} ({device}), torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads")
        for runtime in engine_runtimes(device):
            with cpu_runtime_set(runtime):
                report["series_end_to_end"][runtime] = series_end_to_end(args.series_slices, str(device))
            print(f"[{runtime}] ", end="")
            print_series(report["series_end_to_end"][runtime])
        write_report(report, args.json)
        return
    model, _ = ModelRegistry().load(DEFAULT_MODEL, device)
    volume = test_volume(args.slices)
    body = volume > BODY_HU
    macs = macs_per_slice()
    report = {"machine": machine_info(device), "cpce_macs_per_slice": macs, "cpce_gflop_per_slice": 2 * macs / 1e9}
    limits = {"fp32": matmul_rate(torch.float32, device),
              "bf16": matmul_rate(torch.bfloat16, device)}
    if device.type == "cuda":
        limits["fp16"] = matmul_rate(torch.float16, device)
    report["matmul_gflops"] = limits
    best_limit = max(limits.values())

    rows = []
    reference_seconds, reference = seconds_per_slice(naive(model, device), volume, device)
    rows.append({"path": "naive (eager fp32, NCHW, 1 slice at a time)", "seconds_per_slice": reference_seconds,
                 "rms_hu": 0.0, "max_hu": 0.0})
    for runtime in engine_runtimes(device):
        with cpu_runtime_set(runtime):
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                seconds, output = seconds_per_slice(
                    lambda v, b=batch: denoise_volume(model, v, device=device, batch_size=b), volume, device)
                rows.append({"path": f"engine ({runtime}), batch {batch}", "seconds_per_slice": seconds,
                             **hu_error(output, reference, body)})
            if runtime == "torch":  # the body test saves tiles only on PyTorch's tiled path
                seconds, output = seconds_per_slice(
                    lambda v: denoise_volume(model, v, device=device, batch_size=4, body_only=False), volume, device)
                rows.append({"path": "engine (torch), batch 4, every tile (no body test)",
                             "seconds_per_slice": seconds, **hu_error(output, reference, body)})
    candidates = {
        "whole slices fp32, batch 1": dict(batch=1),
        "whole slices fp32, batch 4": dict(batch=4),
        "whole slices, channels_last, batch 4": dict(batch=4, channels_last=True),
        "whole slices, bf16 autocast, batch 4": dict(batch=4, bf16=True),
        "whole slices, channels_last + bf16, batch 4": dict(batch=4, channels_last=True, bf16=True),
        "whole slices, torch.compile, batch 4": dict(batch=4, compiled=True),
        "tiles 128 (+8 px halo), channels_last": dict(batch=4, tile=128, channels_last=True),
        "tiles 64 (+8 px halo)": dict(batch=4, tile=64),
        "tiles 256 (+8 px halo)": dict(batch=4, tile=256),
        "onnxruntime, whole slices, batch 4": dict(batch=4, onnx=True),
        "onnxruntime, tiles 128 (+8 px halo)": dict(batch=4, tile=128, onnx=True),
        "openvino fp32, whole slices, batch 4": dict(batch=4, openvino=True),
        "openvino fp32, tiles 128 (+8 px halo)": dict(batch=4, tile=128, openvino=True),
    }
    for name, options in candidates.items():
        if args.skip and any(word in name for word in args.skip.split(",")):
            continue
        if (options.get("onnx") or options.get("openvino")) and device.type != "cpu":  # CPU runtimes
            continue
        try:
            seconds, output = seconds_per_slice(variant(model, device, **options), volume, device)
        except Exception as error:  # a candidate that does not run here is reported, not fatal
            rows.append({"path": f"{name} (failed: {type(error).__name__})", "seconds_per_slice": float("nan"),
                         "rms_hu": float("nan"), "max_hu": float("nan")})
            continue
        rows.append({"path": name, "seconds_per_slice": seconds, **hu_error(output, reference, body)})
    for row in rows:
        row["slices_per_second"] = 1.0 / row["seconds_per_slice"]
        row["gflops"] = 2 * macs / 1e9 / row["seconds_per_slice"]
        row["fraction_of_fp32_limit"] = row["gflops"] / limits["fp32"]
        row["fraction_of_best_limit"] = row["gflops"] / best_limit
        row["speedup_over_naive"] = reference_seconds / row["seconds_per_slice"]
    report["inference"] = rows
    report["body_test"] = body_test_coverage([volume, *real_series()])
    if not args.inference_only:
        report["series_end_to_end"] = {}
        for runtime in engine_runtimes(device):
            with cpu_runtime_set(runtime):
                report["series_end_to_end"][runtime] = series_end_to_end(args.series_slices, str(device))
        report["simulator_seconds_per_slice"] = simulator_seconds_per_slice()
        report["adaptation"] = adaptation_speed_and_gain(args.adaptation_steps, monitor_every, str(device))

    print(f"{report['machine']['device_name']} ({device}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"CPCE-2D: {macs / 1e9:.2f} GMAC = {2 * macs / 1e9:.1f} GFLOP per 512² slice")
    print("matmul limit: " + ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in limits.items()))
    print(f"{'path':48s} {'s/slice':>8s} {'slices/s':>9s} {'GFLOP/s':>8s} {'% fp32':>7s} {'x naive':>8s} "
          f"{'RMS HU':>7s} {'max HU':>7s}")
    for row in rows:
        print(f"{row['path']:48s} {row['seconds_per_slice']:8.3f} {row['slices_per_second']:9.2f} "
              f"{row['gflops']:8.1f} {100 * row['fraction_of_fp32_limit']:6.1f}% {row['speedup_over_naive']:8.2f} "
              f"{row['rms_hu']:7.3f} {row['max_hu']:7.2f}")
    for row in report["body_test"]:
        print(f"body test on {row['series']}: network mask {100 * row['mask_fraction']:.0f} % of the pixels, "
              f"{100 * row['tile_fraction']:.0f} % of the 128² tiles computed")
    if not args.inference_only:
        for runtime, series in report["series_end_to_end"].items():
            print(f"[{runtime}] ", end="")
            print_series(series)
        print(f"simulator: {report['simulator_seconds_per_slice']:.2f} s per 512² slice (720 views)")
        print_adaptation(report["adaptation"])
    write_report(report, args.json)


if __name__ == "__main__":
    main()
