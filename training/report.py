"""Regenerate the evaluation report: every method in every direction of ``training/configs/report.yaml``.

    python -m training.report                      # train what is missing, evaluate, write docs/evaluation/
    python -m training.report --device cuda --jobs 8 --stage train    # only the training jobs (e.g. on a GPU box)
    python -m training.report --quick              # tiny budgets into runs/report-quick/, to check the pipeline

Stages: (1) the domains (Mayo arrays, simulated S, LS and VL; training/report_domains.py), (2) supervised
source-only and upper-bound CPCEs and the self-supervised baseline, (3) the adaptation runs (with real source pairs:
the alignment, the extra-source-training control, target-noise matching, the mask ablation; and the product's own
runs of ``product_runs.py``, gated, with their control; every seed), (4) NLM and BM3D, (5) scoring on each
direction's held-out patient (the product's rows: what it hands the user, and its gain estimate beside the truth)
and writing ``report.md``, ``results.json`` and the figures. Every job's output is
cached under ``runs/report/`` and named by its content, so the command resumes after an interruption, a second
run only re-scores, and models trained elsewhere can be copied in. On 2 CPU cores the full budget takes many hours;
on one GPU with ``--jobs 8`` a few minutes.
"""

import argparse
import concurrent.futures
import copy
import json
import multiprocessing
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from LDCTDenoiseLib.adaptation import AdaptationConfig, method_settings
from LDCTDenoiseLib.adaptation.settings import ADAPTATION_METHODS
from LDCTDenoiseLib.atomic import atomic_file
from LDCTDenoiseLib.baselines import make_baseline
from LDCTDenoiseLib.inference import denoise_volume, select_device
from LDCTDenoiseLib.metrics import noise_power_spectrum, nps_summary, per_slice_metrics

from . import product_runs
from . import report_writer as labels
from .report_domains import load_domains
from .report_jobs import (delivered_model, job_card, job_path, load_job_model, run_job, source_only, start_model,
                          start_of)
from .report_writer import write_report
from .run_files import REPO_ROOT, data_root, git_commit, slug

DEFAULT_CONFIG = REPO_ROOT / "training" / "configs" / "report.yaml"
NPS_SQUARE = 256  # the central square of each slice where the noise SD and NPS of (output - reference) are taken
# The methods with real source pairs, as the paper runs its alignment: 200 steps on the whole target, no gate. The
# control is the alignment's settings without its critic (the anchor stays). With real source pairs noise matching
# runs without the anchor, which is there for the phantom's simpler anatomy. The product's own runs (every method of
# ADAPTATION_METHODS as the front ends run it, gated) are training/product_runs.py's.
ALIGNMENT_SETTINGS = dict(method_settings("alignment"), holdout_share=0.0)
CONTROL_SETTINGS = dict(ALIGNMENT_SETTINGS, adversarial_weight=0.0)
NOISE_MATCHING_SETTINGS = dict(method_settings("noise-matching"), anchor_weight=0.0, holdout_share=0.0)


def quick(config: dict) -> dict:
    """Tiny budgets and one seed, into their own folders: checks the whole pipeline in minutes."""
    config = copy.deepcopy(config)
    config["supervised"]["iterations"] = config["self_supervised"]["iterations"] = 20
    config["supervised"]["fine_tune_iterations"] = 20
    config["adaptation"]["steps"] = config["product_steps"] = 4
    config["seeds"] = config["seeds"][:1]
    config["output_dir"] += "-quick"
    config["report_dir"] = config["output_dir"] + "/report"
    return config


def plan(config: dict) -> tuple[list[dict], list[dict], dict[str, list[tuple[str, list]]]]:
    """(first-wave jobs, adaptation jobs, each direction's table rows as (label, what to score))."""
    first, adaptations, rows = [], [], {}
    product_steps = config.get("product_steps") or AdaptationConfig.steps
    for direction in config["directions"]:
        name = direction["name"]
        source = source_only(direction, config)
        upper = {"kind": "supervised", "series": direction["target"], "iterations": config["supervised"]["iterations"]}
        fine_tuned = None
        if direction.get("fine_tuned_from"):  # the source model fine-tuned on the target pairs: a second upper bound
            fine_tuned = {"kind": "supervised", "series": direction["target"], "init": direction["fine_tuned_from"],
                          "iterations": config["supervised"]["fine_tune_iterations"],
                          "learning_rate": config["supervised"]["fine_tune_learning_rate"]}
        self_supervised = {"kind": "self_supervised", "series": direction["target"],
                           "iterations": config["self_supervised"]["iterations"],
                           "radius": config["self_supervised"]["radius"]}
        with_self_supervised = not config.get("skip_self_supervised")
        first += [job for job in (source, upper, fine_tuned, self_supervised) if job is not None and job not in first
                  and (with_self_supervised or job is not self_supervised)]
        start, start_shipped = start_of(source)
        seeds = direction.get("seeds", config["seeds"])

        def runs(variant: str, overrides: dict, seeds: list[int] = seeds) -> list[dict]:
            return [{"kind": "adapt", "direction": name, "variant": variant, "seed": seed, "start": start,
                     "start_shipped": start_shipped, "source": direction["source"], "target": direction["target"],
                     "overrides": overrides, "steps": config["adaptation"]["steps"]} for seed in seeds]

        def product(method: str) -> list[dict]:
            return [product_runs.product_job(direction, start, start_shipped, method, seed, product_steps)
                    for seed in seeds]

        table = [("Low-dose input", "input"), *((method.upper(), method) for method in config["classical"])]
        if with_self_supervised:
            table.append((labels.SELF_SUPERVISED, [self_supervised]))
        table += [(labels.SOURCE_ONLY, [source]),
                  (labels.CONTROL, runs("control", CONTROL_SETTINGS)),
                  (labels.OURS, runs("ours", ALIGNMENT_SETTINGS)),
                  (labels.NOISE_MATCHING, runs("noise-matching", NOISE_MATCHING_SETTINGS)),
                  (labels.PRODUCT_CONTROL, product(product_runs.CONTROL)),
                  *((labels.PRODUCT_METHODS[method], product(method))
                    for method in config.get("product_methods") or ADAPTATION_METHODS)]
        if name in config.get("ablation", {}).get("directions", []):
            table += [(f"ablation: {run['label']}", runs(slug(run["label"]), run["overrides"], seeds[:1]))
                      for run in config["ablation"]["runs"]]
        table.append((labels.UPPER, [upper]))
        if fine_tuned:
            table.append((labels.FINE_TUNED, [fine_tuned]))
        if config.get("general_model"):  # supervised on every domain's training patients: a reference, not a method
            general = {"kind": "shipped", "model": config["general_model"]}
            first += [general] if general not in first else []
            table.append((labels.GENERAL, [general]))
        rows[name] = table
        adaptations += [job for _, what in table if isinstance(what, list) for job in what
                        if job["kind"] in ("adapt", "product")]
    return first, adaptations, rows


def run_jobs(jobs: list[dict], config: dict, run_dir: Path, device: str, workers: int, label: str) -> None:
    """Run the jobs whose outputs are missing, ``workers`` processes at a time (spawned: safe with CUDA)."""
    missing = [job for job in jobs if not job_path(run_dir, job).is_file()]
    if not missing:
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    print(f"{label}: {len(missing)} jobs ({len(jobs) - len(missing)} cached), {workers} at a time", flush=True)
    if workers == 1:
        for job in tqdm(missing, desc=label, unit="job"):
            run_job(job, config, run_dir, device, threads)
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(run_job, job, config, run_dir, device, threads) for job in missing]
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc=label, unit="job"):
            future.result()


def classical_output(method: str, key: str, low_dose: np.ndarray, run_dir: Path) -> np.ndarray:
    """NLM or BM3D of one held-out series, cached (BM3D takes seconds per slice)."""
    path = run_dir / "classical" / f"{method}__{slug(key)}.npy"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        output = make_baseline(method)(low_dose).astype(np.float32)
        with atomic_file(path) as temporary, open(temporary, "wb") as stream:
            np.save(stream, output)
    return np.load(path)


def score(output: np.ndarray, reference: np.ndarray, pixel_mm: float) -> dict:
    """Per-slice metrics, plus noise SD and NPS of (output - reference) in the central square of every slice."""
    rows = per_slice_metrics(output, reference)
    rows_y, columns_x = reference.shape[1:]
    centre = np.s_[:, (rows_y - NPS_SQUARE) // 2:(rows_y + NPS_SQUARE) // 2,
                   (columns_x - NPS_SQUARE) // 2:(columns_x + NPS_SQUARE) // 2]
    residual = (output - reference)[centre].astype(np.float64)
    for row, image in zip(rows, residual):
        row["noise_sd"] = float(image.std())
    freqs, nps = noise_power_spectrum(residual, pixel_mm)
    return {"slices": rows, "nps": {"frequency": freqs.tolist(), "power": nps.tolist(), **nps_summary(freqs, nps)}}


def product_estimate(run_dir: Path, job: dict, direction: dict, low: np.ndarray, reference: np.ndarray,
                     pixel_mm: float, device: str) -> dict:
    """A product run's label-free estimates beside the truth on the scored series (``product_runs.compare``), with
    what the gate saw on the target's held-out slices and what it kept."""
    card = job_card(run_dir, job)
    real = direction["evaluate"][0].split("/")[0] in product_runs.REAL_DOMAINS
    row = product_runs.scored(job_path(run_dir, job), job, start_model(run_dir, job), load_job_model(run_dir, job),
                              low, reference, pixel_mm, real, select_device(device))
    held_out = card["validation"].get("estimated_gain", {})
    return dict(row, kept=product_runs.kept(card), held_out_estimate_db=held_out.get("gain_db"),
                held_out_interval_db=held_out.get("interval_db"),
                held_out_difference_interval_hu2=held_out.get("difference_interval_hu2"),
                steps_per_s=card["training"]["steps_per_s"],
                wall_time_s=card["training"]["wall_time_s"])


def evaluate(config: dict, rows: dict, run_dir: Path, device: str) -> dict:
    """Score every row of every direction on the direction's held-out series (per slice; seeds kept apart)."""
    domains = load_domains(run_dir, data_root(config), config["normal_dose_every"])
    results = {}
    for direction in config["directions"]:
        name = direction["name"]
        series = [domains[key] for key in direction["evaluate"]]
        low = np.concatenate([item.low_dose for item in series])
        reference = np.concatenate([item.reference for item in series])
        pixel_mm = series[0].pixel_mm
        results[name] = {"direction": direction, "rows": {}}
        for label, what in tqdm(rows[name], desc=f"scoring {name}", unit="method"):
            if what == "input":
                outputs = [low]
            elif isinstance(what, str):
                outputs = [np.concatenate([classical_output(what, item.key, item.low_dose, run_dir)
                                           for item in series])]
            else:  # a product run scores what the product hands the user: the start when the gate kept it
                outputs = [denoise_volume(delivered_model(run_dir, job), low, device=device) for job in what]
            scored = [score(output, reference, pixel_mm) for output in outputs]
            results[name]["rows"][label] = {"runs": scored, "jobs": what, "example": outputs[0][0]}
            if isinstance(what, list) and what[0]["kind"] == "product":
                results[name]["rows"][label]["estimates"] = [
                    product_estimate(run_dir, job, direction, low, reference, pixel_mm, device) for job in what]
        results[name]["example_reference"] = reference[0]
        results[name]["example_input"] = low[0]
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--jobs", type=int, default=1, help="training jobs run at once (default %(default)s)")
    parser.add_argument("--stage", choices=("train", "all"), default="all",
                        help="'train' stops after the training jobs (default: everything)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, one seed, into runs/report-quick/")
    parser.add_argument("--skip-self-supervised", action="store_true",
                        help="leave out the self-supervised baseline (its 4000 iterations take hours on a CPU); the "
                             "report says so")
    parser.add_argument("--directions", help="comma-separated direction names to run (default: all in the config); "
                                             "the report lists the others as not run")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    if args.quick:
        config = quick(config)
    config["skip_self_supervised"] = args.skip_self_supervised
    if args.directions:
        wanted = [name.strip() for name in args.directions.split(",")]
        unknown = set(wanted) - {direction["name"] for direction in config["directions"]}
        if unknown:
            parser.error(f"unknown directions {sorted(unknown)}")
        config["not_run"] = [d["name"] for d in config["directions"] if d["name"] not in wanted]
        config["directions"] = [d for d in config["directions"] if d["name"] in wanted]
    run_dir = REPO_ROOT / config["output_dir"]
    command = "python -m training.report " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    tic = time.perf_counter()
    load_domains(run_dir, data_root(config), config["normal_dose_every"])
    first, adaptations, rows = plan(config)
    run_jobs(first, config, run_dir, args.device, args.jobs, "source, upper-bound and self-supervised models")
    run_jobs(adaptations, config, run_dir, args.device, args.jobs, "adaptation runs")
    if args.stage == "train":
        print(f"Training jobs done in {time.perf_counter() - tic:.0f} s; models in {run_dir / 'models'}")
        return
    results = evaluate(config, rows, run_dir, args.device)
    used = [job_path(run_dir, job).with_suffix(".json") for job in first + adaptations]
    trained_on = sorted({json.loads(path.read_text())["device"] for path in used})
    report_path = write_report(results, config, REPO_ROOT / config["report_dir"], run_dir,
                               {"command": command, "git_commit": git_commit(), "trained_on": trained_on,
                                "seconds": round(time.perf_counter() - tic)})
    print(f"Report written to {report_path}")


if __name__ == "__main__":
    main()
