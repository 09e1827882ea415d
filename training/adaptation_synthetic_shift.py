"""A large, fully simulated domain shift for the adaptation, with a noise-free reference to score it.

    python -m training.adaptation_synthetic_shift NAME STEPS '{"adversarial_weight": 0.0}' [--monitor-every 20]

Source: the product's phantom source bank (D45-like kernel, 25 % dose), as a user's adaptation gets it. Target:
another phantom anatomy (seed 1, six 512² slices of 0.7 mm) scanned at 10 % dose with a smooth (Hann) kernel, so
its noise is stronger and more correlated than anything the shipped model saw. The adaptation sees target slices
1-4 unlabeled; slices 5-6 are scored (window PSNR against the noise-free reconstruction). The JSON overrides are
AdaptationConfig fields; ``"supervised": true`` trains on the target's own pairs instead (the upper bound) and
``"adversarial_weight": 0`` is the extra-source-training control. Prints one JSON line per run.
"""

import argparse
import json
import time

import numpy as np
import torch

from LDCTDenoiseLib.adaptation import AdaptationConfig, adapt, phantom_source_bank
from LDCTDenoiseLib.inference import denoise_volume
from LDCTDenoiseLib.metrics import per_slice_metrics
from LDCTDenoiseLib.model_registry import DEFAULT_MODEL, ModelRegistry
from LDCTDenoiseLib.phantom import make_abdomen_phantom
from LDCTDenoiseLib.simulator import D45_LIKE_FULL_DOSE_PHOTONS, ScanProtocol, simulate_low_dose_volume

from .run_files import REPO_ROOT

TARGET_CACHE = REPO_ROOT / "runs" / "adaptation-synthetic-shift" / "target.npz"
ADAPT_SLICES, SCORE_SLICES = slice(0, 4), slice(4, 6)


def target_domain() -> tuple[np.ndarray, np.ndarray]:
    """(low-dose, noise-free reference) HU of the target phantom, simulated once and cached under runs/."""
    if TARGET_CACHE.is_file():
        with np.load(TARGET_CACHE) as cached:
            return cached["low"], cached["ref"]
    phantom, _ = make_abdomen_phantom(6, 512, 0.7, seed=1)
    protocol = ScanProtocol(dose_fraction=0.1, kernel="hann", full_dose_photons=D45_LIKE_FULL_DOSE_PHOTONS,
                            mode="regen")
    low, ref = simulate_low_dose_volume(phantom, 0.7, protocol, seed=1)
    TARGET_CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(TARGET_CACHE, low=low, ref=ref)
    return low, ref


def window_psnr(images: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean([row["psnr_display"] for row in per_slice_metrics(images, reference)]))


def time_to_fraction_of_gain(history: list[dict], seconds_per_step: float, base: float,
                             fraction: float = 0.8) -> float | None:
    """Seconds until the monitored PSNR first reaches ``fraction`` of the final gain over ``base``; None without a
    gain."""
    scored = [(row["step"], row["target_psnr"]) for row in history if "target_psnr" in row]
    if not scored or scored[-1][1] <= base:
        return None
    goal = base + fraction * (scored[-1][1] - base)
    step = next(step for step, value in scored if value >= goal)
    return step * seconds_per_step


def run(name: str, steps: int, overrides: dict, monitor_every: int = 0, device: str = "cpu") -> dict:
    """One adaptation (or supervised / control run) on the synthetic target, scored before and after."""
    low, ref = target_domain()
    model, _ = ModelRegistry().load(DEFAULT_MODEL)
    overrides = dict(overrides)
    supervised = overrides.pop("supervised", False)
    source = (low[ADAPT_SLICES], ref[ADAPT_SLICES]) if supervised else phantom_source_bank()

    def score(denoiser: torch.nn.Module) -> dict:
        return {"target_psnr": window_psnr(denoise_volume(denoiser, low[SCORE_SLICES], device=device),
                                           ref[SCORE_SLICES])}

    config = AdaptationConfig(steps=steps, device=device, **overrides)
    monitor_seconds = []

    def timed_score(denoiser: torch.nn.Module) -> dict:
        tic = time.perf_counter()
        scores = score(denoiser)
        monitor_seconds.append(time.perf_counter() - tic)
        return scores

    tic = time.perf_counter()
    result = adapt(model, [low[ADAPT_SLICES]], config, source=source, monitor=timed_score if monitor_every else None,
                   monitor_every=monitor_every)
    seconds = time.perf_counter() - tic - sum(monitor_seconds)
    history = result.history
    base = score(model)["target_psnr"]
    report = {"name": name, "steps": steps, "overrides": overrides, "supervised": supervised,
              "time_s": round(seconds), "steps_per_s": round(steps / seconds, 3),
              "input": round(window_psnr(low[SCORE_SLICES], ref[SCORE_SLICES]), 3),
              "base": round(base, 3), "adapted": round(score(result.model)["target_psnr"], 3),
              "reconstruction_first": history[0]["reconstruction"],
              "reconstruction_last10": float(np.mean([row["reconstruction"] for row in history[-10:]]))}
    if monitor_every:
        report["psnr_along_run"] = [(row["step"], round(row["target_psnr"], 3)) for row in history
                                    if "target_psnr" in row]
        report["time_to_80pct_gain_s"] = time_to_fraction_of_gain(history, seconds / steps, base)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("steps", type=int)
    parser.add_argument("overrides", nargs="?", default="{}", help="AdaptationConfig fields as JSON")
    parser.add_argument("--monitor-every", type=int, default=0, help="score the target every N steps (the time "
                                                                      "to 80 %% of the final gain needs it)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(run(args.name, args.steps, json.loads(args.overrides), args.monitor_every)))


if __name__ == "__main__":
    main()
