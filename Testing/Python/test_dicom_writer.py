"""Writing derived series: round trips, the tags of a derived series, atomic output and never touching the input."""

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import (
    PYDICOM_3,
    assert_same_derived_series,
    phantom_hu,
    snapshot,
    strip_file_meta,
    write_ct_series,
    write_enhanced_ct,
    write_interleaved_enhanced_series,
)
from LDCTDenoiseLib.dicom_reader import open_series, read_series
from LDCTDenoiseLib.dicom_writer import write_derived_series
from LDCTDenoiseLib.errors import CancelledError, LDCTDenoiseError
from LDCTDenoiseLib.pipeline import denoise_series
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
)

DERIVATION = "Denoised by LDCTDenoise CPCE-2D (model card cpce2d-test.json)"


@pytest.fixture
def source(tmp_path: Path):
    """A 5-slice series (slope 0.5, so rounding matters) and its volume."""
    folder = tmp_path / "input"
    write_ct_series(folder, phantom_hu(), slope=0.5, intercept=-1024.0, signed=True, bits_stored=16)
    return folder, read_series(folder)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_round_trip_and_derived_tags(source, tmp_path):
    folder, volume = source
    before = snapshot(folder)
    denoised = volume.hu + np.linspace(-3.3, 3.3, volume.hu.size, dtype=np.float32).reshape(volume.hu.shape)
    calls = []
    paths = write_derived_series(
        volume, denoised, tmp_path / "out", derivation_description=DERIVATION, progress=lambda d, t: calls.append(d)
    )
    assert snapshot(folder) == before
    assert calls == [1, 2, 3, 4, 5] and len(paths) == 5 and all(p.parent == tmp_path / "out" for p in paths)

    result = read_series(tmp_path / "out")
    assert np.max(np.abs(result.hu - denoised)) <= 0.5 * 0.5 + 1e-4
    assert result.spacing == volume.spacing and result.origin == volume.origin
    np.testing.assert_array_equal(result.slice_positions, volume.slice_positions)

    sources = [pydicom.dcmread(p) for p in volume.source_files]
    outputs = [pydicom.dcmread(p) for p in result.source_files]
    series_uids = {ds.SeriesInstanceUID for ds in outputs}
    assert len(series_uids) == 1 and series_uids != {sources[0].SeriesInstanceUID}
    sop_uids = {ds.SOPInstanceUID for ds in outputs} | {ds.SOPInstanceUID for ds in sources}
    assert len(sop_uids) == 10
    for src, out in zip(sources, outputs, strict=True):
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert out.StudyInstanceUID == src.StudyInstanceUID and out.FrameOfReferenceUID == src.FrameOfReferenceUID
        assert list(out.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert out.DerivationDescription == DERIVATION
        assert out.SeriesDescription == "Synthetic LDCT [LDCTDenoise]"
        assert out.SeriesNumber == 1007
        assert (out.WindowCenter, out.WindowWidth) == (40, 400)
        assert out.PhotometricInterpretation == "MONOCHROME2"
        assert (out.RescaleSlope, out.RescaleIntercept) == (src.RescaleSlope, src.RescaleIntercept)
        assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        for keyword in ("PatientName", "PatientID", "StudyDate", "InstanceNumber", "ImagePositionPatient"):
            assert out[keyword].value == src[keyword].value
        assert out[0x00091010].value == "private value"
        assert len(str(out.ContentDate)) == 8


def test_stored_values_are_clipped_to_the_stored_range(tmp_path):
    write_ct_series(tmp_path / "in", phantom_hu(2, 16), bits_stored=12)  # unsigned 12 bit: HU -1024 .. 3071
    volume = read_series(tmp_path / "in")
    extreme = np.full(volume.hu.shape, 5000.0, dtype=np.float32)
    extreme[0] = -3000.0
    write_derived_series(volume, extreme, tmp_path / "out", derivation_description=DERIVATION)
    result = read_series(tmp_path / "out")
    assert result.hu[0].max() == -1024.0 and result.hu[1].min() == 3071.0


def test_options_and_long_description(source, tmp_path):
    _, volume = source
    volume.headers[0].SeriesDescription = "x" * 60
    paths = write_derived_series(
        volume,
        volume.hu,
        tmp_path / "out",
        derivation_description="d",
        series_description_suffix=" (denoised)",
        series_number=42,
    )
    ds = pydicom.dcmread(paths[0])
    assert ds.SeriesNumber == 42 and ds.SeriesDescription == "x" * 60 + " (de"  # LO holds 64 characters


@pytest.mark.parametrize("bad", [np.zeros((5, 32, 31), np.float32), np.full((5, 32, 32), np.nan, np.float32)])
def test_bad_volume_is_refused(source, tmp_path, bad):
    _, volume = source
    with pytest.raises(LDCTDenoiseError, match="shape|NaN"):
        write_derived_series(volume, bad, tmp_path / "out", derivation_description=DERIVATION)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_never_writes_over_the_input(source, tmp_path):
    folder, volume = source
    before = snapshot(folder)
    with pytest.raises(LDCTDenoiseError, match="is the folder of the source file"):
        write_derived_series(volume, volume.hu, folder, derivation_description=DERIVATION)
    with pytest.raises(LDCTDenoiseError, match="contains the source file"):
        write_derived_series(volume, volume.hu, tmp_path, derivation_description=DERIVATION)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(LDCTDenoiseError, match="exists and is not empty; nothing is overwritten"):
        write_derived_series(volume, volume.hu, tmp_path / "busy", derivation_description=DERIVATION)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    assert snapshot(folder) == before and leftovers(tmp_path) == []


def test_existing_empty_folder_is_used(source, tmp_path):
    _, volume = source
    (tmp_path / "empty").mkdir()
    assert len(write_derived_series(volume, volume.hu, tmp_path / "empty", derivation_description="d")) == 5


def test_cancel_midway_leaves_nothing(source, tmp_path):
    folder, volume = source
    before = snapshot(folder)
    progress = []
    with pytest.raises(CancelledError):
        write_derived_series(
            volume,
            volume.hu,
            tmp_path / "out",
            derivation_description=DERIVATION,
            progress=lambda done, total: progress.append(done),
            cancel=lambda: len(progress) >= 2,
        )
    assert progress == [1, 2]
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert snapshot(folder) == before


def test_failure_midway_leaves_nothing(source, tmp_path):
    _, volume = source

    def fail_after_two(done: int, total: int) -> None:
        if done == 2:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_derived_series(volume, volume.hu, tmp_path / "out", derivation_description="d", progress=fail_after_two)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_implicit_vr_input_becomes_explicit(tmp_path):
    write_ct_series(tmp_path / "in", transfer_syntax=ImplicitVRLittleEndian)
    volume = read_series(tmp_path / "in")
    paths = write_derived_series(volume, volume.hu, tmp_path / "out", derivation_description=DERIVATION)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_array_equal(read_series(tmp_path / "out").hu, volume.hu)


@pytest.mark.skipif(not PYDICOM_3, reason="encoding JPEG 2000 needs pydicom 3")
def test_jpeg2000_input_gives_uncompressed_output(tmp_path):
    paths = write_ct_series(tmp_path / "in")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.compress(JPEG2000Lossless)
        ds.save_as(path, enforce_file_format=True)
    volume = read_series(tmp_path / "in")
    out = write_derived_series(volume, volume.hu, tmp_path / "out", derivation_description=DERIVATION)
    ds = pydicom.dcmread(out[0])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and not ds["PixelData"].is_undefined_length
    np.testing.assert_array_equal(read_series(tmp_path / "out").hu, volume.hu)


@pytest.mark.parametrize(
    "transfer_syntax", [DeflatedExplicitVRLittleEndian, RLELossless, JPEGLosslessSV1],
    ids=["deflated", "rle", "jpeg-lossless-sv1"],
)
def test_compressed_input_gives_uncompressed_output_with_the_same_hu(tmp_path, transfer_syntax):
    hu = phantom_hu()
    write_ct_series(tmp_path / "in", hu, transfer_syntax=transfer_syntax, signed=True, bits_stored=16)
    before = snapshot(tmp_path / "in")
    volume = read_series(tmp_path / "in")
    paths = write_derived_series(volume, volume.hu + 2.0, tmp_path / "out", derivation_description=DERIVATION)
    assert snapshot(tmp_path / "in") == before and leftovers(tmp_path) == []
    for path in paths:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and not ds["PixelData"].is_undefined_length
    np.testing.assert_array_equal(read_series(tmp_path / "out").hu, hu + 2.0)


@pytest.mark.skipif(not PYDICOM_3, reason="encoding lossy JPEG 2000 needs pydicom 3")
def test_lossy_input_stays_marked_lossy(tmp_path):
    write_ct_series(tmp_path / "in", transfer_syntax=JPEG2000)
    for path in (tmp_path / "in").iterdir():  # as some archives store it: the syntax alone says lossy
        ds = pydicom.dcmread(path)
        for keyword in ("LossyImageCompression", "LossyImageCompressionMethod", "LossyImageCompressionRatio"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(path, enforce_file_format=True)
    volume = read_series(tmp_path / "in")
    assert any("lossy transfer syntax" in warning for warning in volume.warnings)
    paths = write_derived_series(volume, volume.hu, tmp_path / "out", derivation_description=DERIVATION)
    for path in paths:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert (ds.LossyImageCompression, ds.LossyImageCompressionMethod) == ("01", "ISO_15444_1")
    assert any("LossyImageCompression 01" in warning for warning in read_series(tmp_path / "out").warnings)


def test_monochrome1_is_kept_with_the_same_hu(tmp_path):
    """MONOCHROME1 only inverts the display; turning it into MONOCHROME2 would show the output inverted."""
    hu = phantom_hu()
    write_ct_series(tmp_path / "in", hu, slope=0.5, signed=True, bits_stored=16,
                    extra={"PhotometricInterpretation": "MONOCHROME1"})
    before = snapshot(tmp_path / "in")
    volume = read_series(tmp_path / "in")
    paths = write_derived_series(volume, volume.hu - 10.0, tmp_path / "out", derivation_description=DERIVATION)
    assert snapshot(tmp_path / "in") == before and leftovers(tmp_path) == []
    assert {pydicom.dcmread(p).PhotometricInterpretation for p in paths} == {"MONOCHROME1"}
    np.testing.assert_array_equal(read_series(tmp_path / "out").hu, hu - 10.0)


def test_input_without_file_meta_gives_complete_files(tmp_path):
    """Old exports without preamble and file meta: the derived series is written in the DICOM file format."""
    hu = phantom_hu()
    for path in write_ct_series(tmp_path / "in", hu, transfer_syntax=ImplicitVRLittleEndian):
        strip_file_meta(path)
    before = snapshot(tmp_path / "in")
    volume = read_series(tmp_path / "in")
    paths = write_derived_series(volume, volume.hu, tmp_path / "out", derivation_description=DERIVATION)
    assert snapshot(tmp_path / "in") == before and leftovers(tmp_path) == []
    for path, header in zip(paths, volume.headers):
        data = path.read_bytes()
        assert data[128:132] == b"DICM"
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == header.SOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    result = read_series(tmp_path / "out")
    np.testing.assert_array_equal(result.hu, hu)
    assert result.warnings == []


def test_enhanced_ct_round_trip(tmp_path):
    hu = phantom_hu(4, 24, seed=1)
    source = write_enhanced_ct(tmp_path / "in" / "enhanced.dcm", hu, slope=2.0, intercept=-2000.0)
    before = snapshot(tmp_path / "in")
    volume = read_series(source)
    denoised = volume.hu + 1.0
    paths = write_derived_series(volume, denoised, tmp_path / "out", derivation_description=DERIVATION)
    assert snapshot(tmp_path / "in") == before
    assert len(paths) == 1
    result = read_series(tmp_path / "out")
    assert result.frame_indices == volume.frame_indices
    assert np.max(np.abs(result.hu - denoised)) <= 1.0
    ds = pydicom.dcmread(paths[0])
    assert int(ds.NumberOfFrames) == 4 and list(ds.ImageType) == ["DERIVED", "PRIMARY", "AXIAL"]
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert list(shared.CTImageFrameTypeSequence[0].FrameType) == ["DERIVED", "PRIMARY", "AXIAL", "NONE"]
    assert (shared.FrameVOILUTSequence[0].WindowCenter, shared.FrameVOILUTSequence[0].WindowWidth) == (40, 400)

    def frame_positions(dataset):
        return [list(g.PlanePositionSequence[0].ImagePositionPatient) for g in dataset.PerFrameFunctionalGroupsSequence]

    assert frame_positions(ds) == frame_positions(pydicom.dcmread(source))


# --- streaming: read, process and write a batch at a time ---------------------------------------------------------


def brighten(hu: np.ndarray) -> np.ndarray:
    """A per-slice stand-in for a denoiser whose result needs rounding when stored."""
    return 0.9 * hu + 3.3


def write_input(kind: str, folder: Path) -> None:
    hu = phantom_hu(5, 24, seed=2)
    if kind == "single-frame":
        write_ct_series(folder, hu, slope=0.5, signed=True, bits_stored=16)
    elif kind == "enhanced":
        write_enhanced_ct(folder / "enhanced.dcm", hu, slope=2.0, intercept=-2000.0)
    else:
        write_interleaved_enhanced_series(folder, hu)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
@pytest.mark.parametrize("kind", ["single-frame", "enhanced", "interleaved enhanced"])
def test_streamed_series_equals_the_whole_volume_path(tmp_path, kind, batch_size):
    write_input(kind, tmp_path / "in")
    before = snapshot(tmp_path / "in")
    volume = read_series(tmp_path / "in")
    whole = write_derived_series(volume, brighten(volume.hu), tmp_path / "whole", derivation_description=DERIVATION)
    calls = []
    streamed = denoise_series(open_series(tmp_path / "in"), brighten, tmp_path / "streamed",
                              batch_size=batch_size, derivation_description=DERIVATION,
                              progress=lambda done, total: calls.append((done, total)))
    assert snapshot(tmp_path / "in") == before
    assert calls[0] == (0, 5) and calls[-1] == (5, 5) and len(calls) == 1 + math.ceil(5 / batch_size)
    assert_same_derived_series(whole, streamed)
    assert leftovers(tmp_path) == []


def test_a_volume_in_memory_streams_through_the_same_loop(tmp_path):
    """A CTVolume is its SeriesLayout with the HU: the loop reads it from memory, and the files are those of the
    whole-volume writer."""
    write_input("single-frame", tmp_path / "in")
    volume = read_series(tmp_path / "in")
    whole = write_derived_series(volume, brighten(volume.hu), tmp_path / "whole", derivation_description=DERIVATION)
    streamed = denoise_series(volume, brighten, tmp_path / "streamed", batch_size=2, derivation_description=DERIVATION)
    assert_same_derived_series(whole, streamed)
    np.testing.assert_array_equal(volume.read(1, 3), volume.hu[1:3])


@pytest.mark.parametrize("kind", ["single-frame", "interleaved enhanced"])
def test_streaming_cancelled_or_failing_midway_leaves_nothing(tmp_path, kind):
    write_input(kind, tmp_path / "in")
    before = snapshot(tmp_path / "in")
    series = open_series(tmp_path / "in")
    batches = []

    def count(hu: np.ndarray) -> np.ndarray:
        batches.append(len(hu))
        return hu

    with pytest.raises(CancelledError):
        denoise_series(series, count, tmp_path / "out", batch_size=1, derivation_description=DERIVATION,
                               cancel=lambda: len(batches) >= 3)
    assert batches == [1, 1, 1]

    def fail_on_the_third_batch(hu: np.ndarray) -> np.ndarray:
        if len(batches) == 5:
            raise OSError("disk full")
        return count(hu)

    with pytest.raises(OSError, match="disk full"):
        denoise_series(series, fail_on_the_third_batch, tmp_path / "out", batch_size=1,
                               derivation_description=DERIVATION)
    with pytest.raises(LDCTDenoiseError, match="NaN"):
        denoise_series(series, lambda hu: np.where(hu > 1000, np.nan, hu), tmp_path / "out", batch_size=2,
                               derivation_description=DERIVATION)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert snapshot(tmp_path / "in") == before


# --- real fixtures -----------------------------------------------------------------------------------------------


def round_trip(folder: Path, out: Path):
    before = snapshot(folder) if folder.is_dir() else None
    volume = read_series(folder)
    paths = write_derived_series(volume, volume.hu, out, derivation_description=DERIVATION)
    result = read_series(out)
    if before is not None:
        assert snapshot(folder) == before
    return volume, result, paths


@pytest.mark.data
def test_jpeg2000_fixture_round_trip(shared_data, tmp_path):
    volume, result, paths = round_trip(shared_data / "fixtures" / "totalseg_example_ct_dicom", tmp_path / "out")
    np.testing.assert_array_equal(result.hu, volume.hu)
    ds = pydicom.dcmread(paths[0])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL", "CT_SOM5 SPI"]
    assert ds.StudyInstanceUID  # empty in the anonymised source: a new one keeps the output valid
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # empty in the source, taken from its file meta


@pytest.mark.data
def test_gantry_tilt_fixture_keeps_geometry(shared_data, tmp_path):
    volume, result, _ = round_trip(shared_data / "fixtures" / "dcm_qa_ct_GE_tilt", tmp_path / "out")
    np.testing.assert_array_equal(result.hu, volume.hu)
    assert result.gantry_tilt_deg == volume.gantry_tilt_deg and result.uneven_spacing
    for src, out in zip(volume.headers, result.headers, strict=True):
        assert out.ImagePositionPatient == src.ImagePositionPatient
        assert out.ImageOrientationPatient == src.ImageOrientationPatient


@pytest.mark.data
def test_enhanced_ct_fixture_round_trip(shared_data, tmp_path):
    volume, result, paths = round_trip(shared_data / "fixtures" / "eCT_Supplemental.dcm", tmp_path / "out")
    np.testing.assert_array_equal(result.hu, volume.hu)
    assert len(paths) == 1 and result.frame_indices == [1, 0]


@pytest.mark.data
def test_ct_head_fixture_round_trip(shared_data, tmp_path):
    volume, result, paths = round_trip(shared_data / "fixtures" / "slicer_CTHeadAxialDicom", tmp_path / "out")
    np.testing.assert_array_equal(result.hu, volume.hu)
    assert list(pydicom.dcmread(paths[0]).ImageType) == ["DERIVED", "SECONDARY"]  # the source's ImageType is empty
