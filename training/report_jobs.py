"""The report's training jobs: supervised, self-supervised and adapted CPCE-2D models, each cached as one file.

A job is a small JSON-ready dict; :func:`job_path` names its output from its content, so a job that already ran is
never run again and an interrupted report resumes where it stopped. Jobs run in separate processes (``--jobs``); each
writes its weights and a description atomically.
"""

import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from LDCTDenoiseLib.adaptation import AdaptationConfig, adapt
from LDCTDenoiseLib.adaptation.patches import BodyPatchSampler
from LDCTDenoiseLib.atomic import atomic_file
from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.inference import select_device
from LDCTDenoiseLib.model_registry import ModelRegistry

from . import product_runs
from .report_domains import Series, load_domains
from .self_supervised import train_blind_spot
from .run_files import CHECKPOINT_EVERY, data_root, save_checkpoint, slug
from .train_supervised import supervised_step


def job_path(run_dir: Path, job: dict) -> Path:
    """Where a job's weights go: ``models/<kind>__<what>.pt`` (its description beside it as ``.json``). An adaptation
    run's name ends in a hash of its settings, so changing a method's settings cannot reuse a stale model."""
    if job["kind"] == "shipped":
        return run_dir / "models" / f"shipped__{job['model']}.pt"
    if job["kind"] == "product":
        return run_dir / "models" / f"product__{product_runs.run_name(job)}.pt"
    if job["kind"] in ("supervised", "self_supervised"):
        what = "+".join(slug(key) for key in job["series"])
        what += f"__from-{job['init']}-lr{job['learning_rate']:g}" if job.get("init") else ""
        what += f"__radius{job['radius']}" if job.get("radius") is not None else ""
        what += f"__{job['iterations']}it"
    else:
        settings = json.dumps({key: job[key] for key in ("start", "source", "target", "overrides")}, sort_keys=True)
        what = (f"{slug(job['direction'])}__{job['variant']}__seed{job['seed']}__{job['steps']}steps__"
                f"{hashlib.sha256(settings.encode()).hexdigest()[:8]}")
    return run_dir / "models" / f"{job['kind']}__{what}.pt"


def source_job(direction: dict, config: dict) -> dict:
    """The job that trains a report direction's source-only CPCE from scratch on its source pairs."""
    return {"kind": "supervised", "series": direction["source"], "iterations": config["supervised"]["iterations"]}


def source_only(direction: dict, config: dict) -> dict:
    """A direction's source-only model: the shipped model its ``source_model`` names (trained on exactly its source
    pairs), else :func:`source_job`."""
    if direction.get("source_model"):
        return {"kind": "shipped", "model": direction["source_model"]}
    return source_job(direction, config)


def start_of(source: dict) -> tuple[str, bool]:
    """How an adaptation job names the model it starts from: (the shipped model's name, True), or (its path relative
    to the run folder, False)."""
    if source["kind"] == "shipped":
        return source["model"], True
    return str(job_path(Path(), source)), False


def _stack(series: list[Series], labelled: bool) -> list[tuple[np.ndarray, ...]]:
    return [(item.low_dose, item.reference) if labelled else (item.low_dose,) for item in series]


def train_supervised_model(series: list[Series], settings: dict, device: torch.device,
                           start: CPCE2D | None = None, checkpoint: Path | None = None) -> tuple[CPCE2D, dict]:
    """CPCE-2D with MSE on the pairs of ``series``, with the shipped model's recipe (Adam, cosine decay); from
    ``start``'s weights when given (fine-tuning), else from scratch.

    The step is :func:`train_supervised.supervised_step`; patches come from the engine's body sampler (centres in
    the body of the normal-dose image, flips, rotations) drawn slice by slice, as the report's results were.
    With ``checkpoint``, the state (weights, optimiser, and the sampler's generator, the only randomness once the
    weights are initialised) is saved there every ``CHECKPOINT_EVERY`` iterations and a run resumes from it: a
    6,000-iteration model takes hours on a CPU, and the resumed run ends with the weights an uninterrupted one
    would have.
    """
    torch.manual_seed(settings["seed"])
    rng = np.random.default_rng(settings["seed"])
    sampler = BodyPatchSampler(_stack(series, True), settings["patch_size"], rng, body_from=1)
    network = (start if start is not None else CPCE2D()).to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=settings["learning_rate"])
    first, elapsed = 0, 0.0
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["numpy_rng"]
        first, elapsed = state["iteration"], state["elapsed_s"]
        print(f"Resuming {checkpoint.stem} at iteration {first}.", flush=True)
    tic = time.perf_counter()
    for iteration in range(first, settings["iterations"]):
        loss = supervised_step(network, optimizer, sampler, settings, iteration, device)
        done = iteration + 1
        if checkpoint is not None and done % CHECKPOINT_EVERY == 0 and done < settings["iterations"]:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint({"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                             "numpy_rng": rng.bit_generator.state,
                             "iteration": done, "elapsed_s": elapsed + time.perf_counter() - tic}, checkpoint)
    return network.cpu().eval(), {"iterations": settings["iterations"], "final_loss": float(loss.item()),
                                  "wall_time_s": round(elapsed + time.perf_counter() - tic, 1)}


def _load_model(path: Path) -> CPCE2D:
    network = CPCE2D()
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return network.eval()


def shipped_model(name: str) -> CPCE2D:
    """A model the product ships (its card's checksum verified), e.g. the D45 source-only model."""
    return ModelRegistry().load(name)[0].cpu().eval()


def run_job(job: dict, config: dict, run_dir: Path, device_name: str, threads: int) -> str:
    """Run one job unless its output exists; returns the output path."""
    path = job_path(run_dir, job)
    if path.is_file():
        return str(path)
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message="No VGG-19 weights file given")
    device = select_device(device_name)
    domains = load_domains(run_dir, data_root(config), config["normal_dose_every"])
    tic = time.perf_counter()
    if job["kind"] == "shipped":
        model, info = shipped_model(job["model"]), {"shipped": job["model"]}
    elif job["kind"] == "supervised":
        settings = dict(config["supervised"], iterations=job["iterations"])
        if job.get("init"):  # fine-tuning: from a lower peak rate down to a tenth of it
            settings.update(learning_rate=job["learning_rate"], min_learning_rate=job["learning_rate"] / 10)
        start = shipped_model(job["init"]) if job.get("init") else None
        checkpoint = run_dir / "checkpoints" / path.name
        model, info = train_supervised_model([domains[key] for key in job["series"]], settings, device, start,
                                             checkpoint)
    elif job["kind"] == "self_supervised":
        checkpoint = run_dir / "checkpoints" / path.name
        model, info = train_blind_spot([domains[key].low_dose for key in job["series"]], job["iterations"],
                                       device=str(device), radius=job["radius"],
                                       seed=config["supervised"]["seed"], checkpoint=checkpoint)
    elif job["kind"] == "product":
        model, info = product_runs.train(job, start_model(run_dir, job), [domains[key] for key in job["target"]],
                                         str(device))
    else:
        start = start_model(run_dir, job)
        source = None
        if job["source"]:
            pairs = [domains[key] for key in job["source"]]
            source = (np.concatenate([item.low_dose for item in pairs]),
                      np.concatenate([item.reference for item in pairs]))
        settings = dict(config["adaptation"], **job["overrides"], steps=job["steps"], seed=job["seed"],
                        device=str(device), name=path.stem)
        result = adapt(start, [domains[key].low_dose for key in job["target"]], AdaptationConfig(**settings),
                       source=source)
        model = result.model
        info = {"card": result.card, "last_losses": result.history[-1]}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    info.update(job=job, device=f"{device} ({device_name}, threads: {threads})", torch=torch.__version__,
                seconds=round(time.perf_counter() - tic, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as temporary:  # the weights last: a job counts as done only when they are there
        with open(temporary, "wb") as stream:  # a stream: torch would name the archive after the temporary file
            torch.save(model.state_dict(), stream)
        path.with_suffix(".json").write_text(json.dumps(info, indent=1, default=str))
    if job["kind"] in ("supervised", "self_supervised"):
        checkpoint.unlink(missing_ok=True)
    return str(path)


def start_model(run_dir: Path, job: dict) -> CPCE2D:
    """The model an adaptation job starts from."""
    return shipped_model(job["start"]) if job["start_shipped"] else _load_model(run_dir / job["start"])


def load_job_model(run_dir: Path, job: dict) -> CPCE2D:
    return shipped_model(job["model"]) if job["kind"] == "shipped" else _load_model(job_path(run_dir, job))


def job_card(run_dir: Path, job: dict) -> dict:
    """An adaptation job's model card, as the engine wrote it."""
    return json.loads(job_path(run_dir, job).with_suffix(".json").read_text(encoding="utf-8"))["card"]


def delivered_model(run_dir: Path, job: dict) -> CPCE2D:
    """What the product hands the user after a product run: the adapted model when the gain gate kept it, else the
    model it started from."""
    if job["kind"] == "product" and product_runs.kept(job_card(run_dir, job)) == "start":
        return start_model(run_dir, job)
    return load_job_model(run_dir, job)
