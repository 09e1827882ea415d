"""The one atomic-write helper (LDCTDenoiseLib.atomic): an output appears whole or not at all.

Every writer of the engine and of training goes through it, so these properties hold for DICOM series, the demo,
the sample cache, model profiles, figures and training checkpoints alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from LDCTDenoiseLib.atomic import (HOST_TAG, StagingFolder, atomic_file, remove_stale_staging, staging_path,
                                   write_bytes_atomically)


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


#
# Staging folder
#


def test_a_folder_appears_only_when_committed_and_complete(tmp_path):
    final = tmp_path / "out"
    with StagingFolder(final) as staged:
        (staged.path / "a.txt").write_text("a")
        assert not final.exists()  # written, not yet committed
        assert staged.path.parent == tmp_path and staged.path.name.startswith(".out.")
        (staged.path / "b.txt").write_text("b")
        assert staged.commit() == final
    assert names(tmp_path) == ["out"] and names(final) == ["a.txt", "b.txt"]


def test_a_folder_left_without_a_commit_leaves_nothing(tmp_path):
    with StagingFolder(tmp_path / "out") as staged:
        (staged.path / "a.txt").write_text("a")
    assert names(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("failed"), KeyboardInterrupt()])
def test_an_error_or_ctrl_c_inside_a_staging_folder_leaves_nothing(tmp_path, error):
    with pytest.raises(type(error)):
        with StagingFolder(tmp_path / "out") as staged:
            (staged.path / "sub").mkdir()
            (staged.path / "sub" / "a.txt").write_text("a")
            raise error
    assert names(tmp_path) == []


def test_ctrl_c_while_the_staging_folder_is_made_leaves_nothing(tmp_path, monkeypatch):
    """The interrupt lands right after mkdir returns, before the with block (and so __exit__) is set up."""
    real_mkdir = Path.mkdir

    def mkdir_then_interrupt(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs)
        if self.name.endswith(".partial"):
            raise KeyboardInterrupt

    monkeypatch.setattr(Path, "mkdir", mkdir_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with StagingFolder(tmp_path / "out"):
            pytest.fail("the block must not run")
    assert names(tmp_path) == []


def test_a_commit_replaces_an_empty_folder_and_never_a_full_one(tmp_path):
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (full / "theirs.txt").write_text("theirs")
    with StagingFolder(empty) as staged:
        (staged.path / "mine.txt").write_text("mine")
        staged.commit()
    assert names(empty) == ["mine.txt"]
    with pytest.raises(OSError):
        with StagingFolder(full) as staged:
            (staged.path / "mine.txt").write_text("mine")
            staged.commit()
    assert names(full) == ["theirs.txt"] and names(tmp_path) == ["empty", "full"]


def test_a_stale_staging_folder_does_not_block_and_is_removed_when_old(tmp_path):
    """A killed run leaves its staging folder behind; the next run writes beside it under a new name, and the
    cleanup removes only those older than the limit (a recent one may be another process at work)."""
    final = tmp_path / "out"
    stale, recent = staging_path(final), staging_path(final)
    for folder in (stale, recent):
        folder.mkdir()
        (folder / "half.txt").write_text("half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    with StagingFolder(final) as staged:
        (staged.path / "a.txt").write_text("a")
        staged.commit()
    assert names(final) == ["a.txt"] and stale.exists() and recent.exists()
    remove_stale_staging(final, older_than_s=3600)
    assert not stale.exists() and recent.exists()


def test_a_staging_folder_of_a_process_that_no_longer_runs_here_is_removed_at_once(tmp_path):
    """Staging names carry the host and the process: a killed run's folder goes at once, a running process's and
    another host's stay (they may be at work) until old."""
    final = tmp_path / "out"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_pid = int(finished.stdout)
    killed = Path(str(staging_path(final)).replace(f"-{os.getpid()}-", f"-{dead_pid}-"))
    running = staging_path(final)
    elsewhere = Path(str(staging_path(final)).replace(HOST_TAG, "0" * 8 if HOST_TAG != "0" * 8 else "1" * 8))
    for folder in (killed, running, elsewhere):
        folder.mkdir()
    remove_stale_staging(final, older_than_s=3600)
    assert not killed.exists() and running.exists() and elsewhere.exists()


def test_of_two_commits_to_one_output_the_second_fails_and_the_first_is_kept(tmp_path):
    """Two writers staged at once (two processes on one output): the later commit finds the output and raises
    FileExistsError, even when both saw no output before; the first output stays whole."""
    final = tmp_path / "out"
    with StagingFolder(final) as first, StagingFolder(final) as second:
        (first.path / "first.txt").write_text("1")
        (second.path / "second.txt").write_text("2")
        first.commit()
        with pytest.raises(FileExistsError, match="another output appeared there"):
            second.commit()
    assert names(final) == ["first.txt"] and names(tmp_path) == ["out"]


#
# Files
#


def test_a_file_appears_only_when_complete_and_replaces_the_old_one_whole(tmp_path):
    final = tmp_path / "sub" / "data.bin"  # the folder is made
    with atomic_file(final) as temporary:
        assert temporary.parent == final.parent and temporary.name.startswith(".data.bin.")
        temporary.write_bytes(b"first")
        assert not final.exists()
    assert final.read_bytes() == b"first"
    with atomic_file(final) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(b"sec")
            assert final.read_bytes() == b"first"  # the old file stays whole until the new one is complete
            stream.write(b"ond")
    assert final.read_bytes() == b"second" and names(final.parent) == ["data.bin"]
    assert write_bytes_atomically(final, b"third") == final and final.read_bytes() == b"third"
    assert names(final.parent) == ["data.bin"]


@pytest.mark.parametrize("error", [RuntimeError("failed"), KeyboardInterrupt()])
def test_an_error_or_ctrl_c_inside_a_file_write_leaves_the_old_file_and_no_temporary(tmp_path, error):
    final = tmp_path / "data.bin"
    with pytest.raises(type(error)):
        with atomic_file(final) as temporary:
            temporary.write_bytes(b"half")
            raise error
    assert names(tmp_path) == []
    final.write_bytes(b"old")
    with pytest.raises(type(error)):
        with atomic_file(final) as temporary:
            temporary.write_bytes(b"half")
            raise error
    assert names(tmp_path) == ["data.bin"] and final.read_bytes() == b"old"


def test_a_stale_temporary_file_does_not_block(tmp_path):
    final = tmp_path / "data.bin"
    (tmp_path / f".data.bin.{'0' * 32}.tmp").write_bytes(b"left by a killed run")
    write_bytes_atomically(final, b"new")
    assert final.read_bytes() == b"new"


def test_a_file_gets_the_usual_permissions(tmp_path):
    """Written as open() would write it (the umask decides), not with tempfile's owner-only mode."""
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    staged = write_bytes_atomically(tmp_path / "staged.bin", b"x")
    assert staged.stat().st_mode == plain.stat().st_mode
