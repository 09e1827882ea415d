"""The side-by-side comparison figure (full slices + zoomed ROI) and the metrics tables that go with it.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through ``pyplot``, so no global
state leaks into the Slicer process or a test run. Every file is written to a temporary name in its folder and then
renamed, so a crash never leaves a half-written PNG, CSV or JSON behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .atomic import write_bytes_atomically
from .errors import LDCTDenoiseError
from .metrics import DISPLAY_WINDOW, DISPLAY_WINDOW_LABEL, Roi, roi_stats

DPI = 150
PANEL_INCHES = 2.6
TWO_LINE_TITLE_INCHES = 0.4
ONE_LINE_TITLE_INCHES = 0.25
CAPTION_INCHES = 0.3
ROI_COLOUR = "#ffb000"
# Legend names of the adaptation's loss terms, the keys of its step rows (adaptation.adapt.used_loss_terms), in the
# order they are drawn. "critic" is the discriminator's own loss, the other terms are the denoiser's.
LOSS_TERM_NAMES = {
    "loss": "total",
    "recorruption": "recorruption (MSE)",
    "reconstruction": "reconstruction (MSE)",
    "perceptual": "perceptual (VGG-19)",
    "adversarial": "adversarial",
    "anchor": "anchor",
    "discriminator": "critic",
    "kl": "mask KL",
}


def _metric_line(values: Mapping[str, float]) -> str:
    """'PSNR 34.1 dB · SSIM 0.912' from the display-window metrics that are present."""
    parts = []
    if "psnr_display" in values:
        psnr = float(values["psnr_display"])
        parts.append("PSNR ∞" if math.isinf(psnr) else f"PSNR {psnr:.1f} dB")
    if "ssim_display" in values:
        parts.append(f"SSIM {float(values['ssim_display']):.3f}")
    return " · ".join(parts)


def comparison_figure(
    images: Mapping[str, np.ndarray],
    out_png: Union[str, Path],
    roi: Optional[Roi] = None,
    reference: Optional[str] = None,
    metrics: Optional[Mapping[str, Mapping[str, float]]] = None,
    title: Optional[str] = None,
) -> Path:
    """Draw the slices of ``images`` (name -> 2-D HU slice, in column order) side by side at W/L 400/40.

    Row 1 shows every full slice with the ROI outlined; row 2 (when ``roi`` is given) the ROI enlarged, titled with
    its mean and SD in HU. ``metrics`` maps a name to the keys ``psnr_display`` and ``ssim_display`` (as
    :func:`metrics.per_slice_metrics` names them), shown under that slice's title; ``reference`` names the column
    they were measured against. Returns the path of the PNG.
    """
    if not images:
        raise ValueError("comparison_figure needs at least one image.")
    slices = {name: np.asarray(image, dtype=np.float32) for name, image in images.items()}
    for name, image in slices.items():
        if image.ndim != 2:
            raise ValueError(f"Image {name!r} must be a 2-D slice, got shape {image.shape}.")
        if roi is not None:
            roi.check_inside(image.shape)
    if reference is not None and reference not in slices:
        raise LDCTDenoiseError(f"Reference {reference!r} is not one of the images: {', '.join(slices)}.")

    columns = len(slices)
    # Row heights follow the images' aspect ratios so panels are not letterboxed; each row adds room for titles.
    first = next(iter(slices.values()))
    heights = [PANEL_INCHES * first.shape[0] / first.shape[1]]
    if roi is not None:
        heights.append(PANEL_INCHES * min(max(roi.height / roi.width, 0.4), 1.5))
    two_line_titles = metrics is not None or reference is not None
    figure_height = (sum(heights) + (TWO_LINE_TITLE_INCHES if two_line_titles else ONE_LINE_TITLE_INCHES)
                     + (ONE_LINE_TITLE_INCHES if roi is not None else 0.0)
                     + CAPTION_INCHES + (ONE_LINE_TITLE_INCHES if title else 0.0))
    figure = Figure(figsize=(PANEL_INCHES * columns, figure_height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(heights), columns, squeeze=False, gridspec_kw={"height_ratios": heights})
    low, high = DISPLAY_WINDOW
    for column, (name, image) in enumerate(slices.items()):
        full = axes[0][column]
        full.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="bilinear")
        if name == reference:
            line = "" if name.lower() == "reference" else "reference"
        else:
            line = _metric_line(metrics.get(name, {})) if metrics is not None else ""
        full.set_title(f"{name}\n{line}" if line else name, fontsize=9)
        if roi is not None:
            full.add_patch(
                Rectangle((roi.x - 0.5, roi.y - 0.5), roi.width, roi.height, fill=False, edgecolor=ROI_COLOUR,
                          linewidth=1.2)
            )
            zoom = axes[1][column]
            zoom.imshow(image[roi.slices()], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            stats = roi_stats(image, roi)
            zoom.set_title(f"ROI {stats['mean']:.0f} ± {stats['sd']:.1f} HU", fontsize=8.5)
            for spine in zoom.spines.values():
                spine.set_edgecolor(ROI_COLOUR)
                spine.set_linewidth(1.5)
        for axis in axes[:, column]:
            axis.set_xticks([])
            axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=11, fontweight="bold")
    caption = f"{DISPLAY_WINDOW_LABEL} HU ([{low:g}, {high:g}] HU)"
    if metrics is not None and reference is not None:
        caption += f"; PSNR/SSIM on [{low:g}, {high:g}] HU vs {reference}"
    if roi is not None:
        caption += f"; ROI {roi.width}×{roi.height} px at (x {roi.x}, y {roi.y}), mean ± SD"
    figure.supxlabel(caption, fontsize=8, color="#444444")

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.08)
    return write_bytes_atomically(Path(out_png), buffer.getvalue())


def _json_value(value: float) -> Optional[float]:
    """Strict JSON has no inf or NaN (PSNR of identical images is inf): write them as null."""
    number = float(value)
    return number if math.isfinite(number) else None


def write_metrics(metrics: Mapping[str, Mapping[str, float]], out_stem: Union[str, Path]) -> tuple[Path, Path]:
    """Write ``metrics`` (method -> name -> value) as ``<out_stem>.csv`` (one row per method) and ``.json``.

    CSV columns are ``method`` then every metric name in order of first appearance (empty where a method lacks one);
    inf and NaN stay readable by ``float()`` there and become null in the JSON.
    """
    stem = Path(out_stem)
    columns: list[str] = []
    for values in metrics.values():
        columns.extend(key for key in values if key not in columns)

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["method", *columns])
    for method, values in metrics.items():
        writer.writerow([method, *(repr(float(values[key])) if key in values else "" for key in columns)])
    csv_path = write_bytes_atomically(stem.with_name(stem.name + ".csv"), text.getvalue().encode("utf-8"))

    document = {
        method: {key: _json_value(value) for key, value in values.items()} for method, values in metrics.items()
    }
    json_text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    json_path = write_bytes_atomically(stem.with_name(stem.name + ".json"), json_text.encode("utf-8"))
    return csv_path, json_path


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the drawable (positive, finite) values in each full window; NaN where a window holds none."""
    drawable = np.isfinite(values) & (values > 0)
    kernel = np.ones(window)
    sums = np.convolve(np.where(drawable, values, 0.0), kernel, mode="valid")
    counts = np.convolve(drawable.astype(np.float64), kernel, mode="valid")
    return np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)


def loss_curve(history: Sequence[Mapping[str, float]], title: str = "") -> Figure:
    """The figure of :func:`loss_curve_figure`, returned unsaved so that a caller or a test can inspect it.

    Only the keys of :data:`LOSS_TERM_NAMES` are drawn: the other numbers of a row (the step, the mask's keep rate,
    a monitored PSNR) are no losses and would distort a loss axis. A term's value that is 0 (the anchor at step 1,
    before the model has moved) leaves a gap, since a log scale cannot show it, but the term keeps its line.
    """
    if not history:
        raise LDCTDenoiseError("There is no loss history to plot.")
    terms = [term for term in LOSS_TERM_NAMES if any(term in row for row in history)]
    if not terms:
        raise LDCTDenoiseError(f"The history has none of the loss terms {', '.join(LOSS_TERM_NAMES)} to plot.")
    figure = Figure(figsize=(7.0, 3.6), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.add_subplot(1, 1, 1)
    steps = np.array([float(row.get("step", index + 1)) for index, row in enumerate(history)])
    window = max(1, len(history) // 20)
    for term in terms:
        values = np.array([float(row.get(term, np.nan)) for row in history])
        colour = f"C{list(LOSS_TERM_NAMES).index(term)}"  # a term keeps its colour whichever others a run has
        axis.plot(steps, np.where(values > 0, values, np.nan), lw=0.5, alpha=0.35, color=colour)
        axis.plot(steps[window - 1:], _moving_average(values, window), lw=1.4, color=colour,
                  label=LOSS_TERM_NAMES[term])
    axis.set_yscale("log")
    axis.set_xlabel("adaptation step")
    axis.set_ylabel("loss (log scale)")
    axis.legend(fontsize=8, ncol=3)
    if title:
        axis.set_title(title, fontsize=10)
    return figure


def loss_curve_figure(history: Sequence[Mapping[str, float]], out_png: Union[str, Path], title: str = "") -> Path:
    """Each loss term of an adaptation run against its step, on a log scale, as a PNG; returns its path.

    ``history`` holds one row per step, as :func:`adaptation.adapt.adapt` records them and the adaptation job's
    "step" events report them (``{"step": s, **losses}``). A row carries only the terms the run's method uses
    (``adaptation.adapt.used_loss_terms``), so noise matching shows no adversarial or critic curve. A smoothed line
    (moving average over about 5 % of the run) sits on the raw values, which are noisy per batch.
    """
    figure = loss_curve(history, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    return write_bytes_atomically(Path(out_png), buffer.getvalue())
