"""Read one CT series from DICOM files into a float32 HU volume with its geometry and source headers.

Headers are read once without pixels to group files by series and sort slices along the slice normal; only the
chosen series' pixels are decoded afterwards, all at once (:func:`read_series`) or a few slices at a time
(:func:`open_series`, so that a long series streams through in memory bounded by the batch). Every problem that
would make the HU values or the slice order wrong raises :class:`DicomInputError` naming the file; problems a
per-slice denoiser tolerates (gantry tilt, uneven spacing, lossy compression) become warnings. What real archives hold
beside a series is handled as a PACS viewer does: DICOMDIR and other non-image objects are ignored, a repeated copy
of an instance is read once, localizer (scout) images are left out, and files without the DICOM file meta (old
exports) are read when they are clearly CT images. Reading never writes to the input files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from .errors import DicomInputError, SeriesSelectionError
from .progress import CancelCheck, ProgressCallback, check_cancel, report

MEDIA_STORAGE_DIRECTORY_UID = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not an image
DEFLATED_SYNTAX_UID = "1.2.840.10008.1.2.1.99"
# Transfer syntaxes that may have lost information: JPEG baseline/extended, JPEG-LS near-lossless, JPEG 2000 (not
# "lossless only"), HTJ2K, JPEG XL, MPEG/HEVC video.
LOSSY_SYNTAX_UIDS = frozenset(
    ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
     "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"]
    + [f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)]
)
# The installed-by-default package that decodes each compressed syntax (JPEG baseline/extended/lossless, JPEG-LS and
# JPEG 2000 through python-gdcm; HTJ2K through pylibjpeg-openjpeg), named when no decoder is found.
DECODER_PACKAGES = {
    **dict.fromkeys([f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, 90, 91)], "python-gdcm"),
    **dict.fromkeys([f"1.2.840.10008.1.2.4.{n}" for n in (201, 202, 203)], "pylibjpeg-openjpeg"),
}
ORTHOGONAL_COSINE = np.cos(np.radians(45.0))  # planes further apart than this are another view (a localizer)
ORIENTATION_TOLERANCE = 1e-3  # direction cosines written with few digits still count as equal
POSITION_TOLERANCE_MM = 1e-3  # two slices closer than this along the normal are the same slice
TILT_TOLERANCE_DEG = 0.1
UNEVEN_SPACING_TOLERANCE = 0.01  # relative to the median spacing, with a 0.01 mm floor


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in the input, as offered to the user for choosing."""

    series_uid: str
    description: str
    modality: str
    n_slices: int
    files: tuple[Path, ...]
    derived: bool = False  # ImageType DERIVED: made from another series (e.g. an earlier denoised output)


@dataclass
class _Slice:
    """One image plane (a single-frame file or one frame of an Enhanced CT object) before its pixels are read."""

    path: Path
    frame: int | None
    header: pydicom.Dataset
    orientation: np.ndarray
    position: np.ndarray
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float
    rescale_type: str
    tilt_tag: float


@dataclass
class SeriesLayout:
    """A checked CT series without its pixels: geometry, per-slice rescale, source files and headers, warnings.

    :meth:`read` decodes any run of slices on demand, so a caller can stream a long series a batch at a time. The
    writer needs nothing else to make a derived series; :class:`CTVolume` is the same with the HU in memory.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    slice_positions: np.ndarray
    series_uid: str
    description: str
    source_files: list[Path]  # per slice; empty for a volume made in memory (see synthetic_series.py)
    frame_indices: list[int | None]
    headers: list[pydicom.Dataset]
    rescale: np.ndarray = field(repr=False)  # (slices, 2): each slice's RescaleSlope and RescaleIntercept, as read
    warnings: list[str] = field(default_factory=list)
    gantry_tilt_deg: float = 0.0
    uneven_spacing: bool = False
    slices: list[_Slice] = field(default_factory=list, repr=False)  # the files' planes; empty for one in memory
    # Decoded multi-frame objects whose later frames a following read needs: each file is decoded once as long as
    # reads go forward, and nothing is kept past its last frame.
    _decoded: dict[Path, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def read(self, start: int, stop: int, cancel: CancelCheck | None = None) -> np.ndarray:
        """HU of slices ``start`` to ``stop`` (slice order), equal to ``read_series(...).hu[start:stop]``."""
        hu = _read_pixels(self.slices[start:stop], None, cancel, self._decoded)
        if self._decoded:
            later = {s.path for s in self.slices[stop:]}
            for path in [path for path in self._decoded if path not in later]:
                del self._decoded[path]
        return hu


@dataclass
class CTVolume(SeriesLayout):
    """A CT series with its HU (z, y, x) in memory: :class:`SeriesLayout` and ``hu``."""

    hu: np.ndarray = field(default=None, repr=False)  # required; a default only because the layout's fields have some

    def __post_init__(self) -> None:
        if self.hu is None:
            raise TypeError("CTVolume needs hu")
        if tuple(self.hu.shape) != tuple(self.shape):
            raise ValueError(f"hu has shape {self.hu.shape}, the series {tuple(self.shape)}")

    def read(self, start: int, stop: int, cancel: CancelCheck | None = None) -> np.ndarray:
        """HU of slices ``start`` to ``stop``, from memory."""
        return np.array(self.hu[start:stop], dtype=np.float32)


def list_series(
    paths: str | Path | Sequence[str | Path],
    unreadable: list[tuple[Path, str]] | None = None,
    cancel: CancelCheck | None = None,
) -> list[SeriesInfo]:
    """List the series in the given files and folders (folders are searched recursively).

    A DICOM file that cannot be read stops the listing with its error, unless ``unreadable`` is given: then each
    such file is appended to it as (path, message) and the listing goes on (an archive's one corrupt file must not
    hide its other series).
    """
    return [info for info, _, _ in _scan(paths, cancel, unreadable)]


def read_series(
    paths: str | Path | Sequence[str | Path],
    series_uid: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
) -> CTVolume:
    """Read one CT series as HU; ``series_uid`` picks it when the input holds several."""
    layout = open_series(paths, series_uid, cancel)
    hu = _read_pixels(layout.slices, progress, cancel)
    return CTVolume(hu=hu, **{f.name: getattr(layout, f.name) for f in fields(SeriesLayout) if f.init})


def open_series(
    paths: str | Path | Sequence[str | Path],
    series_uid: str | None = None,
    cancel: CancelCheck | None = None,
) -> SeriesLayout:
    """Find, check and sort one CT series as :func:`read_series` does (same errors and warnings), decoding no pixels."""
    found = _scan(paths, cancel)
    if series_uid is None:
        if len(found) > 1:
            infos = [info for info, _, _ in found]
            raise SeriesSelectionError(
                f"{len(found)} series found; choose one by its SeriesInstanceUID:\n" + _describe(infos), infos
            )
        info, headers, scan_warnings = found[0]
    else:
        matches = [item for item in found if item[0].series_uid == series_uid]
        if not matches:
            raise DicomInputError(
                f"series {series_uid!r} is not in the input; available:\n" + _describe([i for i, _, _ in found])
            )
        info, headers, scan_warnings = matches[0]

    slices, localizer_warnings = _sorted_slices(headers)
    geometry_warnings, tilt, uneven, spacing_z, positions = _check_geometry(slices)
    warnings = [*scan_warnings, *localizer_warnings, *_compression_warnings(slices), *geometry_warnings]

    first = slices[0]
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    direction = np.column_stack([row_dir, col_dir, np.cross(row_dir, col_dir)])
    # PixelSpacing is (row spacing = along y, column spacing = along x).
    spacing = (spacing_z, first.pixel_spacing[0], first.pixel_spacing[1])
    return SeriesLayout(
        shape=(len(slices), int(first.header.Rows), int(first.header.Columns)),
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(p) for p in first.position),
        direction=direction,
        slice_positions=positions,
        series_uid=info.series_uid,
        description=info.description,
        source_files=[s.path for s in slices],
        frame_indices=[s.frame for s in slices],
        headers=[s.header for s in slices],
        rescale=np.array([(s.slope, s.intercept) for s in slices], dtype=np.float64),
        warnings=warnings,
        gantry_tilt_deg=tilt,
        uneven_spacing=uneven,
        slices=slices,
    )


def _describe(infos: list[SeriesInfo]) -> str:
    return "\n".join(
        f"  {i.series_uid or '<empty SeriesInstanceUID>'}  {i.description or '<no description>'}  "
        f"({i.modality or '?'}, {i.n_slices} slices{', DERIVED' if i.derived else ''})"
        for i in infos
    )


def _input_files(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Every file under the given files and folders, each once.

    Folders are searched recursively, following symbolic links (a series linked into a project folder is read);
    a folder reached twice (a link back to a parent, or two links to one folder) is searched once, and a file
    reached through several names is listed once, under the first name in sorted order.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files: list[Path] = []
    seen_files: set[tuple[int, int]] = set()
    seen_folders: set[tuple[int, int]] = set()

    def unreadable(error: OSError) -> None:
        raise DicomInputError(f"{error.filename}: cannot list the folder ({error.strerror}); slices in it would be "
                              f"missed") from error

    def add(path: Path) -> None:
        try:
            status = path.stat()
        except OSError:  # a broken link
            return
        if (status.st_dev, status.st_ino) not in seen_files:
            seen_files.add((status.st_dev, status.st_ino))
            files.append(path)

    for item in items:
        path = Path(item)
        if path.is_dir():
            for folder, subfolders, names in os.walk(path, onerror=unreadable, followlinks=True):
                status = os.stat(folder)
                if (status.st_dev, status.st_ino) in seen_folders:
                    subfolders[:] = []
                    continue
                seen_folders.add((status.st_dev, status.st_ino))
                subfolders.sort()
                for name in sorted(names):
                    if os.path.isfile(os.path.join(folder, name)):
                        add(Path(folder, name))
        elif path.is_file():
            add(path)
        else:
            raise DicomInputError(f"{path}: no such file or folder")
    return files


def _read_header(path: Path) -> tuple[pydicom.Dataset, bool] | None:
    """The header without pixels and whether the file lacks the file meta, or None for a file that is not DICOM.

    pydicom stops quietly at the end of a truncated file, so an image whose header runs to the end of the file (no
    PixelData after it) is reported here, before any pixels are read. A deflated file is inflated in memory, so for
    it the presence of PixelData is checked directly.
    """
    try:
        with open(path, "rb") as stream:
            try:
                header = pydicom.dcmread(stream, stop_before_pixels=True, force=False)
            except InvalidDicomError:
                header = _read_raw_header(stream)
                if header is None:
                    return None
            raw = "TransferSyntaxUID" not in header.file_meta
            reached_end = stream.tell() >= os.fstat(stream.fileno()).st_size
            if str(header.file_meta.get("TransferSyntaxUID", "")) == DEFLATED_SYNTAX_UID:
                header = pydicom.dcmread(path, force=True)  # known to be DICOM; it may lack the preamble
                reached_end = "PixelData" not in header
                if not reached_end:
                    del header.PixelData
    except Exception as exc:  # a DICOM file that pydicom cannot parse: truncated or corrupt
        raise DicomInputError(f"{path}: unreadable or truncated DICOM file ({type(exc).__name__}: {exc})") from exc
    if "TransferSyntaxUID" not in header.file_meta:
        if "SOPClassUID" not in header and "Modality" not in header:
            raise DicomInputError(f"{path}: unreadable or truncated DICOM file (incomplete file meta information)")
        _set_transfer_syntax(header, path)
    if reached_end and _is_image(header):
        raise DicomInputError(f"{path}: no PixelData: the image file is truncated or holds no pixels")
    return header, raw


def _read_raw_header(stream: Any) -> pydicom.Dataset | None:
    """The header of a file written without the 128-byte preamble (old exports), or None when it is not DICOM.

    Only a file that starts with a group 0002 or 0008 element and holds a SOP class or a modality counts as DICOM.
    """
    stream.seek(0)
    if stream.read(2) not in (b"\x02\x00", b"\x08\x00"):
        return None
    stream.seek(0)
    try:
        header = pydicom.dcmread(stream, stop_before_pixels=True, force=True)
    except Exception:
        return None
    if "SOPClassUID" not in header and "Modality" not in header:
        return None
    return header


def _set_transfer_syntax(dataset: pydicom.Dataset, path: Path) -> None:
    """Record the encoding pydicom found in a file without file meta (implicit or explicit VR, little endian) as the
    transfer syntax the file meta would have given, which pixel decoding and writing need."""
    if "TransferSyntaxUID" in dataset.file_meta:
        return
    encoding = getattr(dataset, "original_encoding", None)  # pydicom 3
    implicit, little = encoding if encoding else (dataset.is_implicit_VR, dataset.is_little_endian)
    if not little:
        raise DicomInputError(
            f"{path}: big endian DICOM file without file meta information; convert it (e.g. with dcmconv) first"
        )
    dataset.file_meta.TransferSyntaxUID = (
        pydicom.uid.ImplicitVRLittleEndian if implicit else pydicom.uid.ExplicitVRLittleEndian
    )


def _is_image(header: pydicom.Dataset) -> bool:
    """An image object, as opposed to a DICOMDIR, structured report, presentation state or other non-image object."""
    return "Rows" in header or "Image Storage" in pydicom.uid.UID(_sop_class(header)).name


def _scan(
    paths: str | Path | Sequence[str | Path],
    cancel: CancelCheck | None,
    unreadable: list[tuple[Path, str]] | None = None,
) -> list[tuple[SeriesInfo, list[tuple[Path, pydicom.Dataset]], list[str]]]:
    """Group the DICOM image headers under ``paths`` by SeriesInstanceUID, with the warnings about each group.

    Non-image objects are skipped; a file repeating an instance already found (a copied export) is read once.
    """
    files = _input_files(paths)
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    raw_files: dict[str, list[tuple[Path, str]]] = {}
    repeats: dict[str, list[tuple[Path, Path]]] = {}
    seen: dict[str, tuple[Path, pydicom.Dataset]] = {}
    non_images = 0
    for path in files:
        check_cancel(cancel)
        try:
            read = _read_header(path)
        except DicomInputError as error:
            if unreadable is None:
                raise
            unreadable.append((path, str(error)))
            continue
        if read is None:
            continue
        header, raw = read
        if _sop_class(header) == MEDIA_STORAGE_DIRECTORY_UID or not _is_image(header):
            non_images += 1
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        instance = str(header.get("SOPInstanceUID", "") or "")
        if instance and instance in seen:
            first_path, first = seen[instance]
            try:
                _check_same_instance(first_path, first, path, header)
            except DicomInputError as error:
                if unreadable is None:
                    raise
                unreadable.append((path, str(error)))
                continue
            repeats.setdefault(uid, []).append((path, first_path))
            continue
        if instance:
            seen[instance] = (path, header)
        groups.setdefault(uid, []).append((path, header))
        if raw:
            raw_files.setdefault(uid, []).append((path, pydicom.uid.UID(header.file_meta.TransferSyntaxUID).name))
    if not groups:
        where = ", ".join(str(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths))
        if non_images:
            raise DicomInputError(
                f"no DICOM images found in {where}: only {non_images} non-image DICOM object(s) (DICOMDIR, reports, "
                f"presentation states, ...)"
            )
        raise DicomInputError(f"no DICOM files found in {where}")
    found = []
    for uid, members in groups.items():
        header = members[0][1]
        warnings = []
        if uid in repeats:
            copy, first_path = repeats[uid][0]
            warnings.append(
                f"{len(repeats[uid])} file(s) repeat an instance already found (same SOPInstanceUID), each read once: "
                f"{copy} repeats {first_path}"
            )
        if uid in raw_files:
            raw_path, syntax = raw_files[uid][0]
            warnings.append(
                f"{len(raw_files[uid])} file(s) without DICOM file meta, read as {syntax}: {raw_path}"
            )
        found.append(
            (
                SeriesInfo(
                    series_uid=uid,
                    description=str(header.get("SeriesDescription", "") or ""),
                    modality=str(header.get("Modality", "") or ""),
                    n_slices=sum(_n_frames(h) for _, h in members),
                    files=tuple(p for p, _ in members),
                    derived=_image_type(header).upper().startswith("DERIVED"),
                ),
                members,
                warnings,
            )
        )
    return sorted(found, key=lambda item: str(item[0].files[0]))


def _check_same_instance(first_path: Path, first: pydicom.Dataset, path: Path, header: pydicom.Dataset) -> None:
    """Two files with one SOPInstanceUID must be copies of one image, not two images sharing a UID by mistake."""
    for keyword in ("SeriesInstanceUID", "ImagePositionPatient", "Rows", "Columns", "NumberOfFrames"):
        if str(first.get(keyword, "")) != str(header.get(keyword, "")):
            raise DicomInputError(
                f"{path} and {first_path} have the same SOPInstanceUID but different {keyword}: two images share "
                f"one UID, so which one belongs to the series is unknown"
            )


def _sop_class(header: pydicom.Dataset) -> str:
    uid = str(header.get("SOPClassUID", "") or "")
    if not uid and hasattr(header, "file_meta"):
        uid = str(header.file_meta.get("MediaStorageSOPClassUID", "") or "")
    return uid


def _n_frames(header: pydicom.Dataset) -> int:
    try:
        return max(int(header.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _is_enhanced(header: pydicom.Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in header or "SharedFunctionalGroupsSequence" in header


def slice_attribute(header: pydicom.Dataset, frame: int | None, sequence: str, keyword: str) -> Any:
    """An attribute of one slice: the top level of a single-frame file (``frame`` None); for a frame of an Enhanced
    object, ``keyword`` inside the functional group ``sequence``, per-frame first, then shared, then the top level."""
    if frame is not None:
        for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            items = header.get(groups)
            if not items:
                continue
            group = items[frame] if groups == "PerFrameFunctionalGroupsSequence" and frame < len(items) else items[0]
            inner = group.get(sequence)
            if inner and keyword in inner[0]:
                return inner[0][keyword].value
    return header.get(keyword)


def _floats(value: Any, count: int, where: str, name: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        values = np.array([])
    if values.size != count or not np.all(np.isfinite(values)):
        raise DicomInputError(f"{where}: {name} missing or invalid ({value!r}); cannot place the slice in space")
    return values


def _make_slice(path: Path, header: pydicom.Dataset, frame: int | None) -> _Slice:
    def get(sequence: str, keyword: str) -> Any:
        return slice_attribute(header, frame, sequence, keyword)

    where = _where(path, frame)
    slope = get("PixelValueTransformationSequence", "RescaleSlope")
    intercept = get("PixelValueTransformationSequence", "RescaleIntercept")
    if slope is None or intercept is None or str(slope).strip() == "" or str(intercept).strip() == "":
        raise DicomInputError(
            f"{where}: RescaleSlope/RescaleIntercept missing: the stored values are not HU and the scale "
            f"cannot be guessed"
        )
    tilt = get("CTAcquisitionDetailsSequence", "GantryDetectorTilt")
    orientation = get("PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _floats(get("PixelMeasuresSequence", "PixelSpacing"), 2, where, "PixelSpacing")
    return _Slice(
        path=path,
        frame=frame,
        header=header,
        orientation=_floats(orientation, 6, where, "ImageOrientationPatient"),
        position=_floats(get("PlanePositionSequence", "ImagePositionPatient"), 3, where, "ImagePositionPatient"),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        slope=float(slope),
        intercept=float(intercept),
        rescale_type=str(get("PixelValueTransformationSequence", "RescaleType") or ""),
        tilt_tag=float(tilt) if tilt not in (None, "") else 0.0,
    )


def _validate_header(path: Path, header: pydicom.Dataset) -> None:
    modality = str(header.get("Modality", "") or "")
    if modality != "CT":
        raise DicomInputError(f"{path}: modality is {modality or 'missing'!r}, not CT; only CT series can be denoised")
    if int(header.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomInputError(f"{path}: {header.get('SamplesPerPixel')} samples per pixel; CT must be greyscale")
    if "Rows" not in header or "Columns" not in header:
        raise DicomInputError(f"{path}: Rows/Columns missing; not an image")
    if _n_frames(header) > 1 and not _is_enhanced(header):
        raise DicomInputError(f"{path}: multi-frame object without functional groups; slice positions unknown")


def _is_localizer(header: pydicom.Dataset) -> bool:
    value = header.get("ImageType") or []
    values = [value] if isinstance(value, str) else list(value)
    return any(str(v).strip().upper() == "LOCALIZER" for v in values)


def _sorted_slices(headers: list[tuple[Path, pydicom.Dataset]]) -> tuple[list[_Slice], list[str]]:
    """The slices of the series sorted along the slice normal, with consistent size and orientation, and warnings.

    Localizer (scout) images are left out: those marked LOCALIZER in ImageType, and a minority of images whose plane
    is perpendicular to the others' (a scout exported without the mark); a series of localizers only is refused.
    """
    scouts = [path for path, header in headers if _is_localizer(header)]
    if len(scouts) == len(headers):
        raise DicomInputError(
            f"{headers[0][0]}: the series holds only localizer (scout) images (ImageType "
            f"{_image_type(headers[0][1])}); choose the axial series taken with them"
        )
    slices: list[_Slice] = []
    for path, header in headers:
        if _is_localizer(header):
            continue
        _validate_header(path, header)
        if _is_enhanced(header):
            slices.extend(_make_slice(path, header, frame) for frame in range(_n_frames(header)))
        else:
            slices.append(_make_slice(path, header, None))
    slices, perpendicular = _without_perpendicular_views(slices)
    scouts.extend(s.path for s in perpendicular)
    warnings = []
    if scouts:
        warnings.append(
            f"{len(scouts)} localizer (scout) image(s) left out of the series: {', '.join(str(p) for p in scouts[:3])}"
            + (", ..." if len(scouts) > 3 else "")
        )

    first = slices[0]
    size = (int(first.header.Rows), int(first.header.Columns))
    for s in slices[1:]:
        other = (int(s.header.Rows), int(s.header.Columns))
        if other != size:
            raise DicomInputError(
                f"mixed image sizes in one series: {first.path} is {size[0]}x{size[1]}, "
                f"{s.path} is {other[0]}x{other[1]}"
            )
        if np.max(np.abs(s.orientation - first.orientation)) > ORIENTATION_TOLERANCE:
            raise DicomInputError(
                f"mixed orientations in one series: {first.path} has ImageOrientationPatient "
                f"{first.orientation.round(4).tolist()}, {s.path} has {s.orientation.round(4).tolist()}"
            )
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-4):
            raise DicomInputError(
                f"mixed pixel spacing in one series: {first.path} has {first.pixel_spacing}, "
                f"{s.path} has {s.pixel_spacing}"
            )

    normal = np.cross(first.orientation[:3], first.orientation[3:])
    slices.sort(key=lambda s: float(np.dot(s.position, normal)))
    return slices, warnings


def _image_type(header: pydicom.Dataset) -> str:
    value = header.get("ImageType") or []
    return "\\".join([value] if isinstance(value, str) else [str(v) for v in value])


def _without_perpendicular_views(slices: list[_Slice]) -> tuple[list[_Slice], list[_Slice]]:
    """Split off the images whose plane is perpendicular to that of most images (unmarked localizers)."""
    normals = np.array([np.cross(s.orientation[:3], s.orientation[3:]) for s in slices])
    planes, members = np.unique(np.round(normals, 3), axis=0, return_counts=True)  # few distinct planes
    parallel = np.abs(planes @ planes.T) >= ORTHOGONAL_COSINE
    main = planes[int(np.argmax(parallel.astype(int) @ members))]
    in_plane = np.abs(normals @ main) >= ORTHOGONAL_COSINE
    if 2 * int(in_plane.sum()) <= len(slices):  # no clear majority: a mixed series, reported as such by the caller
        return slices, []
    return [s for s, keep in zip(slices, in_plane) if keep], [s for s, keep in zip(slices, in_plane) if not keep]


def _compression_warnings(slices: list[_Slice]) -> list[str]:
    """Say when the pixels went through lossy compression: the noise the denoiser sees is then partly artefact."""
    lossy: dict[str, Path] = {}
    for s in slices:
        syntax = str(s.header.file_meta.get("TransferSyntaxUID", "")) if hasattr(s.header, "file_meta") else ""
        if syntax in LOSSY_SYNTAX_UIDS:
            lossy.setdefault(f"stored in the lossy transfer syntax {pydicom.uid.UID(syntax).name}", s.path)
        elif str(s.header.get("LossyImageCompression", "") or "").strip() == "01":
            lossy.setdefault("marked as lossy compressed before (LossyImageCompression 01)", s.path)
    return [
        f"{how}, e.g. {path}: compression artefacts are in the input and the denoised output"
        for how, path in lossy.items()
    ]


def _check_geometry(slices: list[_Slice]) -> tuple[list[str], float, bool, float, np.ndarray]:
    """Warnings, gantry tilt (degrees), uneven flag, z spacing and slice positions along the normal."""
    first = slices[0]
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    positions = np.array([np.dot(s.position, normal) for s in slices], dtype=np.float64)
    warnings: list[str] = []

    steps = np.diff(positions)
    duplicates = np.flatnonzero(steps < POSITION_TOLERANCE_MM)
    if duplicates.size:
        k = int(duplicates[0])
        a, b = slices[k], slices[k + 1]
        raise DicomInputError(
            f"duplicate slice position {positions[k]:.3f} mm along the normal: {_where(a.path, a.frame)} and "
            f"{_where(b.path, b.frame)} (repeated files or several acquisitions in one series?)"
        )

    if len(slices) > 1:
        spacing_z = float(np.median(steps))
        uneven = bool(np.max(np.abs(steps - spacing_z)) > max(0.01, UNEVEN_SPACING_TOLERANCE * spacing_z))
        stack = slices[-1].position - first.position
        geometric_tilt = float(np.degrees(np.arccos(min(1.0, abs(np.dot(stack, normal)) / np.linalg.norm(stack)))))
    else:
        thickness = (
            slice_attribute(first.header, first.frame, "PixelMeasuresSequence", "SpacingBetweenSlices")
            or slice_attribute(first.header, first.frame, "PixelMeasuresSequence", "SliceThickness")
            or 1.0
        )
        spacing_z, uneven, geometric_tilt = float(thickness), False, 0.0

    tilt = 0.0
    if abs(first.tilt_tag) > 0.01:
        tilt = first.tilt_tag
    elif geometric_tilt > TILT_TOLERANCE_DEG:
        tilt = geometric_tilt
    if tilt:
        warnings.append(f"gantry tilt {tilt:.1f}° — denoised per slice, geometry kept")
    if uneven:
        warnings.append(
            f"uneven slice spacing: {steps.min():.2f} to {steps.max():.2f} mm (median {spacing_z:.2f} mm) — "
            f"denoised per slice, geometry kept"
        )
    types = sorted({s.rescale_type for s in slices if s.rescale_type and s.rescale_type.upper() != "HU"})
    if types:
        warnings.append(
            f"RescaleType is {', '.join(types)} rather than HU in {first.path}: the values may not be Hounsfield units"
        )
    return warnings, float(tilt), uneven, spacing_z, positions


def _where(path: Path, frame: int | None) -> str:
    return str(path) if frame is None else f"{path} (frame {frame + 1})"


def _read_pixels(
    slices: list[_Slice],
    progress: ProgressCallback | None,
    cancel: CancelCheck | None,
    decoded: dict[Path, np.ndarray] | None = None,
) -> np.ndarray:
    """Decode each file once and place its frames in the given order, applying each slice's rescale.

    ``decoded`` caches the checked pixels of multi-frame files across calls (the caller prunes it).
    """
    rows, cols = int(slices[0].header.Rows), int(slices[0].header.Columns)
    hu = np.empty((len(slices), rows, cols), dtype=np.float32)
    by_file: dict[Path, list[int]] = {}
    for index, s in enumerate(slices):
        by_file.setdefault(s.path, []).append(index)

    done = 0
    for path, indices in by_file.items():
        check_cancel(cancel)
        header = slices[indices[0]].header
        pixels = None if decoded is None else decoded.get(path)
        if pixels is None:
            pixels = _checked_pixels(path, header, rows, cols)
            if decoded is not None and _is_enhanced(header):
                decoded[path] = pixels
        for index in indices:
            s = slices[index]
            frame = pixels if s.frame is None else pixels[s.frame]
            hu[index] = frame.astype(np.float32) * np.float32(s.slope) + np.float32(s.intercept)
        done += len(indices)
        report(progress, done, len(slices))
    return hu


def _checked_pixels(path: Path, header: pydicom.Dataset, rows: int, cols: int) -> np.ndarray:
    """The stored values of one file, (frames, rows, cols) for an Enhanced object, checked against its header."""
    pixels = _decode(path)
    expected = (_n_frames(header), rows, cols) if _is_enhanced(header) else (rows, cols)
    if pixels.ndim == 2 and len(expected) == 3:
        pixels = pixels[np.newaxis]
    if pixels.shape != expected:
        raise DicomInputError(f"{path}: pixel data has shape {pixels.shape}, the header says {expected}")
    return _stored_bits_only(pixels, header)


def _stored_bits_only(pixels: np.ndarray, header: pydicom.Dataset) -> np.ndarray:
    """The values of the BitsStored low bits, sign-extended when signed; bits above them are not pixel data.

    Some exporters leave overlay or junk bits above BitsStored (12 of 16); pydicom 3 masks them, pydicom 2.4 does not.
    Applied again after pydicom 3 it changes nothing.
    """
    bits = pixels.dtype.itemsize * 8
    stored = int(header.get("BitsStored", bits) or bits)
    if pixels.dtype.kind not in "iu" or stored >= bits:
        return pixels
    unsigned = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("=")).view(f"u{pixels.dtype.itemsize}")
    shift = bits - stored
    if int(header.get("PixelRepresentation", 0) or 0) == 1:
        return (unsigned << shift).view(unsigned.dtype.str.replace("u", "i")) >> shift
    return unsigned & np.array((1 << stored) - 1, dtype=unsigned.dtype)


def _decode(path: Path) -> np.ndarray:
    try:
        try:
            dataset = pydicom.dcmread(path)
        except InvalidDicomError:  # no preamble: the header scan accepted it as a CT image
            dataset = pydicom.dcmread(path, force=True)
        _set_transfer_syntax(dataset, path)
    except DicomInputError:
        raise
    except Exception as exc:
        raise DicomInputError(f"{path}: unreadable or truncated DICOM file ({type(exc).__name__}: {exc})") from exc
    try:
        return dataset.pixel_array
    except Exception as exc:  # truncated pixel data, or a codec that is not installed
        syntax = str(dataset.file_meta.get("TransferSyntaxUID", "unknown transfer syntax"))
        package = DECODER_PACKAGES.get(syntax)
        needs = f"; its decoder comes with the package {package}" if package else ""
        raise DicomInputError(
            f"{path}: cannot decode the pixel data ({pydicom.uid.UID(syntax).name}; truncated or corrupt file, "
            f"or no decoder installed{needs}): {type(exc).__name__}: {exc}"
        ) from exc
