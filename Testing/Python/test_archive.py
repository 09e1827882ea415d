"""Archive mode (``ldct-denoise denoise --archive``): every CT series of a folder tree, resumable after a kill, a
refused series among good ones, and shards that cover the archive exactly once."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import phantom_hu, snapshot, write_ct_series
from LDCTDenoiseLib.archive import Shard, parse_shard
from LDCTDenoiseLib.atomic import STAGING_FOLDER_SUFFIX
from LDCTDenoiseLib.cli import main
from LDCTDenoiseLib.dicom_reader import read_series
from LDCTDenoiseLib.errors import LDCTDenoiseError


SERIES_UID_ROOT = "1.2.826.0.1.3680043.10.543.7"


def make_archive(root: Path, n_series: int, n_slices: int = 3, size: int = 32) -> dict[str, Path]:
    """``n_series`` CT series in a study/series folder tree; returns {SeriesInstanceUID: folder}."""
    folders = {}
    for k in range(n_series):
        folder = root / f"study {k // 2}" / f"series {k}"
        uid = f"{SERIES_UID_ROOT}.{k}"  # fixed: which shard owns a series is then fixed too
        write_ct_series(folder, phantom_hu(n_slices, size, seed=k), series_uid=uid,
                        extra={"SeriesDescription": f"CT {k}"})
        folders[uid] = folder
    return folders


def summary(out: Path, name: str = "ldct-denoise-summary.csv") -> list[dict]:
    with open(out / name, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def archive_command(archive: Path, out: Path, profile: str, *extra: str) -> list[str]:
    return ["denoise", str(archive), str(out), "--archive", "--model", profile, "--device", "cpu", "--quiet", *extra]


def test_every_series_is_denoised_into_a_mirrored_tree_and_a_refused_one_is_listed(profile, tmp_path, capsys):
    archive, out = tmp_path / "archive", tmp_path / "out"
    folders = make_archive(archive, 3)
    write_ct_series(archive / "study 9" / "mr", phantom_hu(2, 32), extra={"Modality": "MR"})
    good = next(iter(folders.values()))
    (archive / "study 9" / "broken.dcm").write_bytes((good / "IM0001.dcm").read_bytes()[:300])
    before = snapshot(archive)

    assert main(archive_command(archive, out, profile)) == 2  # a refusal is reported in the exit status
    rows = summary(out)
    assert sorted(row["status"] for row in rows) == ["denoised"] * 3 + ["refused"] * 2
    refused = {row["source"]: row["message"] for row in rows if row["status"] == "refused"}
    assert "modality is 'MR', not CT" in refused[str(archive / "study 9" / "mr")]
    assert "no PixelData: the image file is truncated" in refused[str(archive / "study 9" / "broken.dcm")]
    for uid, folder in folders.items():
        expected = out / folder.relative_to(archive) / uid
        (row,) = [row for row in rows if row["series_uid"] == uid]
        assert row["output"] == str(expected) and row["n_slices"] == "3"
        # the output belongs to this input: the same as denoising that series alone
        alone = tmp_path / "alone" / uid
        assert main(["denoise", str(folder), str(alone), "--model", profile, "--device", "cpu", "--quiet"]) == 0
        np.testing.assert_array_equal(read_series(expected).hu, read_series(alone).hu)
    assert snapshot(archive) == before
    assert "3 denoised, 0 skipped, 2 refused" in capsys.readouterr().out

    outputs = snapshot(out / "study 0")
    assert main(archive_command(archive, out, profile)) == 2  # a rerun: nothing redone
    assert sorted(row["status"] for row in summary(out)) == ["refused"] * 2 + ["skipped"] * 3
    assert snapshot(out / "study 0") == outputs


def test_an_earlier_output_inside_the_archive_is_skipped_and_the_output_may_not_lie_inside(profile, tmp_path):
    archive = tmp_path / "archive"
    folders = make_archive(archive, 1)
    source = next(iter(folders.values()))
    assert main(["denoise", str(source), str(archive / "denoised last week"), "--model", profile, "--device", "cpu",
                 "--quiet"]) == 0
    assert main(archive_command(archive, tmp_path / "out", profile)) == 0
    statuses = {row["source"]: (row["status"], row["message"]) for row in summary(tmp_path / "out")}
    assert statuses[str(archive / "denoised last week")] == ("skipped", "an LDCTDenoise output, not a source series")
    assert statuses[str(source)][0] == "denoised"
    with pytest.raises(LDCTDenoiseError, match="the output lies inside the archive"):
        from LDCTDenoiseLib.archive import _check_roots
        _check_roots(archive, archive / "out")
    assert main(archive_command(archive, archive / "out", profile)) == 2
    assert not (archive / "out").exists()


def staging_folders(out: Path) -> list[Path]:
    """The run's staging folders; os.walk, unlike rglob, skips a folder the live run removes mid-walk."""
    return sorted(Path(root, name) for root, dirs, _ in os.walk(out) for name in dirs
                  if name.startswith(".") and name.endswith(STAGING_FOLDER_SUFFIX))


def entries(folder: Path) -> int:
    """How many files a live staging folder holds; 0 once the run has moved it into place."""
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


def test_a_killed_archive_run_resumes_where_it_stopped(profile, tmp_path):
    archive, out = tmp_path / "archive", tmp_path / "out"
    folders = make_archive(archive, 3, n_slices=12, size=128)
    command = [sys.executable, "-m", "LDCTDenoiseLib.cli", *archive_command(archive, out, profile),
               "--batch-size", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # kill while a series after the first is half written
        assert process.poll() is None, process.communicate()
        first_done = (out / "ldct-denoise-summary.csv").exists() and any(
            row["status"] == "denoised" for row in summary(out))
        if first_done and any(entries(s) >= 3 for s in staging_folders(out)):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    finished = {row["series_uid"] for row in summary(out) if row["status"] == "denoised"}
    assert 1 <= len(finished) < len(folders) and len(staging_folders(out)) == 1

    assert main(archive_command(archive, out, profile)) == 0
    statuses = {row["series_uid"]: row["status"] for row in summary(out)}
    assert statuses == {uid: "skipped" if uid in finished else "denoised" for uid in folders}
    assert staging_folders(out) == []
    for uid, folder in folders.items():
        assert read_series(out / folder.relative_to(archive) / uid).hu.shape == (12, 128, 128)


def test_ctrl_c_in_an_archive_run_keeps_the_finished_series_and_says_so(profile, tmp_path):
    """A real SIGINT, as a terminal user stops it: the message must not claim that nothing was written."""
    archive, out = tmp_path / "archive", tmp_path / "out"
    make_archive(archive, 3, n_slices=12, size=128)
    command = [sys.executable, "-m", "LDCTDenoiseLib.cli", *archive_command(archive, out, profile), "--batch-size", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        first_done = (out / "ldct-denoise-summary.csv").exists() and any(
            row["status"] == "denoised" for row in summary(out))
        if first_done and staging_folders(out):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 130, error
    assert "interrupted; the series finished before are kept" in error and "the same command resumes" in error
    finished = [row for row in summary(out) if row["status"] == "denoised"]
    assert finished and all(Path(row["output"]).is_dir() for row in finished)
    assert staging_folders(out) == []


def test_two_shards_running_at_once_cover_the_archive_exactly_once(profile, tmp_path):
    archive, out = tmp_path / "archive", tmp_path / "out"
    folders = make_archive(archive, 6)
    processes = [subprocess.Popen([sys.executable, "-m", "LDCTDenoiseLib.cli",
                                   *archive_command(archive, out, profile, "--shard", "env")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)))
                  for rank in range(2)]
    for process in processes:
        _, error = process.communicate(timeout=300)
        assert process.returncode == 0, error
    shards = [{row["series_uid"] for row in summary(out, f"ldct-denoise-summary-shard-{k}-of-2.csv")
               if row["status"] == "denoised"} for k in range(2)]
    assert len(shards[0]) == 3 and len(shards[1]) == 3  # these 6 UIDs split 3 + 3
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == set(folders)
    for uid, folder in folders.items():
        assert read_series(out / folder.relative_to(archive) / uid).hu.shape == (3, 32, 32)


def test_shards_partition_any_set_of_series():
    uids = [f"1.2.3.{k}" for k in range(1000)]
    for count in (1, 2, 3, 8):
        owners = [[k for k in range(count) if Shard(k, count).owns(uid)] for uid in uids]
        assert all(len(owner) == 1 for owner in owners)
        sizes = np.bincount([owner[0] for owner in owners], minlength=count)
        assert sizes.min() > 0.7 * len(uids) / count  # spread, not all on one shard


@pytest.mark.parametrize("text, environ, expected", [
    (None, {}, Shard(0, 1)),
    ("2/4", {}, Shard(2, 4)),
    ("env", {"RANK": "3", "WORLD_SIZE": "8"}, Shard(3, 8)),
    ("env", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "5", "SLURM_ARRAY_TASK_MIN": "1"}, Shard(4, 5)),
])
def test_shards_are_read_from_the_command_line_or_the_launcher(text, environ, expected):
    assert parse_shard(text, environ) == expected


@pytest.mark.parametrize("text, message", [
    ("4/4", "the index must run from 0 to count - 1"),
    ("1-4", "expected K/N"),
    ("env", "neither RANK/WORLD_SIZE"),
])
def test_a_bad_shard_is_refused(text, message):
    with pytest.raises(LDCTDenoiseError, match=message):
        parse_shard(text, {})


def test_shard_and_series_options_need_the_right_mode(profile, tmp_path, capsys):
    make_archive(tmp_path / "archive", 1)
    assert main(["denoise", str(tmp_path / "archive"), str(tmp_path / "out"), "--shard", "0/2", "--quiet"]) == 2
    assert "use it with --archive" in capsys.readouterr().err
    assert main(archive_command(tmp_path / "archive", tmp_path / "out", profile, "--series", "1.2")) == 2
    assert "--archive denoises them all" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
