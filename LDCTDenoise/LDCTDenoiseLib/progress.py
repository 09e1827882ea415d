"""Progress and cancellation hooks shared by every long operation in the engine.

A long operation takes ``progress(done, total)`` and ``cancel() -> bool``; both are optional so the engine stays
usable from scripts, the command line (tqdm) and the Slicer module (progress bar + Cancel button) alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from .errors import CancelledError

ProgressCallback = Callable[[int, int], None]
CancelCheck = Callable[[], bool]


def report(progress: Optional[ProgressCallback], done: int, total: int) -> None:
    """Call the progress hook when there is one."""
    if progress is not None:
        progress(done, total)


def check_cancel(cancel: Optional[CancelCheck]) -> None:
    """Raise :class:`CancelledError` when the caller asked to stop."""
    if cancel is not None and cancel():
        raise CancelledError("Cancelled by the user.")
