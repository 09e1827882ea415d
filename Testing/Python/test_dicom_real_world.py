"""What real archives and PACS exports hold, read and written back: stored-value conventions, character sets, private
tags, links and nesting, gaps, 1024² matrices, and an earlier derived series beside its original. Each test checks
the outcome, the message where one is expected, that the input is unchanged and that nothing is left behind."""

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import phantom_hu, snapshot, write_ct_series
from LDCTDenoiseLib import dicom_reader
from LDCTDenoiseLib.cli import main
from LDCTDenoiseLib.dicom_reader import list_series, read_series
from LDCTDenoiseLib.dicom_writer import write_derived_series
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence


def rewrite(path: Path, **values) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def write_back(volume, out: Path, hu=None) -> list[Path]:
    return write_derived_series(volume, volume.hu if hu is None else hu, out, derivation_description="test",
                                series_description_suffix=" [test]")


# --- stored values ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pydicom_masks", [True, False], ids=["pydicom-3", "unmasked-like-pydicom-2.4"])
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_bits_above_bits_stored_are_not_pixel_data(tmp_path, monkeypatch, signed, pydicom_masks):
    """12 of 16 bits stored, the 4 above holding junk (overlays, exporters' leftovers): the HU come from the 12."""
    hu = phantom_hu(3, 16, seed=1)
    paths = write_ct_series(tmp_path / "in", hu, bits_stored=12, signed=signed, intercept=0.0 if signed else -1024.0)
    for path in paths:
        ds = pydicom.dcmread(path)
        raw = np.frombuffer(ds.PixelData, dtype="<u2")
        ds.PixelData = ((raw & 0x0FFF) | 0xA000).astype("<u2").tobytes()
        ds.save_as(path)
    if not pydicom_masks:  # pydicom 2.4 returns the 16 bits as stored, with the junk
        dtype = "<i2" if signed else "<u2"
        monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(
            lambda ds: np.frombuffer(ds.PixelData, dtype=dtype).reshape(ds.Rows, ds.Columns)))
    np.testing.assert_array_equal(read_series(tmp_path / "in").hu, hu)


def test_each_slice_keeps_its_own_rescale_and_storage_in_the_output(tmp_path):
    """Per-slice slope/intercept, an extended HU range (intercept -8192, metal at 30,000 HU) and 16 stored bits:
    correct HU in, the same stored conventions out, nothing clipped that the stored type holds."""
    hu = phantom_hu(3, 16, seed=2)
    hu[:, 4, 4] = [30000.0, 20000.0, 12000.0]  # metal far above 3071 HU
    hu[1] = 2.0 * np.round(hu[1] / 2.0)  # what slope 2 can store
    paths = write_ct_series(tmp_path / "in", hu, bits_stored=16, intercept=-8192.0)
    rescales = [(1.0, -8192.0), (2.0, -8192.0), (0.5, -1024.0)]
    for k, (path, (slope, intercept)) in enumerate(zip(paths, rescales)):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.rint((hu[k] - intercept) / slope).astype("<u2").tobytes()
        ds.save_as(path)
    before = snapshot(tmp_path / "in")
    volume = read_series(tmp_path / "in")
    np.testing.assert_array_equal(volume.hu, hu)
    files = write_back(volume, tmp_path / "out", volume.hu + 2.0)  # exact at every slope here
    np.testing.assert_array_equal(read_series(tmp_path / "out").hu, hu + 2.0)
    for path, written, (slope, intercept) in zip(paths, files, rescales):
        source, output = pydicom.dcmread(path), pydicom.dcmread(written)
        assert (float(output.RescaleSlope), float(output.RescaleIntercept)) == (slope, intercept)
        for keyword in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
            assert output[keyword].value == source[keyword].value
    assert snapshot(tmp_path / "in") == before


def test_jpeg_baseline_is_read_with_a_warning_and_written_back_in_its_8_bits(tmp_path):
    """8-bit JPEG baseline (lossy; some teaching files and old exports): decoded by the default install to within
    one 8-bit step of Pillow's own decoding, with the lossy warning, and written back as 8-bit, marked lossy."""
    import io

    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    paths = write_ct_series(tmp_path / "in", phantom_hu(2, 32, seed=8))
    decoded = []
    for path in paths:
        ds = pydicom.dcmread(path)
        eight_bits = np.clip(np.rint(ds.pixel_array / 16.0), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(eight_bits).save(buffer, format="JPEG", quality=90)
        decoded.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) * 16.0 - 1024.0)
        ds.PixelData, ds["PixelData"].VR = encapsulate([buffer.getvalue()]), "OB"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.RescaleSlope = 8, 8, 7, 16
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.save_as(path)
    volume = read_series(tmp_path / "in")
    assert np.abs(volume.hu - np.stack(decoded)).max() <= 16.0
    assert volume.warnings == [f"stored in the lossy transfer syntax JPEG Baseline (Process 1), e.g. {paths[0]}: "
                               f"compression artefacts are in the input and the denoised output"]
    files = write_back(volume, tmp_path / "out")
    np.testing.assert_array_equal(read_series(tmp_path / "out").hu, volume.hu)
    output = pydicom.dcmread(files[0])
    assert (output.BitsAllocated, output.LossyImageCompression, output.LossyImageCompressionMethod) == \
        (8, "01", "ISO_10918_1")


def test_values_outside_the_reconstruction_circle_and_pixel_padding_are_kept_exactly(tmp_path):
    hu = phantom_hu(2, 16, seed=3)
    hu[:, :2, :] = -3024.0
    hu[:, -2:, :] = -2000.0
    write_ct_series(tmp_path / "in", hu, signed=True, bits_stored=16, extra={"PixelPaddingValue": -3024})
    volume = read_series(tmp_path / "in")
    np.testing.assert_array_equal(volume.hu, hu)
    files = write_back(volume, tmp_path / "out")
    np.testing.assert_array_equal(read_series(tmp_path / "out").hu, hu)
    assert pydicom.dcmread(files[0]).PixelPaddingValue == -3024


# --- what the headers carry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("charset, name, description", [
    ("ISO_IR 192", "Müller^Jörg", "Thorax nativ ± 造影"),
    ("ISO_IR 100", "Müller^Jörg", "Thorax nativ ½ dosis"),
    ("GB18030", "王^小明", "胸部 平扫"),
], ids=["utf-8", "latin-1", "gb18030"])
def test_character_sets_are_kept_in_meaning_and_bytes(tmp_path, charset, name, description):
    """Names and descriptions in the source's character set, in folders with non-ASCII names: the output keeps the
    character set and the values, byte for byte where the tool does not change them."""
    source_folder, out = tmp_path / "Patiënt 王 in", tmp_path / "Ausgabe ü 输出"
    paths = write_ct_series(source_folder, phantom_hu(2, 16), extra={
        "SpecificCharacterSet": charset, "PatientName": name, "SeriesDescription": description,
        "StudyDescription": description, "InstitutionName": description})
    before = snapshot(source_folder)
    files = write_back(read_series(source_folder), out)
    source, output = pydicom.dcmread(paths[0]), pydicom.dcmread(files[0])
    assert output.SpecificCharacterSet == charset
    assert str(output.PatientName) == name and output.StudyDescription == description
    assert output.SeriesDescription == f"{description} [test]"
    for keyword in ("PatientName", "StudyDescription", "InstitutionName"):
        raw_source = pydicom.dcmread(paths[0], defer_size=None).get_item(keyword).value
        assert pydicom.dcmread(files[0]).get_item(keyword).value == raw_source  # the encoded bytes
    assert source.SeriesDescription == description
    assert snapshot(source_folder) == before


def test_private_tags_and_sequences_of_the_source_are_kept(tmp_path):
    paths = write_ct_series(tmp_path / "in", phantom_hu(2, 16))
    for path in paths:
        ds = pydicom.dcmread(path)
        block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
        block.add_new(0x10, "OB", b"CSA\x00header bytes")
        item = Dataset()
        item.add_new(0x00190010, "LO", "ACME private")
        item.add_new(0x00191001, "DS", "1.5")
        ds.add_new(0x00191100, "SQ", DicomSequence([item]))
        ds.add_new(0x00190010, "LO", "ACME private")
        ds.save_as(path)
    files = write_back(read_series(tmp_path / "in"), tmp_path / "out")
    for path, written in zip(paths, files):
        source, output = pydicom.dcmread(path), pydicom.dcmread(written)
        assert output.private_block(0x0029, "SIEMENS CSA HEADER")[0x10].value == b"CSA\x00header bytes"
        assert output[0x00190010].value == "ACME private"
        assert output[0x00191100].value[0][0x00191001].value == source[0x00191100].value[0][0x00191001].value


# --- where the files are ------------------------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="symbolic links need privileges on Windows")
def test_links_are_followed_once_and_never_around_a_loop(tmp_path):
    """A series linked into a project folder is read; a link back to a parent, a second link to the same folder
    and a link to a file already found add nothing and no warning; a broken link is ignored."""
    hu = phantom_hu(4, 16, seed=4)
    paths = write_ct_series(tmp_path / "archive" / "series", hu)
    project = tmp_path / "project"
    project.mkdir()
    (project / "ct").symlink_to(tmp_path / "archive" / "series")
    (project / "ct again").symlink_to(tmp_path / "archive" / "series")
    (tmp_path / "archive" / "series" / "up").symlink_to(project)  # archive/series/up/ct/up/ct/... a loop
    (project / "one slice.dcm").symlink_to(paths[0])
    (project / "broken.dcm").symlink_to(tmp_path / "nowhere.dcm")
    volume = read_series(project)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.warnings == []
    assert [p.resolve() for p in volume.source_files] == [p.resolve() for p in paths]


def test_deep_nesting_is_searched(tmp_path):
    deep = tmp_path / "in" / Path(*[f"level {k:02d}" for k in range(40)])
    hu = phantom_hu(2, 16, seed=5)
    write_ct_series(deep, hu)
    np.testing.assert_array_equal(read_series(tmp_path / "in").hu, hu)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="a folder's permissions do not stop root")
def test_a_folder_that_cannot_be_listed_is_refused_not_skipped(tmp_path):
    write_ct_series(tmp_path / "in" / "a", phantom_hu(2, 16))
    locked = tmp_path / "in" / "b"
    write_ct_series(locked, phantom_hu(2, 16))
    locked.chmod(0)
    try:
        with pytest.raises(dicom_reader.DicomInputError, match=r"b: cannot list the folder \(Permission denied\)"):
            read_series(tmp_path / "in")
    finally:
        locked.chmod(0o755)


def test_a_missing_slice_is_a_warning_and_the_output_keeps_every_position(profile, tmp_path, capsys):
    hu = phantom_hu(5, 16, seed=6)
    paths = write_ct_series(tmp_path / "in", hu)
    paths[2].unlink()  # a gap of one slice: 2.5 mm steps with one 5 mm step
    before = snapshot(tmp_path / "in")
    assert main(["denoise", str(tmp_path / "in"), str(tmp_path / "out"), "--model", profile, "--device", "cpu"]) == 0
    assert "uneven slice spacing: 2.50 to 5.00 mm (median 2.50 mm)" in capsys.readouterr().err
    source, output = read_series(tmp_path / "in"), read_series(tmp_path / "out")
    np.testing.assert_array_equal(output.slice_positions, source.slice_positions)
    assert output.hu.shape == (4, 16, 16) and snapshot(tmp_path / "in") == before


@pytest.mark.slow
def test_a_1024_matrix_is_denoised_whole(profile, tmp_path):
    hu = np.kron(phantom_hu(2, 64, seed=7), np.ones((1, 16, 16), dtype=np.float32))  # 2 x 1024²
    write_ct_series(tmp_path / "in", hu, pixel_spacing=(0.35, 0.35))
    assert main(["denoise", str(tmp_path / "in"), str(tmp_path / "out"), "--model", profile, "--device", "cpu",
                 "--quiet"]) == 0
    output = read_series(tmp_path / "out")
    assert output.hu.shape == (2, 1024, 1024) and output.spacing[1:] == (0.35, 0.35)
    assert not np.array_equal(output.hu, hu)  # the network ran on the whole matrix


def test_an_earlier_derived_series_beside_the_original_is_listed_and_chosen(profile, tmp_path, capsys):
    """The study folder holds the original and last week's denoised series: both are listed, the derived one
    marked, and nothing runs until the user chooses."""
    study = tmp_path / "study"
    write_ct_series(study / "original", phantom_hu(3, 16), extra={"SeriesDescription": "Abdomen 3mm"})
    assert main(["denoise", str(study / "original"), str(study / "denoised"), "--model", profile, "--device", "cpu",
                 "--quiet"]) == 0
    capsys.readouterr()
    infos = {info.description: info for info in list_series(study)}
    assert sorted(infos) == ["Abdomen 3mm", "Abdomen 3mm [LDCTDenoise tiny]"]
    assert not infos["Abdomen 3mm"].derived and infos["Abdomen 3mm [LDCTDenoise tiny]"].derived

    before = snapshot(study)
    assert main(["denoise", str(study), str(tmp_path / "out"), "--model", profile, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "2 series found; choose one by its SeriesInstanceUID" in error and "Choose one with --series UID" in error
    assert "Abdomen 3mm  (CT, 3 slices)" in error and "Abdomen 3mm [LDCTDenoise tiny]  (CT, 3 slices, DERIVED)" in error
    assert not (tmp_path / "out").exists()

    original = infos["Abdomen 3mm"].series_uid
    assert main(["denoise", str(study), str(tmp_path / "out"), "--model", profile, "--device", "cpu", "--series",
                 original, "--quiet"]) == 0
    assert pydicom.dcmread(next((tmp_path / "out").iterdir())).SeriesDescription == "Abdomen 3mm [LDCTDenoise tiny]"
    assert snapshot(study) == before
    shutil.rmtree(tmp_path / "out")
