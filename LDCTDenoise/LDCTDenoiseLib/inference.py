"""Batched per-slice inference: HU volume (z, y, x) in, denoised HU volume out.

Memory is bounded by the batch, not the volume: slices go to the device a batch at a time and come back into a
preallocated output. CUDA runs under fp16 autocast (the network's activations are bounded and fp16 keeps
~0.5 HU resolution on the normalised range, unlike bf16's ~4 HU); the CPU path is fp32 and deterministic.
"""

from typing import Optional

import numpy as np
import torch

from .errors import LDCTDenoiseError
from .normalization import HU_MIN, hu_to_model, model_to_hu
from .progress import CancelCheck, ProgressCallback, check_cancel, report


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


def denoise_volume(model: torch.nn.Module, hu: np.ndarray, *, device: str | torch.device = "auto",
                   batch_size: int = 4, progress: Optional[ProgressCallback] = None,
                   cancel: Optional[CancelCheck] = None, mixed_precision: bool = True) -> np.ndarray:
    """Denoise every slice of ``hu`` (float HU, (z, y, x) or one (y, x) slice); the input is never modified.

    Pixels below -1024 HU (outside the scan's field of view) keep their input value: the network cannot represent
    them and they carry no anatomy.
    """
    volume = np.asarray(hu)
    if volume.ndim == 2:
        return denoise_volume(model, volume[None], device=device, batch_size=batch_size, progress=progress,
                              cancel=cancel, mixed_precision=mixed_precision)[0]
    if volume.ndim != 3:
        raise LDCTDenoiseError(f"Expected a (z, y, x) volume or a (y, x) slice, got shape {volume.shape}.")
    if batch_size < 1:
        raise LDCTDenoiseError(f"Batch size must be at least 1, got {batch_size}.")
    target = device if isinstance(device, torch.device) else select_device(device)
    model = model.to(target).eval()
    use_amp = mixed_precision and target.type == "cuda"
    output = np.empty(volume.shape, dtype=np.float32)
    n_slices = volume.shape[0]
    report(progress, 0, n_slices)
    with torch.inference_mode():
        for start in range(0, n_slices, batch_size):
            check_cancel(cancel)
            batch = np.asarray(volume[start:start + batch_size], dtype=np.float32)
            inputs = torch.from_numpy(hu_to_model(batch))[:, None].to(target)
            with torch.autocast(device_type=target.type, dtype=torch.float16, enabled=use_amp):
                predicted = model(inputs)
            denoised = model_to_hu(predicted.float()[:, 0]).cpu().numpy()
            outside_fov = batch < HU_MIN
            denoised[outside_fov] = batch[outside_fov]
            output[start:start + len(batch)] = denoised
            report(progress, min(start + batch_size, n_slices), n_slices)
    return output
