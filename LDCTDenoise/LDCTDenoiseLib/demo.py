"""The demo: a realistic low-dose CT series made from the digital phantom, denoised and compared, with no data at all.

It runs the product's real path end to end, so a new user sees what their own series will go through: the phantom
is scanned by the projection-domain simulator, written as a DICOM series, read back like any user's series,
denoised with a shipped model, written as a derived series, and compared with the noise-free reconstruction of the
same simulated scan (the fair reference: same kernel, no added noise).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pydicom.uid import generate_uid

from . import __version__
from .atomic import StagingFolder
from .comparison import comparison_metrics, write_comparison
from .dicom_reader import read_series
from .dicom_writer import write_derived_series
from .errors import LDCTDenoiseError
from .methods import INPUT, ModelDenoiser, make_method
from .model_registry import DEFAULT_MODEL, ModelRegistry
from .phantom import make_abdomen_phantom, phantom_rois
from .progress import CancelCheck, ProgressCallback, check_cancel
from .simulator import ScanProtocol, d45_like_protocol, simulate_low_dose_volume
from .synthetic_series import synthetic_ct_volume

PHANTOM_SIZE = 512
PHANTOM_PIXEL_MM = 0.7
DEMO_BASELINES = ("gaussian", "nlm")
SERIES_FOLDERS = {"reference": "reference", "low_dose": "low-dose", "denoised": "denoised"}


@dataclass
class DemoResult:
    """What the demo wrote (paths inside ``out_dir``) and what it measured."""

    out_dir: Path
    series: dict[str, Path]
    files: dict[str, Path]
    metrics: dict[str, dict[str, float]]
    seconds: dict[str, float]
    protocol: ScanProtocol


def run_demo(out_dir: str | Path, *, model: str = DEFAULT_MODEL, n_slices: int = 4, dose_fraction: float = 0.25,
             seed: int = 0, device: str = "auto", batch_size: int = 4,
             baselines: Sequence[str] = DEMO_BASELINES, registry: Optional[ModelRegistry] = None,
             progress_for: Optional[Callable[[str], ProgressCallback]] = None,
             cancel: Optional[CancelCheck] = None) -> DemoResult:
    """Simulate, denoise and compare a phantom series into the new folder ``out_dir``.

    Everything is made in a hidden sibling folder that is renamed to ``out_dir`` at the end, so a failure or a cancel
    leaves nothing behind. ``progress_for(stage)`` gives the progress hook of each stage.
    """
    registry = registry or ModelRegistry()
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise LDCTDenoiseError(f"{out_dir}: exists and is not an empty folder; choose a new one, nothing is "
                               "overwritten")
    if not 1 <= n_slices <= 200:
        raise LDCTDenoiseError(f"The demo makes 1 to 200 slices, got {n_slices}.")
    method = ModelDenoiser(model, registry, device, batch_size)  # an unknown model fails here, before any work
    baseline_methods = {name: make_method(name, registry=registry) for name in baselines}
    # Noise calibrated to the default model's domain (Mayo D45f quarter dose), so the demo shows the model on the kind
    # of noise it knows; a smooth kernel or another dose would show a domain shift instead.
    protocol = d45_like_protocol(dose_fraction)

    def hook(stage: str) -> Optional[ProgressCallback]:
        return progress_for(stage) if progress_for else None

    seconds: dict[str, float] = {}
    with StagingFolder(out_dir) as staged:  # removed on any error, a cancel or Ctrl-C
        staging = staged.path
        tic = time.perf_counter()
        phantom, spacing = make_abdomen_phantom(n_slices, PHANTOM_SIZE, PHANTOM_PIXEL_MM, seed)
        low_dose, reference = simulate_low_dose_volume(phantom, PHANTOM_PIXEL_MM, protocol, seed, hook("simulate"),
                                                       cancel)
        seconds["simulate"] = time.perf_counter() - tic
        study_uid, frame_uid = generate_uid(), generate_uid()
        dose_text = f"{100 * dose_fraction:g} %"
        made = {
            "reference": (reference, "Phantom full dose (noise-free recon)",
                          f"Digital abdomen phantom reconstructed by the LDCTDenoise {__version__} simulator without "
                          f"added noise; {protocol.kernel} kernel, {protocol.n_views} views"),
            "low_dose": (low_dose, f"Phantom simulated {dose_text} dose",
                         f"Digital abdomen phantom scanned by the LDCTDenoise {__version__} fan-beam simulator at "
                         f"{dose_text} dose (Poisson + electronic noise in the projections, seed {seed}); "
                         f"{protocol.kernel} kernel, {protocol.n_views} views"),
        }
        for number, (key, (hu, description, derivation)) in enumerate(made.items(), start=1):
            check_cancel(cancel)
            volume = synthetic_ct_volume(hu, spacing, series_description=description, study_uid=study_uid,
                                         frame_of_reference_uid=frame_uid, kernel=protocol.kernel)
            write_derived_series(volume, hu, staging / SERIES_FOLDERS[key], derivation_description=derivation,
                                 series_description_suffix="", series_number=number,
                                 progress=hook(f"write {SERIES_FOLDERS[key]}"), cancel=cancel)

        # From here on the demo is what a user does with their own series: read it, denoise it, write it, compare.
        scan = read_series(staging / SERIES_FOLDERS["low_dose"], cancel=cancel)
        truth = read_series(staging / SERIES_FOLDERS["reference"], cancel=cancel).hu
        tic = time.perf_counter()
        denoised = method(scan.hu, progress=hook(f"denoise ({model})"), cancel=cancel)
        seconds[model] = time.perf_counter() - tic
        write_derived_series(scan, denoised, staging / SERIES_FOLDERS["denoised"],
                             derivation_description=method.derivation(),
                             series_description_suffix=f" [LDCTDenoise {model}]",
                             progress=hook("write denoised"), cancel=cancel)
        outputs = {INPUT: scan.hu, model: denoised}
        for name, baseline in baseline_methods.items():
            tic = time.perf_counter()
            outputs[name] = baseline(scan.hu, progress=hook(name), cancel=cancel)
            seconds[name] = time.perf_counter() - tic
        check_cancel(cancel)

        rois = phantom_rois(PHANTOM_SIZE, PHANTOM_PIXEL_MM)
        roi, background = rois["liver"], rois["fat"]
        shown = n_slices // 2
        metrics = comparison_metrics(outputs, truth, pixel_mm=PHANTOM_PIXEL_MM, slice_index=shown, roi=roi,
                                     background_roi=background)
        for name, row in metrics.items():
            row["seconds"] = seconds.get(name, 0.0)
        files = write_comparison(outputs, truth, metrics, staging, slice_index=shown, roi=roi,
                                 title=f"Digital phantom, simulated {dose_text} dose: slice {shown + 1} of {n_slices},"
                                       f" liver ROI")
        check_cancel(cancel)
        staged.commit()  # replaces only the empty folder checked above
    return DemoResult(out_dir=out_dir,
                      series={key: out_dir / folder for key, folder in SERIES_FOLDERS.items()},
                      files={key: out_dir / path.name for key, path in files.items()},
                      metrics=metrics, seconds=seconds, protocol=protocol)

