"""training/report_jobs.py's supervised jobs resume from their checkpoint: a source model takes hours of CPU, and a
session may stop at any time, so an interrupted job must end with the weights an uninterrupted one would have."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # the research code in training/ is not an installed package

from training import report_jobs  # noqa: E402
from training.report_domains import Series  # noqa: E402

SETTINGS = {"iterations": 6, "batch_size": 2, "patch_size": 16, "learning_rate": 3.0e-4, "min_learning_rate": 1.0e-5,
            "seed": 0}


def pairs() -> list[Series]:
    rng = np.random.default_rng(7)
    reference = np.full((3, 48, 48), -1000.0, np.float32)
    reference[:, 8:40, 8:40] = 40.0 + 20.0 * rng.standard_normal((3, 32, 32))
    low_dose = reference + 30.0 * rng.standard_normal(reference.shape).astype(np.float32)
    return [Series("test/P1", low_dose, reference, 0.7)]


class Stop(Exception):
    pass


def test_an_interrupted_supervised_job_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setattr(report_jobs, "CHECKPOINT_EVERY", 2)
    whole, _ = report_jobs.train_supervised_model(pairs(), SETTINGS, torch.device("cpu"))

    checkpoint = tmp_path / "checkpoints" / "job.pt"
    step = report_jobs.supervised_step

    def step_that_stops(network, optimizer, sampler, settings, iteration, device):
        if iteration == 5:  # killed during the sixth iteration: the last checkpoint holds four
            raise Stop
        return step(network, optimizer, sampler, settings, iteration, device)

    monkeypatch.setattr(report_jobs, "supervised_step", step_that_stops)
    with pytest.raises(Stop):
        report_jobs.train_supervised_model(pairs(), SETTINGS, torch.device("cpu"), checkpoint=checkpoint)
    assert torch.load(checkpoint, weights_only=False)["iteration"] == 4

    monkeypatch.setattr(report_jobs, "supervised_step", step)
    torch.manual_seed(123)  # the resumed run must restore the generators, not rely on the caller's
    resumed, info = report_jobs.train_supervised_model(pairs(), SETTINGS, torch.device("cpu"), checkpoint=checkpoint)
    assert info["iterations"] == 6
    for name, weight in whole.state_dict().items():
        assert torch.equal(weight, resumed.state_dict()[name]), name
