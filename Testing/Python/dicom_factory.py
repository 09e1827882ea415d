"""Small, real DICOM CT files for tests: a classic single-frame series and an Enhanced CT multi-frame object.

The files are written with pydicom (2.4 or 3.x) exactly as a scanner would store them, from a known HU phantom, so
tests can check the reader's HU and geometry against ground truth and spoil one tag at a time for bad inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3


def phantom_hu(n_slices: int = 5, size: int = 32, seed: int = 0) -> np.ndarray:
    """Integer HU (air, soft tissue, bone, noise) so stored values round-trip exactly with slope 1."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    disc = (y - size / 2) ** 2 + (x - size / 2) ** 2 < (0.4 * size) ** 2
    base = np.where(disc, 40.0, -1000.0)
    base[size // 2 - 2 : size // 2 + 2, size // 2 - 2 : size // 2 + 2] = 1200.0
    volume = base[None] + rng.normal(0, 20, (n_slices, size, size)) + 10 * np.arange(n_slices)[:, None, None]
    return np.clip(np.rint(volume), -1024, 3000).astype(np.float32)


def save(dataset: Dataset, path: Path) -> Path:
    """Write in the file format given by the dataset's TransferSyntaxUID, with pydicom 2.4 or 3.x."""
    if PYDICOM_3:
        dataset.save_as(path, enforce_file_format=True)
    else:
        syntax = dataset.file_meta.TransferSyntaxUID
        dataset.is_little_endian, dataset.is_implicit_VR = True, syntax == ImplicitVRLittleEndian
        dataset.save_as(path, write_like_original=False)
    return path


def _base_dataset(sop_class: str, study_uid: str, series_uid: str, transfer_syntax: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyTime = "Phantom^Test", "PH001", "20240102", "101010"
    ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.SeriesDescription = "CT", "Factory", 7, "Synthetic LDCT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    # A private element, to check the writer keeps headers it does not understand.
    ds.add_new(0x00091010, "LO", "private value")
    ds.add_new(0x00090010, "LO", "FACTORY PRIVATE")
    return ds


def _set_pixel_module(ds: Dataset, rows: int, cols: int, bits_stored: int, signed: bool) -> None:
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0


def stored_values(hu: np.ndarray, slope: float, intercept: float, signed: bool) -> np.ndarray:
    return np.rint((hu - intercept) / slope).astype(np.int16 if signed else np.uint16)


def write_ct_series(
    folder: Path,
    hu: np.ndarray | None = None,
    *,
    positions: Sequence[Sequence[float]] | None = None,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: Sequence[float] = (0.75, 0.7),
    slope: float = 1.0,
    intercept: float = -1024.0,
    signed: bool = False,
    bits_stored: int = 12,
    transfer_syntax: str = ExplicitVRLittleEndian,
    study_uid: str | None = None,
    series_uid: str | None = None,
    instance_numbers: Sequence[int] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """A classic CT series, one file per slice (named in reverse order of position), returned in slice order."""
    hu = phantom_hu() if hu is None else hu
    n, rows, cols = hu.shape
    if positions is None:
        positions = [(-12.0, -11.0, -40.0 + 2.5 * k) for k in range(n)]
    study_uid, series_uid = study_uid or generate_uid(), series_uid or generate_uid()
    instance_numbers = instance_numbers or list(range(n, 0, -1))  # deliberately the reverse of position order
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        ds = _base_dataset(CTImageStorage, study_uid, series_uid, transfer_syntax)
        ds.InstanceNumber = instance_numbers[k]
        ds.ImagePositionPatient = [float(v) for v in positions[k]]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        ds.SliceThickness = 2.5
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
        ds.WindowCenter, ds.WindowWidth = [40, -600], [400, 1500]
        _set_pixel_module(ds, rows, cols, bits_stored, signed)
        ds.PixelData = stored_values(hu[k], slope, intercept, signed).tobytes()
        ds["PixelData"].VR = "OW"
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        paths.append(save(ds, folder / f"IM{n - k:04d}.dcm"))
    return paths


def write_enhanced_ct(
    path: Path,
    hu: np.ndarray | None = None,
    *,
    slope: float = 1.0,
    intercept: float = -1024.0,
    z_step: float = 3.0,
) -> Path:
    """An Enhanced CT object whose frames are stored in the reverse of their position order."""
    hu = phantom_hu(4, 24, seed=1) if hu is None else hu
    n, rows, cols = hu.shape
    ds = _base_dataset(ENHANCED_CT_IMAGE_STORAGE, generate_uid(), generate_uid(), ExplicitVRLittleEndian)
    ds.InstanceNumber, ds.NumberOfFrames = 1, n
    _set_pixel_module(ds, rows, cols, 16, True)

    def item(**values: Any) -> DicomSequence:
        inner = Dataset()
        for keyword, value in values.items():
            setattr(inner, keyword, value)
        return DicomSequence([inner])

    shared = Dataset()
    shared.PlaneOrientationSequence = item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    shared.PixelMeasuresSequence = item(PixelSpacing=[0.8, 0.8], SliceThickness=z_step)
    shared.PixelValueTransformationSequence = item(RescaleSlope=slope, RescaleIntercept=intercept, RescaleType="HU")
    shared.CTImageFrameTypeSequence = item(FrameType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"])
    shared.FrameVOILUTSequence = item(WindowCenter=50, WindowWidth=350)
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame, frames = [], []
    for frame in range(n):
        k = n - 1 - frame  # frame 0 holds the highest slice
        group = Dataset()
        group.PlanePositionSequence = item(ImagePositionPatient=[-10.0, -10.0, 100.0 + z_step * k])
        group.FrameContentSequence = item(InStackPositionNumber=k + 1)
        per_frame.append(group)
        frames.append(stored_values(hu[k], slope, intercept, True))
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.PixelData = np.stack(frames).tobytes()
    ds["PixelData"].VR = "OW"
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(ds, path)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (names relative), to prove nothing was changed, added or removed."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def write_interleaved_enhanced_series(folder: Path, hu: np.ndarray) -> list[Path]:
    """Two Enhanced CT objects of one series whose frames alternate along z (even slices in the first, odd in the
    second), so that every run of slices needs frames of both files."""
    first = write_enhanced_ct(folder / "even.dcm", hu[0::2], z_step=3.0)
    second = write_enhanced_ct(folder / "odd.dcm", hu[1::2], z_step=3.0)
    ds, reference = pydicom.dcmread(second), pydicom.dcmread(first, stop_before_pixels=True)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        setattr(ds, keyword, reference[keyword].value)
    for group in ds.PerFrameFunctionalGroupsSequence:
        position = group.PlanePositionSequence[0].ImagePositionPatient
        position[2] = float(position[2]) + 1.5
    return [first, save(ds, second)]


# Elements that differ between two writes of the same derived series: new UIDs (random, so of varying length, which
# the file meta group length follows) and the time of writing.
_PER_WRITE_KEYWORDS = {"SOPInstanceUID", "SeriesInstanceUID", "MediaStorageSOPInstanceUID",
                       "FileMetaInformationGroupLength", "ContentDate", "ContentTime"}


def assert_same_derived_series(paths: Sequence[Path], other_paths: Sequence[Path]) -> None:
    """Two writes of one derived series hold the same files, pixels and headers, and UIDs of the same structure:
    one series UID each, a new SOP instance UID per file, the file meta matching the dataset."""
    assert [p.name for p in paths] == [p.name for p in other_paths]
    series_uids = set()
    for path, other_path in zip(paths, other_paths, strict=True):
        ds, other = pydicom.dcmread(path), pydicom.dcmread(other_path)
        np.testing.assert_array_equal(ds.pixel_array, other.pixel_array)
        assert ds.PixelData == other.PixelData
        for dataset in (ds, other):
            assert dataset.file_meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID
        assert ds.SOPInstanceUID != other.SOPInstanceUID
        series_uids.add((ds.SeriesInstanceUID, other.SeriesInstanceUID))
        for a, b in ((ds, other), (ds.file_meta, other.file_meta)):
            assert [e.tag for e in a] == [e.tag for e in b]
            for element in a:
                if element.keyword not in _PER_WRITE_KEYWORDS:
                    assert element.value == b[element.tag].value, (path.name, element.keyword)
    assert len(series_uids) == 1
    assert len({uid for pair in series_uids for uid in pair}) == 2
