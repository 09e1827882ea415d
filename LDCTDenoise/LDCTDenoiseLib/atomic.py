"""Outputs that appear whole or not at all: a hidden staging file or folder beside the output, renamed into place.

A rename within one folder is atomic, so a reader (another process, the next run, the user's file browser) sees
either nothing or the complete output; a failure, a cancel, Ctrl-C or a kill never leaves a half-written one under
the output's name. The staging names start with a dot and end in ``.partial`` (folders) or ``.tmp`` (files), and
carry a random part, so a staging left by a killed run never blocks the next one. Standard library only: the Slicer
module loads this.
"""

from __future__ import annotations

import os
import shutil
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


def staging_path(final: PathLike, suffix: str = STAGING_FOLDER_SUFFIX) -> Path:
    """A new hidden name beside ``final``: ``.<name>.<random hex><suffix>``."""
    final = Path(final)
    return final.parent / f".{final.name}.{uuid.uuid4().hex}{suffix}"


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
        """Rename the complete staging folder to ``final``; returns ``final``."""
        staging = self.path
        if self.final.exists():
            self.final.rmdir()  # only an empty folder goes; anything else raises and the output stays as it was
        os.rename(staging, self.final)
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
    """Remove the staging folders of ``final`` that a killed run left, those untouched for ``older_than_s``.

    A recent one may be another process at work on the same output, so it stays.
    """
    final = Path(final)
    now = time.time()
    for staging in final.parent.glob(f".{final.name}.*{STAGING_FOLDER_SUFFIX}"):
        try:
            if now - staging.stat().st_mtime > older_than_s:
                shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            continue  # removed meanwhile by the process that made it
