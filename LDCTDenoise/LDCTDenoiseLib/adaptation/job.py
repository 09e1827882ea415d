"""Adaptation as a separate process, so that the Slicer panel stays responsive and can stop it at any time.

    PythonSlicer -m LDCTDenoiseLib.adaptation.job JOB_DIR

:func:`prepare_job` fills JOB_DIR with ``request.json`` (profile name, base model, :class:`AdaptationConfig` fields)
and one ``target-N.npy`` per loaded target volume (float32 HU, (z, y, x)). The job prints one JSON event per line on
stdout (read them back with :class:`EventReader`):

- ``{"event": "source", "done": d, "total": t}`` while the source pairs are simulated (first run only; then cached);
- ``{"event": "step", "step": s, "steps": n, "losses": {...}}`` after every adaptation step, ``losses`` holding only
  the terms the chosen method uses (``adapt.used_loss_terms``), so ``{"step": s, **losses}`` rows plot as they are
  with :func:`figure.loss_curve_figure`;
- ``{"event": "done", "kept": "adapted", "name": ..., "card": ..., "curve": ..., "wall_time_s": ..., "noise": ...,
  "gain": ...}``, exit status 0 (``noise``: the measured noise in words, empty without noise matching; ``gain``: the
  label-free estimate of the gain on held-out slices in words, or why there is none; empty when none were held out);
- ``{"event": "done", "kept": "start", "wall_time_s": ..., "gain": ...}``, exit status 0: the held-out slices showed
  no clear gain over the starting model, so no profile was saved (``settings["save_anyway"]`` saves it anyway);
- ``{"event": "error", "message": ...}``, exit status 2 (bad input or settings) or 1 (anything else);
- ``{"event": "cancelled"}``, exit status 130.

Cancel by creating JOB_DIR/cancel (:func:`request_cancel`): a file works alike on every OS, unlike signals. The job
checks it before every step and every simulated slice, and then writes no profile.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import CancelledError, LDCTDenoiseError

REQUEST_FILE = "request.json"
CANCEL_FILE = "cancel"
EXIT_OK, EXIT_FAILED, EXIT_INPUT_ERROR, EXIT_CANCELLED = 0, 1, 2, 130


def prepare_job(job_dir: Path, target_volumes: Sequence[np.ndarray], name: str, base_model: str,
                settings: Optional[dict] = None, pixel_mm: Optional[Sequence[float]] = None) -> Path:
    """Write what the job needs into the empty folder ``job_dir``; checks the name and settings first.

    ``settings`` are AdaptationConfig fields, plus optionally ``method`` (one of ADAPTATION_METHODS, whose settings
    the others override) and ``save_anyway``; ``pixel_mm`` each volume's in-plane pixel size.
    """
    from ..model_registry import ModelRegistry
    from .adapt import checked_target_volumes
    from .profile import check_profile_name

    registry = ModelRegistry()
    check_profile_name(name, registry)
    registry.entry(base_model)  # an unknown base model fails here, not in the background
    config = _config(name, base_model, settings or {})
    volumes = checked_target_volumes(target_volumes, config.patch_size, noise_regions=config.match_target_noise)
    if pixel_mm is not None and len(pixel_mm) != len(volumes):
        raise LDCTDenoiseError(f"Got {len(pixel_mm)} pixel sizes for {len(volumes)} target volumes.")
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for index, volume in enumerate(volumes):
        files.append(f"target-{index}.npy")
        np.save(job_dir / files[-1], volume)
    request = {"name": name, "base_model": base_model, "settings": dict(settings or {}), "targets": files,
               "pixel_mm": [float(size) for size in pixel_mm] if pixel_mm is not None else None}
    (job_dir / REQUEST_FILE).write_text(json.dumps(request, indent=2), encoding="utf-8")
    return job_dir


def _config(name: str, base_model: str, settings: dict):
    from .settings import AdaptationConfig, method_settings

    settings = {key: value for key, value in settings.items() if key != "save_anyway"}
    if "method" in settings:
        settings = dict(method_settings(settings.pop("method")), **settings)
    try:
        return AdaptationConfig(name=name, base_model=base_model, **settings)
    except TypeError as error:
        raise LDCTDenoiseError(f"Unknown adaptation setting: {error}.") from None


def request_cancel(job_dir: Path) -> None:
    """Ask the running job to stop before its next step."""
    (Path(job_dir) / CANCEL_FILE).touch()


class EventReader:
    """Turns the job's stdout, read in arbitrary chunks, into its events; other lines are kept as ``log``."""

    def __init__(self) -> None:
        self._partial = ""
        self.log: list[str] = []

    def feed(self, text: str) -> list[dict]:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            if isinstance(event, dict) and "event" in event:
                events.append(event)
            elif line.strip():
                self.log.append(line)
        return events


def run_job(job_dir: Path, emit: Callable[[dict], None]) -> int:
    """Run the adaptation described in ``job_dir``, reporting through ``emit``; returns the exit status."""
    from ..model_registry import ModelRegistry
    from .adapt import adapt
    from .noise_matching import noise_summary
    from .profile import check_profile_name, save_adapted_profile
    from .source import phantom_source_bank

    job_dir = Path(job_dir)

    def cancelled() -> bool:
        return (job_dir / CANCEL_FILE).exists()

    try:
        request = json.loads((job_dir / REQUEST_FILE).read_text(encoding="utf-8"))
        registry = ModelRegistry()
        check_profile_name(request["name"], registry)  # another profile may have taken the name meanwhile
        config = _config(request["name"], request["base_model"], request["settings"])
        model, _ = registry.load(request["base_model"])
        targets = [np.load(job_dir / file) for file in request["targets"]]
        source = None
        if config.uses_source:
            source = phantom_source_bank(config.source_slices, config.source_size, config.source_pixel_mm,
                                         config.source_seed, cancel=cancelled,
                                         progress=lambda done, total: emit({"event": "source", "done": done,
                                                                            "total": total}))
        result = adapt(model, targets, config, source=source, cancel=cancelled,
                       target_pixel_mm=request.get("pixel_mm"),
                       on_step=lambda row: emit({"event": "step", "step": row["step"], "steps": config.steps,
                                                 "losses": {k: v for k, v in row.items() if k != "step"}}))
        if cancelled():
            raise CancelledError("Cancelled by the user.")
        gain = result.gain_sentence(request["base_model"])
        if not result.keep_adapted and not request["settings"].get("save_anyway"):
            emit({"event": "done", "kept": "start", "wall_time_s": result.card["training"]["wall_time_s"],
                  "gain": gain})
            return EXIT_OK
        card_path, curve = save_adapted_profile(result, request["base_model"])
    except CancelledError:
        emit({"event": "cancelled"})
        return EXIT_CANCELLED
    except LDCTDenoiseError as error:
        emit({"event": "error", "message": str(error)})
        return EXIT_INPUT_ERROR
    except Exception as error:  # the panel must hear of every failure, not only the expected ones
        traceback.print_exc()
        emit({"event": "error", "message": f"{type(error).__name__}: {error}"})
        return EXIT_FAILED
    emit({"event": "done", "kept": "adapted", "name": request["name"], "card": str(card_path), "curve": str(curve),
          "wall_time_s": result.card["training"]["wall_time_s"],
          "noise": noise_summary(result.card["training"]["target_noise_matching"]), "gain": gain})
    return EXIT_OK


def _print_event(event: dict) -> None:
    print(json.dumps(event), flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m LDCTDenoiseLib.adaptation.job JOB_DIR", file=sys.stderr)
        return EXIT_INPUT_ERROR
    return run_job(Path(args[0]), _print_event)


if __name__ == "__main__":
    sys.exit(main())
