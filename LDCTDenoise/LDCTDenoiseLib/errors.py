"""Exception types the engine raises, so callers (CLI, Slicer module) can tell user errors from bugs."""

from __future__ import annotations


class LDCTDenoiseError(Exception):
    """Base class for every error caused by input, files or settings rather than by a bug."""


class DicomInputError(LDCTDenoiseError):
    """A DICOM file or series cannot be used; the message names the file and the problem."""


class SeriesSelectionError(DicomInputError):
    """Several series were found and the caller must choose one; ``series`` lists them."""

    def __init__(self, message: str, series: list) -> None:
        super().__init__(message)
        self.series = series


class WeightsError(LDCTDenoiseError):
    """A model's weights or card are missing, unreadable or do not match their checksum."""


class CancelledError(LDCTDenoiseError):
    """The user cancelled a long operation; nothing was written."""
