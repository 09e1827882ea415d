"""DICOM headers for CT volumes that have no source files (the demo's phantom and its simulated scans).

The volume then goes through the same writer as a real series, so the demo exercises the real DICOM path and its
output opens in Slicer or any viewer.
"""

from __future__ import annotations

import datetime
from typing import Optional

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from .dicom_reader import CTVolume

IDENTITY_DIRECTION = np.eye(3)


def synthetic_ct_volume(hu: np.ndarray, spacing: tuple[float, float, float], *, series_description: str,
                        patient_name: str = "LDCTDenoise^Phantom", patient_id: str = "LDCT-PHANTOM",
                        study_uid: Optional[str] = None, frame_of_reference_uid: Optional[str] = None,
                        kernel: str = "") -> CTVolume:
    """A :class:`CTVolume` with axial headers (12-bit, intercept -1024) ready for ``write_derived_series``.

    Slices sharing ``study_uid`` and ``frame_of_reference_uid`` land in one study and align in a viewer, so the
    phantom, its low-dose scan and the denoised result can be compared slice by slice.
    """
    volume = np.asarray(hu, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"Expected a (z, y, x) volume, got shape {volume.shape}.")
    n_slices, rows, columns = volume.shape
    study_uid = study_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    series_uid = generate_uid()
    now = datetime.datetime.now()
    z_mm, row_mm, column_mm = (float(value) for value in spacing)
    origin = (-column_mm * (columns - 1) / 2, -row_mm * (rows - 1) / 2, 0.0)
    headers = []
    for index in range(n_slices):
        header = Dataset()
        header.file_meta = FileMetaDataset()
        header.file_meta.MediaStorageSOPClassUID = CTImageStorage
        header.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        header.SOPClassUID = CTImageStorage
        header.SOPInstanceUID = generate_uid()
        header.file_meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
        header.StudyInstanceUID, header.SeriesInstanceUID = study_uid, series_uid
        header.FrameOfReferenceUID = frame_of_reference_uid
        header.PatientName, header.PatientID = patient_name, patient_id
        header.StudyDate = header.SeriesDate = now.strftime("%Y%m%d")
        header.StudyTime = header.SeriesTime = now.strftime("%H%M%S")
        header.StudyDescription = "LDCTDenoise digital phantom"
        header.Modality, header.Manufacturer = "CT", "LDCTDenoise (synthetic)"
        header.SeriesNumber, header.SeriesDescription = 1, series_description
        header.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        header.ConvolutionKernel = kernel
        header.InstanceNumber = index + 1
        header.ImagePositionPatient = [origin[0], origin[1], origin[2] + index * z_mm]
        header.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        header.PixelSpacing = [row_mm, column_mm]
        header.SliceThickness = z_mm
        header.SamplesPerPixel, header.PhotometricInterpretation = 1, "MONOCHROME2"
        header.Rows, header.Columns = rows, columns
        header.BitsAllocated, header.BitsStored, header.HighBit, header.PixelRepresentation = 16, 12, 11, 0
        header.RescaleSlope, header.RescaleIntercept, header.RescaleType = 1.0, -1024.0, "HU"
        headers.append(header)
    return CTVolume(
        shape=volume.shape, spacing=(z_mm, row_mm, column_mm), origin=origin, direction=IDENTITY_DIRECTION.copy(),
        slice_positions=np.arange(n_slices, dtype=np.float64) * z_mm, series_uid=series_uid,
        description=series_description, source_files=[], frame_indices=[None] * n_slices, headers=headers,
        rescale=np.tile([1.0, -1024.0], (n_slices, 1)), hu=volume)
