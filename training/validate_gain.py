"""Validate the product's adaptation methods and the label-free gain estimate against the references, as the
product runs them.

For every direction of the evaluation report (``training/configs/report.yaml``), from its source-only model (the
shipped model named by ``source_model``, else the report's own supervised source model once ``python -m
training.report`` or ``--train-sources`` has trained it into ``runs/report/models``; a direction without one is
skipped and named), each product method (``training/product_runs.py``: no Mayo pairs at run time, noise matching
and the alignment use the phantom's, 15 % of the target slices held out and the gain gate applied) adapts that model
to the direction's unlabeled target series, for every seed and the product's default number of steps; the *control*
is the same run without any target information (the phantom pairs and the anchor alone, the extra training the
adaptation is measured against). Then, on the direction's scored (held-out) patient, whose reference the product
never sees:

- **estimated gain**: SURE of the adapted and the starting model on the scored series (``adaptation/gain.py``),
  the product's estimator on the very slices the truth is measured on; and the product's own estimate on the
  target's held-out slices (another patient, same domain), which is what it acts on;
- **true gain**: against the reference, in the tissue of the display window (the estimator's region): the MSE ratio
  in dB. On the simulated domains the reference is noise-free, so this is the gain the estimate aims at. On the Mayo
  pairs the reference is the full dose, which holds a quarter of the quarter dose's noise *inside* it (Mayo inserted
  noise into the full-dose projections), so the truth is read two ways: against the full dose as measured, beside
  the estimator's prediction of that same number (SURE's terms with the full dose's noise, a quarter of the measured
  noise variance, subtracted and correlated as Mayo's insertion makes it: residual - 3/4 tr Σ + 3/2 tr ΣJ);
- the window PSNR gain of the report (per-slice PSNR at W/L 400/40, whole slices, mean over slices), and what the
  product delivers: the adapted model's when the gate kept it, the starting model's (0 dB) when it did not.

The same columns compare the two shipped models on every scored series ("which model suits these scans?").

Run: ``python -m training.validate_gain`` (about 5 minutes per adaptation on one CPU core). The runs are the
report's ``product`` jobs, cached with their scores in ``runs/report/models`` and shared with ``python -m
training.report``. Writes ``docs/evaluation/gain-estimate.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from LDCTDenoiseLib.adaptation import AdaptationConfig, method_settings
from LDCTDenoiseLib.adaptation.gain import CONFIDENCE, NOISE_VARIANCE_BAND
from LDCTDenoiseLib.adaptation.settings import ADAPTATION_METHODS
from LDCTDenoiseLib.atomic import atomic_file
from LDCTDenoiseLib.inference import select_device
from LDCTDenoiseLib.model_choice import choose_model
from LDCTDenoiseLib.model_registry import SHIPPED_MODELS_DIR, ModelRegistry

from .product_runs import (CLEAR_GAIN_DB, CONTROL, REAL_DOMAINS, compare, delivered, gate_verdict, product_job,
                           verdict)
from .report import product_estimate
from .report_domains import load_domains
from .report_jobs import job_path, run_job, source_only, start_of
from .run_files import REPO_ROOT, data_root, git_commit

REPORT_CONFIG = REPO_ROOT / "training" / "configs" / "report.yaml"
SHIPPED = ("cpce2d-mayo-d45", "cpce2d-mayo-general")


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:+.{digits}f}"


def _interval(values) -> str:
    """An interval of the error difference (adapted minus start, HU²): what the gate acts on, negative for a gain."""
    return "" if not values else f" [{_fmt(values[0], 1)}, {_fmt(values[1], 1)}]"


def summary_lines(rows: list[dict]) -> list[str]:
    """Per direction and method, over the seeds: the adapted model, how often the gate kept it, what the product
    delivers, the control, and the bar."""
    lines = ["| direction | method | seeds | adapted (window PSNR vs start) | kept | the product delivers | "
             "control | product − control | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    directions = list(dict.fromkeys(row["direction"] for row in rows))
    for direction in directions:
        mine = [row for row in rows if row["direction"] == direction]
        controls = [row["window_psnr_gain_db"] for row in mine if row["method"] == CONTROL]
        control = float(np.mean(controls)) if controls else None
        for method in dict.fromkeys(row["method"] for row in mine if row["method"] != CONTROL):
            runs = [row for row in mine if row["method"] == method]
            product = float(np.mean([delivered(row) for row in runs]))
            kept = sum(row["kept"] == "adapted" for row in runs)
            lines.append(f"| {direction} | {method} | {len(runs)} | "
                         f"{_fmt(float(np.mean([row['window_psnr_gain_db'] for row in runs])))} | "
                         f"{kept}/{len(runs)} | {_fmt(product)} | {_fmt(control)} | "
                         f"{_fmt(None if control is None else product - control)} | "
                         f"{verdict(direction, product, control)} |")
    return lines


def write_markdown(results: dict, path: Path) -> None:
    """The tables of ``results`` (see :func:`main`) as Markdown."""
    adaptations = [row for row in results["adaptations"] if row["method"] != CONTROL]
    training = (f"; the adaptations' own training took {results.get('training_seconds', 0):.0f} s in all, cached in "
                "runs/report/models") if results["adaptations"] else ""
    lines = ["# The product's adaptation and the label-free gain estimate, against the references", "",
             f"Made by `{results['command'].strip()}` at commit `{results['git_commit']}` in {results['seconds']} s "
             f"on {results['device']} (training/validate_gain.py{training}). Gains in dB of the MSE in the tissue of "
             "the display window (W/L 400/40) unless named otherwise; *window PSNR* is the report's per-slice PSNR. "
             "Positive: the adapted (or the other) model is better.", ""]
    if results["adaptations"]:
        lines += ["## What the product delivers, with each method's settings as it runs them", "",
                  "Every run starts from the direction's source-only model and learns from the direction's unlabeled "
                  "target scans alone (noise matching: with the phantom pairs the product simulates); 15 % of the "
                  "target slices are held out and the adapted model is kept only when the label-free estimate on "
                  "them shows a clear gain, else the product keeps the starting model (0 dB). The control is the "
                  "same extra training without the target's noise. Window PSNR of the scored patient, mean over the "
                  "seeds.", "", *summary_lines(results["adaptations"]), ""]
    lines += [*(f"Skipped: {text}." for text in results.get("skipped", [])), ""] if results.get("skipped") else []
    lines += ["## Each run: the estimate beside the truth", "",
              f"*The gate* is right when it kept the adapted model and that did not lose window PSNR, or kept the "
              f"start where the adapted model gained less than {CLEAR_GAIN_DB} dB; with |gain| < {CLEAR_GAIN_DB} dB "
              f"either decision is right. Brackets: the {CONFIDENCE * 100:.0f} % interval of the adapted model's "
              f"error minus the start's in the window's tissue (HU², bootstrap over 32² blocks), over every noise "
              f"level within ±{(np.sqrt(NOISE_VARIANCE_BAND[1]) - 1.0) * 100:.0f} % of the estimate; the gate keeps "
              f"the adapted model only when all of it is below 0.", "",
              "| direction | method | seed | true gain vs reference | window PSNR gain | SURE on the scored series "
              "[adapted − start, HU²] | SURE's prediction vs the reference | product's estimate on the target's "
              "held-out slices [adapted − start, HU²] | kept | the product's result vs the start (window PSNR) | "
              "the gate |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in adaptations:
        method = row["method"] + (f" (alpha {row['alpha']:g})" if row["method"] == "recorruption" else "")
        lines.append(f"| {row['direction']} | {method} | {row['seed']} | {_fmt(row['true_gain_db'])} | "
                     f"{_fmt(row['window_psnr_gain_db'])} | {_fmt(row['estimated_gain_db'])}"
                     f"{_interval(row['difference_interval_hu2'])} | {_fmt(row['predicted_gain_vs_reference_db'])} | "
                     f"{_fmt(row['held_out_estimate_db'])}{_interval(row.get('held_out_difference_interval_hu2'))} | "
                     f"{row['kept']} | "
                     f"{_fmt(delivered(row))} | {gate_verdict(row)} |")
    if not results["adaptations"]:  # --choice-only
        lines = ["# The label-free choice of a model (`--model auto`), against the references", *lines[1:3]]
    if results["model_choice"]:
        lines += ["", "## Which shipped model suits these scans: cpce2d-mayo-general against cpce2d-mayo-d45", "",
                  "*SURE would choose*: the rule on the whole scored series; *Auto chose*: the product's "
                  "`--model auto` (8 slices spread through the series, the noise model from up to 32).", "",
                  "| scored series | true gain vs reference | window PSNR gain | SURE [other − start, HU²] | SURE's "
                  "prediction vs the reference | SURE would choose | Auto chose | Auto's time (s) |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in results["model_choice"]:
            choice = row["other"] if row["sure_prefers_other"] else row["start"]
            lines.append(f"| {row['series']} | {_fmt(row['true_gain_db'])} | {_fmt(row['window_psnr_gain_db'])} | "
                         f"{_fmt(row['estimated_gain_db'])}{_interval(row['difference_interval_hu2'])} | "
                         f"{_fmt(row['predicted_gain_vs_reference_db'])} | {choice} | {row.get('auto_chose', '–')} | "
                         f"{row.get('auto_seconds', '–')} |")
    lines += ["", "SURE on the Mayo series estimates the error against the (unknown) noise-free image; their "
              "reference, the full dose, holds a quarter of the quarter dose's noise inside the quarter dose itself, "
              "so the column *SURE's prediction vs the reference* (residual - 3/4 tr Σ + 3/2 tr ΣJ) is the one to hold "
              "against the true gain there. On the simulated series the reference is the simulator's noise-free "
              "reconstruction of a normal-dose scan, which keeps that scan's own noise (about 21 HU, blurred).", ""]
    with atomic_file(path) as temporary:
        Path(temporary).write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=AdaptationConfig.steps, help="adaptation steps (default: the "
                                                                                  "product's, %(default)s)")
    parser.add_argument("--alpha", type=float, nargs="+", default=[method_settings("recorruption")[
        "recorruption_alpha"]], help="recorruption's alpha (default: the product's, %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=[*ADAPTATION_METHODS, CONTROL],
                        choices=[*ADAPTATION_METHODS, CONTROL],
                        help="adaptation methods (held-out slices and the gain gate are added to any) and the control")
    parser.add_argument("--no-model-choice", action="store_true", help="skip the shipped models' comparison")
    parser.add_argument("--choice-only", action="store_true",
                        help="only the shipped models' comparison and Auto's choice (no adaptation)")
    parser.add_argument("--direction", action="append", dest="directions", metavar="NAME",
                        help="a direction's name as in the report config, repeatable (default: every direction with "
                             "a source-only model here)")
    parser.add_argument("--train-sources", action="store_true",
                        help="train the missing source-only models first, as the report does (6,000 iterations "
                             "each, 84 minutes on one CPU core; checkpointed, so a stopped run resumes)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "evaluation" / "gain-estimate.json")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the Markdown beside --out from the results already in it (no runs)")
    args = parser.parse_args(argv)
    if args.render:
        write_markdown(json.loads(args.out.read_text(encoding="utf-8")), args.out.with_suffix(".md"))
        print(f"Wrote {args.out.with_suffix('.md')}")
        return
    with open(REPORT_CONFIG, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    report_dir = REPO_ROOT / config["output_dir"]
    directions = config["directions"]
    if args.directions:
        unknown = set(args.directions) - {direction["name"] for direction in directions}
        if unknown:
            parser.error(f"unknown direction(s) {sorted(unknown)}; the report has {[d['name'] for d in directions]}")
        directions = [direction for direction in directions if direction["name"] in args.directions]
    domains = load_domains(report_dir, data_root(config), config["normal_dose_every"])
    device = select_device(args.device)
    registry = ModelRegistry()
    results = {"command": " ".join(["python -m training.validate_gain", *(sys.argv[1:] if argv is None else argv)]),
               "git_commit": git_commit(),
               "adaptations": [], "model_choice": [], "skipped": [], "training_seconds": 0.0}
    tic = time.perf_counter()
    for direction in directions:
        source = source_only(direction, config)
        if args.train_sources and source["kind"] != "shipped":
            run_job(source, config, report_dir, args.device, torch.get_num_threads())
        if source["kind"] != "shipped" and not job_path(report_dir, source).is_file():
            results["skipped"].append(f"{direction['name']}: no source-only model (--train-sources trains it)")
            print(f"Skipped {results['skipped'][-1]}", flush=True)
            continue
        start, start_shipped = start_of(source)
        scored_series = [domains[key] for key in direction["evaluate"]]
        low = np.concatenate([item.low_dose for item in scored_series])
        reference = np.concatenate([item.reference for item in scored_series])
        runs = [(method, alpha) for method in args.methods
                for alpha in (args.alpha if method == "recorruption" else [None])]
        for method, alpha in [] if args.choice_only else runs:
            for seed in args.seeds:
                job = product_job(direction, start, start_shipped, method, seed, args.steps, alpha)
                run_job(job, config, report_dir, args.device, torch.get_num_threads())
                row = product_estimate(report_dir, job, direction, low, reference, scored_series[0].pixel_mm,
                                       args.device)
                row.update({"direction": direction["name"], "start": start, "method": method,
                            "alpha": job["settings"].get("recorruption_alpha"), "seed": seed, "steps": args.steps})
                results["adaptations"].append(row)
                results["training_seconds"] += row.pop("wall_time_s")
                print(json.dumps(row), flush=True)
    # every scored series of the report (patients no shipped model trained on)
    for key in [] if args.no_model_choice else sorted({key for direction in config["directions"]
                                                       for key in direction["evaluate"]}):
        item = domains[key]
        row = compare(registry.load(SHIPPED[0])[0], registry.load(SHIPPED[1])[0], item.low_dose, item.reference,
                      item.pixel_mm, key.split("/")[0] in REAL_DOMAINS, device, 0)
        tic_auto = time.perf_counter()
        choice = choose_model(lambda index: item.low_dose[index], len(item.low_dose), item.pixel_mm,
                              ModelRegistry([SHIPPED_MODELS_DIR]), default=SHIPPED[0], device=args.device)
        row.update({"series": key, "start": SHIPPED[0], "other": SHIPPED[1], "auto_chose": choice.name,
                    "auto_sentence": choice.sentence(), "auto_seconds": round(time.perf_counter() - tic_auto, 1)})
        results["model_choice"].append(row)
        print(json.dumps(row), flush=True)
    results["seconds"] = round(time.perf_counter() - tic)
    threads = torch.get_num_threads()
    results["device"] = f"{device.type} ({threads} thread{'s' if threads != 1 else ''})"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.out) as temporary:
        Path(temporary).write_text(json.dumps(results, indent=2), encoding="utf-8")
    write_markdown(results, args.out.with_suffix(".md"))
    print(f"Wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
