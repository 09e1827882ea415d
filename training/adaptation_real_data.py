"""The product's adaptation (phantom source pairs + unlabeled target scans) on real Mayo scans, scored against a
real full-dose reference, beside the extra-source-training control.

    python -m training.adaptation_real_data --steps 200 --method alignment '{"critic_scale_hu": 100}'

Defaults: adapt the shipped model to the unlabeled L109 scans (Definition Flash, B30, 100 kVp; no reference exists)
and score it on D45 patient L286, its own held-out domain: that measures harm, not gain. ``--target`` and
``--score`` pick other series, e.g. the B30 quarter-dose scans of L143 and L192 as target, scored on their own B30
pairs (the pure kernel shift D45 -> B30). Runs the adaptation with the method's settings and the given overrides
and, with ``--control``, the same run without the critic and without noise matching (source fine-tuning alone);
prints one JSON line.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from LDCTDenoiseLib.adaptation import ADAPTATION_METHODS, DEFAULT_METHOD, AdaptationConfig, adapt, method_settings
from LDCTDenoiseLib.adaptation import phantom_source_bank
from LDCTDenoiseLib.dicom_reader import read_series
from LDCTDenoiseLib.inference import denoise_volume
from LDCTDenoiseLib.metrics import per_slice_metrics
from LDCTDenoiseLib.model_registry import DEFAULT_MODEL, ModelRegistry

from .run_files import data_root

MAYO = data_root() / "mayo"
L109 = MAYO / "target_unlabeled" / "L109_QD_3mm_B30"
L286 = (MAYO / "paired" / "D45_3mm" / "L286" / "quarter", MAYO / "paired" / "D45_3mm" / "L286" / "full")


def window_psnr(model: torch.nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    rows = [row for low, full in pairs for row in per_slice_metrics(denoise_volume(model, low, device="cpu"), full)]
    return float(np.mean([row["psnr_display"] for row in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="?", default="{}", help="AdaptationConfig fields as JSON")
    parser.add_argument("--method", choices=tuple(ADAPTATION_METHODS), default=DEFAULT_METHOD)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--target", type=Path, nargs="+", default=[L109], help="unlabeled low-dose series")
    parser.add_argument("--every", type=int, default=8, help="use every N-th target slice (default %(default)s)")
    parser.add_argument("--score", type=Path, nargs=2, action="append", metavar=("LOW_DOSE", "FULL_DOSE"),
                        help="a pair of series to score on (repeatable; default Mayo D45 L286)")
    parser.add_argument("--control", action="store_true", help="also run without the alignment term")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = ModelRegistry().load(DEFAULT_MODEL)
    targets = [read_series(folder).hu[::args.every] for folder in args.target]
    pairs = [(read_series(low).hu, read_series(full).hu) for low, full in (args.score or [L286])]
    overrides = json.loads(args.overrides)
    runs = {"adapted": dict(method_settings(args.method), **overrides)}
    if args.control:
        runs["control"] = dict(runs["adapted"], adversarial_weight=0.0, match_target_noise=False)
    report = {"method": args.method, "overrides": overrides, "steps": args.steps,
              "target": [str(t) for t in args.target], "target_slices": [len(t) for t in targets],
              "score": [str(low) for low, _ in (args.score or [L286])],
              "base": round(window_psnr(model, pairs), 3)}
    for name, settings in runs.items():
        tic = time.perf_counter()
        result = adapt(model, targets, AdaptationConfig(steps=args.steps, device="cpu", **settings),
                       source=phantom_source_bank())
        report[name] = round(window_psnr(result.model, pairs), 3)
        report[f"{name}_time_s"] = round(time.perf_counter() - tic)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
