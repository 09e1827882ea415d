"""How much the product's adaptation (phantom source pairs + unlabeled target) moves the shipped model on its own,
labelled source domain: adapt to unlabeled L109 (Definition Flash, B30, 100 kVp) and measure Mayo D45 L286.

    python -m training.adaptation_source_drift --steps 100 '{"adversarial_weight": 0.05}'

L286 is not the target, so this measures harm, not gain: a model that keeps its D45 accuracy while adapting is the
"does no harm" half of the evaluation. Prints the loss terms every tenth of the run and the window PSNR before/after.
"""

import argparse
import json
import time

import numpy as np
import torch

from LDCTDenoiseLib.adaptation import AdaptationConfig, adapt, phantom_source_bank
from LDCTDenoiseLib.dicom_reader import read_series
from LDCTDenoiseLib.inference import denoise_volume
from LDCTDenoiseLib.metrics import per_slice_metrics
from LDCTDenoiseLib.model_registry import DEFAULT_MODEL, ModelRegistry

from .run_files import REPO_ROOT

DATA = REPO_ROOT.parent / "shared" / "data" / "mayo"


def window_psnr(model: torch.nn.Module, low_dose: np.ndarray, full_dose: np.ndarray) -> float:
    rows = per_slice_metrics(denoise_volume(model, low_dose, device="cpu"), full_dose)
    return float(np.mean([row["psnr_display"] for row in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="?", default="{}", help="AdaptationConfig fields as JSON")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = ModelRegistry().load(DEFAULT_MODEL)
    target = read_series(DATA / "target_unlabeled" / "L109_QD_3mm_B30").hu[::8][:12]
    low = read_series(DATA / "paired" / "D45_3mm" / "L286" / "quarter").hu
    full = read_series(DATA / "paired" / "D45_3mm" / "L286" / "full").hu
    config = AdaptationConfig(steps=args.steps, device="cpu", **json.loads(args.overrides))
    tic = time.perf_counter()
    result = adapt(model, [target], config, source=phantom_source_bank())
    print(f"{args.overrides}: {args.steps} steps in {time.perf_counter() - tic:.0f} s")
    for row in result.history[::max(1, args.steps // 10)]:
        print(row["step"], {key: f"{value:.2e}" for key, value in row.items() if key != "step"})
    print(f"L286 D45 window PSNR: {DEFAULT_MODEL} {window_psnr(model, low, full):.2f} dB, adapted "
          f"{window_psnr(result.model, low, full):.2f} dB")


if __name__ == "__main__":
    main()
