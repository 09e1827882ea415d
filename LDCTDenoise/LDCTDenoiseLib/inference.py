"""Batched per-slice inference: HU volume (z, y, x) in, denoised HU volume out.

Memory is bounded by the batch, not the volume: slices go to the device a batch at a time and come back into a
preallocated output. The paths are the fastest measured by ``Testing/benchmark.py`` among those that keep the fp32
result (the numbers: docs/measurements.md, "Inference"):

- CPU: each slice is cut into 128² tiles with 8 px of real neighbouring pixels around them. The network's receptive
  field reaches 8 px, so the stitched result equals the whole-slice one exactly, while each tile's feature maps
  stay in cache. bf16 is refused: far slower without native bf16 hardware, and tens of HU off.
- CPU memory: glibc returns every buffer above its mmap threshold to the system and faults it in again, zeroed, on
  the next call; for the network's feature maps that page-fault storm halved the speed. :func:`keep_large_buffers`
  raises the threshold once per process, which is what the PyTorch performance guide's advice to preload jemalloc
  or tcmalloc achieves, without a preload.
- CPU with OpenVINO installed (``pip install openvino``; ``LDCTDENOISE_CPU_RUNTIME=torch`` turns it off): the model
  compiled by OpenVINO runs each slice, cropped to the body's bounding box, in fp32 with its fused kernels, one slice
  per call (batches were slower and took more memory), faster than the tiles above; its output differs from
  PyTorch's fp32 by rounding only.
  Compiled once per model and weights, and by default only for volumes that pay for it (:data:`OPENVINO_MIN_PIXELS`).
- CUDA: batches cropped to their body's bounding box, in channels_last fp32 (cuDNN may use TF32): faster than fp16
  autocast, and closer to the CPU result.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import sys
import tempfile
import warnings
import weakref
from collections.abc import Callable
from typing import Optional

import numpy as np
import torch

from .body import network_mask
from .errors import LDCTDenoiseError
from .normalization import HU_MIN, hu_to_model, model_to_hu
from .progress import CancelCheck, ProgressCallback, check_cancel, report

CPU_RUNTIME_VARIABLE = "LDCTDENOISE_CPU_RUNTIME"  # auto (OpenVINO when installed), torch, or openvino
CPU_RUNTIMES = ("auto", "torch", "openvino")
TILE = 128
HALO = 8  # receptive-field radius of CPCE-2D: 4 valid 3x3 convolutions then 4 transposed ones
TILES_PER_CALL = 4


MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value
TRIM_THRESHOLD = 256 * 2**20  # freed memory kept for reuse before it is returned to the system
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers from glibc's malloc.h


@functools.cache
def keep_large_buffers() -> bool:
    """Let glibc reuse freed feature-map buffers instead of unmapping them (see the module docstring).

    Process-wide and done once; a no-op where the C library is not glibc. Returns whether it applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD,
                                                                                    TRIM_THRESHOLD))
    except (OSError, AttributeError):  # musl or another C library without mallopt
        return False


def cpu_runtime() -> str:
    """What the environment asks to run the network on the CPU: "auto" (OpenVINO when installed, for volumes large
    enough to pay for compiling it), "torch" or "openvino" (refused when not installed)."""
    choice = (os.environ.get(CPU_RUNTIME_VARIABLE) or "auto").strip().lower()
    if choice not in CPU_RUNTIMES:
        raise LDCTDenoiseError(f"{CPU_RUNTIME_VARIABLE}={choice!r}: use one of {', '.join(CPU_RUNTIMES)}.")
    if choice == "openvino" and not _openvino_installed():
        raise LDCTDenoiseError(f"{CPU_RUNTIME_VARIABLE}=openvino, but OpenVINO is not installed: pip install "
                               f"'ldct-denoise[openvino]' (openvino and onnx)")
    return choice


def _openvino_installed() -> bool:
    """OpenVINO and the onnx package its route here needs (``torch.onnx.export``)."""
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "onnx"))


# Compiling for OpenVINO takes 1-2 s; it saves about 0.06 s per 512² slice on the CPU, so "auto" compiles only for
# volumes of at least this many pixels (48 such slices), and reuses a model already compiled for any volume.
OPENVINO_MIN_PIXELS = 48 * 512 * 512
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_version(model: torch.nn.Module) -> tuple[int, ...]:
    """Changes whenever a weight is updated in place (an adaptation step), so a compiled copy can tell it is stale."""
    return tuple(parameter._version for parameter in model.parameters())


def openvino_model(model: torch.nn.Module) -> Callable[[np.ndarray], list]:
    """``model`` compiled by OpenVINO for this CPU (fp32, any batch and slice size, this process's thread count),
    cached until its weights change.

    The network goes through ONNX into OpenVINO's runtime (``Core.read_model``), not through OpenVINO's model
    converter: the converter sends usage telemetry unless the user opted out, and nothing here may phone home.
    """
    import openvino

    version = _weights_version(model)
    cached = _COMPILED.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    axes = {0: "batch", 2: "height", 3: "width"}
    with tempfile.TemporaryDirectory(prefix="ldct-openvino-") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on tracing CPCE2D's size check and on its own future
        path = os.path.join(folder, "cpce.onnx")
        torch.onnx.export(model.cpu().eval(), torch.zeros(1, 1, 64, 64), path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": axes, "y": axes}, dynamo=False)
        core = openvino.Core()
        compiled = core.compile_model(core.read_model(path), "CPU",
                                      {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                       "INFERENCE_PRECISION_HINT": "f32"})
    _COMPILED[model] = (version, compiled)
    return compiled


def _use_openvino(model: torch.nn.Module, n_pixels: int) -> bool:
    choice = cpu_runtime()
    if choice != "auto":
        return choice == "openvino"
    if not _openvino_installed():
        return False
    cached = _COMPILED.get(model)
    return n_pixels >= OPENVINO_MIN_PIXELS or (cached is not None and cached[0] == _weights_version(model))


def prepare_model(model: torch.nn.Module, n_pixels: int, device: str | torch.device = "auto") -> None:
    """Compile ``model`` for OpenVINO now when a volume of ``n_pixels`` warrants it, so that the batches of a series
    streamed through :func:`denoise_volume` run on it (each batch alone is too small to pay for compiling)."""
    target = device if isinstance(device, torch.device) else select_device(device)
    if target.type == "cpu" and _use_openvino(model, n_pixels):
        openvino_model(model)


def select_device(device: str = "auto") -> torch.device:
    """"auto" picks CUDA when present, else the CPU; "cpu" forces the CPU; "cuda" / "cuda:N" require a GPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LDCTDenoiseError(f"Device '{device}' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'.")
    try:
        return torch.device(device)
    except RuntimeError:
        raise LDCTDenoiseError(f"Unknown device '{device}'; use 'auto', 'cpu' or 'cuda'.") from None


def tile_origins(mask: np.ndarray, tile: int) -> list[tuple[int, int]]:
    """Top-left corners of tile² cores that cover every True pixel of one slice's ``mask`` (y, x).

    Cores run in 128-row bands from the first masked row; within a band, from its first masked column to its last.
    The last band and the last core of a band are shifted back so that every core lies inside the slice at full
    size (the overlap is computed twice, with equal values).
    """
    height, width = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return []
    origins = []
    for top in _starts(int(rows[0]), int(rows[-1]) + 1, tile, height):
        columns = np.flatnonzero(mask[top:top + tile].any(axis=0))
        if columns.size:
            origins.extend((top, left) for left in _starts(int(columns[0]), int(columns[-1]) + 1, tile, width))
    return origins


def _starts(first: int, stop: int, tile: int, size: int) -> list[int]:
    """Starts of tile-long runs covering [first, stop), each inside [0, size)."""
    return [min(start, size - tile) for start in range(first, stop, tile)]


def network_box(mask: np.ndarray) -> Optional[tuple[slice, slice]]:
    """The rows and columns to compute for ``mask`` (..., y, x; leading axes are merged): its bounding box widened by
    :data:`HALO` and clipped to the slice, or None when nothing is masked.

    The network's output at a pixel depends only on the input within HALO of it, and at the slice's edges the crop's
    edges are the slice's, so on this crop it equals the whole slice's output wherever ``mask`` holds.
    """
    plane = mask.reshape(-1, *mask.shape[-2:]).any(axis=0)
    rows, columns = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if rows.size == 0:
        return None
    return (slice(max(int(rows[0]) - HALO, 0), int(rows[-1]) + 1 + HALO),
            slice(max(int(columns[0]) - HALO, 0), int(columns[-1]) + 1 + HALO))


def forward_cropped(model: torch.nn.Module, x: torch.Tensor, mask: np.ndarray,
                    memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``model(x)`` for slices (n, 1, H, W) wherever ``mask`` (n, H, W) holds, computed on the whole batch cropped to
    :func:`network_box`; outside that box the result is ``x``'s."""
    out = x.clone()
    box = network_box(mask)
    if box is not None:
        out[(..., *box)] = model(x[(..., *box)].contiguous(memory_format=memory_format))
    return out


def forward_tiled(model: torch.nn.Module, x: torch.Tensor, tile: int = TILE,
                  mask: Optional[np.ndarray] = None) -> torch.Tensor:
    """``model(x)`` for slices (n, 1, H, W), computed on (tile + 2 HALO)² windows around tile² cores, and stitched.

    Every window lies inside its slice (shifted inwards at the borders), so windows of all slices batch together and
    each kept pixel sees exactly the neighbourhood it has in the whole slice. With ``mask`` (n, H, W), only cores
    holding a masked pixel are computed; the other pixels of the result are ``x``'s.
    """
    n_slices, _, height, width = x.shape
    size = tile + 2 * HALO
    if height < size or width < size:
        return model(x)
    if mask is None:
        mask = np.ones((n_slices, height, width), dtype=bool)
    boxes = [(index, top, left, min(max(top - HALO, 0), height - size), min(max(left - HALO, 0), width - size))
             for index in range(n_slices) for top, left in tile_origins(mask[index], tile)]
    out = x.clone()
    for first in range(0, len(boxes), TILES_PER_CALL):
        group = boxes[first:first + TILES_PER_CALL]
        windows = torch.stack([x[index, :, y0:y0 + size, x0:x0 + size] for index, _, _, y0, x0 in group])
        for (index, top, left, y0, x0), result in zip(group, model(windows)):
            out[index, :, top:top + tile, left:left + tile] = result[:, top - y0:top - y0 + tile,
                                                                     left - x0:left - x0 + tile]
    return out


def denoise_volume(model: torch.nn.Module, hu: np.ndarray, *, device: str | torch.device = "auto",
                   batch_size: int = 4, body_only: bool = True, progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelCheck] = None) -> np.ndarray:
    """Denoise every slice of ``hu`` (float HU, (z, y, x) or one (y, x) slice); the input is never modified.

    With ``body_only`` (the default), only the body and a margin around it (:func:`body.network_mask`) are
    denoised; elsewhere, in air far from the patient, the output is the input, and the network runs on less of it
    (PyTorch on the CPU skips the tiles without body; OpenVINO crops each slice, CUDA each batch, to
    :func:`network_box`). Pixels below -1024 HU (outside the scan's field of view) keep their input value too: the
    network cannot represent them and they carry no anatomy.
    """
    volume = np.asarray(hu)
    if volume.ndim == 2:
        return denoise_volume(model, volume[None], device=device, batch_size=batch_size, body_only=body_only,
                              progress=progress, cancel=cancel)[0]
    if volume.ndim != 3:
        raise LDCTDenoiseError(f"Expected a (z, y, x) volume or a (y, x) slice, got shape {volume.shape}.")
    if batch_size < 1:
        raise LDCTDenoiseError(f"Batch size must be at least 1, got {batch_size}.")
    target = device if isinstance(device, torch.device) else select_device(device)
    on_gpu = target.type == "cuda"
    model = model.to(target, memory_format=torch.channels_last if on_gpu else torch.contiguous_format).eval()
    compiled = openvino_model(model) if not on_gpu and _use_openvino(model, volume.size) else None
    output = np.empty(volume.shape, dtype=np.float32)
    n_slices = volume.shape[0]
    report(progress, 0, n_slices)
    with torch.inference_mode():
        for start in range(0, n_slices, batch_size):
            check_cancel(cancel)
            batch = np.asarray(volume[start:start + batch_size], dtype=np.float32)
            inputs = torch.from_numpy(hu_to_model(batch))[:, None].to(target)
            denoised_region = network_mask(batch) if body_only else np.ones(batch.shape, dtype=bool)
            if on_gpu:
                predicted = forward_cropped(model, inputs, denoised_region, torch.channels_last)
            elif compiled is not None:  # one slice per call: faster than batches there, and a third of the memory
                predicted = inputs.clone()
                for index, box in enumerate(map(network_box, denoised_region)):
                    if box is not None:
                        predicted[(index, slice(None), *box)] = torch.from_numpy(
                            compiled(inputs[(index, None, slice(None), *box)].numpy())[0][0])
            else:
                keep_large_buffers()
                predicted = forward_tiled(model, inputs, mask=denoised_region)
            denoised = model_to_hu(predicted[:, 0]).cpu().numpy()
            kept = ~denoised_region | (batch < HU_MIN)
            denoised[kept] = batch[kept]
            output[start:start + len(batch)] = denoised
            report(progress, min(start + batch_size, n_slices), n_slices)
    return output
