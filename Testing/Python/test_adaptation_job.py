"""The adaptation as a background job (LDCTDenoiseLib.adaptation.job), run as a real separate Python process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from dicom_factory import phantom_hu
from LDCTDenoiseLib.adaptation import job as job_module
from LDCTDenoiseLib.adaptation.adapt import AdaptationConfig, method_settings, used_loss_terms
from LDCTDenoiseLib.adaptation.job import CANCEL_FILE, EventReader, prepare_job, request_cancel
from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.errors import LDCTDenoiseError
from LDCTDenoiseLib.figure import loss_curve
from LDCTDenoiseLib.model_registry import ModelRegistry, save_model


@pytest.fixture
def profile(tmp_path, monkeypatch):
    torch.manual_seed(0)
    save_model(CPCE2D(), {"name": "tiny", "description": "test profile", "training": {}, "losses": {"mse": 1.0},
                          "validation": {}, "command": "pytest"}, tmp_path / "profiles")
    monkeypatch.setenv("LDCTDENOISE_PROFILES_DIR", str(tmp_path / "profiles"))
    return "tiny"


def run_job(job_dir):
    """The job exactly as the Slicer panel starts it (there with PythonSlicer, here with this interpreter)."""
    return subprocess.run([sys.executable, "-m", "LDCTDenoiseLib.adaptation.job", str(job_dir)], capture_output=True,
                          text=True, timeout=300, env=os.environ.copy())


def events_of(stdout: str) -> list[dict]:
    reader = EventReader()
    return reader.feed(stdout)


def test_event_reader_reassembles_lines_split_across_reads_and_keeps_other_output():
    reader = EventReader()
    assert reader.feed('{"event": "step", "st') == []
    assert reader.feed('ep": 1}\nsome warning\n{"event": "do') == [{"event": "step", "step": 1}]
    assert reader.feed('ne"}\n') == [{"event": "done"}]
    assert reader.log == ["some warning"]


@pytest.mark.parametrize("name, base, settings, message", [
    ("tiny", "tiny", {}, "already exists"),
    ("../evil", "tiny", {}, "must be 1-64 letters"),
    ("new", "no-such-model", {}, "no-such-model"),
    ("new", "tiny", {"stpes": 3}, "Unknown adaptation setting"),
    ("new", "tiny", {"mask": "round"}, "mask='round'"),
])
def test_prepare_job_refuses_bad_requests_before_anything_runs(profile, tmp_path, name, base, settings, message):
    with pytest.raises(LDCTDenoiseError, match=message):
        prepare_job(tmp_path / "job", [phantom_hu(2, 64)], name, base, settings)
    assert not (tmp_path / "job").exists()


def test_prepare_job_refuses_a_target_with_nan_or_too_small_slices(profile, tmp_path):
    volume = phantom_hu(2, 64)
    volume[0, 3, 3] = np.nan
    with pytest.raises(LDCTDenoiseError, match="NaN"):
        prepare_job(tmp_path / "job", [volume], "new", "tiny")
    with pytest.raises(LDCTDenoiseError, match="40 x 40 px, smaller than the 64 px"):
        prepare_job(tmp_path / "job", [phantom_hu(2, 40)], "new", "tiny")
    assert not (tmp_path / "job").exists()


@pytest.mark.slow
def test_job_reports_every_step_and_saves_the_profile(profile, tmp_path, monkeypatch, source_bank_cache):
    monkeypatch.setenv("LDCTDENOISE_CACHE_DIR", str(source_bank_cache))
    target = phantom_hu(3, 72)
    before = target.copy()
    job = prepare_job(tmp_path / "job", [target], "scanner-b", "tiny", {"steps": 3, "device": "cpu"})
    result = run_job(job)
    assert result.returncode == 0, result.stderr
    events = events_of(result.stdout)
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3]
    assert list(events[0]["losses"]) == [*used_loss_terms(AdaptationConfig()), "mask_keep"]  # the alignment's
    done = events[-1]
    assert done["event"] == "done" and done["name"] == "scanner-b"
    card = json.loads(open(done["card"]).read())
    assert card["training"]["config"]["steps"] == 3 and card["training"]["base_model"] == "tiny"
    assert os.path.isfile(done["curve"])
    assert "scanner-b" in ModelRegistry().names()
    np.testing.assert_array_equal(target, before)


@pytest.mark.slow
def test_a_noise_matching_job_reports_only_its_terms_and_the_panels_curve_draws_no_adversarial_one(
        profile, tmp_path, monkeypatch, source_bank_cache):
    monkeypatch.setenv("LDCTDENOISE_CACHE_DIR", str(source_bank_cache))
    settings = dict(method_settings("noise-matching"), steps=2, patch_size=32, batch_size=4, device="cpu")
    job = prepare_job(tmp_path / "job", [phantom_hu(3, 128)], "matched", "tiny", settings)
    events = []
    assert job_module.run_job(job, events.append) == 0, events[-1]
    steps = [event for event in events if event["event"] == "step"]
    assert [list(event["losses"]) for event in steps] == [["loss", "reconstruction", "anchor"]] * 2
    history = [{"step": event["step"], **event["losses"]} for event in steps]  # as the Slicer panel collects them
    axis, = loss_curve(history).axes
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["total", "reconstruction (MSE)", "anchor"]


def test_cancelled_job_stops_and_saves_nothing(profile, tmp_path, monkeypatch, source_bank_cache):
    monkeypatch.setenv("LDCTDENOISE_CACHE_DIR", str(source_bank_cache))
    job = prepare_job(tmp_path / "job", [phantom_hu(2, 64)], "never", "tiny", {"steps": 1000, "device": "cpu"})
    request_cancel(job)
    assert (job / CANCEL_FILE).exists()
    result = run_job(job)
    assert result.returncode == 130
    assert events_of(result.stdout) == [{"event": "cancelled"}]
    assert sorted(p.name for p in (tmp_path / "profiles").iterdir()) == ["tiny.json", "tiny.pt"]


def test_job_failure_reaches_the_caller_as_an_error_event(profile, tmp_path):
    job = prepare_job(tmp_path / "job", [phantom_hu(2, 64)], "new", "tiny", {"steps": 2, "device": "cpu"})
    (tmp_path / "profiles" / "tiny.pt").write_bytes(b"damaged after the job was prepared")
    result = run_job(job)
    assert result.returncode == 2
    event, = events_of(result.stdout)
    assert event["event"] == "error" and "tiny" in event["message"]
    assert "new" not in ModelRegistry().names()


def test_a_recorruption_job_without_a_clear_gain_keeps_the_starting_model_and_says_so(profile, tmp_path):
    settings = {"method": "recorruption", "steps": 2, "patch_size": 32, "batch_size": 4, "device": "cpu"}
    job = prepare_job(tmp_path / "job", [phantom_hu(7, 192)], "unchanged", "tiny", settings, pixel_mm=[0.7])
    events = []
    assert job_module.run_job(job, events.append) == 0, events[-1]
    assert not [event for event in events if event["event"] == "source"]  # the target scans alone
    steps = [event for event in events if event["event"] == "step"]
    assert [list(event["losses"]) for event in steps] == [["loss", "recorruption"]] * 2
    done = events[-1]
    assert done["event"] == "done" and done["kept"] == "start" and "tiny is kept" in done["gain"]
    assert "unchanged" not in ModelRegistry().names()
