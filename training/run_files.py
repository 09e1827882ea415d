"""Files every training run keeps: atomic checkpoints, a CSV log and a loss-curve PNG."""

import csv
import os
import re
import subprocess
from pathlib import Path
from typing import Optional

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from LDCTDenoiseLib.atomic import atomic_file
from LDCTDenoiseLib.metrics import DISPLAY_WINDOW

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT_VARIABLE = "LDCTDENOISE_DATA"
DEFAULT_DATA_ROOT = "../shared/data"  # relative to the repository
# iterations between the checkpoints of the report's long jobs (about 4 minutes of a supervised CPCE on one CPU core)
CHECKPOINT_EVERY = 250


def slug(text: str) -> str:
    """A file-name-safe form of a label: lower case, runs of other characters as one hyphen."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def data_root(config: Optional[dict] = None) -> Path:
    """The team's data folder: ``$LDCTDENOISE_DATA`` when set, else the config's ``data_root`` (by default
    ``../shared/data``) relative to the repository. Configs and results keep the relative form, so they hold no
    machine's paths."""
    relative = (config or {}).get("data_root", DEFAULT_DATA_ROOT)
    return Path(os.environ.get(DATA_ROOT_VARIABLE) or REPO_ROOT / relative).resolve()


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a checkpoint through a temporary file so a killed run never leaves a truncated one."""
    with atomic_file(path) as temporary, open(temporary, "wb") as stream:
        torch.save(state, stream)  # a stream: torch would name the archive inside after the temporary file


def append_log(path: Path, row: dict) -> None:
    """Append one row to the run's CSV log, writing the header for a new file."""
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def plot_loss_curve(log_path: Path, png_path: Path, title: str) -> None:
    """Training loss (and validation PSNR when logged) against iterations."""
    rows = read_log(log_path)
    if not rows:
        return
    figure = Figure(figsize=(7, 3.5), dpi=120)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot(1, 1, 1)
    iterations = [int(row["iteration"]) for row in rows]
    axis.semilogy(iterations, [float(row["loss"]) for row in rows], lw=0.8, label="training loss (MSE, normalised)")
    axis.set_xlabel("iteration")
    axis.set_ylabel("loss")
    validated = [(int(row["iteration"]), float(row["val_psnr_display"])) for row in rows if row.get("val_psnr_display")]
    if validated:
        other = axis.twinx()
        low, high = DISPLAY_WINDOW
        other.plot(*zip(*validated), "o-", color="tab:red", label=f"validation PSNR [{low:g}, {high:g}] HU")
        other.set_ylabel("validation PSNR (dB)", color="tab:red")
    axis.set_title(title)
    figure.tight_layout()
    with atomic_file(png_path) as temporary:
        figure.savefig(temporary, format="png")


def git_commit() -> str:
    """The repository commit the run used (with '+dirty' when the tree had changes), for the model card."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
