"""The product's own adaptation runs, as the evaluation scores them: each of the engine's ``ADAPTATION_METHODS`` with
the settings the front ends use (no Mayo pairs at run time: noise matching and the alignment learn from the phantom
pairs the product simulates; 15 % of the target slices held out and the gain gate applied), and the *control*: the
default method's extra training without any target signal.

A run is a report job of kind ``product`` (``report_jobs.run_job`` trains it, ``report_jobs.job_path`` names it),
so ``python -m training.report`` and ``python -m training.validate_gain`` share one cache. :func:`compare` puts the
product's label-free gain estimate beside the true gain measured against the reference.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from LDCTDenoiseLib.adaptation import AdaptationConfig, adapt, method_settings
from LDCTDenoiseLib.adaptation.gain import estimate_gain, scored_mask
from LDCTDenoiseLib.adaptation.settings import DEFAULT_METHOD, HOLDOUT_SHARE
from LDCTDenoiseLib.adaptation.target_noise import TargetNoise
from LDCTDenoiseLib.atomic import atomic_file
from LDCTDenoiseLib.inference import denoise_volume
from LDCTDenoiseLib.metrics import per_slice_metrics

from .run_files import slug

CONTROL = "control"
REAL_DOMAINS = ("d45", "b30")
REFERENCE_NOISE_SHARE = 0.25  # Mayo's full dose holds a quarter of the quarter dose's noise variance
NO_HARM_DB = 0.1  # the bar on a small shift: the product's result >= the control's - 0.1 dB
LARGE_SHIFT_DB = 2.5  # the bar on the 5 % dose shift: the product's result over source-only
CLEAR_GAIN_DB = 0.2  # a gain or loss smaller than this may go either way


def run_settings(method: str, alpha: float | None = None) -> dict:
    """The product's settings of ``method`` with the gain gate's held-out slices (recorruption at ``alpha`` when
    given); ``CONTROL`` is the default method without the target's noise (the phantom pairs and the anchor alone: the
    same extra training, no target signal) and without a gate."""
    if method == CONTROL:
        return dict(method_settings(DEFAULT_METHOD), match_target_noise=False, holdout_share=0.0)
    settings = dict(method_settings(method), holdout_share=HOLDOUT_SHARE)
    if method == "recorruption" and alpha is not None:
        settings["recorruption_alpha"] = alpha
    return settings


def product_job(direction: dict, start: str, start_shipped: bool, method: str, seed: int, steps: int,
                alpha: float | None = None) -> dict:
    """The job of one product run from ``start`` (a shipped model's name, or a report model's path relative to the
    report's run folder) on the direction's unlabeled target series."""
    return {"kind": "product", "direction": direction["name"], "method": method, "seed": seed, "steps": steps,
            "start": start, "start_shipped": start_shipped, "target": direction["target"],
            "settings": run_settings(method, alpha)}


def run_name(job: dict) -> str:
    """``<direction>__<method>__<steps>steps__seed<seed>__<hash of the start, targets and settings>``: a changed
    method setting can never reuse a stale model."""
    start = job["start"] if job["start_shipped"] else Path(job["start"]).stem
    digest = hashlib.sha256(json.dumps([start, job["target"], job["settings"]], sort_keys=True).encode())
    return f"{slug(job['direction'])}__{job['method']}__{job['steps']}steps__seed{job['seed']}__" \
           f"{digest.hexdigest()[:8]}"


def train(job: dict, start: torch.nn.Module, targets: list, device: str) -> tuple[torch.nn.Module, dict]:
    """Adapt ``start`` as the product does (``targets``: the report's ``Series`` of the direction's target)."""
    config = AdaptationConfig(name=run_name(job), base_model=job["start"], steps=job["steps"], seed=job["seed"],
                              device=device, **job["settings"])
    result = adapt(start, [item.low_dose for item in targets], config,
                   target_pixel_mm=[item.pixel_mm for item in targets])
    return result.model, {"card": result.card}


def kept(card: dict) -> str:
    """What the gain gate kept: ``"adapted"`` or ``"start"`` (a run without held-out slices keeps the adapted)."""
    return card["validation"].get("estimated_gain", {}).get("kept", "adapted")


def _db(start: float, other: float) -> float:
    return float(10.0 * np.log10(max(start, 1e-9) / max(other, 1e-9)))


def window_psnr_gain(start_output: np.ndarray, other_output: np.ndarray, reference: np.ndarray) -> float:
    """The report's window PSNR of one model's output minus that of the other (mean over slices)."""
    psnr = [np.mean([row["psnr_display"] for row in per_slice_metrics(output, reference)])
            for output in (start_output, other_output)]
    return round(float(psnr[1] - psnr[0]), 3)


def compare(start: torch.nn.Module, other: torch.nn.Module, low: np.ndarray, reference: np.ndarray,
            pixel_mm: float, real: bool, device: torch.device, seed: int) -> dict:
    """Estimated and true gain of ``other`` over ``start`` on one scored series.

    SURE estimates the error against the (unknown) noise-free image. On the Mayo pairs the reference, the full dose,
    holds a quarter of the quarter dose's noise inside the quarter dose itself (Mayo inserted noise into the full
    dose's projections), so there the prediction of the error against that reference (residual - 3/4 tr Σ +
    3/2 tr ΣJ) is the number to hold against the truth."""
    noise = TargetNoise.of(low, pixel_mm)
    estimate = estimate_gain(start, other, [low], [noise], [pixel_mm], device, seed=seed)
    terms = estimate.details["terms_hu2"]
    masks = np.stack([scored_mask(image, pixel_mm) for image in low]) & (low >= -1024.0)
    outputs = [denoise_volume(model, low, device=device) for model in (start, other)]
    true_mse = [float(np.mean(((output - reference) ** 2)[masks])) for output in outputs]
    row = {"estimated_gain_db": round(estimate.gain_db, 3),
           "interval_db": [round(value, 3) for value in estimate.interval_db],
           "difference_interval_hu2": [round(value, 1) for value in estimate.difference_interval_hu2],
           "sure_prefers_other": estimate.keep_adapted,
           "noise_sd_hu": round(noise.estimate.sd_hu, 2),
           "sure_mse_hu2": [round(estimate.mse_start, 1), round(estimate.mse_adapted, 1)],
           "true_mse_hu2": [round(value, 1) for value in true_mse],
           "true_gain_db": round(_db(*true_mse), 3),
           "window_psnr_gain_db": window_psnr_gain(*outputs, reference)}
    if real:
        share = REFERENCE_NOISE_SHARE
        predicted = [residual - (1.0 - share) * terms["variance"] + 2.0 * (1.0 - share) * divergence
                     for residual, divergence in zip(terms["residual"], terms["divergence"])]
        row["predicted_mse_vs_reference_hu2"] = [round(value, 1) for value in predicted]
        row["predicted_gain_vs_reference_db"] = round(_db(*predicted), 3)
    else:
        row["predicted_gain_vs_reference_db"] = row["estimated_gain_db"]
    return row


def scored(model_path: Path, job: dict, start: torch.nn.Module, adapted: torch.nn.Module, low: np.ndarray,
           reference: np.ndarray, pixel_mm: float, real: bool, device: torch.device) -> dict:
    """The run's row on the scored series (:func:`compare`; the control, which has no gate, gets the window PSNR
    gain only), cached beside the model as ``.scored.json``: the scoring is seeded, so the cache is exact."""
    path = model_path.with_name(model_path.stem + ".scored.json")
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if job["method"] == CONTROL:
        row = {"window_psnr_gain_db": window_psnr_gain(*(denoise_volume(network, low, device=device)
                                                         for network in (start, adapted)), reference)}
    else:
        row = compare(start, adapted, low, reference, pixel_mm, real, device, job["seed"])
    with atomic_file(path) as temporary:
        Path(temporary).write_text(json.dumps(row), encoding="utf-8")
    return row


def delivered(row: dict) -> float:
    """What the product hands the user, in window PSNR over the start: the adapted model's gain when the gate kept
    it, else 0 (the starting model); the control has no gate."""
    return row["window_psnr_gain_db"] if row["kept"] == "adapted" else 0.0


def gate_verdict(row: dict) -> str:
    """Whether the gain gate decided right, judged by the window PSNR the adapted model really gained."""
    gain = row["window_psnr_gain_db"]
    if abs(gain) < CLEAR_GAIN_DB:
        return "either"
    return "right" if (row["kept"] == "adapted") == (gain > 0) else "**wrong**"


def verdict(direction: str, product_db: float, control_db: float | None) -> str:
    """The bars: +2.5 dB over source-only on the 5 % dose shift, no harm (>= control - 0.1 dB) elsewhere."""
    if "5 % dose" in direction:
        return f"{'meets' if product_db >= LARGE_SHIFT_DB else 'misses'} the bar (≥ +{LARGE_SHIFT_DB} dB)"
    if control_db is None:
        return "no control run"
    return f"{'no harm' if product_db >= control_db - NO_HARM_DB else 'harm'} (bar: ≥ control − {NO_HARM_DB} dB)"
