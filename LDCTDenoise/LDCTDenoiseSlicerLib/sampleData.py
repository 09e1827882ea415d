"""The sample series in Slicer's Sample Data module: a quarter-dose CT scan of the engine's digital phantom, simulated
on this computer the first time its button is pressed (nothing is downloaded, no patient data), then loaded through
Slicer's DICOM database like a user's own series, so that Denoise, Compare, Adapt and Export all work on it.

The module registers the sample at start-up, before the engine's packages are installed, so this file imports only
what a fresh Slicer bundles; the simulator (which needs numba) is imported by the downloader after it has made sure
the packages are there. Scripts load the sample with ``loadSample()``: ``SampleData.downloadSample`` only downloads
URIs and this sample has none.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import slicer
import slicer.util
from slicer.i18n import tr as _

from LDCTDenoiseLib.errors import CancelledError
from LDCTDenoiseSlicerLib import dependencies, mrml

SAMPLE_CATEGORY = "LDCTDenoise"
SAMPLE_NAME = "LDCTPhantom"
RESOURCES = Path(__file__).resolve().parent.parent / "Resources"  # the module's Resources, installed beside this
THUMBNAIL = RESOURCES / "Icons" / "LDCTDenoiseSample.png"
REQUIREMENTS = RESOURCES / "requirements.txt"
CACHE_SUBFOLDER = "LDCTDenoise"


def registerSampleData() -> None:
    """Add the sample to the Sample Data module. The module connects this to Slicer's ``startupCompleted()``
    signal, since the Sample Data panel makes its buttons once, from the sources registered by then. Registering
    again adds nothing: the downloader is a module-level function, so the new source equals the first."""
    import SampleData

    logic = SampleData.SampleDataLogic
    if hasattr(logic, "registerCustomSampleDataCategory"):  # Slicer 5.12 and later: a translatable section title
        logic.registerCustomSampleDataCategory(SAMPLE_CATEGORY, title=_("LDCT Denoise"))
    logic.registerCustomSampleDataSource(
        category=SAMPLE_CATEGORY,
        sampleName=SAMPLE_NAME,
        thumbnailFileName=str(THUMBNAIL),
        # Made here, not downloaded. SampleDataSource takes len() of these and needs them all as long as uris (a
        # node name without a URI raises ValueError), so they are empty lists.
        uris=[],
        fileNames=[],
        nodeNames=[],
        customDownloader=loadSample,
    )


def loadSample(source=None) -> Optional[slicer.vtkMRMLScalarVolumeNode]:
    """Sample Data's custom downloader (it passes the SampleDataSource): make the series the first time, load it
    through the DICOM database and show it at W/L 400/40. Errors are shown to the user; a cancelled simulation loads
    nothing. Returns the volume, or None when cancelled."""
    with slicer.util.tryWithErrorDisplay(_("Could not load the LDCT Denoise sample."), waitCursor=True):
        dependencies.ensureDependencies(str(REQUIREMENTS))
        try:
            series = makeSampleSeries()
        except CancelledError:
            logging.info("LDCTDenoise: the sample series was not made (cancelled)")
            return None
        volume = loadDicomSeries(series.folder, series.series_uid)
        mrml.set_display_window(volume)
        mrml.show_in_main_views(slicer.mrmlScene, volume)  # the compare views keep what they compare
        return volume


def makeSampleSeries():
    """The engine's sample series (LDCTDenoiseLib.sample_data.SampleSeries) in Slicer's cache folder: reused when it
    is there, simulated otherwise, with a progress dialog whose Cancel stops between slices."""
    from LDCTDenoiseLib.sample_data import sample_series  # the simulator needs numba, installed by now

    dialog = slicer.util.createProgressDialog(
        windowTitle=_("LDCT Denoise sample"),
        labelText=_("Simulating a quarter-dose CT scan of the digital phantom (first time only)..."))
    cancelled = []
    dialog.canceled.connect(lambda: cancelled.append(True))

    def onProgress(done: int, total: int) -> None:
        dialog.setMaximum(total)
        dialog.setValue(done)
        slicer.app.processEvents()

    try:
        return sample_series(sampleCacheFolder(), progress=onProgress, cancel=lambda: bool(cancelled))
    finally:
        dialog.close()


def sampleCacheFolder() -> Path:
    """Where the sample is kept: beside Sample Data's downloads in Slicer's cache folder, or in Slicer's temporary
    folder when the cache folder cannot be written."""
    for folder in (slicer.app.cachePath, slicer.app.temporaryPath):
        path = Path(folder) / CACHE_SUBFOLDER
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise RuntimeError(_("Neither Slicer's cache folder ({cache}) nor its temporary folder ({temporary}) can be "
                         "written.").format(cache=slicer.app.cachePath, temporary=slicer.app.temporaryPath))


def loadDicomSeries(folder: Path, seriesUID: str) -> slicer.vtkMRMLScalarVolumeNode:
    """Add the folder to Slicer's DICOM database and load the series from there, as the DICOM browser does, so that
    Export finds the source files through the database. DICOMUtils.importDicom logs its failures and returns False
    instead of raising; that becomes an error here."""
    from DICOMLib import DICOMUtils

    database = getattr(slicer, "dicomDatabase", None)
    if database is None or not database.isOpen:
        raise RuntimeError(_("Slicer's DICOM database is not open. Open the DICOM module once (it creates the "
                             "database), then load the sample again."))
    if not DICOMUtils.importDicom(os.fspath(folder)):
        raise RuntimeError(_("Slicer's DICOM database did not accept the sample series in {folder} (see the Python "
                             "console).").format(folder=folder))
    for nodeID in DICOMUtils.loadSeriesByUID([seriesUID]):
        node = slicer.mrmlScene.GetNodeByID(nodeID)
        if node is not None and node.IsA("vtkMRMLScalarVolumeNode"):
            return node
    raise RuntimeError(_("The sample series is in the DICOM database but could not be loaded from it (see the "
                         "Python console)."))
