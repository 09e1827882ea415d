"""Stand-ins for Slicer's Sample Data module (``SampleData``) and the DICOM module's Python API
(``DICOMLib.DICOMUtils``, ``slicer.dicomDatabase``): the parts a module uses to register a sample and to load a DICOM
series through the database. Each names the real source it mirrors (Slicer/Slicer v5.10.0, c01481fb, unless said
otherwise) and keeps its checks and its return values, so what fails in Slicer fails here.
"""

import logging
import traceback
import types
from pathlib import Path

import numpy as np
import pydicom
import slicer
from pydicom.errors import InvalidDicomError

from .scene import load_dicom_series


class SampleDataSource:
    """``SampleData.SampleDataSource`` (Modules/Scripted/SampleData/SampleData.py:132-241): single values become
    one-item lists, missing lists become lists of None as long as ``uris``, and every list must have the same length
    (``uris=None`` raises TypeError at ``len(uris)``, as in Slicer; a node name without a URI raises ValueError).
    Two sources are equal when their ``str`` is, and that includes the custom downloader's repr."""

    def __init__(self, sampleName=None, sampleDescription=None, uris=None, fileNames=None, nodeNames=None,
                 checksums=None, loadFiles=None, customDownloader=None, thumbnailFileName=None,
                 loadFileTypes=None, loadFileProperties=None, loadFileType=None):
        if loadFileType is not None and loadFileTypes is not None:
            raise ValueError("loadFileType and loadFileTypes cannot be specified at the same time")
        if loadFileType is not None:
            loadFileTypes = loadFileType
        self.sampleName = sampleName
        self.sampleDescription = sampleName if sampleDescription is None else sampleDescription
        if isinstance(uris, (list, tuple)):
            if isinstance(loadFileTypes, str) or loadFileTypes is None:
                loadFileTypes = [loadFileTypes] * len(uris)
            nodeNames = [None] * len(uris) if nodeNames is None else nodeNames
            loadFiles = [None] * len(uris) if loadFiles is None else loadFiles
            checksums = [None] * len(uris) if checksums is None else checksums
        elif isinstance(uris, str):
            uris, fileNames, nodeNames = [uris], [fileNames], [nodeNames]
            loadFiles, loadFileTypes, checksums = [loadFiles], [loadFileTypes], [checksums]
        self.uris, self.fileNames, self.nodeNames, self.loadFiles = uris, fileNames, nodeNames, loadFiles
        self.customDownloader, self.thumbnailFileName = customDownloader, thumbnailFileName
        self.loadFileTypes, self.checksums = loadFileTypes, checksums
        self.loadFileProperties = {} if loadFileProperties is None else loadFileProperties
        if not len(uris) == len(fileNames) == len(nodeNames) == len(loadFiles) == len(loadFileTypes) == len(checksums):
            raise ValueError("All fields of sample data source must have the same length")

    def __eq__(self, other):
        return str(self) == str(other)

    def __str__(self):
        lines = [f"sampleName        : {self.sampleName}", f"sampleDescription : {self.sampleDescription}",
                 f"thumbnailFileName : {self.thumbnailFileName}", f"loadFileProperties: {self.loadFileProperties}",
                 f"customDownloader  : {self.customDownloader}", ""]
        for fileName, uri, nodeName, loadFile, fileType, checksum in zip(
                self.fileNames, self.uris, self.nodeNames, self.loadFiles, self.loadFileTypes, self.checksums):
            lines.extend([f" fileName     : {fileName}", f" uri          : {uri}", f" checksum     : {checksum}",
                          f" nodeName     : {nodeName}", f" loadFile     : {loadFile}", f" loadFileType : {fileType}",
                          ""])
        return "\n".join(lines)


def _sources() -> dict:
    """``slicer.modules.sampleDataSources``, created on first use as SampleData does."""
    if not hasattr(slicer.modules, "sampleDataSources"):
        slicer.modules.sampleDataSources = {}
    return slicer.modules.sampleDataSources


class SampleDataLogic:
    """``SampleData.SampleDataLogic``'s registry (SampleData.py:509-590): sources live in
    ``slicer.modules.sampleDataSources`` by category, and registering a source equal to one already there does
    nothing. ``registerCustomSampleDataCategory`` is Slicer 5.12's (v5.12.0 a7dbf804, SampleData.py:531-551); 5.10
    lacks it, so a test deletes it to play 5.10."""

    @staticmethod
    def registerCustomSampleDataCategory(category, title):
        if not hasattr(slicer.modules, "sampleDataSourceCategories"):
            slicer.modules.sampleDataSourceCategories = {}
        slicer.modules.sampleDataSourceCategories.setdefault(category, {})["title"] = title

    @staticmethod
    def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None,
                                       customDownloader=None, thumbnailFileName=None, loadFileTypes=None,
                                       loadFiles=None, loadFileProperties={}, checksums=None, loadFileType=None):
        if loadFileType is not None and loadFileTypes is not None:
            raise ValueError("loadFileType and loadFileTypes cannot be specified at the same time")
        if loadFileType is not None:
            loadFileTypes = loadFileType
        sources = _sources().setdefault(category, [])
        source = SampleDataSource(sampleName=sampleName, uris=uris, fileNames=fileNames, nodeNames=nodeNames,
                                  thumbnailFileName=thumbnailFileName, loadFileTypes=loadFileTypes,
                                  loadFiles=loadFiles, loadFileProperties=loadFileProperties, checksums=checksums,
                                  customDownloader=customDownloader)
        if SampleDataLogic.isSampleDataSourceRegistered(category, source):
            return
        sources.append(source)

    @staticmethod
    def sampleDataSourcesByCategory(category=None):
        return _sources() if category is None else _sources().get(category, [])

    @staticmethod
    def isSampleDataSourceRegistered(category, sampleDataSource):
        if not isinstance(sampleDataSource, SampleDataSource):
            raise TypeError(f"unsupported sampleDataSource type '{type(sampleDataSource)}'")
        return sampleDataSource in _sources().get(category, [])


def press(category, sampleDescription):
    """What the sample's button in the Sample Data panel does (SampleData.py:412-448): the button is labelled with
    the source's ``sampleDescription`` and calls ``customDownloader(source)``. Slicer ignores the returned value;
    here it is returned, so a test can look at what was loaded."""
    for source in _sources().get(category, []):
        if source.sampleDescription == sampleDescription:
            if not source.customDownloader:
                raise NotImplementedError("only custom downloaders run here: nothing can be downloaded")
            return source.customDownloader(source)
    raise LookupError(f"no sample {sampleDescription!r} in category {category!r}")


class DICOMDatabase:
    """``slicer.dicomDatabase``, a ctkDICOMDatabase (commontk/CTK dd4caeae, the CTK Slicer 5.10 pins,
    Libs/DICOM/Core/ctkDICOMDatabase.h): ``isOpen`` (a Qt property, L58, so an attribute in PythonQt),
    ``filesForSeries`` (L180) and ``fileForInstance`` (L206; an empty string for an unknown instance).
    ``index_file`` stands for what ctkDICOMIndexer does with one file (parse it, insert it, L276-292)."""

    def __init__(self) -> None:
        self.isOpen = True
        self._file_of_instance = {}
        self._files_of_series = {}

    def index_file(self, path) -> None:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        self._file_of_instance[str(header.SOPInstanceUID)] = str(path)
        files = self._files_of_series.setdefault(str(header.SeriesInstanceUID), [])
        if str(path) not in files:
            files.append(str(path))

    def fileForInstance(self, sopInstanceUID) -> str:
        return self._file_of_instance.get(str(sopInstanceUID), "")

    def filesForSeries(self, seriesUID, hits=-1) -> list:
        files = list(self._files_of_series.get(str(seriesUID), []))
        return files if hits < 0 else files[:hits]


def importDicom(dicomDataDir, dicomDatabase=None, copyFiles=False):
    """``DICOMUtils.importDicom`` (Modules/Scripted/DICOMLib/DICOMUtils.py:485-500): index every DICOM file under
    the folder into the database (``slicer.dicomDatabase`` by default), skipping other files as ctkDICOMIndexer does;
    any exception is printed and logged, and the function returns False instead of raising."""
    try:
        if dicomDatabase is None:
            dicomDatabase = slicer.dicomDatabase
        for path in sorted(Path(dicomDataDir).rglob("*")):
            if not path.is_file():
                continue
            try:
                pydicom.dcmread(path, stop_before_pixels=True)
            except InvalidDicomError:
                continue
            dicomDatabase.index_file(str(path))
    except Exception:
        traceback.print_exc()
        logging.error("Failed to import DICOM folder " + str(dicomDataDir))
        return False
    return True


def loadSeriesByUID(seriesUIDs, messages=None, progressCallback=None, enabledPluginClassNames=None):
    """``DICOMUtils.loadSeriesByUID`` (DICOMUtils.py:187-219) with the scalar volume plugin doing the loading: a
    list is required, an unopened database raises OSError, and the IDs of the loaded nodes are returned. Each series
    is loaded as DICOMScalarVolumePlugin does (Modules/Scripted/DICOMPlugins/DICOMScalarVolumePlugin.py:411-510):
    files sorted along the slice normal, one archetype read through ``slicer.modules.volumes.logic()``, the node
    named "<SeriesNumber>: <SeriesDescription>" (DICOMLib/DICOMPlugin.py:181-195) and given ``DICOM.instanceUIDs``."""
    if not isinstance(seriesUIDs, list):
        raise ValueError("SeriesUIDs must contain a list")
    if len(seriesUIDs) == 0:
        raise ValueError("No series UIDs given")
    if not slicer.dicomDatabase.isOpen:
        raise OSError("DICOM module or database cannot be accessed")
    loaded = []
    for seriesUID in seriesUIDs:
        files = slicer.dicomDatabase.filesForSeries(seriesUID)
        if not files:
            continue
        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
        orientation = np.array(headers[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        order = np.argsort([np.dot(normal, np.array(header.ImagePositionPatient, dtype=float)) for header in headers])
        first = headers[0]
        name = f"{first.get('SeriesNumber', '')}: {first.get('SeriesDescription', '') or 'Unnamed Series'}"
        node = load_dicom_series(slicer.modules.volumes.logic(), [files[index] for index in order], name,
                                 [str(headers[index].SOPInstanceUID) for index in order])
        loaded.append(node.GetID())
    return loaded


def modules() -> dict:
    """The ``sys.modules`` entries: ``SampleData``, and ``DICOMLib`` with its ``DICOMUtils``."""
    sample_data = types.ModuleType("SampleData")
    sample_data.SampleDataSource, sample_data.SampleDataLogic = SampleDataSource, SampleDataLogic
    dicom_utils = types.ModuleType("DICOMLib.DICOMUtils")
    dicom_utils.importDicom, dicom_utils.loadSeriesByUID = importDicom, loadSeriesByUID
    dicom_lib = types.ModuleType("DICOMLib")
    dicom_lib.DICOMUtils = dicom_utils
    return {"SampleData": sample_data, "DICOMLib": dicom_lib, "DICOMLib.DICOMUtils": dicom_utils}
