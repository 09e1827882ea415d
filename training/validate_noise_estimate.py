"""Validate the reference-free noise model (``LDCTDenoiseLib.noise_estimate``) against the true noise.

Series and their truth:

- Mayo 2016 pairs (``mayo/paired/*/*/{quarter,full}``, both kernels, every patient). The soft-tissue mask is the
  engine's :func:`~LDCTDenoiseLib.noise_estimate.soft_tissue_mask` of the *full-dose* image (Gaussian-smoothed HU in
  [-100, 200] inside the filled body outline, eroded 3 mm). Mayo's quarter dose was made by inserting noise into the
  full-dose projections, so the quarter-dose noise is *not* independent of the full-dose noise: measured here,
  var(Q) - var(F) = (0.82-0.91) var(Q - F) and cov(Q - F, F) = -0.05 var(Q - F), where independent noise would give
  0.6 and -0.2 (the shared anatomy cancels from both). The quarter-dose noise variance is therefore taken as
  var_Q = (var(Q) - var(F)) / (1 - 1/4) = 4/3 cov(Q - F, Q + F) in the mask, with var_F = var_Q / 4 (the dose ratio);
  the issue's var_Q = 4/5 var(Q - F) assumed independent noise and is listed beside it (it reads 0.83 times lower in
  SD). The true NPS shape is that of Q - F in ROIs inside the mask (only its peak and mean frequency are compared).
- The engine's simulator (the report's S, LS and VL protocols) on slices of ``mayo/normal_dose/L096_FD_3mm_D45``:
  truth = simulated - the simulator's noise-free reconstruction, in the mask of that reconstruction; and the
  noise-free reconstruction itself, whose true noise is zero (what an estimator reads there is anatomy).

Each series is estimated alone (no reference) by the new model and by the adaptation's old estimate
(``adaptation.noise_matching``: the 2D NPS of the flattest soft-tissue ROIs), with the same radial binning.

The local noise level, on every Mayo series: the model's level map (``NoiseEstimate.level_map``, the image-domain
route recorruption scales its draws with) and a projection-domain draw (the engine's simulator inserting noise into
the series itself, its 2D fan beam without the scanner's bowtie filter or tube-current modulation) are each held
against the SD of Q - F in the same 32² soft-tissue blocks: correlation of the log levels, and the error of each
block after matching the series' median level (the SD itself is the main table's).

Writes ``docs/evaluation/noise-estimate.md`` and ``.json``. Run: ``python -m training.validate_noise_estimate``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from LDCTDenoiseLib import noise_estimate
from LDCTDenoiseLib.adaptation import noise_matching
from LDCTDenoiseLib.dicom_reader import read_series
from LDCTDenoiseLib.metrics import noise_power_spectrum, nps_summary
from LDCTDenoiseLib.phantom import make_abdomen_phantom
from LDCTDenoiseLib.simulator import ScanProtocol, simulate_low_dose_volume

from .report_domains import SIMULATED_PROTOCOLS
from .run_files import REPO_ROOT, data_root

TARGET = 0.15  # relative tolerance on SD, NPS peak and mean frequency
OLD_ROI_SIZE = 64  # the adaptation's noise-matching patches


def _truth_nps(noise: np.ndarray, masks: np.ndarray, pixel_mm: float) -> dict:
    """Peak and mean frequency of the NPS of pure noise images in every ROI inside the mask (no flatness ranking)."""
    size, step = noise_estimate.ROI_SIZE_PX, noise_estimate.ROI_SIZE_PX // 2
    rois = []
    for image, mask in zip(noise, masks):
        for y in range(0, image.shape[0] - size + 1, step):
            for x in range(0, image.shape[1] - size + 1, step):
                if mask[y:y + size, x:x + size].mean() >= noise_estimate.ROI_INSIDE_SHARE:
                    rois.append(image[y:y + size, x:x + size].astype(np.float64))
    rois = noise_estimate._detrend(np.stack(rois))
    freqs, nps = noise_power_spectrum(rois, pixel_mm, n_bins=noise_estimate.N_BINS)
    summary = nps_summary(freqs, nps)
    # A flat-topped NPS has no sharp peak: the band where it stays within 5 % of its maximum shows how far a peak
    # frequency can move without the spectrum changing much.
    in_band = freqs <= freqs.size * 2.0 * freqs[0] / np.sqrt(2.0)
    plateau = freqs[in_band][nps[in_band] >= 0.95 * nps[in_band].max()]
    return {"peak_frequency": summary["peak_frequency"], "mean_frequency": summary["mean_frequency"],
            "peak_plateau": [round(float(plateau.min()), 3), round(float(plateau.max()), 3)], "n_rois": len(rois)}


def _old_estimate(volume: np.ndarray, pixel_mm: float) -> dict:
    """The adaptation's estimate: SD and radial NPS of its flattest soft-tissue ROIs (plane-detrended)."""
    rois = noise_matching._flat_rois(volume.astype(np.float32), OLD_ROI_SIZE)
    sd = float(np.sqrt(noise_matching.estimate_nps_2d([volume], OLD_ROI_SIZE).mean()))
    freqs, nps = noise_power_spectrum(rois, pixel_mm, n_bins=noise_estimate.N_BINS)
    summary = nps_summary(freqs, nps)
    return {"sd_hu": sd, "peak_frequency": summary["peak_frequency"], "mean_frequency": summary["mean_frequency"]}


def _row(name: str, dose: str, true_sd: float, true_nps: dict | None, volume: np.ndarray, pixel_mm: float,
         extra: dict | None = None) -> dict:
    started = time.perf_counter()
    new = noise_estimate.estimate_noise(volume, pixel_mm)
    seconds = time.perf_counter() - started
    old = _old_estimate(volume, pixel_mm)
    row = {"series": name, "dose": dose, "slices": int(volume.shape[0]), "pixel_mm": round(pixel_mm, 4),
           "true_sd_hu": round(true_sd, 2), "new": new.summary(), "old": {k: round(v, 4) for k, v in old.items()},
           "new_seconds": round(seconds, 2)}
    if true_nps is not None:
        row["true_peak_frequency"] = round(true_nps["peak_frequency"], 4)
        row["true_mean_frequency"] = round(true_nps["mean_frequency"], 4)
        row["true_peak_plateau"] = true_nps["peak_plateau"]
    for method in ("new", "old"):
        estimate = row[method]
        ratios = {"sd": estimate["sd_hu"] / true_sd if true_sd > 0 else None}
        if true_nps is not None:
            ratios["peak"] = estimate["peak_frequency"] / true_nps["peak_frequency"]
            ratios["mean"] = estimate["mean_frequency"] / true_nps["mean_frequency"]
        estimate["ratios"] = {k: (None if v is None else round(v, 3)) for k, v in ratios.items()}
        estimate["within_target"] = all(v is not None and abs(v - 1.0) <= TARGET for v in ratios.values())
    row.update(extra or {})
    print(f"{name:40s} {dose:7s} true {true_sd:6.1f}  new {row['new']['sd_hu']:6.1f} {row['new']['ratios']}  "
          f"old {row['old']['sd_hu']:6.1f} {row['old']['ratios']}", flush=True)
    return row


def mayo_rows(data_root: Path) -> list[dict]:
    """Every Mayo pair folder: the quarter dose and the full dose, each estimated alone."""
    rows = []
    for folder in sorted((data_root / "mayo" / "paired").glob("*/*")):
        quarter, full = read_series(folder / "quarter"), read_series(folder / "full")
        pixel_mm = float(quarter.spacing[1])
        q, f = quarter.hu.astype(np.float64), full.hu.astype(np.float64)
        masks = np.stack([noise_estimate.soft_tissue_mask(image, pixel_mm) for image in full.hu])
        difference, total = (q - f)[masks], (q + f)[masks]
        covariance = float(np.mean((difference - difference.mean()) * (total - total.mean())))
        var_difference = float(difference.var())
        var_quarter = 4.0 / 3.0 * covariance
        true_nps = _truth_nps(q - f, masks, pixel_mm)
        relative = folder.relative_to(data_root).as_posix()
        extra = {"var_q_minus_var_f_over_var_difference": round(covariance / var_difference, 3),
                 "sd_if_independent_hu": round(float(np.sqrt(0.8 * var_difference)), 2),
                 "truth_rois": true_nps["n_rois"]}
        rows.append(_row(f"{relative}/quarter", "25 %", float(np.sqrt(var_quarter)), true_nps, quarter.hu, pixel_mm,
                         extra))
        extra_full = dict(extra, sd_if_independent_hu=round(float(np.sqrt(0.2 * var_difference)), 2))
        rows.append(_row(f"{relative}/full", "100 %", float(np.sqrt(var_quarter / 4.0)), true_nps, full.hu, pixel_mm,
                         extra_full))
    return rows


def simulated_rows(data_root: Path, n_slices: int, seed: int) -> list[dict]:
    """The report's simulated protocols on evenly spaced slices of L096's normal-dose series."""
    folder = "mayo/normal_dose/L096_FD_3mm_D45"
    series = read_series(data_root / folder)
    pixel_mm = float(series.spacing[1])
    index = np.linspace(0, series.hu.shape[0] - 1, n_slices + 2).round().astype(int)[1:-1]
    clean = series.hu[index]
    rows, reference = [], None
    for domain, protocol in SIMULATED_PROTOCOLS.items():
        low, reference = simulate_low_dose_volume(clean, pixel_mm, protocol, seed=seed)
        masks = np.stack([noise_estimate.soft_tissue_mask(image, pixel_mm) for image in reference])
        noise = (low - reference).astype(np.float64)
        true_sd = float(noise[masks].std())
        description = (f"{folder} slices {index.tolist()} simulated '{domain}' ({protocol.dose_fraction:.0%} dose, "
                       f"{protocol.kernel})")
        rows.append(_row(description, f"{protocol.dose_fraction:.0%}".replace("%", " %"), true_sd,
                         _truth_nps(noise, masks, pixel_mm), low, pixel_mm, {"truth_excludes_source_noise": True}))
    rows.append(_row(f"{folder} slices {index.tolist()}: simulator's noise-free reconstruction (ram-lak)", "no noise",
                     0.0, None, reference, pixel_mm))
    return rows


def phantom_rows(n_slices: int, seed: int) -> list[dict]:
    """The report's simulated protocols on the engine's digital abdomen phantom, which has no noise of its own: the
    truth is exact, and the noise-free reconstruction shows what an estimator reads from anatomy alone."""
    pixel_mm = 0.7
    clean, _ = make_abdomen_phantom(n_slices=n_slices, size=512, pixel_mm=pixel_mm, seed=seed)
    rows, reference = [], None
    for domain, protocol in SIMULATED_PROTOCOLS.items():
        low, reference = simulate_low_dose_volume(clean, pixel_mm, protocol, seed=seed)
        masks = np.stack([noise_estimate.soft_tissue_mask(image, pixel_mm) for image in reference])
        noise = (low - reference).astype(np.float64)
        rows.append(_row(f"phantom ({n_slices} slices) simulated '{domain}' ({protocol.dose_fraction:.0%} dose, "
                         f"{protocol.kernel})", f"{protocol.dose_fraction:.0%}".replace("%", " %"),
                         float(noise[masks].std()), _truth_nps(noise, masks, pixel_mm), low, pixel_mm))
    rows.append(_row(f"phantom ({n_slices} slices): simulator's noise-free reconstruction (ram-lak)", "no noise", 0.0,
                     None, reference, pixel_mm))
    return rows


def _block_sd(noise: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """SD of a pure-noise volume in the level map's blocks (NaN where a block holds too little soft tissue)."""
    block = noise_estimate.MAP_BLOCK_PX
    n_slices, rows, columns = noise.shape
    levels = np.full((n_slices, rows // block, columns // block), np.nan)
    for index in range(n_slices):
        for by in range(rows // block):
            for bx in range(columns // block):
                window = (slice(by * block, (by + 1) * block), slice(bx * block, (bx + 1) * block))
                values = noise[index][window][masks[index][window]]
                if values.size >= noise_estimate.MIN_BLOCK_PIXELS:
                    levels[index, by, bx] = values.std()
    return levels


def _pattern_match(truth: np.ndarray, estimate: np.ndarray, valid: np.ndarray) -> dict:
    """How well ``estimate`` follows the true block levels: correlation of the logs, and each block's relative
    error once both have the same median level."""
    log_truth, log_estimate = np.log(truth[valid]), np.log(estimate[valid])
    error = np.exp(log_estimate - log_truth)
    error = np.abs(error / np.median(error) - 1.0)
    return {"correlation": round(float(np.corrcoef(log_truth, log_estimate)[0, 1]), 3),
            "median_error": round(float(np.median(error)), 3), "p90_error": round(float(np.percentile(error, 90)), 3)}


def level_map_rows(data_root: Path, seed: int) -> list[dict]:
    """The local noise level of every Mayo series: the model's level map and a projection-domain draw against the
    true block SD of Q - F."""
    rows = []
    for folder in sorted((data_root / "mayo" / "paired").glob("*/*")):
        quarter, full = read_series(folder / "quarter"), read_series(folder / "full")
        pixel_mm = float(quarter.spacing[1])
        masks = np.stack([noise_estimate.soft_tissue_mask(image, pixel_mm) for image in full.hu])
        truth = _block_sd(quarter.hu.astype(np.float64) - full.hu.astype(np.float64), masks)
        kernel = "hann" if "B30" in folder.parent.name else "ram-lak"
        protocol = ScanProtocol(dose_fraction=0.5, kernel=kernel, full_dose_photons=1.0e6, mode="insert")
        for dose, series in (("quarter", quarter), ("full", full)):
            volume = series.hu.astype(np.float32)
            image_map = noise_estimate.estimate_noise(volume, pixel_mm, masks=masks).level_map
            low, _ = simulate_low_dose_volume(volume, pixel_mm, protocol, seed=seed)
            draw = _block_sd((low - volume).astype(np.float64), masks)
            valid = np.isfinite(truth) & np.isfinite(image_map) & np.isfinite(draw)
            spread = np.percentile(truth[valid], 90) / np.percentile(truth[valid], 10)
            rows.append({"series": f"{folder.relative_to(data_root).as_posix()}/{dose}", "blocks": int(valid.sum()),
                         "true_spread_p90_p10": round(float(spread), 2),
                         "level_map": _pattern_match(truth, image_map, valid),
                         "projection_draw": _pattern_match(truth, draw, valid)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _cell(estimate: dict, key: str, ratio_key: str) -> str:
    ratio = estimate["ratios"].get(ratio_key)
    return f"{estimate[key]:.3g}" if ratio is None else f"{estimate[key]:.3g} ({ratio:.2f})"


def write_markdown(rows: list[dict], level_rows: list[dict], path: Path, seconds: float, command: str) -> None:
    lines = [
        "# Reference-free noise estimate: validation against the true noise",
        "",
        f"Made by `{command}` in {seconds:.0f} s on 2 CPU cores (`LDCTDenoiseLib/noise_estimate.py`; the estimate "
        "alone takes about 0.3 s for a 4-10 slice series). Paths are relative to the data root (`../shared/data`).",
        "",
        "Truth: Mayo pairs: quarter-dose noise variance = 4/3 (var(Q) - var(F)) in the soft-tissue mask of the full "
        "dose (Mayo's quarter dose adds noise to the full dose's projections, measured: var(Q) - var(F) = "
        "0.82-0.91 var(Q - F), so the issue's 4/5 var(Q - F), which assumes independent noise, is too low; both are "
        "in the JSON), full dose = a quarter of it; NPS peak and mean frequency (cycles/mm, `metrics.nps_summary`) "
        "of Q - F in every 64² ROI inside the mask. Simulated: truth = simulated - noise-free reconstruction. "
        "Estimates: each series alone; new = `noise_estimate.estimate_noise`, old = the adaptation's "
        "`noise_matching` flat-ROI NPS. Cells: estimate (estimate / truth). Target: every ratio within "
        f"1 ± {TARGET:.2f}.",
        "",
        "| series | dose | true SD HU | new SD | old SD | true peak | new peak | old peak | true mean f | new mean f "
        "| old mean f | new peak in true plateau | new reliable | new within ±15 % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        new, old = row["new"], row["old"]
        peak = "-"
        if "true_peak_frequency" in row:
            low, high = row["true_peak_plateau"]
            peak = f"{row['true_peak_frequency']:.3f} [{low:.2f}-{high:.2f}]"
        mean = f"{row['true_mean_frequency']:.3f}" if "true_mean_frequency" in row else "-"
        verdict = "yes" if new["within_target"] else "**no**"
        if row["true_sd_hu"] == 0:
            verdict = "(no noise)"
        elif row.get("truth_excludes_source_noise"):
            verdict += " (†)"
        in_plateau = "-"
        if "true_peak_plateau" in row:
            low, high = row["true_peak_plateau"]
            in_plateau = "yes" if low - 1e-3 <= new["peak_frequency"] <= high + 1e-3 else "no"
        lines.append(f"| {row['series']} | {row['dose']} | {row['true_sd_hu']:.1f} | {_cell(new, 'sd_hu', 'sd')} | "
                     f"{_cell(old, 'sd_hu', 'sd')} | {peak} | {_cell(new, 'peak_frequency', 'peak')} | "
                     f"{_cell(old, 'peak_frequency', 'peak')} | {mean} | {_cell(new, 'mean_frequency', 'mean')} | "
                     f"{_cell(old, 'mean_frequency', 'mean')} | {in_plateau} | "
                     f"{'yes' if new['reliable'] else '**no**'} | {verdict} |")
    lines += [
        "",
        "True peak: the peak frequency of the true NPS and, in brackets, the band where the true NPS stays within 5 % "
        "of its maximum (a flat-topped NPS has no sharp peak). Reliable: `NoiseEstimate.reliable`, False when the "
        "anatomy outweighed the noise at every frequency of the anatomy band.",
        "",
        "(†) L096 normal-dose rows: the truth is the noise the simulator added; the image also carries the "
        "normal-dose scan's own noise, blurred by the simulator's re-projection (the estimate reads about 21 HU on "
        "the 'noise-free reconstruction' row), so these rows check the simulator-added part only approximately; "
        "the phantom rows, which have no noise of their own, are the exact check.",
        "",
        "## The local noise level: the model's level map and a projection-domain draw",
        "",
        f"Per {noise_estimate.MAP_BLOCK_PX}² block of soft tissue: the true level is the SD of Q - F there; the "
        "model's level map is estimated from the series alone; the projection-domain draw is the engine's simulator "
        "inserting noise into the series itself (2D fan beam, no bowtie filter, no tube-current modulation). "
        "Correlation of the log levels over the blocks, and each block's relative error once both have the series' "
        "median level (median and 90th percentile). True spread: the 90th over the 10th percentile of the true "
        "levels.",
        "",
        "| series | blocks | true spread | level map: correlation | level map: error median / p90 | projection "
        "draw: correlation | projection draw: error median / p90 |",
        "|---|---|---|---|---|---|---|",
        *(f"| {row['series']} | {row['blocks']} | {row['true_spread_p90_p10']:.2f} | "
          f"{row['level_map']['correlation']:.2f} | {row['level_map']['median_error']:.2f} / "
          f"{row['level_map']['p90_error']:.2f} | {row['projection_draw']['correlation']:.2f} | "
          f"{row['projection_draw']['median_error']:.2f} / {row['projection_draw']['p90_error']:.2f} |"
          for row in level_rows),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=data_root(),
                        help="the team's data (default $LDCTDENOISE_DATA, else ../shared/data)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "evaluation" / "noise-estimate",
                        help="output path without suffix (.md and .json are written)")
    parser.add_argument("--sim-slices", type=int, default=6,
                        help="phantom and normal-dose slices to simulate per protocol (1.5 s each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.data_root / "mayo" / "paired").is_dir():
        raise SystemExit(f"The validation needs the team's Mayo data at {args.data_root / 'mayo'}; it is not there.")
    started = time.perf_counter()
    rows = (mayo_rows(args.data_root) + phantom_rows(args.sim_slices, args.seed)
            + simulated_rows(args.data_root, args.sim_slices, args.seed))
    level_rows = level_map_rows(args.data_root, args.seed)
    seconds = time.perf_counter() - started
    command = "python -m training.validate_noise_estimate" + (f" --sim-slices {args.sim_slices}"
                                                              if args.sim_slices != 6 else "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "seconds": round(seconds, 1), "target_relative": TARGET,
               "estimator": {"roi_size_px": noise_estimate.ROI_SIZE_PX, "n_bins": noise_estimate.N_BINS,
                             "anatomy_exponent": noise_estimate.ANATOMY_EXPONENT,
                             "anatomy_share_limit": noise_estimate.ANATOMY_SHARE_LIMIT,
                             "ramp_floor": noise_estimate.RAMP_FLOOR},
               "rows": rows, "level_map_rows": level_rows}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    write_markdown(rows, level_rows, args.out.with_suffix(".md"), seconds, command)
    print(f"Wrote {args.out.with_suffix('.md')} and .json in {seconds:.0f} s.")


if __name__ == "__main__":
    main()
