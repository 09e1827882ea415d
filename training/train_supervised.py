"""Supervised CPCE-2D training on paired low-dose / normal-dose CT, and shipping the result with its model card.

    python -m training.train_supervised --config training/configs/cpce2d_mayo_d45.yaml

Resumes from the run folder's checkpoint when there is one; Ctrl-C or a killed session loses at most
``checkpoint_every`` iterations.
"""

import argparse
import math
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.inference import denoise_volume
from LDCTDenoiseLib.metrics import per_slice_metrics, summarize
from LDCTDenoiseLib.model_registry import save_model
from LDCTDenoiseLib.normalization import hu_to_model

from .paired_data import BodyPatchSampler, PairedVolume, load_pair
from .run_files import REPO_ROOT, append_log, git_commit, plot_loss_curve, save_checkpoint


def load_config(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_split(config: dict, split: str) -> list[PairedVolume]:
    """Read the pairs of one split; the data root is resolved from the repository root."""
    data_root = (REPO_ROOT / config["data_root"]).resolve()
    if not data_root.is_dir():
        sys.exit(f"Training data not found at {data_root} (the team's ../shared/data); nothing to train on.")
    return [load_pair(data_root / item["low_dose"], data_root / item["normal_dose"], item["patient"])
            for item in config[split]]


def learning_rate(config: dict, iteration: int) -> float:
    """Cosine decay from ``learning_rate`` to ``min_learning_rate`` over the run."""
    progress = iteration / max(config["iterations"], 1)
    low, high = config["min_learning_rate"], config["learning_rate"]
    return low + 0.5 * (high - low) * (1 + math.cos(math.pi * progress))


def evaluate(model: CPCE2D, volumes: list[PairedVolume]) -> dict:
    """Per-slice metrics of the model and of the low-dose input against normal dose, as mean and SD."""
    rows = {"model": [], "low_dose_input": []}
    for volume in volumes:
        rows["model"] += per_slice_metrics(denoise_volume(model, volume.low_dose, device="cpu"), volume.normal_dose)
        rows["low_dose_input"] += per_slice_metrics(volume.low_dose, volume.normal_dose)
    result = {}
    for method, slices in rows.items():
        result[method] = {}
        for key in (key for key in slices[0] if key != "slice"):
            mean, sd = summarize([row[key] for row in slices])
            result[method][key] = {"mean": round(mean, 4), "sd": round(sd, 4)}
    result["slices"] = len(rows["model"])
    return result


def train(config: dict, config_path: Path, command: str) -> Path:
    torch.set_num_threads(config.get("threads", 2))
    commit = git_commit()  # the code this run starts from; the tree may change while it trains
    run_dir = REPO_ROOT / config["output_dir"]
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path, log_path = run_dir / "checkpoint.pt", run_dir / "log.csv"
    torch.manual_seed(config["seed"])
    rng = np.random.default_rng(config["seed"])
    train_volumes, validation_volumes = load_split(config, "train"), load_split(config, "validation")
    sampler = BodyPatchSampler(train_volumes, config["patch_size"], rng)
    model = CPCE2D()
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    start, elapsed = 0, 0.0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        start, elapsed = state["iteration"], state["elapsed_s"]
        print(f"Resuming {config['name']} at iteration {start}.")
    loss_function = torch.nn.MSELoss()
    model.train()
    progress = tqdm(range(start, config["iterations"]), initial=start, total=config["iterations"],
                    desc=config["name"], unit="it", dynamic_ncols=True)
    tic = time.perf_counter()
    for iteration in progress:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, iteration)
        low, normal = sampler.sample(config["batch_size"])
        prediction = model(torch.from_numpy(hu_to_model(low)))
        loss = loss_function(prediction, torch.from_numpy(hu_to_model(normal)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done = iteration + 1
        row = {"iteration": done, "loss": f"{loss.item():.6e}", "lr": f"{optimizer.param_groups[0]['lr']:.3e}",
               "val_psnr_display": ""}
        if done % config["validate_every"] == 0 or done == config["iterations"]:
            model.eval()
            scores = evaluate(model, validation_volumes)
            model.train()
            row["val_psnr_display"] = f"{scores['model']['psnr_display']['mean']:.3f}"
            progress.set_postfix(loss=f"{loss.item():.2e}", val_psnr=row["val_psnr_display"])
        append_log(log_path, row)
        if done % config["checkpoint_every"] == 0 or done == config["iterations"]:
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                             "iteration": done, "elapsed_s": elapsed + time.perf_counter() - tic}, checkpoint_path)
            plot_loss_curve(log_path, run_dir / "loss_curve.png", config["name"])
    elapsed += time.perf_counter() - tic
    model.eval()
    validation = evaluate(model, validation_volumes)
    card = {
        "name": config["name"],
        "description": config["description"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "training": {
            "code": "training/train_supervised.py",
            "config": str(config_path.relative_to(REPO_ROOT)) if config_path.is_relative_to(REPO_ROOT) else str(
                config_path),
            "git_commit": commit,
            "data": "AAPM/Mayo Clinic 2016 Low-Dose CT Grand Challenge (TCIA LDCT-and-Projection-data, "
                    "doi:10.7937/9NPB-2637), quarter-dose / full-dose pairs",
            "domains": [config["domain"]],
            "split": {split: [item["patient"] for item in config[split]] for split in ("train", "validation")},
            "split_by": "patient",
            "pairs": {"train": int(sum(v.low_dose.shape[0] for v in train_volumes)),
                      "validation": int(sum(v.low_dose.shape[0] for v in validation_volumes))},
            "patch_size": config["patch_size"], "patch_sampling": "centres inside the body (> -500 HU), flips and "
                                                                  "90-degree rotations",
            "batch_size": config["batch_size"], "iterations": config["iterations"],
            "optimizer": f"Adam, lr {config['learning_rate']} cosine to {config['min_learning_rate']}",
            "seed": config["seed"], "threads": config.get("threads", 2), "device": "cpu",
            "wall_time_s": round(elapsed, 1),
        },
        "losses": {"mse": 1.0},
        "validation": {
            "patients": [item["patient"] for item in config["validation"]],
            "conventions": "per-slice PSNR/SSIM on [-160, 240] HU (data range 400) and [-1024, 3072] HU (data range "
                           "4096); SSIM Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03; RMSE in HU; whole 512x512 "
                           "slices; mean and SD over slices",
            **validation,
        },
        "command": command,
    }
    card_path = save_model(model, card, REPO_ROOT / config["ship_to"])
    print(f"Shipped {card_path}")
    for method in ("low_dose_input", "model"):
        scores = validation[method]
        print(f"  {method:15s} PSNR {scores['psnr_display']['mean']:.2f} ± {scores['psnr_display']['sd']:.2f} dB, "
              f"SSIM {scores['ssim_display']['mean']:.4f} ± {scores['ssim_display']['sd']:.4f} (window); "
              f"RMSE {scores['rmse']['mean']:.1f} HU")
    return card_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="YAML experiment config")
    parser.add_argument("--iterations", type=int,
                        help="override the config's iteration count for a quick check: the run then goes to "
                             "<output_dir>-quick and its model stays there instead of being shipped")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.iterations:
        config["iterations"] = args.iterations
        config["output_dir"] = config["ship_to"] = config["output_dir"] + "-quick"
    command = "python -m training.train_supervised " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    train(config, args.config.resolve(), command)


if __name__ == "__main__":
    main()
