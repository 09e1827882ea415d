"""The ``ldct-denoise`` command line on real DICOM files: outputs, messages, exit codes, and inputs left untouched."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pydicom
import pytest
import torch
from dicom_factory import (assert_same_derived_series, phantom_hu, snapshot, write_ct_series,
                           write_enhanced_ct)
from LDCTDenoiseLib.cli import ProgressBars, main
from LDCTDenoiseLib.dicom_reader import read_series
from LDCTDenoiseLib.dicom_writer import write_derived_series
from LDCTDenoiseLib.methods import ModelDenoiser
from LDCTDenoiseLib.model_registry import DEFAULT_MODEL


@pytest.fixture
def series(tmp_path):
    folder = tmp_path / "input"
    write_ct_series(folder, phantom_hu(n_slices=5, size=40))
    return folder


def test_a_stage_that_never_reports_shows_no_bar_and_each_bar_counts_its_own_unit(capsys):
    """A cached source simulation used to leave an empty bar open for the whole run; adaptation counts steps."""
    bars = ProgressBars(quiet=False)
    bars("simulate source pairs (once, then cached)")  # a cache hit: the engine never calls the hook
    adapt = bars("adapt", unit="step")
    for step in range(1, 4):
        adapt(step, 3)
    bars.close()
    err = capsys.readouterr().err
    assert "simulate" not in err and "adapt" in err and "3/3" in err and "step/s" in err and "slice" not in err


def test_denoise_writes_a_derived_series_with_the_input_geometry(profile, series, tmp_path, capsys):
    before = snapshot(series)
    out = tmp_path / "out"
    assert main(["denoise", str(series), str(out), "--model", profile, "--device", "cpu", "--quiet"]) == 0
    assert snapshot(series) == before
    source, result = read_series(series), read_series(out)
    assert result.hu.shape == source.hu.shape
    assert result.spacing == source.spacing and result.origin == source.origin
    np.testing.assert_array_equal(result.slice_positions, source.slice_positions)
    assert not np.allclose(result.hu, source.hu)
    header = pydicom.dcmread(result.source_files[0])
    assert "'tiny'" in header.DerivationDescription and "sha256" in header.DerivationDescription
    assert header.SeriesDescription.endswith("[LDCTDenoise tiny]")
    assert list(header.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert "Denoised 5 slices" in capsys.readouterr().out


@pytest.mark.parametrize("strength", ["100", "40"])
@pytest.mark.parametrize("enhanced", [False, True], ids=["single-frame", "enhanced"])
def test_denoise_streams_the_same_files_as_the_whole_volume_path(profile, tmp_path, enhanced, strength):
    """Slices of 260² (9 CPU tiles each, so tile groups span slices) in batches of 2 with a last batch of 1: the
    streamed command writes what reading everything, denoising the volume and writing it would, at any strength."""
    hu = phantom_hu(n_slices=3, size=260, seed=4)
    folder = tmp_path / "input"
    if enhanced:
        write_enhanced_ct(folder / "enhanced.dcm", hu)
    else:
        write_ct_series(folder, hu)
    out = tmp_path / "out"
    assert main(["denoise", str(folder), str(out), "--model", profile, "--device", "cpu", "--batch-size", "2",
                 "--strength", strength, "--quiet"]) == 0
    model = ModelDenoiser(profile, device="cpu", batch_size=2, strength=float(strength) / 100)
    volume = read_series(folder)
    suffix = profile if strength == "100" else f"{profile} {strength}%"
    whole = write_derived_series(volume, model(volume.hu), tmp_path / "whole",
                                 derivation_description=model.derivation(),
                                 series_description_suffix=f" [LDCTDenoise {suffix}]")
    assert_same_derived_series(whole, sorted(out.iterdir()))


@pytest.mark.parametrize("argument, strength", [("70", 0.7), ("33.3%", 0.333), ("0", 0.0)])
def test_denoise_at_a_partial_strength_writes_the_blend_and_records_it(profile, series, tmp_path, capsys, argument,
                                                                       strength):
    """The written pixels are input + s * (denoised - input), up to the stored integers' rounding."""
    out = tmp_path / "out"
    assert main(["denoise", str(series), str(out), "--model", profile, "--device", "cpu", "--batch-size", "2",
                 "--strength", argument, "--quiet"]) == 0
    source = read_series(series).hu
    full = ModelDenoiser(profile, device="cpu")(source)
    expected = source + np.float32(strength) * (full - source)
    result = read_series(out)
    np.testing.assert_allclose(result.hu, expected, rtol=0, atol=0.5 + 1e-3)
    if strength == 0.0:
        np.testing.assert_array_equal(result.hu, source)  # integer HU in, the same integers out
    else:
        assert np.abs(result.hu - source).max() > 2 and np.abs(result.hu - full).max() > 2  # between the two
    header = pydicom.dcmread(result.source_files[0])
    percent = f"{100 * strength:g}"
    assert f"'{profile}'" in header.DerivationDescription and "sha256" in header.DerivationDescription
    assert header.DerivationDescription.endswith(f"at strength {percent} % (output = input + {strength:g} x "
                                                 f"(denoised - input))")
    assert header.SeriesDescription.endswith(f"[LDCTDenoise {profile} {percent}%]")
    assert f"Denoised 5 slices of 'Synthetic LDCT' with {profile} at strength {percent} % in" in \
        capsys.readouterr().out


def test_full_strength_is_the_default_and_not_mentioned(profile, series, tmp_path, capsys):
    default, explicit = tmp_path / "default", tmp_path / "explicit"
    assert main(["denoise", str(series), str(default), "--model", profile, "--device", "cpu", "--quiet"]) == 0
    assert main(["denoise", str(series), str(explicit), "--model", profile, "--device", "cpu", "--strength", "100",
                 "--quiet"]) == 0
    np.testing.assert_array_equal(read_series(default).hu, read_series(explicit).hu)
    header = pydicom.dcmread(sorted(explicit.iterdir())[0])
    assert "strength" not in header.DerivationDescription
    assert header.SeriesDescription.endswith(f"[LDCTDenoise {profile}]")
    assert "at strength" not in capsys.readouterr().out


@pytest.mark.parametrize("value", ["-5", "150", "abc", "nan", "100.5"])
def test_a_strength_outside_0_to_100_is_refused_before_anything_is_written(profile, series, tmp_path, capsys, value):
    before = snapshot(series)
    with pytest.raises(SystemExit) as stopped:
        main(["denoise", str(series), str(tmp_path / "out"), "--model", profile, "--strength", value, "--quiet"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert (f"argument --strength: must be a percentage from 0 (the input unchanged) to 100 (fully denoised), "
            f"got '{value}'") in error
    assert snapshot(series) == before and sorted(p.name for p in tmp_path.iterdir()) == ["input", "profiles"]


def test_an_unreadable_slice_midway_stops_denoise_and_leaves_nothing(profile, tmp_path, capsys):
    folder = tmp_path / "input"
    paths = write_ct_series(folder, phantom_hu(n_slices=5, size=40))
    paths[3].write_bytes(paths[3].read_bytes()[:-700])  # the header reads, the pixels do not: found mid-stream
    before = snapshot(folder)
    out = tmp_path / "out"
    assert main(["denoise", str(folder), str(out), "--model", profile, "--batch-size", "1", "--quiet"]) == 2
    assert f"{paths[3].name}: cannot decode the pixel data" in capsys.readouterr().err
    assert snapshot(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["input", "profiles"]


def test_several_series_are_listed_and_one_must_be_chosen(profile, series, tmp_path, capsys):
    write_ct_series(series / "other", phantom_hu(n_slices=3, size=40), extra={"SeriesDescription": "Second"})
    out = tmp_path / "out"
    assert main(["denoise", str(series), str(out), "--model", profile, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "2 series found" in error and "Second" in error and "--series" in error
    assert not out.exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    chosen = read_series(series / "other").series_uid
    assert main(["denoise", str(series), str(out), "--model", profile, "--series", chosen, "--quiet"]) == 0
    assert read_series(out).hu.shape[0] == 3


@pytest.mark.parametrize("problem, arguments, message", [
    ("unknown model", ["--model", "nonexistent"], "Unknown model 'nonexistent'"),
    ("no GPU", ["--device", "cuda"], "no CUDA GPU"),
    ("bad batch", ["--batch-size", "0"], "Batch size must be at least 1"),
])
def test_bad_settings_give_one_clear_line_and_write_nothing(profile, series, tmp_path, capsys, problem, arguments,
                                                            message):
    if problem == "no GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = snapshot(series)
    out = tmp_path / "out"
    args = ["denoise", str(series), str(out), "--model", profile, "--quiet"] + arguments
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert snapshot(series) == before and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input", "profiles"]


def test_never_writes_into_a_non_empty_folder_or_the_input(profile, series, tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert main(["denoise", str(series), str(busy), "--model", profile, "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err and [p.name for p in busy.iterdir()] == ["keep.txt"]
    before = snapshot(series)
    assert main(["denoise", str(series), str(series), "--model", profile, "--quiet"]) == 2
    assert snapshot(series) == before


def test_non_ct_input_is_refused_with_the_file_named(profile, tmp_path, capsys):
    folder = tmp_path / "mr"
    write_ct_series(folder, phantom_hu(n_slices=2, size=16), extra={"Modality": "MR"})
    assert main(["denoise", str(folder), str(tmp_path / "out"), "--model", profile, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "MR" in error and "IM000" in error
    assert not (tmp_path / "out").exists()


def test_compare_writes_figure_and_metrics_against_a_reference(profile, tmp_path, capsys):
    clean = phantom_hu(n_slices=3, size=48, seed=1)
    noisy = clean + np.rint(np.random.default_rng(2).normal(0, 30, clean.shape)).astype(np.float32)
    positions = [(0.0, 0.0, 5.0 * k) for k in range(3)]
    write_ct_series(tmp_path / "low", noisy, positions=positions)
    write_ct_series(tmp_path / "full", clean, positions=positions)
    out = tmp_path / "cmp"
    code = main(["compare", str(tmp_path / "low"), "--reference", str(tmp_path / "full"), "--out", str(out),
                 "--methods", f"input,{profile},gaussian", "--roi", "18,18,12,12", "--background-roi", "2,2,6,6",
                 "--slice", "2", "--device", "cpu", "--quiet"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["comparison.png", "metrics.csv", "metrics.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["input", profile, "gaussian"]
    assert metrics["gaussian"]["rmse"] < metrics["input"]["rmse"]
    assert {"psnr_display", "ssim_display", "psnr_full", "roi_sd_hu", "cnr", "seconds"} <= set(metrics["input"])
    assert "PSNR win" in capsys.readouterr().out


def test_compare_refuses_a_reference_of_other_slices(tmp_path, capsys):
    write_ct_series(tmp_path / "low", phantom_hu(n_slices=3, size=24))
    write_ct_series(tmp_path / "full", phantom_hu(n_slices=3, size=24),
                    positions=[(0.0, 0.0, 10.0 + 2.5 * k) for k in range(3)])
    assert main(["compare", str(tmp_path / "low"), "--reference", str(tmp_path / "full"), "--out",
                 str(tmp_path / "cmp"), "--methods", "input", "--quiet"]) == 2
    assert "not the same slices" in capsys.readouterr().err and not (tmp_path / "cmp").exists()


def test_compare_refuses_unknown_methods_and_rois_outside_the_slice(series, tmp_path, capsys):
    out = str(tmp_path / "cmp")
    assert main(["compare", str(series), "--out", out, "--methods", "input,magic", "--quiet"]) == 2
    assert "Unknown method(s) magic" in capsys.readouterr().err
    assert main(["compare", str(series), "--out", out, "--methods", "input", "--roi", "30,30,20,20", "--quiet"]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_models_lists_profiles_and_cards_as_json(profile, capsys):
    assert main(["models", "--json"]) == 0
    cards = {card["name"]: card for card in json.loads(capsys.readouterr().out)}
    assert cards[profile]["origin"] == "profile" and cards[profile]["architecture"]["parameters"] == 62016
    assert DEFAULT_MODEL in cards and cards[DEFAULT_MODEL]["origin"] == "shipped"
    assert main(["models"]) == 0
    assert f"{DEFAULT_MODEL} (shipped) (default)" in capsys.readouterr().out


def test_simulate_adds_noise_that_grows_as_the_dose_falls(tmp_path):
    y, x = np.mgrid[:64, :64]
    water = np.where((y - 31.5) ** 2 + (x - 31.5) ** 2 < 26 ** 2, 0.0, -1000.0)
    write_ct_series(tmp_path / "full", np.repeat(water[None], 2, axis=0).astype(np.float32), pixel_spacing=(0.7, 0.7))
    before = snapshot(tmp_path / "full")
    sds = []
    for dose in ("0.5", "0.125"):
        out = tmp_path / f"low-{dose}"
        assert main(["simulate", str(tmp_path / "full"), str(out), "--dose", dose, "--views", "180", "--photons",
                     "1e4", "--quiet"]) == 0
        low = read_series(out)
        assert "simulated" in pydicom.dcmread(low.source_files[0]).SeriesDescription
        sds.append(float(low.hu[:, 24:40, 24:40].std()))
    assert snapshot(tmp_path / "full") == before
    assert sds[1] > 1.8 * sds[0]  # variance grows as (1 - d) / d: SD ratio sqrt(7 / 1) ≈ 2.6


def test_simulate_refuses_a_bad_dose_and_rectangular_pixels(series, tmp_path, capsys):
    assert main(["simulate", str(series), str(tmp_path / "out"), "--dose", "1.5", "--quiet"]) == 2
    assert "dose_fraction must be in (0, 1]" in capsys.readouterr().err
    assert main(["simulate", str(series), str(tmp_path / "out"), "--quiet"]) == 2
    assert "needs square pixels, got 0.75 x 0.7 mm" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_during_denoise_leaves_nothing_behind(profile, tmp_path):
    """A real SIGINT to a real process, while it denoises, the way a terminal user stops it."""
    folder = tmp_path / "input"
    write_ct_series(folder, phantom_hu(n_slices=40, size=256))
    before = snapshot(folder)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "LDCTDenoiseLib.cli", "denoise", str(folder), str(out),
                                "--model", profile, "--device", "cpu", "--batch-size", "1"],
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                               # a shell's background job (`make test &`) ignores SIGINT, and children inherit
                               # that: restore the default, as a terminal's foreground process has it
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = ""
    deadline = time.monotonic() + 120
    while "denoise" not in seen and time.monotonic() < deadline:
        seen += process.stderr.read(1)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, seen + rest
    assert "interrupted; nothing was written" in rest
    assert snapshot(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["input", "profiles"]


@pytest.mark.slow
def test_demo_runs_with_no_data_and_writes_everything(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--slices", "1", "--device", "cpu", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["comparison.png", "denoised", "low-dose", "metrics.csv",
                                                       "metrics.json", "reference"]
    low, denoised, reference = (read_series(out / name) for name in ("low-dose", "denoised", "reference"))
    assert low.hu.shape == denoised.hu.shape == reference.hu.shape == (1, 512, 512)
    assert len({low.series_uid, denoised.series_uid, reference.series_uid}) == 3
    headers = [pydicom.dcmread(v.source_files[0]) for v in (low, denoised, reference)]
    assert len({h.StudyInstanceUID for h in headers}) == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics[DEFAULT_MODEL]["psnr_display"] > metrics["input"]["psnr_display"] + 3.0
    assert metrics[DEFAULT_MODEL]["roi_sd_hu"] < 0.6 * metrics["input"]["roi_sd_hu"]
    assert "Demo written to" in capsys.readouterr().out


def test_demo_refuses_a_folder_in_use(tmp_path, capsys):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["notes.txt"]


@pytest.mark.data
@pytest.mark.slow
def test_the_shipped_model_beats_the_low_dose_input_on_a_held_out_mayo_patient(shared_data, tmp_path, capsys):
    quarter = shared_data / "mayo/paired/D45_3mm/L286/quarter"
    full = shared_data / "mayo/paired/D45_3mm/L286/full"
    before = snapshot(quarter)
    assert main(["denoise", str(quarter), str(tmp_path / "denoised"), "--quiet"]) == 0
    source, result = read_series(quarter), read_series(tmp_path / "denoised")
    assert snapshot(quarter) == before
    np.testing.assert_allclose(result.slice_positions, source.slice_positions)
    assert result.spacing == source.spacing and np.allclose(result.direction, source.direction)
    assert main(["compare", str(quarter), "--reference", str(full), "--out", str(tmp_path / "cmp"), "--methods",
                 f"input,{DEFAULT_MODEL}", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    for key in ("psnr_display", "ssim_display", "psnr_full"):
        assert metrics[DEFAULT_MODEL][key] > metrics["input"][key]


@pytest.mark.parametrize("name, message", [("tiny", "already exists"), (".hidden", "must be 1-64 letters"),
                                           ("a/b", "must be 1-64 letters")])
def test_adapt_refuses_a_taken_or_unsafe_profile_name(profile, series, capsys, name, message):
    assert main(["adapt", str(series), "--name", name, "--from", profile, "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_adapt_refuses_scans_without_flat_soft_tissue_before_simulating_the_source(profile, tmp_path, monkeypatch,
                                                                                   capsys):
    monkeypatch.setenv("LDCTDENOISE_CACHE_DIR", str(tmp_path / "cache"))
    target = tmp_path / "target"
    write_ct_series(target, phantom_hu(n_slices=2, size=72))  # large enough for a patch, too small to measure noise
    assert main(["adapt", str(target), "--name", "x", "--from", profile, "--quiet"]) == 2
    assert "soft-tissue regions" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "profiles" / "x.json").exists()


@pytest.mark.slow
def test_adapt_saves_a_profile_that_denoise_then_uses(profile, tmp_path, monkeypatch, capsys, source_bank_cache):
    monkeypatch.setenv("LDCTDENOISE_CACHE_DIR", str(source_bank_cache))
    target = tmp_path / "target"
    write_ct_series(target, phantom_hu(n_slices=3, size=72), pixel_spacing=(0.7, 0.7))
    before = snapshot(target)
    assert main(["adapt", str(target), "--name", "scanner-x", "--from", profile, "--steps", "3", "--device", "cpu",
                 "--method", "alignment", "--anchor-weight", "0.3", "--quiet"]) == 0
    assert snapshot(target) == before
    profiles = tmp_path / "profiles"
    assert sorted(p.name for p in profiles.iterdir()) == ["scanner-x.json", "scanner-x.loss.png", "scanner-x.pt",
                                                          "tiny.json", "tiny.pt"]
    card = json.loads((profiles / "scanner-x.json").read_text())
    assert card["training"]["base_model"] == profile and "adapt" in card["command"]
    config = card["training"]["config"]  # the method's settings, with the one given on the command line
    assert (config["adversarial_weight"], config["anchor_weight"], config["match_target_noise"]) == (0.0005, 0.3, False)
    assert card["training"]["method"].startswith("semantic information alignment")
    assert "Use it with" in capsys.readouterr().out
    assert main(["denoise", str(target), str(tmp_path / "out"), "--model", "scanner-x", "--quiet"]) == 0


def test_adapt_matches_the_target_noise_by_default_and_records_it_in_the_profile(profile, tmp_path, monkeypatch,
                                                                                 capsys, source_bank_cache):
    monkeypatch.setenv("LDCTDENOISE_CACHE_DIR", str(source_bank_cache))
    target = tmp_path / "target"
    write_ct_series(target, phantom_hu(n_slices=3, size=192), pixel_spacing=(0.7, 0.7))
    # two steps cannot show a clear gain on the held-out slice: saved all the same, to read its card
    assert main(["adapt", str(target), "--name", "noisy-scanner", "--from", profile, "--steps", "2", "--device", "cpu",
                 "--save-anyway", "--quiet"]) == 0
    card = json.loads((tmp_path / "profiles" / "noisy-scanner.json").read_text())
    config = card["training"]["config"]
    assert (config["adversarial_weight"], config["anchor_weight"], config["match_target_noise"]) == (0.0, 0.1, True)
    assert card["training"]["method"].startswith("target-noise matching")
    assert card["training"]["target_noise_matching"]["target_noise_sd_hu"] > 0
    assert "Noise measured in flat soft tissue" in capsys.readouterr().out


def test_adapt_by_recorruption_saves_no_profile_without_a_clear_gain_unless_asked(profile, tmp_path, monkeypatch,
                                                                                   capsys):
    monkeypatch.setenv("LDCTDENOISE_CACHE_DIR", str(tmp_path / "cache"))
    target = tmp_path / "target"
    write_ct_series(target, phantom_hu(n_slices=7, size=192), pixel_spacing=(0.7, 0.7))
    before = snapshot(target)
    arguments = ["adapt", str(target), "--from", profile, "--method", "recorruption", "--steps", "2", "--device", "cpu",
                 "--quiet"]
    # two steps at the method's rate leave the model as it was: no gain to show on the held-out slice
    assert main([*arguments, "--name", "same-as-before"]) == 0
    out = capsys.readouterr().out
    assert "On 1 held-out slice (no reference)" in out and f"{profile} is kept" in out
    assert "No profile saved" in out and not (tmp_path / "profiles" / "same-as-before.json").exists()
    assert not (tmp_path / "cache").exists()  # no phantom source pairs were simulated
    assert main([*arguments, "--name", "kept-anyway", "--save-anyway"]) == 0
    card = json.loads((tmp_path / "profiles" / "kept-anyway.json").read_text())
    assert card["validation"]["estimated_gain"]["kept"] == "start"
    assert card["training"]["config"]["recorruption_weight"] == 1.0 and card["training"]["held_out"]["slices"] == [[3]]
    assert snapshot(target) == before
