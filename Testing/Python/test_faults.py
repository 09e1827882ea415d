"""Faults while ``ldct-denoise denoise`` writes, with real processes: a kill, a full disk, two runs on one output, an
output that cannot be written. Each test checks the outcome, the message, that the input is unchanged and that
nothing is left behind: no partial series is ever visible under the output's name."""

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dicom_factory import phantom_hu, snapshot, write_ct_series
from LDCTDenoiseLib.atomic import STAGING_FOLDER_SUFFIX
from LDCTDenoiseLib.cli import main
from LDCTDenoiseLib.dicom_reader import read_series

N_SLICES = 24
SIZE = 128  # 32 KiB of pixels per file


@pytest.fixture
def series(tmp_path):
    folder = tmp_path / "input"
    write_ct_series(folder, phantom_hu(n_slices=N_SLICES, size=SIZE, seed=3))
    return folder


def denoise_process(folder: Path, out: Path, profile: str, **options) -> subprocess.Popen:
    """``ldct-denoise denoise`` in its own process, one slice per batch (slow enough to be caught mid-write)."""
    return subprocess.Popen([sys.executable, "-m", "LDCTDenoiseLib.cli", "denoise", str(folder), str(out),
                             "--model", profile, "--device", "cpu", "--batch-size", "1", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"), **options)


def staging_folders(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*{STAGING_FOLDER_SUFFIX}"))


def assert_whole_output(out: Path) -> None:
    volume = read_series(out)
    assert volume.hu.shape == (N_SLICES, SIZE, SIZE) and len(list(out.iterdir())) == N_SLICES


def test_a_run_killed_while_writing_leaves_no_output_and_the_same_command_then_succeeds(profile, series, tmp_path):
    before = snapshot(series)
    out = tmp_path / "out"
    process = denoise_process(series, out, profile)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(len(list(s.iterdir())) >= 3 for s in staging_folders(out)):
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    (left,) = staging_folders(out)  # the killed run's hidden folder, holding part of the series
    assert 3 <= len(list(left.iterdir())) < N_SLICES
    assert not out.exists()

    assert main(["denoise", str(series), str(out), "--model", profile, "--device", "cpu", "--quiet"]) == 0
    assert_whole_output(out)
    assert staging_folders(out) == []  # made here by a process that no longer runs: removed by the rerun
    assert snapshot(series) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input", "out", "profiles"]


def test_a_full_disk_while_writing_is_a_clear_error_and_leaves_nothing(profile, series, tmp_path):
    """A file-size limit (RLIMIT_FSIZE) stands in for a full disk: the write fails with EFBIG as it would with
    ENOSPC, after the first files are written."""
    before = snapshot(series)
    out = tmp_path / "out"
    limit = 16 * 1024  # each file holds 32 KiB of pixels: the first write of pixels fails
    process = denoise_process(series, out, profile,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    _, error = process.communicate(timeout=300)
    assert process.returncode == 2, error
    assert f"{out}: could not write the derived series: File too large (the disk or the file size limit is full); " \
           f"nothing was written" in error
    assert "Traceback" not in error
    assert not out.exists() and staging_folders(out) == []
    assert snapshot(series) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input", "profiles"]


def test_two_runs_writing_one_output_at_once_one_wins_and_the_output_is_whole(profile, series, tmp_path):
    before = snapshot(series)
    out = tmp_path / "out"
    processes = [denoise_process(series, out, profile) for _ in range(2)]
    results = [process.communicate(timeout=300) for process in processes]
    codes = [process.returncode for process in processes]
    assert sorted(codes) == [0, 2], results
    _, loser_error = results[codes.index(2)]
    # The loser stops when it finds the winner's output, at its start or at its commit, whichever it reached.
    assert (f"{out}: another run wrote its output there while this one ran; that output was kept and nothing of "
            f"this run was written" in loser_error
            or f"{out}: the output folder exists and is not empty; nothing is overwritten" in loser_error), loser_error
    assert_whole_output(out)
    assert staging_folders(out) == []
    assert snapshot(series) == before


def test_an_output_under_a_file_is_refused_before_any_work(series, tmp_path, capsys):
    """The output is checked before the model loads: the model named here does not exist, and the error is about
    the output."""
    (tmp_path / "a file").write_text("not a folder")
    out = tmp_path / "a file" / "out"
    before = snapshot(series)
    assert main(["denoise", str(series), str(out), "--model", "no-such-model", "--quiet"]) == 2
    assert f"{out}: cannot be made: {tmp_path / 'a file'} is a file, not a folder" in capsys.readouterr().err
    assert snapshot(series) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a file", "input"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="a folder's permissions do not stop root (or Windows ACLs are not set by chmod)")
def test_an_output_folder_without_write_permission_is_refused_before_any_work(series, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["denoise", str(series), str(locked / "out"), "--model", "no-such-model", "--quiet"]) == 2
        assert f"{locked / 'out'}: cannot write there (Permission denied)" in capsys.readouterr().err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_a_read_only_output_folder_is_refused_before_any_work(series, tmp_path, capsys, monkeypatch):
    """Root ignores folder permissions, so the read-only filesystem is made by the operating system's answer to
    mkdir there (EROFS), raised where the check makes its test folder."""
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    out = tmp_path / "out"
    assert main(["denoise", str(series), str(out), "--model", "no-such-model", "--quiet"]) == 2
    assert f"{out}: cannot write there (Read-only file system); choose another output folder" in \
        capsys.readouterr().err
    assert not out.exists()
