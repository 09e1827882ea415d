"""Small, real DICOM CT files for tests: a classic single-frame series and an Enhanced CT multi-frame object.

The files are written with pydicom (2.4 or 3.x) exactly as a scanner would store them, from a known HU phantom, so
tests can check the reader's HU and geometry against ground truth and spoil one tag at a time for bad inputs. Beside
them, what real archives hold: compressed transfer syntaxes, DICOMDIR exports, reports and presentation states, and
files without the file meta.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEGLosslessSV1,
    JPEGLSNearLossless,
    generate_uid,
)

ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"
GRAYSCALE_PRESENTATION_STATE_STORAGE = "1.2.840.10008.5.1.4.1.1.11.1"
PYDICOM_3 = int(pydicom.__version__.split(".")[0]) >= 3
NATIVE_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
# Encoder settings for the lossy syntaxes (pydicom 3 encoders): visibly lossy, still close to the phantom.
LOSSY_OPTIONS: dict[str, dict[str, Any]] = {JPEG2000: {"j2k_psnr": [60]}, JPEGLSNearLossless: {"jls_error": 2}}


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
    ds.StudyID = "1"
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
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        set_pixels(ds, stored_values(hu[k], slope, intercept, signed), transfer_syntax)
        paths.append(save(ds, folder / f"IM{n - k:04d}.dcm"))
    return paths


def set_pixels(ds: Dataset, stored: np.ndarray, transfer_syntax: str) -> None:
    """Store ``stored`` in ``ds`` in ``transfer_syntax``: native (deflated when saved), JPEG Lossless SV1 with
    :func:`jpeg_lossless_sv1`, or any other compressed syntax with pydicom's encoders (RLE in 2.4, more in 3.x)."""
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    if transfer_syntax in NATIVE_SYNTAXES:
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"
    elif transfer_syntax == JPEGLosslessSV1:
        ds.PixelData = encapsulate([jpeg_lossless_sv1(stored, int(ds.BitsStored))])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OW"
        options = dict(LOSSY_OPTIONS.get(transfer_syntax, {}))
        if PYDICOM_3:
            options["generate_instance_uid"] = False
        ds.compress(transfer_syntax, **options)


def jpeg_lossless_sv1(image: np.ndarray, precision: int) -> bytes:
    """A JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14, selection value 1) codestream.

    No Python package encodes the commonest lossless syntax of archives, so the tests make it here (ITU T.81 H.1):
    each sample is predicted by its left neighbour (the first column by the sample above, the first sample by
    2^(P-1)), and the differences modulo 2^16 are Huffman coded with one table that gives every category a 5-bit code.
    """
    samples = image.astype(np.int64) & ((1 << precision) - 1)
    rows, cols = samples.shape
    predicted = np.empty_like(samples)
    predicted[:, 1:] = samples[:, :-1]
    predicted[1:, 0] = samples[:-1, 0]
    predicted[0, 0] = 1 << (precision - 1)
    differences = (samples - predicted) % 65536
    differences = np.where(differences >= 32768, differences - 65536, differences)
    bits = []
    for difference in differences.ravel().tolist():
        category = 16 if difference == -32768 else abs(difference).bit_length()
        bits.append(format(category, "05b"))
        if 0 < category < 16:
            extra = difference if difference > 0 else difference + (1 << category) - 1
            bits.append(format(extra, f"0{category}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)  # pad the last byte with 1-bits
    data = int(stream, 2).to_bytes(len(stream) // 8, "big").replace(b"\xff", b"\xff\x00")

    def segment(marker: bytes, payload: bytes) -> bytes:
        return marker + (len(payload) + 2).to_bytes(2, "big") + payload

    frame_header = bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    code_lengths = bytes([0, 0, 0, 0, 17] + [0] * 11)  # 17 codes of 5 bits, for the categories 0 to 16
    huffman_table = bytes([0x00]) + code_lengths + bytes(range(17))
    scan_header = bytes([1, 1, 0x00, 1, 0, 0])  # one component, table 0, predictor 1, point transform 0
    return (
        b"\xff\xd8"
        + segment(b"\xff\xc3", frame_header)
        + segment(b"\xff\xc4", huffman_table)
        + segment(b"\xff\xda", scan_header)
        + data
        + b"\xff\xd9"
    )


def write_non_image(path: Path, sop_class: str, modality: str, study_uid: str) -> Path:
    """A non-image object of the study (a structured report or a presentation state), in its own series."""
    ds = _base_dataset(sop_class, study_uid, generate_uid(), ExplicitVRLittleEndian)
    for keyword in ("ImageType", "SamplesPerPixel", "PhotometricInterpretation", "FrameOfReferenceUID"):
        delattr(ds, keyword)
    ds.Modality, ds.SeriesDescription, ds.InstanceNumber = modality, f"{modality} object", 1
    ds.ContentDate, ds.ContentTime = "20240102", "101500"
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(ds, path)


def write_dicomdir_export(paths: Sequence[Path], folder: Path) -> list[Path]:
    """A media export of ``paths``: copies under ``folder`` with a DICOMDIR indexing them, as a PACS writes to a CD."""
    from pydicom.fileset import FileSet

    file_set = FileSet()
    for path in paths:
        file_set.add(path)
    file_set.write(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file())


def strip_file_meta(path: Path, *, keep_preamble: bool = False, keep_meta: bool = False) -> Path:
    """Rewrite a file without the 128-byte preamble and 'DICM', or without the file meta group, or both, as old
    exports store them."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"  # FileMetaInformationGroupLength
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    preamble, meta = data[:132] if keep_preamble else b"", data[132:meta_end] if keep_meta else b""
    path.write_bytes(preamble + meta + data[meta_end:])
    return path


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
