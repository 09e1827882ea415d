"""``ldct-denoise``: the engine from a terminal, for batch work on DICOM folders.

Every command reads DICOM with the engine's reader, shows progress bars, writes its outputs atomically and never over
its inputs. Errors caused by the input or the settings print one clear line and exit with status 2; Ctrl-C exits
with 130 and leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from . import __version__
from .adaptation import ADAPTATION_METHODS, DEFAULT_METHOD
from .archive import DENOISED, REFUSED, SKIPPED, denoise_archive, parse_shard, summary_path
from .comparison import comparison_metrics, parse_roi, run_methods, write_comparison
from .dicom_reader import CTVolume, open_series, read_series
from .dicom_writer import check_output_folder, write_derived_series
from .pipeline import denoise_series
from .errors import LDCTDenoiseError, SeriesSelectionError
from .methods import INPUT, ModelDenoiser, available_methods
from .metrics import DISPLAY_WINDOW_LABEL, Roi
from .model_registry import AUTO_MODEL as AUTO, DEFAULT_MODEL, ModelRegistry, card_summary
from .simulator import KERNELS, MODES, ScanProtocol, simulate_low_dose_volume

EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130
POSITION_TOLERANCE_MM = 0.01


class ProgressBars:
    """One tqdm bar per stage, driven by the engine's ``progress(done, total)`` hooks; silent with ``--quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: list[tqdm] = []

    def __call__(self, stage: str, unit: str = "slice"):
        """A hook for one stage; its bar appears on the first report, so a stage skipped (a cache hit) shows none."""
        bar: Optional[tqdm] = None

        def update(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(desc=stage, total=total, unit=unit, disable=self.quiet, dynamic_ncols=True, leave=True,
                           file=sys.stderr)
                self.bars.append(bar)
            bar.total = total
            bar.update(done - bar.n)
            if done >= total:
                bar.close()  # stops its clock: the elapsed time shown is the stage's own

        return update

    def close(self) -> None:
        for bar in self.bars:
            bar.close()
        self.bars.clear()


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


def _read(args: argparse.Namespace, bars: ProgressBars, path: Path, series: Optional[str], what: str) -> CTVolume:
    volume = read_series(path, series, progress=bars(f"read {what}"))
    bars.close()
    for warning in volume.warnings:
        _say(args, f"warning: {path}: {warning}")
    return volume


def _strength_percent(text: str) -> float:
    """argparse type of ``--strength``: a percentage from 0 to 100 ("70" or "70%"), refused clearly otherwise."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 100.0:  # also refuses nan, inf and words
        raise argparse.ArgumentTypeError(f"must be a percentage from 0 (the input unchanged) to 100 (fully "
                                         f"denoised), got {text!r}")
    return value


def command_denoise(args: argparse.Namespace, bars: ProgressBars) -> int:
    """Stream the series through the model a batch at a time: memory is bounded by the batch, not the series.

    The model blends each batch with its input at the chosen strength, so streaming and memory are as at full
    strength.
    """
    if args.archive:
        return command_denoise_archive(args, bars)
    if args.shard is not None:
        raise LDCTDenoiseError("--shard spreads the series of an archive over processes; use it with --archive.")
    check_output_folder(args.output)  # before the model loads or a file is read
    registry = ModelRegistry()
    strength = args.strength / 100.0
    # an unknown model or device fails here, before anything is read
    model = None if args.model == AUTO else ModelDenoiser(args.model, registry, args.device, args.batch_size,
                                                          strength=strength)
    at_strength = "" if args.strength == 100.0 else f" at strength {args.strength:g} %"
    series = open_series(args.input, args.series)
    for warning in series.warnings:
        _say(args, f"warning: {args.input}: {warning}")
    tic = time.perf_counter()
    name = args.model
    if model is None:
        from .model_choice import choose_model  # torch only here

        _say(args, "Auto: comparing the models on a few slices of the series (no reference)...")
        choice = choose_model(lambda index: series.read(index, index + 1)[0], series.shape[0],
                              float(np.mean(series.spacing[1:])), registry, device=args.device)
        print(f"{choice.sentence()} ({time.perf_counter() - tic:.0f} s)")
        name = choice.name
        tic = time.perf_counter()
        model = ModelDenoiser(name, registry, args.device, args.batch_size, strength=strength)
    suffix = name if args.strength == 100.0 else f"{name} {args.strength:g}%"
    files = denoise_series(series, model, args.output, batch_size=args.batch_size,
                                   derivation_description=model.derivation(),
                                   series_description_suffix=f" [LDCTDenoise {suffix}]",
                                   progress=bars(f"read, denoise ({name}{at_strength}), write"))
    seconds = time.perf_counter() - tic
    bars.close()
    n_slices = series.shape[0]
    rate = n_slices / seconds if seconds > 0 else float("inf")
    print(f"Denoised {n_slices} slices of '{series.description}' with {name}{at_strength} in {seconds:.1f} s "
          f"({rate:.1f} slices/s, reading and writing included); wrote {len(files)} files to {args.output}")
    return 0


def command_denoise_archive(args: argparse.Namespace, bars: ProgressBars) -> int:
    """Every CT series under the input, one derived series each, resumable and shardable (see archive.py)."""
    if args.series is not None:
        raise LDCTDenoiseError("--series picks one series of the input; --archive denoises them all.")
    if args.model == AUTO:
        raise LDCTDenoiseError("--model auto chooses a model for one series; with --archive, name the model.")
    shard = parse_shard(args.shard)
    device = args.device
    if args.shard == "env" and device == "auto" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}" if _cuda_available() else "cpu"  # one GPU per process
    model = ModelDenoiser(args.model, ModelRegistry(), device, args.batch_size, strength=args.strength / 100.0)
    suffix = args.model if args.strength == 100.0 else f"{args.model} {args.strength:g}%"

    def show(row, done: int, total: int) -> None:
        if not args.quiet:
            bars.close()
            detail = row.output if row.status == "denoised" else row.message
            print(f"[{done}/{total}] {row.status} {row.description or row.series_uid} ({row.n_slices} slices, "
                  f"{row.seconds:.1f} s): {detail}", flush=True)

    try:
        rows = denoise_archive(args.input, args.output, model, batch_size=args.batch_size,
                               series_suffix=f" [LDCTDenoise {suffix}]", shard=shard, on_row=show,
                               progress_for=lambda info: bars(f"{info.description or info.series_uid}"[:40]))
    except KeyboardInterrupt:
        bars.close()
        print(f"ldct-denoise: interrupted; the series finished before are kept (see "
              f"{summary_path(args.output.absolute(), shard)}), the one in progress was removed; the same command "
              f"resumes.", file=sys.stderr)
        return EXIT_INTERRUPTED
    bars.close()
    counts = {status: sum(row.status == status for row in rows) for status in (DENOISED, SKIPPED, REFUSED)}
    print(f"{counts[DENOISED]} denoised, {counts[SKIPPED]} skipped, {counts[REFUSED]} refused"
          f"{f' (shard {shard.index}/{shard.count})' if shard.count > 1 else ''}; summary: "
          f"{summary_path(args.output.absolute(), shard)}")
    return EXIT_INPUT_ERROR if counts[REFUSED] else 0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _matching_reference(args: argparse.Namespace, bars: ProgressBars, volume: CTVolume) -> Optional[np.ndarray]:
    """The reference series' HU, after checking it is the same slices as the input."""
    if args.reference is None:
        return None
    reference = _read(args, bars, args.reference, args.reference_series, "reference")
    if reference.hu.shape != volume.hu.shape:
        raise LDCTDenoiseError(f"The reference {args.reference} has shape {reference.hu.shape} (z, y, x) but the "
                               f"input {args.input} has {volume.hu.shape}; they must be the same slices.")
    offset = np.abs(reference.slice_positions - volume.slice_positions).max()
    if offset > POSITION_TOLERANCE_MM:
        raise LDCTDenoiseError(f"The reference {args.reference} and the input {args.input} are not the same slices: "
                               f"slice positions differ by up to {offset:.2f} mm.")
    return reference.hu


def _default_roi(shape: Sequence[int]) -> Roi:
    """A square in the middle of the slice, an eighth of its width: soft tissue on a body CT."""
    rows, columns = shape[-2:]
    side = max(8, min(rows, columns) // 8)
    return Roi((columns - side) // 2, (rows - side) // 2, side, side)


def command_compare(args: argparse.Namespace, bars: ProgressBars) -> int:
    registry = ModelRegistry()
    methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    unknown = [name for name in methods if name != INPUT and name not in available_methods(registry)]
    if unknown:
        raise LDCTDenoiseError(f"Unknown method(s) {', '.join(unknown)}. Known: {INPUT}, "
                               f"{', '.join(available_methods(registry))}.")
    volume = _read(args, bars, args.input, args.series, "input")
    reference = _matching_reference(args, bars, volume)
    n_slices = volume.hu.shape[0]
    slice_index = n_slices // 2 if args.slice is None else args.slice - 1
    if not 0 <= slice_index < n_slices:
        raise LDCTDenoiseError(f"--slice {args.slice} is outside the series' 1 to {n_slices} slices.")
    roi = parse_roi(args.roi) if args.roi else _default_roi(volume.hu.shape)
    background = parse_roi(args.background_roi) if args.background_roi else None
    for region in (roi, background):
        if region is not None:
            region.check_inside(volume.hu.shape)
    outputs, seconds = run_methods(volume.hu, methods, registry=registry, device=args.device,
                                   batch_size=args.batch_size, progress_for=bars)
    bars.close()
    metrics = comparison_metrics(outputs, reference, pixel_mm=volume.spacing[2], slice_index=slice_index, roi=roi,
                                 background_roi=background)
    for name, row in metrics.items():
        row["seconds"] = seconds[name]
    files = write_comparison(outputs, reference, metrics, args.output, slice_index=slice_index, roi=roi,
                             title=args.title or f"{volume.description or args.input.name}: slice {slice_index + 1}"
                                                 f" of {n_slices}")
    print(format_metrics(metrics))
    print(f"Wrote {files['figure']}, {files['csv']} and {files['json']}")
    return 0


def format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    """A plain-text table of the metrics the terminal user looks at first."""
    columns = [("psnr_display", "PSNR win (dB)", "{:.2f}"), ("ssim_display", "SSIM win", "{:.4f}"),
               ("psnr_full", "PSNR full (dB)", "{:.2f}"), ("rmse", "RMSE (HU)", "{:.1f}"),
               ("roi_mean_hu", "ROI mean", "{:.1f}"), ("roi_sd_hu", "ROI SD", "{:.1f}"), ("cnr", "CNR", "{:.2f}"),
               ("seconds", "time (s)", "{:.1f}")]
    shown = [column for column in columns if any(column[0] in row for row in metrics.values())]
    width = max(len(name) for name in metrics) + 2
    lines = ["method".ljust(width) + "".join(title.rjust(16) for _, title, _ in shown)]
    for name, row in metrics.items():
        cells = [(form.format(row[key]) if key in row else "-").rjust(16) for key, _, form in shown]
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)


def command_models(args: argparse.Namespace, bars: ProgressBars) -> int:
    entries = ModelRegistry().entries()
    if args.json:
        print(json.dumps([dict(entry.card, origin=entry.origin, card_path=str(entry.card_path)) for entry in entries],
                         indent=2))
        return 0
    if not entries:
        print("No models found (shipped models live in LDCTDenoise/Resources/Models).")
    for entry in entries:
        default = " (default)" if entry.name == DEFAULT_MODEL else ""
        first, *rest = card_summary(entry)
        print(f"{first}{default}  {entry.card_path}")
        for line in rest:
            print(f"  {line}")
    return 0


def command_simulate(args: argparse.Namespace, bars: ProgressBars) -> int:
    protocol = ScanProtocol(dose_fraction=args.dose, kernel=args.kernel, n_views=args.views,
                            full_dose_photons=args.photons, mode=args.mode)
    check_output_folder(args.output)  # before the series is read and simulated
    volume = _read(args, bars, args.input, args.series, "normal-dose input")
    if abs(volume.spacing[1] - volume.spacing[2]) > 1e-3:
        raise LDCTDenoiseError(f"{args.input}: the simulator needs square pixels, got {volume.spacing[1]} x "
                               f"{volume.spacing[2]} mm.")
    low_dose, _ = simulate_low_dose_volume(volume.hu, volume.spacing[2], protocol, args.seed, bars("simulate"))
    dose_text = f"{100 * args.dose:g} %"
    derivation = (f"Simulated {dose_text} dose by LDCTDenoise {__version__}: projection-domain noise ({args.mode}), "
                  f"fan beam, {args.views} views, {args.kernel} kernel, {args.photons:g} photons/ray/view at full "
                  f"dose, seed {args.seed}")
    files = write_derived_series(volume, low_dose, args.output, derivation_description=derivation,
                                 series_description_suffix=f" [simulated {dose_text} dose]", progress=bars("write"))
    bars.close()
    print(f"Simulated {dose_text} dose for {volume.hu.shape[0]} slices; wrote {len(files)} files to {args.output}")
    return 0


def command_demo(args: argparse.Namespace, bars: ProgressBars) -> int:
    from .demo import run_demo  # the phantom and simulator are only needed here

    result = run_demo(args.out, model=args.model, n_slices=args.slices, dose_fraction=args.dose, seed=args.seed,
                      device=args.device, batch_size=args.batch_size, progress_for=bars)
    bars.close()
    print(format_metrics(result.metrics))
    print(f"Demo written to {result.out_dir}:")
    for key, path in {**result.series, **result.files}.items():
        print(f"  {key:10s} {path}")
    return 0


def command_adapt(args: argparse.Namespace, bars: ProgressBars) -> int:
    from .adaptation import AdaptationConfig, adapt, method_settings, phantom_source_bank
    from .adaptation.adapt import checked_target_volumes
    from .adaptation.noise_matching import noise_summary
    from .adaptation.profile import check_profile_name, save_adapted_profile

    registry = ModelRegistry()
    check_profile_name(args.name, registry)
    chosen = {"adversarial_weight": args.adversarial_weight, "anchor_weight": args.anchor_weight,
              "match_target_noise": args.match_target_noise, "recorruption_alpha": args.alpha,
              "learning_rate": args.learning_rate,
              "holdout_share": args.holdout_share}  # None: the method's setting
    settings = dict(method_settings(args.method), **{key: value for key, value in chosen.items() if value is not None})
    config = AdaptationConfig(name=args.name, base_model=args.base_model, steps=args.steps,
                              mask=args.mask,
                              perceptual_weights=str(args.vgg19_weights) if args.vgg19_weights else None,
                              seed=args.seed, device=args.device,
                              command="ldct-denoise " + " ".join(shlex.quote(a) for a in args.argv), **settings)
    model, _ = registry.load(args.base_model)
    volumes = [_read(args, bars, folder, None, f"target {index + 1}") for index, folder in enumerate(args.targets)]
    checked_target_volumes([volume.hu for volume in volumes], config.patch_size,
                           noise_regions=config.match_target_noise)  # before the source pairs are simulated
    source = (phantom_source_bank(progress=bars("simulate source pairs (once, then cached)")) if config.uses_source
              else None)
    result = adapt(model, [volume.hu for volume in volumes], config, source=source, progress=bars("adapt", unit="step"),
                   target_pixel_mm=[float(volume.spacing[1]) for volume in volumes])
    bars.close()
    gain = result.gain_sentence(args.base_model)
    if gain:
        print(gain)
    if not result.keep_adapted and not args.save_anyway:
        print(f"No profile saved: keep using {args.base_model} for these scans (--save-anyway saves the adapted "
              f"model all the same).")
        return 0
    card_path, curve = save_adapted_profile(result, args.base_model)
    print(f"Adapted {args.base_model} to {len(volumes)} series in {result.card['training']['wall_time_s']:.0f} s; "
          f"saved profile '{args.name}' ({card_path}) and its loss curve ({curve}).")
    summary = noise_summary(result.card["training"]["target_noise_matching"])
    if summary:
        print(summary)
    print(f"Use it with: ldct-denoise denoise IN OUT --model {args.name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ldct-denoise", description=__doc__.split("\n\n")[0],
                                     epilog="Research software, not for clinical use.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress bars or warnings")
        sub.set_defaults(handler=handler)
        return sub

    def add_model_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
        sub.add_argument("--batch-size", type=int, default=4, help="slices per batch; memory grows with it")

    denoise = add("denoise", command_denoise, "Denoise a low-dose CT DICOM series into a new derived series.")
    denoise.add_argument("input", type=Path, help="DICOM folder (searched recursively) or file")
    denoise.add_argument("output", type=Path, help="new or empty folder for the denoised series (with --archive: "
                                                   "the folder of the output tree, made or resumed)")
    denoise.add_argument("--model", default=DEFAULT_MODEL,
                         help=f"model name (default {DEFAULT_MODEL}; see `models`), or {AUTO}: the model that the "
                              f"label-free error estimate shows clearly better than the default on a few slices of "
                              f"the series, else the default (tens of seconds more on a CPU)")
    denoise.add_argument("--series", help="SeriesInstanceUID, when the input holds several series")
    denoise.add_argument("--archive", action="store_true",
                         help="denoise every CT series under the input into OUTPUT/<its folder>/<SeriesInstanceUID>; "
                              "a rerun skips the series already done; a summary CSV lists what was denoised, "
                              "skipped and refused (exit status 2 if any was refused)")
    denoise.add_argument("--shard", metavar="K/N|env",
                         help="with --archive: only the series of shard K of N (0-based; a job array's index), or "
                              "env for torchrun's RANK/WORLD_SIZE (one GPU per process by LOCAL_RANK) or a Slurm "
                              "array's SLURM_ARRAY_TASK_ID/COUNT")
    denoise.add_argument("--strength", type=_strength_percent, default=100.0, metavar="PERCENT",
                         help="denoising strength, 0-100 (default %(default)g): the output is input + strength x "
                              "(denoised - input), as vendors' iterative-reconstruction levels; 100 is the model's "
                              "output, lower keeps more of the original noise texture")
    add_model_options(denoise)

    compare = add("compare", command_compare,
                  f"Run several methods on a series; write a figure at {DISPLAY_WINDOW_LABEL} with ROI zooms and the "
                  "metrics.")
    compare.add_argument("input", type=Path, help="low-dose DICOM folder or file")
    compare.add_argument("--out", dest="output", type=Path, required=True, help="folder for comparison.png and "
                                                                                   "metrics.csv/.json")
    compare.add_argument("--reference", type=Path, help="normal-dose series of the same slices (for PSNR/SSIM/RMSE)")
    compare.add_argument("--methods", default=f"{INPUT},{DEFAULT_MODEL},nlm",
                         help="comma-separated: input, model names, gaussian, bilateral, tv, nlm, bm3d "
                              "(default %(default)s)")
    compare.add_argument("--roi", help="x,y,width,height in pixels (default: a central square, 1/8 of the width)")
    compare.add_argument("--background-roi", help="x,y,width,height of a homogeneous region, for the CNR")
    compare.add_argument("--slice", type=int, help="slice shown, 1-based in slice order (default: the middle)")
    compare.add_argument("--series", help="SeriesInstanceUID of the input, when it holds several series")
    compare.add_argument("--reference-series", help="SeriesInstanceUID of the reference, when it holds several")
    compare.add_argument("--title", help="figure title")
    add_model_options(compare)

    models = add("models", command_models, "List the shipped models and the user's adapted profiles.")
    models.add_argument("--json", action="store_true", help="print every card as JSON, for scripts")

    simulate = add("simulate", command_simulate,
                   "Make a simulated low-dose series from a normal-dose one (projection-domain noise, fan beam).")
    simulate.add_argument("input", type=Path, help="normal-dose DICOM folder or file")
    simulate.add_argument("output", type=Path, help="new or empty folder for the low-dose series")
    simulate.add_argument("--dose", type=float, default=0.25, help="dose fraction in (0, 1] (default %(default)s)")
    simulate.add_argument("--kernel", choices=KERNELS, default="hann", help="reconstruction filter of the noise")
    simulate.add_argument("--views", type=int, default=720, help="projections over 360 degrees")
    simulate.add_argument("--photons", type=float, default=1.5e5,
                          help="photons per ray per view at full dose; calibrate it against a real scan's noise")
    simulate.add_argument("--mode", choices=MODES, default="insert",
                          help="insert: add the missing noise onto a real scan (default); regen: treat the input as "
                               "noise-free")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--series", help="SeriesInstanceUID, when the input holds several series")

    adapt = add("adapt", command_adapt, "Adapt a model to a new scanner's unlabeled low-dose series and save it as "
                                        "a profile that denoise, compare and the Slicer module can use.")
    adapt.add_argument("targets", type=Path, nargs="+", metavar="TARGET_DIR", help="unlabeled low-dose series")
    adapt.add_argument("--name", required=True, help="name of the new profile")
    adapt.add_argument("--from", dest="base_model", default=DEFAULT_MODEL, help="model to start from "
                                                                                 "(default %(default)s)")
    adapt.add_argument("--steps", type=int, default=300, help="fine-tuning steps (default %(default)s)")
    adapt.add_argument("--learning-rate", type=float, help="denoiser learning rate (default: the method's; "
                                                           "recorruption 5e-6, the others 5e-5)")
    adapt.add_argument("--method", choices=tuple(ADAPTATION_METHODS), default=DEFAULT_METHOD,
                       help="noise-matching: give the source pairs the extra noise measured in the target scans (for "
                            "a noisier scanner or a lower dose); alignment: the paper's adversarial alignment of "
                            "frequency-masked outputs; recorruption: learn from the target scans alone, re-noised "
                            "with their own measured noise. Every method keeps the starting model unless held-out "
                            "slices show a clear gain (default %(default)s; the evaluation report compares them)")
    adapt.add_argument("--adversarial-weight", type=float, help="weight of the alignment term (alignment: 0.0005, "
                                                                "the others: 0)")
    adapt.add_argument("--anchor-weight", type=float, help="pull towards the starting model (noise-matching and "
                                                           "alignment: 0.1, recorruption: 0)")
    adapt.add_argument("--mask", choices=("adaptive", "bernoulli", "fixed", "none"), default="adaptive",
                       help="frequency mask before the discriminator (default %(default)s)")
    adapt.add_argument("--vgg19-weights", type=Path, help="local ImageNet VGG-19 weights (torchvision layout) for "
                                                          "the perceptual loss; off without them")
    adapt.add_argument("--match-target-noise", action=argparse.BooleanOptionalAction,
                       help="add the target's extra noise to the source pairs (on with noise-matching; "
                            "--match-target-noise with --method alignment combines the two)")
    adapt.add_argument("--alpha", type=float, help="recorruption: the share of a noise draw added to the input "
                                                   "(default: the method's, 0.5)")
    adapt.add_argument("--holdout-share", type=float, help="share of each target's slices held out of training to "
                                                           "estimate the gain without a reference (default 0.15; "
                                                           "0 turns the estimate and the gate off)")
    adapt.add_argument("--save-anyway", action="store_true", help="save the profile even when the held-out slices "
                                                                  "show no clear gain over the starting model")
    adapt.add_argument("--seed", type=int, default=0)
    adapt.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")

    demo = add("demo", command_demo, "With no data at all: simulate a low-dose series of a digital phantom, denoise "
                                     "it with a shipped model, and write the series, the figure and the metrics.")
    demo.add_argument("--out", type=Path, default=Path("ldct-demo"), help="new folder (default %(default)s)")
    demo.add_argument("--model", default=DEFAULT_MODEL)
    demo.add_argument("--slices", type=int, default=4, help="phantom slices, 3 mm apart (default %(default)s)")
    demo.add_argument("--dose", type=float, default=0.25, help="simulated dose fraction (default %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    add_model_options(demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    bars = ProgressBars(args.quiet)
    try:
        return args.handler(args, bars)
    except SeriesSelectionError as error:
        bars.close()
        print(f"ldct-denoise: {error}\nChoose one with --series UID.", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except LDCTDenoiseError as error:
        bars.close()
        print(f"ldct-denoise: error: {error}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        bars.close()
        print("ldct-denoise: interrupted; nothing was written.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
