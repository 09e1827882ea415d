"""Write a processed HU volume as a derived DICOM series beside (never over) its source.

The output keeps every source header except what must change for a new, derived series in the same study: new
series and instance UIDs, DERIVED image type, the derivation description, a new series number and description, a
soft-tissue window, and the pixels (stored with the source's rescale and photometric interpretation, uncompressed).
Everything is written into a hidden sibling folder that is renamed to the output folder only when complete, so a
failure or a cancel leaves nothing behind.

:func:`write_derived_series` writes a volume held in memory; :class:`DerivedSeriesWriter` takes the slices as
they come, which the read -> denoise -> write loop of :mod:`pipeline` feeds a batch at a time. Both give the same
files.
"""

from __future__ import annotations

import copy
import datetime
import errno
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from .atomic import StagingFolder, remove_stale_staging
from .dicom_reader import LOSSY_SYNTAX_UIDS, SeriesLayout
from .errors import LDCTDenoiseError
from .metrics import WINDOW_CENTER, WINDOW_WIDTH
from .progress import CancelCheck, ProgressCallback, check_cancel, report

_PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3
SERIES_NUMBER_OFFSET = 1000
MAX_INTEGER_STRING = 2**31 - 1  # IS values must fit a signed 32-bit integer
MAX_LO, MAX_ST = 64, 1024  # value lengths of SeriesDescription (LO) and DerivationDescription (ST)
_NOT_FINITE = "the volume to write contains NaN or infinite values; nothing was written"
# A staging folder of the same output untouched this long is a killed run's on another host (or of an unknown
# process): removed. One of a process of this host that no longer runs is removed at once (atomic.py).
STALE_STAGING_S = 24 * 3600.0
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
# LossyImageCompressionMethod of the lossy transfer syntaxes a source may have been stored in (PS3.3 C.7.6.1.1.5).
_LOSSY_METHODS = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
# Elements that describe the old encoding or the old pixel values and would be wrong in the output.
_STALE_KEYWORDS = (
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "WindowCenterWidthExplanation",
    "PlanarConfiguration",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)


def write_derived_series(
    volume: SeriesLayout,
    hu: np.ndarray,
    out_dir: str | Path,
    *,
    derivation_description: str,
    series_description_suffix: str = " [LDCTDenoise]",
    series_number: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> list[Path]:
    """Write ``hu`` (shaped like the source series) as a new series of the source study in the new folder ``out_dir``.

    ``volume`` is the source series, a :class:`CTVolume` or just its :class:`SeriesLayout`: the writer needs the
    source headers and each slice's rescale, not its pixels.
    """
    hu = np.asarray(hu)
    if hu.shape != tuple(volume.shape):
        raise LDCTDenoiseError(f"the volume to write has shape {hu.shape}, the source series {tuple(volume.shape)}")
    if not np.all(np.isfinite(hu)):
        raise LDCTDenoiseError(_NOT_FINITE)
    with DerivedSeriesWriter(
        volume,
        out_dir,
        derivation_description=derivation_description,
        series_description_suffix=series_description_suffix,
        series_number=series_number,
    ) as writer:
        done = 0
        for indices in writer.objects:
            check_cancel(cancel)
            writer.add(indices, [hu[index] for index in indices])
            done += len(indices)
            report(progress, done, hu.shape[0])
        check_cancel(cancel)
        return writer.commit()


class DerivedSeriesWriter:
    """A derived series written object by object as its slices arrive, in any order, into a hidden staging folder.

    Use it as a context manager: :meth:`commit` renames the staging folder to ``out_dir`` once every object is
    written; leaving the block without a commit (an error, a cancel, Ctrl-C) removes it, so nothing is left behind.
    The destination is checked on construction, before anything is written.
    """

    def __init__(
        self,
        source: SeriesLayout,
        out_dir: str | Path,
        *,
        derivation_description: str,
        series_description_suffix: str = " [LDCTDenoise]",
        series_number: int | None = None,
    ) -> None:
        self.out_dir = Path(out_dir).absolute()
        check_output_folder(self.out_dir, source.source_files)
        self.source = source
        self.objects = _group_by_source(source)
        self._object_of = {index: number for number, indices in enumerate(self.objects) for index in indices}
        # Stored values of the slices of objects not yet complete, by object number then slice index.
        self._pending: dict[int, dict[int, np.ndarray]] = {}
        self._written = 0
        self._series = _SeriesValues(source, derivation_description, series_description_suffix, series_number)
        self._staging: StagingFolder | None = None

    def __enter__(self) -> DerivedSeriesWriter:
        remove_stale_staging(self.out_dir, STALE_STAGING_S)  # what a killed run left of this output
        try:
            self._staging = StagingFolder(self.out_dir).__enter__()  # it removes its folder if interrupted while made
        except OSError as error:
            raise _write_error(self.out_dir, error) from error
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._staging is not None:  # not committed
            self._staging.discard()
            self._staging = None

    def add(self, indices: Iterable[int], hu: Iterable[np.ndarray]) -> None:
        """Take processed slices (HU, by slice index) and write every object whose slices are now all in."""
        if self._staging is None:
            raise LDCTDenoiseError("the writer is not open; use it in a with block")
        indices, hu = list(indices), list(hu)
        if len(indices) != len(hu):
            raise LDCTDenoiseError(f"{len(indices)} slice indices for {len(hu)} slices to write")
        for index, slice_hu in zip(indices, hu):
            slice_hu = np.asarray(slice_hu)
            if slice_hu.shape != tuple(self.source.shape[1:]):
                raise LDCTDenoiseError(
                    f"slice {index + 1} to write has shape {slice_hu.shape}, the source series "
                    f"{tuple(self.source.shape[1:])}"
                )
            if not np.all(np.isfinite(slice_hu)):
                raise LDCTDenoiseError(_NOT_FINITE)
            number = self._object_of[index]
            pending = self._pending.setdefault(number, {})
            pending[index] = _stored_values(slice_hu, self.source, index)
            indices_of_object = self.objects[number]
            if len(pending) == len(indices_of_object):
                stored = [pending[i] for i in indices_of_object]
                dataset = _derived_dataset(self.source, indices_of_object, stored, self._series)
                try:
                    _save(dataset, self._staging.path / _file_name(number))
                except OSError as error:
                    raise _write_error(self.out_dir, error) from error
                del self._pending[number]
                self._written += 1

    def commit(self) -> list[Path]:
        """Move the complete series into place; the files in slice order of their first slice."""
        if self._staging is None:
            raise LDCTDenoiseError("the writer is not open; use it in a with block")
        if self._written != len(self.objects):
            raise LDCTDenoiseError(
                f"only {self._written} of the {len(self.objects)} objects of the series were written; "
                f"nothing was written"
            )
        try:
            self._staging.commit()  # replaces only an empty folder the caller made; checked empty above
        except FileExistsError as error:
            raise LDCTDenoiseError(
                f"{self.out_dir}: another run wrote its output there while this one ran; that output was kept and "
                f"nothing of this run was written"
            ) from error
        except OSError as error:
            raise _write_error(self.out_dir, error) from error
        self._staging = None
        return [self.out_dir / _file_name(number) for number in range(len(self.objects))]


def _file_name(number: int) -> str:
    return f"{number + 1:05d}.dcm"


class _SeriesValues:
    """Values shared by every instance of the derived series."""

    def __init__(self, volume: SeriesLayout, derivation: str, suffix: str, series_number: int | None) -> None:
        first = volume.headers[0]
        self.series_uid = generate_uid()
        # An anonymised source may have emptied the study UID; a generated one keeps the output valid DICOM.
        self.study_uid = str(first.get("StudyInstanceUID", "") or "") or generate_uid()
        self.description = (str(first.get("SeriesDescription", "") or "") + suffix).strip()[:MAX_LO]
        self.derivation = derivation[:MAX_ST]
        if series_number is None:
            try:
                source = int(first.get("SeriesNumber", 0) or 0)
            except (TypeError, ValueError):
                source = 0
            series_number = source + SERIES_NUMBER_OFFSET
        self.series_number = int(np.clip(series_number, 1, MAX_INTEGER_STRING))
        now = datetime.datetime.now()
        self.content_date, self.content_time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


def _write_error(out_dir: Path, error: OSError) -> LDCTDenoiseError:
    """The user's message for a failed write: what failed and that nothing is left (the staging goes on exit).

    pydicom re-raises a failed write as a new OSError with its own text; the system's error is in the chain.
    """
    cause: BaseException | None = error
    while cause is not None and not (isinstance(cause, OSError) and cause.errno is not None):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError):
        error = cause
    why = error.strerror or str(error)
    if error.errno in _DISK_FULL:
        why += " (the disk or the file size limit is full)"
    return LDCTDenoiseError(f"{out_dir}: could not write the derived series: {why}; nothing was written")


def check_output_folder(out_dir: str | Path, sources: Sequence[Path] = ()) -> None:
    """Refuse an output folder that cannot take a new series, before any work: one that is a source's folder, holds
    a source, exists and is not empty, or cannot be written (tried by making a folder where the output would go)."""
    out_dir = Path(out_dir).absolute()
    _check_destination(out_dir, list(sources))
    existing = out_dir.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LDCTDenoiseError(f"{out_dir}: cannot be made: {existing} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{out_dir.name}.write-test-", dir=existing))
    except OSError as error:
        raise LDCTDenoiseError(
            f"{out_dir}: cannot write there ({error.strerror or error}); choose another output folder"
        ) from error


def _check_destination(out_dir: Path, sources: list[Path]) -> None:
    """Never write into a source folder, over source files or into a non-empty folder."""
    target = out_dir.resolve()
    for source in {Path(s).resolve() for s in sources}:
        if target == source.parent:
            raise LDCTDenoiseError(f"{out_dir}: the output folder is the folder of the source file {source}")
        if target in source.parents:
            raise LDCTDenoiseError(f"{out_dir}: the output folder contains the source file {source}")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise LDCTDenoiseError(f"{out_dir}: exists and is not a folder; nothing is overwritten")
        if any(out_dir.iterdir()):
            raise LDCTDenoiseError(f"{out_dir}: the output folder exists and is not empty; nothing is overwritten")


def _group_by_source(volume: SeriesLayout) -> list[list[int]]:
    """Slice indices per output object, in slice order: one per single-frame slice, one per multi-frame source.

    Volumes made in memory (the phantom) have no source files; each of their slices becomes its own object.
    """
    groups: dict[object, list[int]] = {}
    for index, frame in enumerate(volume.frame_indices):
        key = index if frame is None else volume.source_files[index]
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _derived_dataset(
    volume: SeriesLayout, indices: list[int], stored: Sequence[np.ndarray], series: _SeriesValues
) -> Dataset:
    """The output object of the slices ``indices`` (one source object), ``stored`` holding their stored values."""
    source = volume.headers[indices[0]]
    frames = [volume.frame_indices[i] for i in indices]
    enhanced = frames[0] is not None
    dataset = copy.deepcopy(source)
    for element in list(dataset):
        if element.tag.element == 0 or element.keyword in _STALE_KEYWORDS:  # group lengths are stale too
            del dataset[element.tag]

    meta = copy.deepcopy(getattr(source, "file_meta", None) or FileMetaDataset())
    _mark_lossy_source(dataset, str(meta.get("TransferSyntaxUID", "") or ""))
    sop_class = str(dataset.get("SOPClassUID", "") or "") or str(meta.get("MediaStorageSOPClassUID", "") or "")
    source_instance = str(dataset.get("SOPInstanceUID", "") or "")
    sop_instance = generate_uid()
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = sop_instance
    dataset.StudyInstanceUID = series.study_uid
    dataset.SeriesInstanceUID = series.series_uid
    dataset.SeriesNumber = series.series_number
    dataset.SeriesDescription = series.description
    dataset.DerivationDescription = series.derivation
    dataset.ImageType = _derived_image_type(dataset.get("ImageType"), enhanced)
    dataset.ContentDate, dataset.ContentTime = series.content_date, series.content_time
    # Enhanced CT references sources per frame, in its functional groups; a volume made in memory (the phantom) has
    # no source object on disk to point to.
    if source_instance and not enhanced and volume.source_files:
        reference = Dataset()
        reference.ReferencedSOPClassUID = sop_class
        reference.ReferencedSOPInstanceUID = source_instance
        dataset.SourceImageSequence = DicomSequence([reference])

    if enhanced:
        _update_functional_groups(dataset)
        order = np.argsort(frames)
        if not np.array_equal(np.sort(frames), np.arange(int(dataset.get("NumberOfFrames", 1) or 1))):
            raise LDCTDenoiseError(f"{volume.source_files[indices[0]]}: the volume does not hold every frame")
        pixels = np.stack([stored[k] for k in order])
    else:
        dataset.WindowCenter, dataset.WindowWidth = WINDOW_CENTER, WINDOW_WIDTH
        pixels = stored[0]

    dataset.SamplesPerPixel = 1
    # MONOCHROME1 (low values shown bright) changes only the display, not the stored values or HU: keep it.
    photometric = str(source.get("PhotometricInterpretation", "") or "").strip()
    dataset.PhotometricInterpretation = "MONOCHROME1" if photometric == "MONOCHROME1" else "MONOCHROME2"
    dataset.PixelData = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    dataset["PixelData"].VR = "OW" if int(dataset.BitsAllocated) > 8 else "OB"

    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    for keyword in ("ImplementationVersionName", "SourceApplicationEntityTitle", "FileMetaInformationGroupLength"):
        if keyword in meta:
            delattr(meta, keyword)
    dataset.file_meta = meta
    return dataset


def _mark_lossy_source(dataset: Dataset, source_syntax: str) -> None:
    """An image once lossy compressed stays marked so (LossyImageCompression 01), although the output is not."""
    if source_syntax not in LOSSY_SYNTAX_UIDS or str(dataset.get("LossyImageCompression", "") or "") == "01":
        return
    dataset.LossyImageCompression = "01"
    if source_syntax in _LOSSY_METHODS and "LossyImageCompressionMethod" not in dataset:
        dataset.LossyImageCompressionMethod = _LOSSY_METHODS[source_syntax]


def _derived_image_type(value: object, enhanced: bool) -> list[str]:
    """DERIVED\\SECONDARY (keeping further values); Enhanced CT only allows PRIMARY as value 2."""
    if isinstance(value, str):
        values = [value] if value else []
    else:
        values = [str(v) for v in value or []]
    return ["DERIVED", "PRIMARY" if enhanced else "SECONDARY", *values[2:]]


def _update_functional_groups(dataset: Dataset) -> None:
    """Mark frames DERIVED and set the soft-tissue window where Enhanced CT keeps them: in the functional groups."""
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if not shared:
        dataset.SharedFunctionalGroupsSequence = DicomSequence([Dataset()])
        shared = dataset.SharedFunctionalGroupsSequence
    has_window = False
    for group in [*shared, *dataset.get("PerFrameFunctionalGroupsSequence", [])]:
        for item in group.get("CTImageFrameTypeSequence", []):
            if "FrameType" in item:
                item.FrameType = ["DERIVED", *[str(v) for v in item.FrameType][1:]]
        for item in group.get("FrameVOILUTSequence", []):
            item.WindowCenter, item.WindowWidth = WINDOW_CENTER, WINDOW_WIDTH
            if "WindowCenterWidthExplanation" in item:
                del item.WindowCenterWidthExplanation
            has_window = True
    if not has_window:
        window = Dataset()
        window.WindowCenter, window.WindowWidth = WINDOW_CENTER, WINDOW_WIDTH
        shared[0].FrameVOILUTSequence = DicomSequence([window])


def _stored_values(hu: np.ndarray, volume: SeriesLayout, index: int) -> np.ndarray:
    """HU back to the source's stored values: the slice's rescale as the reader found it, rounded, clipped to the
    stored bit depth. The derived object keeps the source's pixel module, so the source header gives the stored type.
    """
    header = volume.headers[index]
    slope, intercept = (float(value) for value in volume.rescale[index])
    bits_allocated, bits_stored = int(header.BitsAllocated), int(header.get("BitsStored", header.BitsAllocated))
    signed = int(header.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0, 2**bits_stored - 1)
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits_allocated // 8}")
    stored = np.rint((hu.astype(np.float64) - intercept) / slope)
    return np.clip(stored, low, high).astype(dtype)


def _save(dataset: Dataset, path: Path) -> None:
    """Write in the DICOM file format, explicit VR little endian, with pydicom 2.4 or 3.x."""
    if _PYDICOM_3:
        dataset.save_as(path, enforce_file_format=True, overwrite=False)
    else:
        dataset.is_little_endian, dataset.is_implicit_VR = True, False
        dataset.save_as(path, write_like_original=False)
