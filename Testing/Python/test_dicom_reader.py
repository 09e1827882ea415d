"""Reading CT series: HU, slice order and geometry on real files, and a clear error for each bad input."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import (
    COMPREHENSIVE_SR_STORAGE,
    GRAYSCALE_PRESENTATION_STATE_STORAGE,
    PYDICOM_3,
    phantom_hu,
    save,
    set_pixels,
    snapshot,
    stored_values,
    strip_file_meta,
    write_ct_series,
    write_dicomdir_export,
    write_enhanced_ct,
    write_interleaved_enhanced_series,
    write_non_image,
)
from LDCTDenoiseLib import dicom_reader
from LDCTDenoiseLib.dicom_reader import CTVolume, list_series, open_series, read_series
from LDCTDenoiseLib.errors import CancelledError, DicomInputError, SeriesSelectionError
from pydicom.data import get_testdata_file
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)


@pytest.fixture
def series(tmp_path: Path) -> tuple[Path, list[Path], np.ndarray]:
    """A valid 5-slice 32² series with a stray text file beside it."""
    hu = phantom_hu()
    folder = tmp_path / "series"
    paths = write_ct_series(folder, hu)
    (folder / "README.txt").write_text("not DICOM")
    return folder, paths, hu


def spoil(path: Path, **changes) -> None:
    """Rewrite one file with attributes changed (None deletes)."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    save(ds, path)


def expect_error(folder: Path, match: str, error=DicomInputError, **kwargs) -> None:
    """The read fails with ``match`` in the message and leaves the input exactly as it was."""
    before = snapshot(folder)
    with pytest.raises(error, match=match):
        read_series(folder, **kwargs)
    assert snapshot(folder) == before


# --- valid input -------------------------------------------------------------------------------------------------


def test_reads_hu_sorted_by_position_not_instance_number(series):
    folder, paths, hu = series
    before = snapshot(folder)
    volume = read_series(folder)
    assert snapshot(folder) == before
    assert isinstance(volume, CTVolume)
    assert volume.hu.dtype == np.float32 and volume.hu.shape == (5, 32, 32)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.source_files == paths  # slice order, although InstanceNumber runs the other way
    assert volume.frame_indices == [None] * 5
    assert volume.spacing == pytest.approx((2.5, 0.75, 0.7))
    assert volume.origin == pytest.approx((-12.0, -11.0, -40.0))
    np.testing.assert_allclose(volume.direction, np.eye(3))
    np.testing.assert_allclose(volume.slice_positions, -40.0 + 2.5 * np.arange(5))
    assert volume.description == "Synthetic LDCT"
    assert volume.warnings == [] and volume.gantry_tilt_deg == 0.0 and not volume.uneven_spacing
    assert all("PixelData" not in h for h in volume.headers)
    assert [int(h.InstanceNumber) for h in volume.headers] == [5, 4, 3, 2, 1]


def test_applies_rescale_slope_and_intercept_for_signed_data(tmp_path):
    hu = phantom_hu(3, 16)
    write_ct_series(tmp_path, hu, slope=0.5, intercept=-1000.0, signed=True, bits_stored=16)
    np.testing.assert_allclose(read_series(tmp_path).hu, hu, atol=0.25)


def test_each_slice_is_rescaled_with_its_own_slope_and_intercept(tmp_path):
    """RescaleSlope/Intercept may differ from slice to slice within a series; each slice's HU uses its own."""
    hu = phantom_hu(4, 16)
    paths = write_ct_series(tmp_path, hu, signed=True, bits_stored=16)  # slope 1, intercept -1024
    for k, (slope, intercept) in {1: (1.0, -1000.0), 2: (0.5, -1024.0), 3: (2.0, -2048.0)}.items():
        ds = pydicom.dcmread(paths[k])
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        set_pixels(ds, stored_values(hu[k], slope, intercept, signed=True), ds.file_meta.TransferSyntaxUID)
        save(ds, paths[k])
    assert len({str(pydicom.dcmread(path).RescaleIntercept) for path in paths}) == 3
    np.testing.assert_allclose(read_series(tmp_path).hu, hu, atol=1.0)  # slope 2 rounds odd HU to a neighbour


def test_reads_implicit_vr_files_and_explicit_file_lists(tmp_path):
    paths = write_ct_series(tmp_path, transfer_syntax=ImplicitVRLittleEndian)
    volume = read_series([paths[3], paths[0], str(paths[1]), paths[4], paths[2]])
    assert volume.source_files == paths
    assert read_series(paths[2]).hu.shape == (1, 32, 32)


def test_oblique_orientation_sorts_along_the_normal(tmp_path):
    # Rows along y, columns along z: the normal is +x, so x decides the order.
    positions = [(5.0 * k, 3.0, 1.0) for k in (2, 0, 4, 1, 3)]
    paths = write_ct_series(tmp_path, positions=positions, orientation=(0, 1, 0, 0, 0, 1))
    volume = read_series(tmp_path)
    assert volume.source_files == [paths[i] for i in (1, 3, 0, 4, 2)]
    np.testing.assert_allclose(volume.slice_positions, [0, 5, 10, 15, 20])
    np.testing.assert_allclose(volume.direction, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert volume.origin == (0.0, 3.0, 1.0)


def test_gantry_tilt_from_geometry_is_a_warning_and_geometry_is_kept(tmp_path):
    angle = np.radians(15.0)
    orientation = (1, 0, 0, 0, np.cos(angle), -np.sin(angle))
    positions = [(0.0, 0.0, 3.0 * k) for k in range(5)]  # the table moves along z, the image plane is tilted
    write_ct_series(tmp_path, positions=positions, orientation=orientation)
    volume = read_series(tmp_path)
    assert volume.gantry_tilt_deg == pytest.approx(15.0, abs=0.01)
    assert volume.warnings == ["gantry tilt 15.0° — denoised per slice, geometry kept"]
    assert volume.spacing[0] == pytest.approx(3.0 * np.cos(angle))
    assert [list(map(float, h.ImagePositionPatient)) for h in volume.headers] == [list(p) for p in positions]


def test_gantry_tilt_tag_alone_is_reported(tmp_path):
    write_ct_series(tmp_path, extra={"GantryDetectorTilt": -7.5})
    volume = read_series(tmp_path)
    assert volume.gantry_tilt_deg == -7.5
    assert "gantry tilt -7.5° — denoised per slice, geometry kept" in volume.warnings


def test_uneven_spacing_is_a_warning(tmp_path):
    write_ct_series(tmp_path, positions=[(0, 0, z) for z in (0.0, 2.0, 4.0, 9.0, 11.0)])
    volume = read_series(tmp_path)
    assert volume.uneven_spacing and volume.spacing[0] == 2.0
    assert any(w.startswith("uneven slice spacing: 2.00 to 5.00 mm") for w in volume.warnings)


def test_enhanced_ct_multiframe(tmp_path):
    hu = phantom_hu(4, 24, seed=1)
    path = write_enhanced_ct(tmp_path / "enhanced.dcm", hu, slope=2.0, intercept=-2000.0)
    volume = read_series(path)
    np.testing.assert_allclose(volume.hu, hu, atol=1.0)
    assert volume.frame_indices == [3, 2, 1, 0]
    assert volume.source_files == [path] * 4
    assert volume.spacing == pytest.approx((3.0, 0.8, 0.8))
    assert volume.origin == pytest.approx((-10.0, -10.0, 100.0))
    assert list_series(tmp_path)[0].n_slices == 4


def test_progress_and_cancel(series):
    folder, _, _ = series
    calls = []
    read_series(folder, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (5, 5) and len(calls) == 5
    with pytest.raises(CancelledError):
        read_series(folder, cancel=lambda: True)


@pytest.mark.parametrize("kind", ["single-frame", "enhanced", "interleaved enhanced"])
def test_open_series_reads_any_run_of_slices_as_read_series_does(tmp_path, monkeypatch, kind):
    """The streaming reader: same layout and warnings as read_series, batches that add up to its HU, and each file
    decoded once when reads go forward."""
    hu = phantom_hu(5, 24, seed=3)
    if kind == "single-frame":
        write_ct_series(tmp_path / "in", hu, slope=0.5, signed=True, bits_stored=16)
    elif kind == "enhanced":
        write_enhanced_ct(tmp_path / "in" / "enhanced.dcm", hu, slope=2.0, intercept=-2000.0)
    else:
        write_interleaved_enhanced_series(tmp_path / "in", hu)
    before = snapshot(tmp_path / "in")
    volume = read_series(tmp_path / "in")
    layout = open_series(tmp_path / "in")
    assert layout.shape == volume.hu.shape == volume.shape
    for name in ("spacing", "origin", "series_uid", "description", "source_files", "frame_indices", "warnings",
                 "gantry_tilt_deg", "uneven_spacing"):
        assert getattr(layout, name) == getattr(volume, name), name
    np.testing.assert_array_equal(layout.slice_positions, volume.slice_positions)
    np.testing.assert_array_equal(layout.direction, volume.direction)
    assert all("PixelData" not in h for h in layout.headers)
    decode, decoded = dicom_reader._decode, []

    def counting_decode(path: Path) -> np.ndarray:
        decoded.append(path)
        return decode(path)

    monkeypatch.setattr(dicom_reader, "_decode", counting_decode)
    for batch in (1, 2, 5):
        decoded.clear()
        parts = [layout.read(start, min(start + batch, 5)) for start in range(0, 5, batch)]
        np.testing.assert_array_equal(np.concatenate(parts), volume.hu)
        assert sorted(decoded) == sorted(set(volume.source_files))
        assert layout._decoded == {}  # nothing is kept once the last frame of a file is read
    assert snapshot(tmp_path / "in") == before


def test_several_series_must_be_chosen(tmp_path):
    first = write_ct_series(tmp_path / "a")
    write_ct_series(tmp_path / "b", phantom_hu(3, 32), extra={"SeriesDescription": "Other recon"})
    uid = pydicom.dcmread(first[0]).SeriesInstanceUID
    found = list_series(tmp_path)
    assert sorted((s.description, s.n_slices, s.modality) for s in found) == [
        ("Other recon", 3, "CT"),
        ("Synthetic LDCT", 5, "CT"),
    ]
    before = snapshot(tmp_path)
    listing = rf"2 series found(.|\n)*{uid}  Synthetic LDCT  \(CT, 5 slices\)"
    with pytest.raises(SeriesSelectionError, match=listing) as e:
        read_series(tmp_path)
    assert len(e.value.series) == 2
    assert read_series(tmp_path, series_uid=uid).source_files == first
    with pytest.raises(DicomInputError, match=r"'1\.2\.3' is not in the input; available:(.|\n)*Other recon"):
        read_series(tmp_path, series_uid="1.2.3")
    assert snapshot(tmp_path) == before


def test_pydicom_ct_small():
    volume = read_series(get_testdata_file("CT_small.dcm"))
    assert volume.hu.shape == (1, 128, 128)
    assert volume.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    assert volume.hu.min() == -896.0  # stored 128, intercept -1024


# --- bad input ---------------------------------------------------------------------------------------------------


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.dcm").write_bytes(b"")
    expect_error(tmp_path, "no DICOM files found")


def test_missing_path(tmp_path):
    with pytest.raises(DicomInputError, match="no such file or folder"):
        read_series(tmp_path / "absent")


def test_non_ct_modality(series):
    folder, paths, _ = series
    spoil(paths[2], Modality="MR")
    expect_error(folder, rf"{paths[2].name}: modality is 'MR', not CT")


def test_missing_pixel_data(series):
    folder, paths, _ = series
    spoil(paths[1], PixelData=None)
    expect_error(folder, rf"{paths[1].name}: no PixelData: the image file is truncated or holds no pixels")


def test_mixed_image_sizes_names_both_files(tmp_path):
    paths = write_ct_series(tmp_path)
    uid = pydicom.dcmread(paths[0]).SeriesInstanceUID
    write_ct_series(tmp_path / "odd", phantom_hu(1, 16), series_uid=uid, positions=[(0, 0, 50.0)])
    expect_error(tmp_path, r"mixed image sizes in one series: \S*IM0001\.dcm is 32x32, \S*odd/IM0001\.dcm is 16x16")


@pytest.mark.parametrize("missing", ["RescaleSlope", "RescaleIntercept"])
def test_missing_rescale_is_refused_not_guessed(series, missing):
    folder, paths, _ = series
    spoil(paths[3], **{missing: None})
    expect_error(folder, rf"{paths[3].name}: RescaleSlope/RescaleIntercept missing: the stored values are not HU")


def test_truncated_pixel_data(series):
    folder, paths, _ = series
    paths[4].write_bytes(paths[4].read_bytes()[:-700])
    expect_error(folder, rf"{paths[4].name}: cannot decode the pixel data .*truncated or corrupt file")


@pytest.mark.parametrize("length", [600, 1000])
def test_truncated_header(series, length):
    folder, paths, _ = series
    paths[0].write_bytes(paths[0].read_bytes()[:length])
    expect_error(folder, rf"{paths[0].name}: no PixelData: the image file is truncated")


def test_truncated_file_meta(series):
    folder, paths, _ = series
    paths[0].write_bytes(paths[0].read_bytes()[:150])
    expect_error(folder, rf"{paths[0].name}: unreadable or truncated DICOM file \(incomplete file meta")


def test_corrupt_element_length(series):
    folder, paths, _ = series
    data = bytearray(paths[2].read_bytes())
    offset = data.index(b"\x08\x00\x60\x00CS")  # Modality, explicit VR: tag, VR, 2-byte length
    data[offset + 6 : offset + 8] = (0xFFF0).to_bytes(2, "little")
    paths[2].write_bytes(bytes(data))
    expect_error(folder, rf"{paths[2].name}: no PixelData: the image file is truncated")


def test_duplicate_slice_positions(tmp_path):
    paths = write_ct_series(tmp_path, positions=[(0, 0, z) for z in (0.0, 2.0, 2.0, 4.0, 6.0)])
    expect_error(
        tmp_path, rf"duplicate slice position 2\.000 mm along the normal: \S*{paths[2].name} and \S*{paths[1].name} "
    )


def test_mixed_orientations(series):
    folder, paths, _ = series
    spoil(paths[2], ImageOrientationPatient=[0, 1, 0, 1, 0, 0])
    expect_error(folder, rf"mixed orientations in one series: .*{paths[2].name} has \[0\.0, 1\.0")


def test_missing_position(series):
    folder, paths, _ = series
    spoil(paths[2], ImagePositionPatient=None)
    expect_error(folder, rf"{paths[2].name}: ImagePositionPatient missing or invalid")


# --- what real archives hold --------------------------------------------------------------------------------------


def encoder_missing(transfer_syntax: str) -> str:
    """Why the test cannot write files in ``transfer_syntax`` here ('' when it can)."""
    if transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                           RLELossless, JPEGLosslessSV1):
        return ""  # pydicom 2.4 and 3.x, or the factory's own encoder
    if not PYDICOM_3:
        return f"pydicom {pydicom.__version__} has no {transfer_syntax.name} encoder"
    module, package = (
        ("jpeg_ls", "pyjpegls") if transfer_syntax in (JPEGLSLossless, JPEGLSNearLossless)
        else ("openjpeg", "pylibjpeg-openjpeg")
    )
    return "" if importlib.util.find_spec(module) else f"no {transfer_syntax.name} encoder: install {package}"


def read_unchanged(folder: Path, **kwargs) -> CTVolume:
    """read_series, checking that the input folder and its parent are exactly as before (nothing written)."""
    before, beside = snapshot(folder), sorted(p.name for p in folder.parent.iterdir())
    volume = read_series(folder, **kwargs)
    assert snapshot(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == beside
    return volume


@pytest.mark.parametrize(
    "transfer_syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless, JPEGLosslessSV1,
     JPEGLSLossless, JPEG2000Lossless],
    ids=["explicit", "implicit", "deflated", "rle", "jpeg-lossless-sv1", "jpeg-ls", "jpeg2000-lossless"],
)
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned12", "signed16"])
def test_lossless_transfer_syntaxes_give_the_exact_hu(tmp_path, transfer_syntax, signed):
    """The syntaxes of archives and PACS exports decode with the decoders installed by default, to the exact HU."""
    if encoder_missing(transfer_syntax):
        pytest.skip(encoder_missing(transfer_syntax))
    hu = phantom_hu(3, 32, seed=5)
    paths = write_ct_series(tmp_path / "in", hu, transfer_syntax=transfer_syntax, signed=signed,
                            bits_stored=16 if signed else 12)
    assert all(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == transfer_syntax
               for p in paths)
    volume = read_unchanged(tmp_path / "in")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.source_files == paths and volume.warnings == []
    assert all("PixelData" not in h for h in volume.headers)


def test_jpeg_lossless_sv1_pydicom_fixture():
    """A JPEG Lossless SV1 file written by another encoder than the factory's, when pydicom's test data has it."""
    path = get_testdata_file("JPEG-LL.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's JPEG-LL.dcm is not on this machine (it comes with pydicom-data)")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    pixels = dicom_reader._decode(Path(path))
    assert pixels.shape == (ds.Rows, ds.Columns) and pixels.std() > 0


def test_jpeg_ls_lossless_pydicom_fixture_equals_its_uncompressed_original():
    """A JPEG-LS file from another encoder (pydicom's MR test image; the decoder does not care about the modality)."""
    compressed = get_testdata_file("MR_small_jpeg_ls_lossless.dcm", download=False)
    original = get_testdata_file("MR_small.dcm", download=False)
    assert pydicom.dcmread(compressed).file_meta.TransferSyntaxUID == JPEGLSLossless
    np.testing.assert_array_equal(dicom_reader._decode(Path(compressed)), pydicom.dcmread(original).pixel_array)


@pytest.mark.parametrize("transfer_syntax", [JPEG2000, JPEGLSNearLossless], ids=["jpeg2000", "jpeg-ls-near-lossless"])
def test_lossy_transfer_syntax_is_read_with_a_warning(tmp_path, transfer_syntax):
    if encoder_missing(transfer_syntax):
        pytest.skip(encoder_missing(transfer_syntax))
    hu = phantom_hu(3, 32, seed=5)
    paths = write_ct_series(tmp_path / "in", hu, transfer_syntax=transfer_syntax)
    volume = read_unchanged(tmp_path / "in")
    assert np.abs(volume.hu - hu).max() <= 50 and np.abs(volume.hu - hu).mean() < 10
    assert volume.warnings == [
        f"stored in the lossy transfer syntax {transfer_syntax.name}, e.g. {paths[0]}: compression artefacts are in "
        f"the input and the denoised output"
    ]


def test_earlier_lossy_compression_is_a_warning(tmp_path):
    paths = write_ct_series(tmp_path / "in", extra={"LossyImageCompression": "01"})
    assert read_unchanged(tmp_path / "in").warnings == [
        f"marked as lossy compressed before (LossyImageCompression 01), e.g. {paths[0]}: compression artefacts are in "
        f"the input and the denoised output"
    ]


def test_missing_decoder_names_the_package(tmp_path, monkeypatch):
    write_ct_series(tmp_path / "in", phantom_hu(2, 16), transfer_syntax=JPEGLosslessSV1)

    def no_decoder(self):
        raise RuntimeError("Unable to decode the pixel data: no plugin available")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    expect_error(
        tmp_path / "in",
        r"IM0002\.dcm: cannot decode the pixel data \(JPEG Lossless, Non-Hierarchical, First-Order Prediction .*no "
        r"decoder installed; its decoder comes with the package python-gdcm\): RuntimeError",
    )


def test_the_same_instance_twice_is_read_once_with_a_warning(tmp_path):
    """A copied export: every file twice, in two folders; the HU and order are those of one copy."""
    hu = phantom_hu()
    paths = write_ct_series(tmp_path / "in" / "a", hu)
    shutil.copytree(tmp_path / "in" / "a", tmp_path / "in" / "b copy")
    volume = read_unchanged(tmp_path / "in")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.source_files == paths
    assert volume.warnings == [
        f"5 file(s) repeat an instance already found (same SOPInstanceUID), each read once: "
        f"{tmp_path / 'in' / 'b copy' / 'IM0001.dcm'} repeats {paths[4]}"
    ]
    assert list_series(tmp_path / "in")[0].n_slices == 5


def test_a_dicomdir_export_beside_its_originals_is_read_once(tmp_path):
    """A PACS export to CD (DICOMDIR, files without extension) copied next to the original files."""
    hu = phantom_hu()
    paths = write_ct_series(tmp_path / "in" / "original", hu)
    exported = write_dicomdir_export(paths, tmp_path / "in" / "export")
    assert (tmp_path / "in" / "export" / "DICOMDIR") in exported and len(exported) == 6
    volume = read_unchanged(tmp_path / "in")
    np.testing.assert_array_equal(volume.hu, hu)
    assert len(volume.warnings) == 1 and volume.warnings[0].startswith("5 file(s) repeat an instance already found")
    only_export = read_unchanged(tmp_path / "in" / "export")
    np.testing.assert_array_equal(only_export.hu, hu)
    assert only_export.warnings == [] and all(p.parent.parent.parent.parent.name == "export"
                                              for p in only_export.source_files)


def test_two_files_with_one_instance_uid_but_other_content_are_refused(tmp_path):
    paths = write_ct_series(tmp_path / "in")
    ds = pydicom.dcmread(paths[0])
    ds.ImagePositionPatient = [0.0, 0.0, 99.0]
    save(ds, tmp_path / "in" / "other.dcm")
    expect_error(
        tmp_path / "in",
        r"other\.dcm and \S*IM0005\.dcm have the same SOPInstanceUID but different ImagePositionPatient: two images",
    )


def test_non_image_objects_beside_the_images_are_ignored(tmp_path):
    """A DICOMDIR, a structured report and a presentation state of the study do not make a second series."""
    hu = phantom_hu()
    paths = write_ct_series(tmp_path / "in" / "images", hu)
    study = pydicom.dcmread(paths[0]).StudyInstanceUID
    write_non_image(tmp_path / "in" / "SR000001.dcm", COMPREHENSIVE_SR_STORAGE, "SR", study)
    write_non_image(tmp_path / "in" / "PR000001", GRAYSCALE_PRESENTATION_STATE_STORAGE, "PR", study)
    write_dicomdir_export(paths[:1], tmp_path / "export")
    shutil.move(str(tmp_path / "export" / "DICOMDIR"), str(tmp_path / "in" / "DICOMDIR"))
    assert [s.n_slices for s in list_series(tmp_path / "in")] == [5]
    volume = read_unchanged(tmp_path / "in")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.warnings == []


def test_only_non_image_objects_is_refused_naming_them(tmp_path):
    write_non_image(tmp_path / "in" / "SR000001.dcm", COMPREHENSIVE_SR_STORAGE, "SR", "1.2.3")
    expect_error(tmp_path / "in", r"no DICOM images found in \S+: only 1 non-image DICOM object\(s\) \(DICOMDIR")


def write_scout(path: Path, series_uid: str, *, marked: bool) -> Path:
    """A 48 x 40 lateral localizer of the series: sagittal plane, other size."""
    write_ct_series(path.parent / "scout", phantom_hu(1, 40)[:, :, :40].repeat(2, axis=1)[:, :48],
                    positions=[(0.0, -100.0, 50.0)], orientation=(0, 1, 0, 0, 0, -1), series_uid=series_uid,
                    extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER" if marked else "OTHER"]})
    return Path(shutil.move(str(path.parent / "scout" / "IM0001.dcm"), str(path)))


@pytest.mark.parametrize("marked", [True, False], ids=["ImageType LOCALIZER", "perpendicular, unmarked"])
def test_a_localizer_in_the_series_is_left_out_with_a_warning(tmp_path, marked):
    hu = phantom_hu()
    paths = write_ct_series(tmp_path / "in", hu)
    scout = write_scout(tmp_path / "in" / "SCOUT.dcm", pydicom.dcmread(paths[0]).SeriesInstanceUID, marked=marked)
    shutil.rmtree(tmp_path / "in" / "scout")
    volume = read_unchanged(tmp_path / "in")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.source_files == paths
    assert volume.warnings == [f"1 localizer (scout) image(s) left out of the series: {scout}"]


def test_a_series_of_localizers_only_is_refused(tmp_path):
    uid = pydicom.uid.generate_uid()
    write_scout(tmp_path / "in" / "AP.dcm", uid, marked=True)
    write_scout(tmp_path / "in" / "LAT.dcm", uid, marked=True)
    shutil.rmtree(tmp_path / "in" / "scout")
    expect_error(tmp_path / "in", r"AP\.dcm: the series holds only localizer \(scout\) images \(ImageType "
                                  r"ORIGINAL\\PRIMARY\\LOCALIZER\); choose the axial series")


def test_monochrome1_gives_the_same_hu(tmp_path):
    """MONOCHROME1 inverts only the display: the stored values and HU are those of MONOCHROME2."""
    hu = phantom_hu()
    write_ct_series(tmp_path / "in", hu, extra={"PhotometricInterpretation": "MONOCHROME1"})
    volume = read_unchanged(tmp_path / "in")
    np.testing.assert_array_equal(volume.hu, hu)
    assert {h.PhotometricInterpretation for h in volume.headers} == {"MONOCHROME1"}


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
                         ids=["explicit", "implicit"])
@pytest.mark.parametrize("kept", [{}, {"keep_preamble": True}], ids=["bare dataset", "preamble without meta"])
def test_files_without_file_meta_are_read_with_a_warning(tmp_path, transfer_syntax, kept):
    hu = phantom_hu()
    paths = [strip_file_meta(p, **kept) for p in write_ct_series(tmp_path / "in", hu, transfer_syntax=transfer_syntax)]
    (tmp_path / "in" / "notes.bin").write_bytes(b"\x08\x00 not DICOM at all, although it starts like a dataset")
    volume = read_unchanged(tmp_path / "in")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.source_files == paths
    assert volume.warnings == [f"5 file(s) without DICOM file meta, read as {transfer_syntax.name}: {paths[4]}"]


def test_files_with_file_meta_but_no_preamble_are_read(tmp_path):
    hu = phantom_hu()
    paths = [strip_file_meta(p, keep_meta=True) for p in write_ct_series(tmp_path / "in", hu)]
    assert all(p.read_bytes()[:4] == b"\x02\x00\x00\x00" for p in paths)
    volume = read_unchanged(tmp_path / "in")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.warnings == []


def test_a_file_without_file_meta_that_is_not_ct_is_refused(tmp_path):
    paths = write_ct_series(tmp_path / "in")
    spoil(paths[0], Modality="MR")
    strip_file_meta(paths[0])
    expect_error(tmp_path / "in", rf"{paths[0].name}: modality is 'MR', not CT")


# --- real fixtures -----------------------------------------------------------------------------------------------


@pytest.mark.data
def test_slicer_ct_head_keeps_its_rescale_and_warns(shared_data):
    volume = read_series(shared_data / "fixtures" / "slicer_CTHeadAxialDicom")
    assert volume.hu.shape == (93, 64, 64)
    assert volume.spacing == pytest.approx((1.5, 3.2, 3.2))
    assert volume.hu.min() == 0.0  # intercept 0 as written: the reader does not guess -1024
    assert volume.warnings == [
        f"RescaleType is US rather than HU in {volume.source_files[0]}: the values may not be Hounsfield units"
    ]


@pytest.mark.data
def test_totalsegmentator_jpeg2000(shared_data):
    volume = read_series(shared_data / "fixtures" / "totalseg_example_ct_dicom")
    assert volume.hu.shape == (20, 512, 512)
    assert volume.series_uid == ""  # anonymised: the series UID is empty in every file
    assert volume.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    np.testing.assert_allclose(volume.slice_positions, np.arange(-804.5, -766.0, 2.0))
    assert volume.hu.min() == -1024.0 and volume.warnings == []


@pytest.mark.data
def test_ge_gantry_tilt_and_uneven_spacing(shared_data):
    volume = read_series(shared_data / "fixtures" / "dcm_qa_ct_GE_tilt")
    assert volume.hu.shape == (28, 512, 512)
    assert volume.gantry_tilt_deg == 18.5 and volume.uneven_spacing
    assert volume.warnings[0] == "gantry tilt 18.5° — denoised per slice, geometry kept"
    assert volume.warnings[1].startswith("uneven slice spacing")
    assert [int(h.InstanceNumber) for h in volume.headers] == list(range(1, 29))


@pytest.mark.data
def test_enhanced_ct_fixture(shared_data):
    volume = read_series(shared_data / "fixtures" / "eCT_Supplemental.dcm")
    assert volume.hu.shape == (2, 512, 512)
    assert volume.frame_indices == [1, 0]  # the normal is -z: frame 2 (z = -149) comes first
    assert volume.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    assert volume.hu.min() == -1024.0


@pytest.mark.data
def test_mayo_quarter_dose(shared_data):
    folder = shared_data / "mayo" / "paired" / "D45_3mm" / "L286" / "quarter"
    volume = read_series(folder)
    assert volume.hu.shape == (4, 512, 512)
    np.testing.assert_allclose(volume.slice_positions, [-423, -365, -297, -287])
    assert volume.uneven_spacing  # every few slices of a contiguous scan
    assert -1024 <= volume.hu.min() and 0 < np.median(volume.hu[:, 200:300, 200:300]) < 100
