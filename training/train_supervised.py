"""Supervised CPCE-2D training on paired low-dose / normal-dose CT, and shipping the result with its model card.

One process (on the CPU, as the shipped model was trained):

    python -m training.train_supervised --config training/configs/cpce2d_mayo_d45.yaml

Several processes with PyTorch DistributedDataParallel, launched by ``torchrun``: two CPU processes (backend
gloo), or N GPUs of one machine (backend nccl, process k on GPU ``LOCAL_RANK`` k; N = 1 is how to train on one GPU):

    torchrun --standalone --nproc_per_node 2 -m training.train_supervised --config training/configs/cpce2d_mayo_d45.yaml
    torchrun --standalone --nproc_per_node N -m training.train_supervised --config ...

``batch_size`` in the config is the global batch. Every process draws the same global batch from the same seeded
generator and trains on its own contiguous 1/N of it (so it must divide by N); DDP averages the gradients, so a
step on N processes is the one-process step up to float rounding and the result does not depend on N. Only
process 0 writes the log, checkpoints, loss curve, validation and the shipped model.

Resumes from the run folder's checkpoint when there is one, with any number of processes; Ctrl-C or a killed
session loses at most ``checkpoint_every`` iterations.
"""

import argparse
import copy
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from LDCTDenoiseLib.adaptation.patches import BODY_THRESHOLD_HU, BodyPatchSampler
from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.inference import denoise_volume
from LDCTDenoiseLib.metrics import DISPLAY_WINDOW, per_slice_metrics, summarize
from LDCTDenoiseLib.model_registry import save_model
from LDCTDenoiseLib.normalization import hu_to_model

from .paired_data import PairedVolume, load_packed_pair, load_pair
from .run_files import REPO_ROOT, append_log, data_root, git_commit, plot_loss_curve, save_checkpoint


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes: rank 0 of 1 on the CPU unless torchrun started it."""

    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_processes() -> Processes:
    """Join the torchrun process group (nccl on this process's GPU when there is CUDA, gloo on the CPU otherwise).

    Without torchrun (no ``WORLD_SIZE`` in the environment) nothing is initialised and training runs as one CPU
    process, exactly as before DDP existed.
    """
    if "WORLD_SIZE" not in os.environ:
        return Processes()
    if not dist.is_available():
        sys.exit("This torch build has no torch.distributed: run without torchrun, as one process.")
    missing = [name for name in ("RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
               if name not in os.environ]
    if missing:
        sys.exit(f"WORLD_SIZE is set but {', '.join(missing)} not: start several processes with torchrun.")
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_WORLD_SIZE"]), device)


def local_share(batch_size: int, processes: Processes) -> slice:
    """This process's contiguous share of the global batch; every process gets the same number of patches."""
    if batch_size % processes.world_size:
        raise ValueError(f"batch_size {batch_size} (the global batch) does not divide among "
                         f"{processes.world_size} processes; choose a multiple of {processes.world_size}.")
    share = batch_size // processes.world_size
    return slice(processes.rank * share, (processes.rank + 1) * share)


def mean_over_processes(value: torch.Tensor, processes: Processes) -> float:
    """The global batch's loss: the mean of the processes' losses, which cover equal shares of the batch."""
    if processes.world_size > 1:
        value = value.detach().clone()
        dist.all_reduce(value)  # gloo has no AVG, so sum and divide
        value /= processes.world_size
    return value.item()


def launch_command(processes: Processes) -> str:
    """How this run was started, for the model card."""
    if "WORLD_SIZE" not in os.environ:
        return "python -m training.train_supervised"
    nodes = processes.world_size // processes.local_world_size
    return (f"torchrun {f'--nnodes {nodes} ' if nodes > 1 else ''}--nproc_per_node {processes.local_world_size} "
            f"-m training.train_supervised")


def load_config(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def load_split(config: dict, split: str) -> list[PairedVolume]:
    """Read the pairs of one split: from the config's ``pack`` file when set (integer-HU arrays keyed by folder, e.g.
    the report's ``runs/report/mayo.npz``, for a machine without the DICOM data), else from the data root.

    Items given as ``series: <domain>/<patient>`` are the evaluation report's series instead (real Mayo pairs and the
    simulated domains S, LS and VL, ``training/report_domains.py``), read from and cached in ``series_cache``, so a
    model trained on them sees exactly the slices the report scores with the same patient split.
    """
    with_series = ["series" in item for item in config[split]]
    if any(with_series) and not all(with_series):
        sys.exit(f"The {split} items of the config mix 'series:' items with folder items; give all of them one way.")
    if any(with_series):
        from .report_domains import load_domains

        domains = load_domains(REPO_ROOT / config["series_cache"], data_root(config),
                               config["normal_dose_every"])
        return [PairedVolume(item["patient"], domains[item["series"]].low_dose, domains[item["series"]].reference,
                             domains[item["series"]].pixel_mm) for item in config[split]]
    if config.get("pack"):
        with np.load(REPO_ROOT / config["pack"]) as stored:
            pack = {key: stored[key] for key in stored.files}
        return [load_packed_pair(pack, item["low_dose"], item["normal_dose"], item["patient"])
                for item in config[split]]
    root = data_root(config)
    if not root.is_dir():
        sys.exit(f"Training data not found at {root} (the team's ../shared/data, or $LDCTDENOISE_DATA); nothing to "
                 f"train on.")
    return [load_pair(root / item["low_dose"], root / item["normal_dose"], item["patient"])
            for item in config[split]]


def learning_rate(config: dict, iteration: int) -> float:
    """Cosine decay from ``learning_rate`` to ``min_learning_rate`` over the run."""
    progress = iteration / max(config["iterations"], 1)
    low, high = config["min_learning_rate"], config["learning_rate"]
    return low + 0.5 * (high - low) * (1 + math.cos(math.pi * progress))


def paired_sampler(volumes: list[PairedVolume], config: dict, rng: np.random.Generator) -> BodyPatchSampler:
    """Patches of the pairs (low dose, normal dose) centred in the normal-dose body, each series equally likely when
    the config's ``balance_series`` says so; drawn from a list of every centre, the draw the shipped models used."""
    empty = [volume.patient for volume in volumes if not (volume.normal_dose > BODY_THRESHOLD_HU).any()]
    if empty:
        raise ValueError(f"No body pixels to sample patches from in {', '.join(empty)}.")
    return BodyPatchSampler([(volume.low_dose, volume.normal_dose) for volume in volumes], config["patch_size"], rng,
                            body_from=1, balance_stacks=config.get("balance_series", False), listed=True)


def supervised_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sampler: BodyPatchSampler, config: dict,
                    iteration: int, device: torch.device, share: slice = slice(None)) -> torch.Tensor:
    """One step of the supervised recipe: the cosine learning rate, a batch of body patches (this process's
    ``share`` of it), MSE in the network's units, Adam. Returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, iteration)
    low, normal = (torch.from_numpy(hu_to_model(patches[share])).to(device)
                   for patches in sampler.sample(config["batch_size"]))
    loss = torch.nn.functional.mse_loss(model(low), normal)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def evaluate(model: CPCE2D, volumes: list[PairedVolume], device: torch.device) -> dict:
    """Per-slice metrics of the model and of the low-dose input against normal dose, as mean and SD.

    Works on a copy: ``denoise_volume`` switches the model to eval mode and, on a GPU, to channels-last memory,
    neither of which may touch the weights being trained.
    """
    model = copy.deepcopy(model)
    rows = {"model": [], "low_dose_input": []}
    for volume in volumes:
        rows["model"] += per_slice_metrics(denoise_volume(model, volume.low_dose, device=device), volume.normal_dose)
        rows["low_dose_input"] += per_slice_metrics(volume.low_dose, volume.normal_dose)
    result = {}
    for method, slices in rows.items():
        result[method] = {}
        for key in (key for key in slices[0] if key != "slice"):
            mean, sd = summarize([row[key] for row in slices])
            result[method][key] = {"mean": round(mean, 4), "sd": round(sd, 4)}
    result["slices"] = len(rows["model"])
    return result


def train(config: dict, config_path: Path, command: str, processes: Processes = Processes()) -> Path | None:
    """Train (and on process 0 log, checkpoint, validate and ship); returns the shipped card's path on process 0."""
    mine = local_share(config["batch_size"], processes)
    # The config's threads are this machine's budget: processes that share the machine split it, because
    # oversubscribed cores slow every process down and each step waits for the slowest at the gradient all-reduce.
    threads = max(1, config.get("threads", 2) // processes.local_world_size)
    torch.set_num_threads(threads)
    commit = git_commit()  # the code this run starts from; the tree may change while it trains
    run_dir = REPO_ROOT / config["output_dir"]
    checkpoint_path, log_path = run_dir / "checkpoint.pt", run_dir / "log.csv"
    if processes.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config["seed"])
    # The same seed on every process: all draw the same global batches and keep their own share of each.
    rng = np.random.default_rng(config["seed"])
    train_volumes = load_split(config, "train")
    validation_volumes = load_split(config, "validation") if processes.is_main else []
    sampler = paired_sampler(train_volumes, config, rng)
    network = CPCE2D().to(processes.device)
    optimizer = torch.optim.Adam(network.parameters(), lr=config["learning_rate"])
    start, elapsed = 0, 0.0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        start, elapsed = state["iteration"], state["elapsed_s"]
        if processes.is_main:
            print(f"Resuming {config['name']} at iteration {start}.")
    model = network
    if processes.world_size > 1:
        device_ids = [processes.device] if processes.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
    model.train()
    progress = tqdm(range(start, config["iterations"]), initial=start, total=config["iterations"],
                    desc=config["name"], unit="it", dynamic_ncols=True, disable=not processes.is_main)
    tic = time.perf_counter()
    for iteration in progress:
        loss = supervised_step(model, optimizer, sampler, config, iteration, processes.device, mine)
        batch_loss = mean_over_processes(loss, processes)
        if not processes.is_main:
            continue  # the others wait for process 0's logging and validation in the next gradient all-reduce
        done = iteration + 1
        row = {"iteration": done, "loss": f"{batch_loss:.6e}", "lr": f"{optimizer.param_groups[0]['lr']:.3e}",
               "val_psnr_display": ""}
        if done % config["validate_every"] == 0 or done == config["iterations"]:
            scores = evaluate(network, validation_volumes, processes.device)
            row["val_psnr_display"] = f"{scores['model']['psnr_display']['mean']:.3f}"
            progress.set_postfix(loss=f"{batch_loss:.2e}", val_psnr=row["val_psnr_display"])
        append_log(log_path, row)
        if done % config["checkpoint_every"] == 0 or done == config["iterations"]:
            save_checkpoint({"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                             "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                             "iteration": done, "elapsed_s": elapsed + time.perf_counter() - tic}, checkpoint_path)
            plot_loss_curve(log_path, run_dir / "loss_curve.png", config["name"])
    if not processes.is_main:
        return None
    elapsed += time.perf_counter() - tic
    validation = evaluate(network, validation_volumes, processes.device)
    card = {
        "name": config["name"],
        "description": config["description"],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "training": {
            "code": "training/train_supervised.py",
            "config": str(config_path.relative_to(REPO_ROOT)) if config_path.is_relative_to(REPO_ROOT) else str(
                config_path),
            "git_commit": commit,
            "data": config.get("data", "AAPM/Mayo Clinic 2016 Low-Dose CT Grand Challenge (TCIA "
                                       "LDCT-and-Projection-data, doi:10.7937/9NPB-2637), quarter-dose / full-dose "
                                       "pairs"),
            "domains": config.get("domains", [config.get("domain")]),
            "split": {split: sorted({item["patient"] for item in config[split]}) for split in ("train", "validation")},
            "series": {split: [item.get("series", item["patient"]) for item in config[split]]
                       for split in ("train", "validation")},
            "split_by": "patient",
            "pairs": {"train": int(sum(v.low_dose.shape[0] for v in train_volumes)),
                      "validation": int(sum(v.low_dose.shape[0] for v in validation_volumes))},
            "patch_size": config["patch_size"],
            "patch_sampling": "centres inside the body (> -500 HU), flips and 90-degree rotations"
                              + ("; each series equally likely" if config.get("balance_series") else ""),
            "batch_size": config["batch_size"], "iterations": config["iterations"],
            "optimizer": f"Adam, lr {config['learning_rate']} cosine to {config['min_learning_rate']}",
            "seed": config["seed"], "processes": processes.world_size, "threads": threads,
            "device": processes.device.type,
            "wall_time_s": round(elapsed, 1),
        },
        "losses": {"mse": 1.0},
        "validation": {
            "patients": sorted({item["patient"] for item in config["validation"]}),
            "per_series": {item.get("series", item["patient"]): evaluate(network, [volume], processes.device)["model"]
                           for item, volume in zip(config["validation"], validation_volumes)},
            "conventions": f"per-slice PSNR/SSIM on [{DISPLAY_WINDOW[0]:g}, {DISPLAY_WINDOW[1]:g}] HU (data range "
                           f"{DISPLAY_WINDOW[1] - DISPLAY_WINDOW[0]:g}) and [-1024, 3072] HU (data range "
                           "4096); SSIM Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03; RMSE in HU; whole 512x512 "
                           "slices; mean and SD over slices",
            **validation,
        },
        "command": command,
    }
    card_path = save_model(network, card, REPO_ROOT / config["ship_to"])
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
    parser.add_argument("--pack", type=Path, help="read the series from this file of arrays keyed by folder "
                                                  "(python -m training.report writes one: runs/report/mayo.npz) "
                                                  "instead of the DICOM data root")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.pack:
        config["pack"] = str(args.pack.resolve())
    if args.iterations:
        config["iterations"] = args.iterations
        config["output_dir"] = config["ship_to"] = config["output_dir"] + "-quick"
    processes = start_processes()
    command = launch_command(processes) + " " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    distributed = dist.is_available() and dist.is_initialized()
    try:
        train(config, args.config.resolve(), command, processes)
        if distributed:
            # The other processes return right after the last step while process 0 validates and saves; one that
            # destroyed the process group meanwhile sometimes aborted in gloo's teardown ("terminate called without
            # an active exception", exit -6). They all leave together instead.
            dist.barrier()
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
