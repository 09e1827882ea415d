"""Paired low-dose / normal-dose slices read with the engine's DICOM reader (patches: the engine's
``adaptation.patches.BodyPatchSampler``)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class PairedVolume:
    """One patient's aligned low-dose and normal-dose slices (float32 HU, (z, y, x))."""

    patient: str
    low_dose: np.ndarray
    normal_dose: np.ndarray
    pixel_mm: float


def load_pair(low_dose_dir: Path, normal_dose_dir: Path, patient: str) -> PairedVolume:
    """Read both series and check they are the same slices (same shape and slice positions)."""
    from LDCTDenoiseLib.dicom_reader import read_series  # here, so a run from a --pack file needs no DICOM reader

    low = read_series(low_dose_dir)
    normal = read_series(normal_dose_dir)
    if low.hu.shape != normal.hu.shape or not np.allclose(low.slice_positions, normal.slice_positions, atol=0.01):
        raise ValueError(f"{low_dose_dir} and {normal_dose_dir} are not the same slices "
                         f"(shapes {low.hu.shape} vs {normal.hu.shape}).")
    return PairedVolume(patient, low.hu, normal.hu, float(low.spacing[1]))


def load_packed_pair(pack: dict[str, np.ndarray], low_dose_dir: str, normal_dose_dir: str,
                     patient: str) -> PairedVolume:
    """The same pair from a file of integer-HU arrays keyed by folder (training/report_domains.extract_mayo)."""
    try:
        low, normal = pack[low_dose_dir], pack[normal_dose_dir]
    except KeyError as error:
        raise SystemExit(f"The pack file has no series {error}; it holds {sorted(pack)}.") from None
    return PairedVolume(patient, low.astype(np.float32), normal.astype(np.float32),
                        float(pack[f"{low_dose_dir}#pixel_mm"]))
