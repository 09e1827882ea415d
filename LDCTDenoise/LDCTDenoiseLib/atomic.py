"""Outputs that appear whole or not at all: a hidden staging file or folder beside the output, renamed into place.

A rename within one folder is atomic, so a reader (another process, the next run, the user's file browser) sees
either nothing or the complete output; a failure, a cancel, Ctrl-C or a kill never leaves a half-written one under
the output's name. The staging names start with a dot and end in ``.partial`` (folders) or ``.tmp`` (files), and
carry a random part, so a staging left by a killed run never blocks the next one; they also name the host and the
process that made them, so that the next run can tell a killed run's leftovers from another run at work and remove
them (:func:`remove_stale_staging`). Standard library only: the Slicer module loads this.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]
STAGING_FOLDER_SUFFIX = ".partial"
STAGING_FILE_SUFFIX = ".tmp"


# This host, as 8 hex digits: a staging name must not carry the host name itself (length, characters, privacy).
HOST_TAG = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_OWNER = re.compile(r"\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[0-9a-f]{32}" + re.escape(STAGING_FOLDER_SUFFIX) + "$")


def staging_path(final: PathLike, suffix: str = STAGING_FOLDER_SUFFIX) -> Path:
    """A new hidden name beside ``final``: ``.<name>.<host tag>-<process id>-<random hex><suffix>``."""
    final = Path(final)
    return final.parent / f".{final.name}.{HOST_TAG}-{os.getpid()}-{uuid.uuid4().hex}{suffix}"


class StagingFolder:
    """A hidden sibling folder of ``final`` that :meth:`commit` renames to ``final``; removed if never committed.

    Use it as a context manager and write into :attr:`path`. Leaving the block without a commit (an error, a cancel,
    Ctrl-C) removes the staging folder. The commit replaces an empty folder at ``final`` (one the caller made) and
    fails with :class:`OSError` on anything else there, so it never overwrites an output.
    """

    def __init__(self, final: PathLike) -> None:
        self.final = Path(final)
        self._path: Optional[Path] = None

    @property
    def path(self) -> Path:
        """The staging folder; only while the block is open and nothing was committed."""
        if self._path is None:
            raise RuntimeError(f"the staging folder of {self.final} is not open")
        return self._path

    @property
    def is_open(self) -> bool:
        return self._path is not None

    def __enter__(self) -> StagingFolder:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        staging = staging_path(self.final)
        try:
            staging.mkdir()
            self._path = staging
            return self
        except BaseException:
            # A Ctrl-C can land right after mkdir returns, before the with block (and so __exit__) is set up.
            shutil.rmtree(staging, ignore_errors=True)
            self._path = None
            raise

    def __exit__(
        self,
        error_type: Optional[type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.discard()

    def commit(self) -> Path:
        """Rename the complete staging folder to ``final``; returns ``final``.

        Raises :class:`FileExistsError` when ``final`` holds anything (another run committed first, even between
        this run's checks and its rename); the staging folder is then still open, for the block's exit to remove.
        """
        staging = self.path
        try:
            if self.final.exists():
                try:
                    self.final.rmdir()  # only an empty folder goes; anything else raises, the output stays as it was
                except FileNotFoundError:
                    pass  # another process removed the empty folder meanwhile; the rename below decides
            os.rename(staging, self.final)
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST) or self.final.is_dir() and any(self.final.iterdir()):
                raise FileExistsError(errno.EEXIST, "another output appeared there while this one was written",
                                      str(self.final)) from error
            raise
        self._path = None
        return self.final

    def discard(self) -> None:
        """Remove the staging folder (nothing once committed)."""
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


@contextmanager
def atomic_file(final: PathLike) -> Iterator[Path]:
    """A temporary path beside ``final`` to write the file to; renamed over ``final`` when the block ends normally.

    The file is created (empty, with the usual permissions) before it is yielded, so a writer may open it or replace
    it by name. On any exception, KeyboardInterrupt included, it is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = staging_path(final, STAGING_FILE_SUFFIX)  # named before it exists: the finally below always sees it
    try:
        os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        yield temporary
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomically(final: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``final`` through :func:`atomic_file`; returns ``final`` as a Path."""
    with atomic_file(final) as temporary:
        temporary.write_bytes(data)
    return Path(final)


def remove_stale_staging(final: PathLike, older_than_s: float) -> None:
    """Remove the staging folders of ``final`` that a killed run left.

    One made on this host by a process that no longer runs is removed at once; any other only once untouched for
    ``older_than_s``, since it may be another process at work on the same output (here, or on another host sharing
    the folder).
    """
    final = Path(final)
    now = time.time()
    for staging in final.parent.glob(f".{glob.escape(final.name)}.*{STAGING_FOLDER_SUFFIX}"):
        owner = _OWNER.search(staging.name)
        killed = owner is not None and owner["host"] == HOST_TAG and not _is_running(int(owner["pid"]))
        try:
            if killed or now - staging.stat().st_mtime > older_than_s:
                shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            continue  # removed meanwhile by the process that made it


def _is_running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host; True where that cannot be told (then only age removes)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True
