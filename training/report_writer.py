"""Write the evaluation report: Markdown tables laid out like the paper's Table 1, figures and ``results.json``.

Conventions (design.md): PSNR and SSIM per slice in the display window W/L 400/40 ([-160, 240] HU, data range 400),
whole 512 x 512 slices, mean ± SD over the held-out slices. Rows with several runs (seeds) first average each slice
over the runs; their "seed SD" is the SD of the runs' mean PSNRs. Noise SD and NPS are those of output - reference
in the central 256 x 256 square, so they hold what a method leaves of the noise plus its errors on anatomy.
"""

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from LDCTDenoiseLib.adaptation import AdaptationConfig
from LDCTDenoiseLib.adaptation.settings import HOLDOUT_SHARE
from LDCTDenoiseLib.metrics import DISPLAY_WINDOW, DISPLAY_WINDOW_LABEL, summarize

from . import product_runs
from .report_domains import DOMAIN_TITLES, domain_of
from .run_files import slug

SELF_SUPERVISED = "Self-supervised, target scans only (structured blind spot)"
SOURCE_ONLY = "CPCE source-only"
CONTROL = "CPCE + extra source training (control)"
OURS = "CPCE + alignment (ours)"
UPPER = "CPCE target-supervised (upper bound)"
FINE_TUNED = "CPCE source-only fine-tuned on the target pairs (upper bound)"
NOISE_MATCHING = "CPCE + target-noise matching (ours)"
# The product's runs (training/product_runs.py): what it hands the user after the gain gate
PRODUCT_CONTROL = "Product control: extra phantom-source training, no target signal"
PRODUCT_METHODS = {"noise-matching": "Product default: target-noise matching, phantom source, gain gate",
                   "alignment": "Product: alignment, phantom source, gain gate",
                   "recorruption": "Product: recorruption, target scans only, gain gate"}
PRODUCT_DEFAULT = PRODUCT_METHODS["noise-matching"]
GENERAL = "CPCE general model (shipped; supervised on every domain's training patients)"
LARGE_SHIFT_MARGIN_DB, LARGE_SHIFT_GAP, NO_HARM_DB = 1.5, 0.70, 0.1
MIN_GAP_DB = 0.1  # below this the upper bound does not beat source-only and "gap closed" means nothing
METRICS = ("psnr_display", "ssim_display", "rmse", "noise_sd")


def aggregate(runs: list[dict]) -> dict:
    """Mean ± SD over slices of the per-slice average over runs, the seed SD of PSNR and the mean NPS summary."""
    summary = {}
    for metric in METRICS:
        per_slice = np.mean([[row[metric] for row in run["slices"]] for run in runs], axis=0)
        mean, sd = summarize(per_slice)
        summary[metric] = {"mean": mean, "sd": sd}
    run_means = [float(np.mean([row["psnr_display"] for row in run["slices"]])) for run in runs]
    summary["psnr_runs"] = run_means
    summary["psnr_seed_sd"] = summarize(run_means)[1]
    summary["nps_mean_frequency"] = float(np.mean([run["nps"]["mean_frequency"] for run in runs]))
    summary["nps_peak_frequency"] = float(np.mean([run["nps"]["peak_frequency"] for run in runs]))
    return summary


def _cell(summary: dict | None, metric: str, digits: int) -> str:
    if summary is None:
        return "–"
    return f"{summary[metric]['mean']:.{digits}f} ± {summary[metric]['sd']:.{digits}f}"


def _verdict(name: str, gains: dict) -> str:
    """The issue's bars: a clear gain on the large shift, no harm (>= control - 0.1 dB) on the small real shifts."""
    if "large" in name.lower():
        passed = (gains["over_source"] >= LARGE_SHIFT_MARGIN_DB and gains["over_control"] >= LARGE_SHIFT_MARGIN_DB
                  and gains["gap_closed"] is not None and gains["gap_closed"] >= LARGE_SHIFT_GAP)
        return f"{'meets' if passed else 'misses'} the large-shift bar (≥ {LARGE_SHIFT_MARGIN_DB} dB over both, " \
               f"≥ {LARGE_SHIFT_GAP:.0%} of the gap)"
    passed = gains["over_control"] >= -NO_HARM_DB
    return f"{'no harm' if passed else 'harm'} (bar: ≥ control − {NO_HARM_DB} dB)"


def _gains(summaries: dict, ours: str = OURS, control: str = CONTROL) -> dict:
    psnr = {label: summary["psnr_display"]["mean"] for label, summary in summaries.items()}
    # The gap is to the better of the two target-supervised models: what the target's labels can give at best.
    gap = max(psnr[label] for label in (UPPER, FINE_TUNED) if label in psnr) - psnr[SOURCE_ONLY]
    return {"over_source": psnr[ours] - psnr[SOURCE_ONLY], "over_control": psnr[ours] - psnr[control],
            "gap": gap, "gap_closed": (psnr[ours] - psnr[SOURCE_ONLY]) / gap if gap >= MIN_GAP_DB else None}


def _product_rows(name: str, rows: dict, summaries: dict) -> list[dict]:
    """Per product method: its runs' estimates beside the truth (report.product_estimate), what the product
    delivers over source-only (Table 1's gated row) and what the control gains."""
    psnr = {label: summary["psnr_display"]["mean"] for label, summary in summaries.items()}
    control = psnr[PRODUCT_CONTROL] - psnr[SOURCE_ONLY] if PRODUCT_CONTROL in psnr else None
    out = []
    for method, label in PRODUCT_METHODS.items():
        if label not in rows:
            continue
        runs = rows[label]["estimates"]
        delivered = psnr[label] - psnr[SOURCE_ONLY]
        out.append({"direction": name, "method": method, "runs": runs, "delivered_db": delivered,
                    "control_db": control, "verdict": product_runs.verdict(name, delivered, control),
                    "adapted_db": float(np.mean([run["window_psnr_gain_db"] for run in runs])),
                    "kept": sum(run["kept"] == "adapted" for run in runs),
                    "gate_wrong": sum(product_runs.gate_verdict(run) == "**wrong**" for run in runs),
                    "steps_per_s": float(np.mean([run["steps_per_s"] for run in runs]))})
    return out


def _product_lines(product: dict, config: dict) -> list[str]:
    held_out = f"{HOLDOUT_SHARE:.0%}".replace("%", " %")
    steps = config.get("product_steps") or AdaptationConfig.steps
    lines = ["", f"## As the product runs it: no Mayo pairs, {held_out} of the target held out, the gain gate", "",
             f"Each of the engine's methods as the front ends run it ({steps} steps from the source-only model, the "
             "product's settings): noise matching and the alignment learn from the phantom pairs the product "
             f"simulates, recorruption from the target scans alone. {held_out} of the target slices are held out; "
             "when the label-free estimate on them shows no clear gain, the product keeps the starting model, and "
             "Table 1 scores what it hands the user. The control is the default method's extra training without the "
             "target's noise. Window PSNR over source-only, mean over the seeds. Bars: no harm "
             f"(≥ control − {product_runs.NO_HARM_DB} dB) on the small shifts, ≥ +{product_runs.LARGE_SHIFT_DB} dB "
             "over source-only on the 5 % dose shift.", "",
             "| direction | method | adapted (before the gate) | gate kept the adapted | the product delivers | "
             "control | delivers − control | gate wrong | steps/s | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for rows in product.values():
        for row in rows:
            control = row["control_db"]
            over_control = "–" if control is None else f"{row['delivered_db'] - control:+.2f}"
            lines.append(f"| {row['direction']} | {row['method']} | {row['adapted_db']:+.2f} | "
                         f"{row['kept']}/{len(row['runs'])} | {row['delivered_db']:+.2f} | "
                         f"{'–' if control is None else format(control, '+.2f')} | {over_control} | "
                         f"{row['gate_wrong']}/{len(row['runs'])} | {row['steps_per_s']:.2f} | {row['verdict']} |")
    return lines


def _estimate_lines(product: dict) -> list[str]:
    """The label-free estimate beside the truth, per direction and method (mean over seeds, worst seed's error)."""
    lines = ["", "## The label-free gain estimate against the truth", "",
             "Per product run, on the scored patient (whose reference the product never sees): the true gain of the "
             "adapted model over the start (MSE against the reference in the tissue of the display window, dB), "
             "SURE's prediction of that number from the scan alone (on the Mayo pairs with the reference's own "
             "noise accounted for: residual − 3/4 tr Σ + 3/2 tr ΣJ), and the estimate the gate acted on, made on "
             "the target's held-out slices (another patient). Sign: right when prediction and truth agree in every "
             f"seed whose true gain exceeds {product_runs.CLEAR_GAIN_DB} dB in size.", "",
             "| direction | method | true gain (dB) | SURE's prediction (dB) | worst error of the prediction (dB) | "
             "sign | gate's estimate on held-out target slices (dB) |", "|---|---|---|---|---|---|---|"]
    within = total = 0
    for rows in product.values():
        for row in rows:
            runs = row["runs"]
            truth = np.array([run["true_gain_db"] for run in runs])
            predicted = np.array([run["predicted_gain_vs_reference_db"] for run in runs])
            error = float(np.max(np.abs(predicted - truth)))
            clear = np.abs(truth) > product_runs.CLEAR_GAIN_DB
            sign = ("right" if np.all(np.sign(truth[clear]) == np.sign(predicted[clear])) else "**wrong**") \
                if clear.any() else f"– (gains under {product_runs.CLEAR_GAIN_DB} dB)"
            held_out = [run["held_out_estimate_db"] for run in runs if run["held_out_estimate_db"] is not None]
            total += 1
            within += error <= 0.3 and not sign.startswith("**")
            lines.append(f"| {row['direction']} | {row['method']} | {truth.mean():+.2f} | {predicted.mean():+.2f} | "
                         f"{error:.2f} | {sign} | "
                         f"{format(float(np.mean(held_out)), '+.1f') if held_out else '–'} |")
    lines += ["", f"Within ±0.3 dB with the right sign: {within} of {total} direction-method pairs."]
    return lines


def _nps_figure(name: str, rows: dict, path: Path) -> None:
    figure = Figure(figsize=(6.0, 3.6), dpi=120)
    axes = figure.add_subplot()
    for label in ("Low-dose input", "BM3D", SOURCE_ONLY, CONTROL, OURS, NOISE_MATCHING, PRODUCT_DEFAULT, UPPER,
                  FINE_TUNED):
        if label in rows:
            nps = rows[label]["runs"][0]["nps"]
            axes.plot(nps["frequency"], nps["power"], label=label)
    axes.set_xlabel("spatial frequency (cycles/mm)")
    axes.set_ylabel("NPS of output − reference (HU² mm²)")
    axes.set_yscale("log")
    axes.set_title(f"{name}: noise power spectrum (central 256² square)", fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))


def _example_figure(name: str, result: dict, path: Path) -> None:
    labels = ["Low-dose input", "BM3D", SELF_SUPERVISED, SOURCE_ONLY, OURS, NOISE_MATCHING, PRODUCT_DEFAULT, UPPER]
    panels = [("Normal-dose reference", result["example_reference"])]
    panels += [(label, result["rows"][label]["example"]) for label in labels if label in result["rows"]]
    rows_y, columns_x = panels[0][1].shape
    crop = np.s_[rows_y // 2 - 128:rows_y // 2 + 128, columns_x // 2 - 128:columns_x // 2 + 128]
    figure = Figure(figsize=(2.2 * len(panels), 2.6), dpi=120)
    for index, (label, image) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        axes.imshow(image[crop], cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1])
        axes.set_title(label.replace(" (", "\n("), fontsize=7)
        axes.axis("off")
    figure.suptitle(f"{name}: first held-out slice, central 256² crop, {DISPLAY_WINDOW_LABEL}", fontsize=9)
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))


def write_report(results: dict, config: dict, report_dir: Path, run_dir: Path, meta: dict) -> Path:
    """Write report.md, results.json and one NPS and one example figure per direction; returns report.md's path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    directions = list(results)
    summaries = {name: {label: aggregate(row["runs"]) for label, row in results[name]["rows"].items()}
                 for name in directions}
    labels = []
    for name in directions:
        labels += [label for label in summaries[name] if label not in labels and not label.startswith("ablation")]
    methods = {"alignment": (OURS, CONTROL), "target-noise matching": (NOISE_MATCHING, CONTROL)}
    gains = {name: {method: _gains(summaries[name], *labels) for method, labels in methods.items()
                    if labels[0] in summaries[name]} for name in directions}
    product = {name: _product_rows(name, results[name]["rows"], summaries[name]) for name in directions}

    lines = ["# Evaluation report: cross-domain adaptation of CPCE-2D on real and simulated CT",
             "",
             f"Regenerated by `{meta['command']}` at commit `{meta['git_commit']}` "
             f"({datetime.now(timezone.utc):%Y-%m-%d}). Budgets: supervised CPCEs "
             f"{config['supervised']['iterations']} iterations (batch {config['supervised']['batch_size']}, "
             f"{config['supervised']['patch_size']}² patches), self-supervised "
             f"{config['self_supervised']['iterations']} iterations, adaptation {config['adaptation']['steps']} steps "
             f"from the source-only model with each method's settings (`ADAPTATION_METHODS` in the engine) and the "
             f"engine's defaults otherwise, seeds {config['seeds']} for every "
             f"adaptation and control row. Models trained on: {', '.join(meta['trained_on'])}.",
             "",
             f"PSNR and SSIM per slice in the display window {DISPLAY_WINDOW_LABEL} ([{DISPLAY_WINDOW[0]:g}, "
             f"{DISPLAY_WINDOW[1]:g}] HU), whole slices, mean ± SD over "
             "the held-out slices (rows with seeds: each slice averaged over the seeds first). The perceptual loss "
             "is off in every run: no local VGG-19 weights exist here, so its ablation cannot be run.",
             "",
             "## Protocol",
             "",
             "| direction | source pairs (training) | target scans (unlabeled; the upper bound's pairs) | scored on |",
             "|---|---|---|---|"]
    for name in directions:
        direction = results[name]["direction"]
        lines.append(f"| {name} | {', '.join(direction['source'])} | {', '.join(direction['target'])} | "
                     f"{', '.join(direction['evaluate'])} |")
    if config.get("not_run"):
        lines += ["", f"**Directions not run in this report** (`--directions`): {', '.join(config['not_run'])}."]
    if config.get("skip_self_supervised"):
        lines += ["", "**The self-supervised baseline was not run in this report** (`--skip-self-supervised`)."]
    lines += ["", "Domains: " + "; ".join(f"`{key}` {title}" for key, title in DOMAIN_TITLES.items()) + ".", "",
              "## Table 1: PSNR (dB) / SSIM on the held-out target patient", "",
              "| method | " + " | ".join(f"{name} PSNR | {name} SSIM" for name in directions) + " |",
              "|---|" + "---|---|" * len(directions)]
    for label in labels:
        cells = []
        for name in directions:
            summary = summaries[name].get(label)
            cells += [_cell(summary, "psnr_display", 2), _cell(summary, "ssim_display", 3)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    if any(GENERAL in summaries[name] for name in directions):
        general = config["general_model"]
        lines += ["", f"The general model (`{general}`, `training/configs/cpce2d_mayo_general.yaml`) is trained on the "
                  "pairs of the training patients (L096, L143) in every domain here: D45, B30 and the simulated S, LS "
                  "and VL. It sees none of the scored patients (L192, L286), but it has been supervised on each "
                  "direction's target domain, so it is not an adaptation result: it shows what one model trained "
                  "over these doses and kernels gives, and the simulated domains are in its training "
                  "distribution."]
    lines += ["", "## What the adaptation adds (real source pairs)", "",
              "| direction | method | ours − source-only (dB) | ours − control (dB) | best upper bound − source-only "
              "(dB) | gap closed | seed SD ours / control (dB) | verdict |", "|---|---|---|---|---|---|---|---|"]
    for name in directions:
        for method, gain in gains[name].items():
            closed = f"– (gap < {MIN_GAP_DB} dB)" if gain["gap_closed"] is None else f"{gain['gap_closed']:.0%}"
            lines.append(f"| {name} | {method} | {gain['over_source']:+.2f} | {gain['over_control']:+.2f} | "
                         f"{gain['gap']:+.2f} | {closed} | "
                         f"{summaries[name][methods[method][0]]['psnr_seed_sd']:.2f} / "
                         f"{summaries[name][CONTROL]['psnr_seed_sd']:.2f} | {_verdict(name, gain)} |")
    lines += _product_lines(product, config)
    lines += _estimate_lines(product)

    ablated = [name for name in directions if any(label.startswith("ablation") for label in summaries[name])]
    if ablated:
        lines += ["", "## Ablation (PSNR dB, mean ± SD over slices; seed SD in brackets)", "",
                  "| variant | " + " | ".join(ablated) + " |", "|---|" + "---|" * len(ablated)]
        variants = [("ours: adaptive mask, the product's settings", OURS)]
        variants += [(label.removeprefix("ablation: "), label) for label in summaries[ablated[0]]
                     if label.startswith("ablation")]
        variants.append(("no alignment (control)", CONTROL))
        for variant, label in variants:
            cells = [f"{_cell(summaries[name][label], 'psnr_display', 2)} "
                     f"({summaries[name][label]['psnr_seed_sd']:.2f})" for name in ablated]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")

    lines += ["", "## Per direction: error, noise and texture", ""]
    for name in directions:
        file_slug = slug(name)
        _nps_figure(name, results[name]["rows"], report_dir / f"nps-{file_slug}.png")
        # Example images are crops of Mayo scans (or simulations from them), which the data-use agreement keeps out
        # of the repository: they go to the run folder, beside the data they come from.
        (run_dir / "figures").mkdir(parents=True, exist_ok=True)
        _example_figure(name, results[name], run_dir / "figures" / f"examples-{file_slug}.png")
        target_domain = domain_of(results[name]["direction"]["evaluate"][0])
        lines += [f"### {name} (scored on {DOMAIN_TITLES[target_domain]})", "",
                  "| method | PSNR (dB) | SSIM | RMSE (HU) | noise SD (HU) | NPS mean freq. (cycles/mm) | "
                  "seed SD (dB) |",
                  "|---|---|---|---|---|---|---|"]
        for label, summary in summaries[name].items():
            seeds = f"{summary['psnr_seed_sd']:.2f}" if len(summary["psnr_runs"]) > 1 else "–"
            lines.append(f"| {label} | {_cell(summary, 'psnr_display', 2)} | {_cell(summary, 'ssim_display', 3)} | "
                         f"{_cell(summary, 'rmse', 1)} | {_cell(summary, 'noise_sd', 1)} | "
                         f"{summary['nps_mean_frequency']:.3f} | {seeds} |")
        lines += ["", f"![NPS {name}](nps-{file_slug}.png)", "",
                  f"Example images: `{config['output_dir']}/figures/examples-{file_slug}.png` (not committed: Mayo "
                  f"images may not be redistributed).", ""]

    path = report_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    numbers = {"meta": meta, "config": config, "summaries": summaries, "gains": gains, "product": product,
               "runs": {name: {label: row["runs"] for label, row in results[name]["rows"].items()}
                        for name in directions}}
    (report_dir / "results.json").write_text(json.dumps(numbers, indent=1, default=_json_default), encoding="utf-8")
    return path


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
