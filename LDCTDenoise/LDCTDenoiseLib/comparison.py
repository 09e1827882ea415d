"""Run several methods on one series and measure them the same way: the numbers and figure of a comparison.

Shared by the command line (``ldct-denoise compare``, ``demo``) and the Slicer module's Compare panel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import LDCTDenoiseError
from .figure import comparison_figure, write_metrics
from .methods import INPUT, make_method
from .metrics import (DISPLAY_WINDOW_LABEL, Roi, cnr, noise_power_spectrum, nps_summary, per_slice_metrics,
                      roi_stats, summarize)
from .model_registry import ModelRegistry
from .progress import CancelCheck, ProgressCallback, check_cancel

REFERENCE = "reference"
# What a person reads for each number of :func:`comparison_metrics` (and the ``seconds`` of :func:`run_methods` that
# the command line adds), with its unit; CSV and JSON files keep the keys, which scripts rely on. W/L 400/40 is the
# display window [-160, 240] HU and the full range is [-1024, 3072] HU (metrics.py); "SD over slices" is the spread
# of the per-slice values behind the mean. The NPS frequencies are in cycles/mm because the pixel size is in mm.
METRIC_LABELS = {
    "psnr_display": f"PSNR, {DISPLAY_WINDOW_LABEL} (dB)",
    "psnr_display_sd": f"PSNR, {DISPLAY_WINDOW_LABEL}, SD over slices (dB)",
    "ssim_display": f"SSIM, {DISPLAY_WINDOW_LABEL}",
    "ssim_display_sd": f"SSIM, {DISPLAY_WINDOW_LABEL}, SD over slices",
    "psnr_full": "PSNR, full range (dB)",
    "psnr_full_sd": "PSNR, full range, SD over slices (dB)",
    "ssim_full": "SSIM, full range",
    "ssim_full_sd": "SSIM, full range, SD over slices",
    "rmse": "RMSE (HU)",
    "rmse_sd": "RMSE, SD over slices (HU)",
    "roi_mean_hu": "ROI mean (HU)",
    "roi_sd_hu": "Noise SD (HU)",
    "cnr": "CNR",
    "nps_peak_cycles_per_mm": "NPS peak (cycles/mm)",
    "nps_mean_cycles_per_mm": "NPS mean frequency (cycles/mm)",
    "seconds": "Run time (s)",
}


def run_methods(hu: np.ndarray, methods: Sequence[str], *, registry: Optional[ModelRegistry] = None,
                device: str = "auto", batch_size: int = 4,
                progress_for: Optional[Callable[[str], ProgressCallback]] = None,
                cancel: Optional[CancelCheck] = None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Outputs of each method on ``hu`` (``"input"`` is the volume itself) and the seconds each took."""
    outputs, seconds = {}, {}
    for name in methods:
        check_cancel(cancel)
        if name == INPUT:
            outputs[name], seconds[name] = hu, 0.0
            continue
        method = make_method(name, registry=registry, device=device, batch_size=batch_size)
        tic = time.perf_counter()
        outputs[name] = method(hu, progress=progress_for(name) if progress_for else None, cancel=cancel)
        seconds[name] = time.perf_counter() - tic
    return outputs, seconds


def comparison_metrics(outputs: Mapping[str, np.ndarray], reference: Optional[np.ndarray], *, pixel_mm: float,
                       slice_index: int, roi: Optional[Roi] = None,
                       background_roi: Optional[Roi] = None) -> dict[str, dict[str, float]]:
    """Per method: PSNR/SSIM/RMSE against the reference (mean and SD over slices), ROI mean and SD and CNR on the
    shown slice, and the noise power spectrum's peak and mean frequency.

    The NPS is that of ``output - reference`` inside the ROI (over all slices) when there is a reference, otherwise
    of the ROI itself after removing its mean, which is only meaningful for a homogeneous ROI.
    """
    results: dict[str, dict[str, float]] = {}
    for name, volume in outputs.items():
        row: dict[str, float] = {}
        if reference is not None:
            if volume.shape != reference.shape:
                raise LDCTDenoiseError(f"{name} has shape {volume.shape} but the reference has {reference.shape}.")
            slices = per_slice_metrics(volume, reference)
            for key in ("psnr_display", "ssim_display", "psnr_full", "ssim_full", "rmse"):
                row[key], row[f"{key}_sd"] = summarize([values[key] for values in slices])
        if roi is not None:
            stats = roi_stats(volume[slice_index], roi)
            row["roi_mean_hu"], row["roi_sd_hu"] = stats["mean"], stats["sd"]
            if background_roi is not None:
                row["cnr"] = cnr(volume[slice_index], roi, background_roi)
            noise = volume - reference if reference is not None else volume
            summary = nps_summary(*noise_power_spectrum(noise, pixel_mm, roi))
            row["nps_peak_cycles_per_mm"] = summary["peak_frequency"]
            row["nps_mean_cycles_per_mm"] = summary["mean_frequency"]
        results[name] = row
    return results


def metric_label(key: str) -> str:
    """The label of a metric key for a table header; a key without one (a number some caller added) is shown as
    itself with spaces, so it still appears rather than failing the whole table."""
    return METRIC_LABELS.get(key, key.replace("_", " "))


def write_comparison(outputs: Mapping[str, np.ndarray], reference: Optional[np.ndarray],
                     metrics: Mapping[str, Mapping[str, float]], out_dir: Path, *, slice_index: int,
                     roi: Optional[Roi] = None, title: Optional[str] = None) -> dict[str, Path]:
    """``comparison.png`` (the shown slice of each method, and the reference) plus ``metrics.csv``/``.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {name: volume[slice_index] for name, volume in outputs.items()}
    if reference is not None:
        images[REFERENCE] = reference[slice_index]
    png = comparison_figure(images, out_dir / "comparison.png", roi=roi,
                            reference=REFERENCE if reference is not None else None,
                            metrics=metrics if reference is not None else None, title=title)
    csv_path, json_path = write_metrics(metrics, out_dir / "metrics")
    return {"figure": png, "csv": csv_path, "json": json_path}


def parse_roi(text: str) -> Roi:
    """``"x,y,width,height"`` in pixels -> :class:`Roi`, with a clear error for anything else."""
    try:
        x, y, width, height = (int(part) for part in text.split(","))
    except ValueError:
        raise LDCTDenoiseError(f"ROI '{text}' must be four integers 'x,y,width,height' in pixels.") from None
    return Roi(x, y, width, height)
