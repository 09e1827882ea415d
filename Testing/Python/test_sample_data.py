"""The sample low-dose series: made by the engine (LDCTDenoiseLib.sample_data) and offered in Slicer's Sample Data
module (LDCTDenoiseSlicerLib.sampleData).

Engine (T0): the same settings give the same pixels, a complete series is reused and a half-written one never is,
and the default sample is a quarter-dose-like series that every panel action accepts. Slicer side (T2, stand-ins
from Testing/Python/slicer_shims): registration, the button loading one volume through the DICOM database, and that
volume going through the module's Denoise, Compare and Export.
"""

import importlib
import os
import time
import types
from pathlib import Path

import numpy as np
import pydicom
import pytest

from LDCTDenoiseLib.dicom_reader import read_series
from LDCTDenoiseLib.errors import CancelledError
from LDCTDenoiseLib.phantom import make_abdomen_phantom, phantom_rois
from LDCTDenoiseLib.sample_data import (MANIFEST_NAME, SAMPLE_PATIENT_NAME, STALE_STAGING_S, SampleSettings,
                                        sample_series)

SMALL = SampleSettings(n_slices=2, size=128, pixel_mm=2.8)  # a second per series, for the cache's behaviour


@pytest.fixture(scope="module")
def default_sample_cache(tmp_path_factory) -> Path:
    """Slicer's cache folder holding the default sample, made once for this file (about 12 s on 2 cores)."""
    cache = tmp_path_factory.mktemp("slicer-cache")
    sample_series(cache / "LDCTDenoise")
    return cache


@pytest.fixture(scope="module")
def default_sample(default_sample_cache):
    return sample_series(default_sample_cache / "LDCTDenoise")


def pixels(series) -> np.ndarray:
    return read_series(series.files).hu


def modification_times(folder: Path) -> dict:
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*")}


#
# Engine
#


def test_the_same_settings_give_the_same_pixels_and_another_seed_others(tmp_path):
    first = sample_series(tmp_path / "a", SMALL)
    second = sample_series(tmp_path / "b", SMALL)
    assert not first.reused and not second.reused
    np.testing.assert_array_equal(pixels(first), pixels(second))
    other = sample_series(tmp_path / "c", SampleSettings(n_slices=2, size=128, pixel_mm=2.8, seed=2))
    assert np.abs(pixels(other) - pixels(first)).mean() > 1.0


def test_a_complete_series_is_reused_without_being_written_again(tmp_path):
    seen = []
    made = sample_series(tmp_path, SMALL, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (4, 4) and [done for done, _ in seen] == sorted(done for done, _ in seen)
    before = modification_times(tmp_path)
    again = sample_series(tmp_path, SMALL, progress=lambda done, total: pytest.fail("made again"))
    assert again.reused and again.files == made.files and again.series_uid == made.series_uid
    assert modification_times(tmp_path) == before
    assert [path.name for path in tmp_path.iterdir()] == [made.folder.parent.name]  # nothing else left there


def test_a_staging_folder_is_never_reused_and_a_stale_one_is_removed(tmp_path):
    """A killed run leaves its hidden staging folder; even one that holds a whole series and its manifest is not the
    sample. Stale ones go; a recent one may be another process at work and stays."""
    complete = sample_series(tmp_path / "elsewhere", SMALL).folder.parent
    name = f"sample-{SMALL.key()}"
    stale = tmp_path / f".{name}.{'0' * 32}.partial"
    recent = tmp_path / f".{name}.{'1' * 32}.partial"
    for staging in (stale, recent):
        (staging / "dicom").mkdir(parents=True)
        (staging / MANIFEST_NAME).write_bytes((complete / MANIFEST_NAME).read_bytes())
    old = time.time() - STALE_STAGING_S - 60
    os.utime(stale, (old, old))
    made = sample_series(tmp_path, SMALL)
    assert not made.reused and made.folder == tmp_path / name / "dicom" and len(made.files) == 2
    assert not stale.exists() and recent.exists()


def test_a_damaged_series_is_made_again(tmp_path):
    made = sample_series(tmp_path, SMALL)
    made.files[1].unlink()
    again = sample_series(tmp_path, SMALL)
    assert not again.reused and all(path.is_file() for path in again.files)
    assert again.series_uid != made.series_uid


def test_a_cancelled_run_leaves_nothing_behind(tmp_path):
    progress = []
    with pytest.raises(CancelledError):
        sample_series(tmp_path, SMALL, progress=lambda done, total: progress.append(done),
                      cancel=lambda: len(progress) >= 1)
    assert list(tmp_path.iterdir()) == []


def test_the_default_sample_reads_back_as_a_simulated_phantom_series(default_sample):
    volume = read_series(default_sample.folder)
    assert volume.hu.shape == (3, 512, 512) and volume.spacing == (3.0, 0.7, 0.7)
    assert volume.series_uid == default_sample.series_uid
    header = pydicom.dcmread(default_sample.files[0], stop_before_pixels=True)
    assert str(header.PatientName) == SAMPLE_PATIENT_NAME == "LDCTDenoise^Sample"
    assert header.Modality == "CT" and header.SeriesDescription == "Simulated phantom 25% dose"
    assert str(header.StudyDescription) == "LDCTDenoise digital phantom"
    assert "Simulated, not a patient" in header.DerivationDescription
    assert (float(header.WindowCenter), float(header.WindowWidth)) == (40.0, 400.0)


def test_the_description_leaves_room_for_what_denoise_adds_to_it():
    """SeriesDescription holds 64 characters; the module appends " [LDCTDenoise <model> <strength>]"."""
    from LDCTDenoiseLib.model_registry import SHIPPED_MODELS_DIR, ModelRegistry

    longest = max(ModelRegistry([SHIPPED_MODELS_DIR]).names(), key=len)
    assert len(SampleSettings().series_description() + f" [LDCTDenoise {longest} 70%]") <= 64


def test_the_default_sample_is_as_noisy_as_a_quarter_dose_scan(default_sample):
    """In flat liver the noise is that of the shipped model's domain (Mayo D45 quarter dose: about 50-75 HU),
    far above the noise-free phantom's texture."""
    settings = default_sample.settings
    hu = pixels(default_sample)
    phantom, _ = make_abdomen_phantom(settings.n_slices, settings.size, settings.pixel_mm, settings.seed)
    liver = phantom_rois(settings.size, settings.pixel_mm)["liver"]
    region = (slice(None), slice(liver.y, liver.y + liver.height), slice(liver.x, liver.x + liver.width))
    sample_sd, phantom_sd = hu[region].std(axis=(1, 2)).mean(), phantom[region].std(axis=(1, 2)).mean()
    assert 40.0 < sample_sd < 100.0 and sample_sd > 5 * phantom_sd
    assert abs(hu[region].mean() - phantom[region].mean()) < 10.0  # noise, not a shift


def test_the_default_sample_passes_the_default_adaptations_check_of_its_targets(default_sample):
    from LDCTDenoiseLib.adaptation import DEFAULT_METHOD, AdaptationConfig, method_settings
    from LDCTDenoiseLib.adaptation.adapt import checked_target_volumes

    config = AdaptationConfig(**method_settings(DEFAULT_METHOD))
    assert config.match_target_noise  # the default method measures the target's noise in flat soft tissue
    checked_target_volumes(pixels(default_sample), config.patch_size, noise_regions=config.match_target_noise)


#
# Slicer side
#


@pytest.fixture
def slicer_side(default_sample_cache, tmp_path, monkeypatch):
    """Slicer with a fresh scene, the Sample Data registry empty, an open DICOM database, and Slicer's cache folder
    holding the default sample already (so pressing the button reuses it)."""
    pytest.importorskip("PySide6")
    pytest.importorskip("slicer_core")
    import slicer_shims

    shims = slicer_shims.install()
    import slicer
    from slicer_shims.sample_data import DICOMDatabase
    from slicer_shims.scene import new_scene

    scene = new_scene()
    monkeypatch.setattr(slicer.modules, "volumes", types.SimpleNamespace(logic=lambda: scene.volumes_logic),
                        raising=False)
    monkeypatch.setattr(slicer.modules, "sampleDataSources", {}, raising=False)
    monkeypatch.setattr(slicer.modules, "sampleDataSourceCategories", {}, raising=False)
    monkeypatch.setattr(slicer, "dicomDatabase", DICOMDatabase(), raising=False)
    monkeypatch.setattr(slicer.app, "cachePath", str(default_sample_cache))
    monkeypatch.setenv("LDCTDENOISE_PROFILES_DIR", str(tmp_path / "profiles"))
    shims.packaging.ensured.clear()
    return types.SimpleNamespace(slicer=slicer, scene=scene, shims=shims)


@pytest.fixture
def sample_module(slicer_side):
    from LDCTDenoiseSlicerLib import sampleData

    return sampleData


def test_the_sample_is_registered_once_with_its_thumbnail(slicer_side, sample_module, monkeypatch):
    import SampleData
    from PySide6.QtGui import QImage

    sample_module.registerSampleData()
    sample_module.registerSampleData()  # a second registration (a module reload) adds nothing
    (source,) = SampleData.SampleDataLogic.sampleDataSourcesByCategory("LDCTDenoise")
    assert source.sampleName == source.sampleDescription == "LDCTPhantom"
    assert source.customDownloader is sample_module.loadSample and source.uris == []
    assert slicer_side.slicer.modules.sampleDataSourceCategories == {"LDCTDenoise": {"title": "LDCT Denoise"}}
    thumbnail = QImage(source.thumbnailFileName)
    assert (thumbnail.width(), thumbnail.height()) == (288, 261)  # the size of Slicer's own sample thumbnails
    monkeypatch.delattr(SampleData.SampleDataLogic, "registerCustomSampleDataCategory")  # Slicer 5.8 and 5.10
    monkeypatch.setattr(slicer_side.slicer.modules, "sampleDataSources", {})
    sample_module.registerSampleData()
    assert len(SampleData.SampleDataLogic.sampleDataSourcesByCategory("LDCTDenoise")) == 1


def test_sample_data_refuses_none_or_a_node_name_without_a_uri(slicer_side):
    """Why the registration passes empty lists (SampleData.py v5.10.0:176-216, as the stand-in does)."""
    import SampleData

    with pytest.raises(TypeError):
        SampleData.SampleDataLogic.registerCustomSampleDataSource(category="x", sampleName="x", customDownloader=print)
    with pytest.raises(ValueError, match="same length"):
        SampleData.SampleDataLogic.registerCustomSampleDataSource(category="x", sampleName="x", uris=[], fileNames=[],
                                                                  nodeNames=["x"], customDownloader=print)


def test_the_button_loads_one_volume_from_the_dicom_database_at_the_soft_tissue_window(slicer_side, sample_module,
                                                                                       default_sample):
    from slicer_shims.sample_data import press

    slicer = slicer_side.slicer
    sample_module.registerSampleData()
    before = modification_times(default_sample.folder)
    volume = press("LDCTDenoise", "LDCTPhantom")
    assert slicer_side.scene.scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 1
    display = volume.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel(), display.GetAutoWindowLevel()) == (400, 40, 0)
    uids = volume.GetAttribute("DICOM.instanceUIDs").split()
    assert [Path(slicer.dicomDatabase.fileForInstance(uid)) for uid in uids] == default_sample.files
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), pixels(default_sample))
    assert volume.GetName() == "1: " + default_sample.settings.series_description()
    scene = slicer_side.scene.scene
    composites = [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                  for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
    assert composites and {composite.GetBackgroundVolumeID() for composite in composites} == {volume.GetID()}
    (requirements, requester, missing), = slicer_side.shims.packaging.ensured  # the packages came first
    assert requester == "LDCTDenoise" and any(line.startswith("numba") for line in requirements)
    assert modification_times(default_sample.folder) == before  # the cached series was reused


def test_the_sample_goes_through_denoise_compare_and_export(slicer_side, sample_module, tmp_path):
    import vtk
    from LDCTDenoiseLib.model_registry import DEFAULT_MODEL

    slicer = slicer_side.slicer
    module = importlib.import_module("LDCTDenoise")
    volume = sample_module.loadSample()
    logic = module.LDCTDenoiseLogic()
    denoised = logic.denoise(volume, DEFAULT_MODEL, device="cpu")

    liver = phantom_rois(512, 0.7)["liver"]
    center = [liver.x + (liver.width - 1) / 2, liver.y + (liver.height - 1) / 2, 1, 1]  # IJK, the middle slice
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    roi = slicer_side.scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "liver")
    roi.SetCenter(ijk_to_ras.MultiplyPoint(center)[:3])
    roi.SetSize(liver.width * 0.7, liver.height * 0.7, 3.0)
    volumes = logic.compare(volume, [module.INPUT_METHOD, DEFAULT_MODEL, "gaussian"], device="cpu")
    assert volumes[DEFAULT_MODEL] is denoised  # Denoise's output, reused
    metrics = logic.comparisonMetrics(volumes, roi=roi)
    assert metrics[DEFAULT_MODEL]["roi_sd_hu"] < 0.5 * metrics[module.INPUT_METHOD]["roi_sd_hu"]

    files = logic.exportDicom(denoised, tmp_path / "export", slicer.dicomDatabase.fileForInstance)
    exported = pydicom.dcmread(files[0])
    source = pydicom.dcmread(slicer.dicomDatabase.fileForInstance(
        exported.SourceImageSequence[0].ReferencedSOPInstanceUID))
    assert len(files) == 3 and exported.StudyInstanceUID == source.StudyInstanceUID
    assert str(exported.PatientName) == "LDCTDenoise^Sample" and exported.SeriesDescription.endswith(
        f"[LDCTDenoise {DEFAULT_MODEL}]")


def test_a_database_that_refuses_the_series_reaches_the_user_as_an_error(slicer_side, sample_module, monkeypatch):
    slicer = slicer_side.slicer
    from PySide6.QtWidgets import QApplication

    def locked(path):
        raise OSError("database is locked")

    monkeypatch.setattr(slicer.dicomDatabase, "index_file", locked)
    monkeypatch.setattr(slicer.app, "testingEnabled", lambda: False)  # so that the error dialog is shown
    shown = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: shown.append(text))
    with pytest.raises(RuntimeError, match="did not accept the sample series"):
        sample_module.loadSample()
    (message,) = shown
    assert message.startswith("Could not load the LDCT Denoise sample.") and "did not accept" in message
    assert QApplication.overrideCursor() is None  # the wait cursor is gone
    assert slicer_side.scene.scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0


def test_a_closed_dicom_database_is_named_as_the_problem(slicer_side, sample_module, monkeypatch):
    monkeypatch.setattr(slicer_side.slicer.dicomDatabase, "isOpen", False)
    with pytest.raises(RuntimeError, match="DICOM database is not open"):
        sample_module.loadSample()


def test_cancel_in_the_progress_dialog_stops_the_simulation_and_loads_nothing(
        slicer_side, sample_module, tmp_path, monkeypatch):
    """A first press simulates (here a small sample, the cache being empty); the user's Cancel in the progress
    dialog, seen while Slicer processes events between slices, stops the engine and nothing is loaded or kept."""
    from PySide6.QtWidgets import QPushButton

    slicer = slicer_side.slicer
    monkeypatch.setattr(slicer.app, "cachePath", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("LDCTDenoiseLib.sample_data.SampleSettings", lambda: SMALL)
    dialogs, createProgressDialog = [], slicer.util.createProgressDialog
    monkeypatch.setattr(slicer.util, "createProgressDialog",
                        lambda **kwargs: dialogs.append(createProgressDialog(**kwargs)) or dialogs[-1])
    monkeypatch.setattr(slicer.app, "processEvents",  # the user clicks Cancel
                        lambda: dialogs[-1].findChild(QPushButton).click())
    assert sample_module.loadSample() is None
    assert len(dialogs) == 1 and not dialogs[0].isVisible()
    assert slicer_side.scene.scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 0
    assert list((tmp_path / "empty-cache" / "LDCTDenoise").iterdir()) == []


def test_the_sample_falls_back_to_slicers_temporary_folder_when_the_cache_cannot_be_written(
        slicer_side, sample_module, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(slicer_side.slicer.app, "cachePath", str(blocker))
    monkeypatch.setattr(slicer_side.slicer.app, "temporaryPath", str(tmp_path / "temporary"))
    assert sample_module.sampleCacheFolder() == tmp_path / "temporary" / "LDCTDenoise"
