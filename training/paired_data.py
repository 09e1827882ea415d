"""Paired low-dose / normal-dose slices read with the engine's DICOM reader, and body-restricted patch sampling."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

BODY_THRESHOLD_HU = -500.0


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


class BodyPatchSampler:
    """Random aligned patches whose centre lies inside the body, with flips and 90° rotations.

    Air outside the patient teaches the network nothing about noise in tissue, so patch centres are drawn from
    pixels above -500 HU in the normal-dose image. By default every body pixel is equally likely, so a volume counts
    by its size; ``balance_volumes`` first picks a volume uniformly, so a few real pairs are not drowned by a large
    simulated series in a mixed training set.
    """

    def __init__(self, volumes: list[PairedVolume], patch_size: int, rng: np.random.Generator,
                 balance_volumes: bool = False) -> None:
        self.volumes = volumes
        self.patch_size = patch_size
        self.rng = rng
        self.balance_volumes = balance_volumes
        half = patch_size // 2
        self.centres = []
        for volume_index, volume in enumerate(volumes):
            body = volume.normal_dose > BODY_THRESHOLD_HU
            body[:, :half, :] = False
            body[:, -half:, :] = False
            body[:, :, :half] = False
            body[:, :, -half:] = False
            z, y, x = np.nonzero(body)
            self.centres.append(np.stack([np.full_like(z, volume_index), z, y, x], axis=1))
        if any(len(centres) == 0 for centres in self.centres):
            empty = [volume.patient for volume, centres in zip(volumes, self.centres) if len(centres) == 0]
            raise ValueError(f"No body pixels to sample patches from in {', '.join(empty)}.")
        self.per_volume = self.centres
        self.centres = np.concatenate(self.centres)

    def _pick_centres(self, batch_size: int) -> np.ndarray:
        if not self.balance_volumes:
            return self.centres[self.rng.integers(0, len(self.centres), batch_size)]
        volumes = self.rng.integers(0, len(self.per_volume), batch_size)
        return np.stack([self.per_volume[v][self.rng.integers(0, len(self.per_volume[v]))] for v in volumes])

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(low-dose, normal-dose) patches, each float32 (batch, 1, patch, patch) in HU."""
        half = self.patch_size // 2
        picks = self._pick_centres(batch_size)
        low = np.empty((batch_size, 1, self.patch_size, self.patch_size), np.float32)
        normal = np.empty_like(low)
        for index, (volume_index, z, y, x) in enumerate(picks):
            volume = self.volumes[volume_index]
            window = np.s_[z, y - half:y - half + self.patch_size, x - half:x - half + self.patch_size]
            rotations, flip = self.rng.integers(0, 4), self.rng.integers(0, 2)
            for source, target in ((volume.low_dose, low), (volume.normal_dose, normal)):
                patch = np.rot90(source[window], rotations)
                target[index, 0] = patch[:, ::-1] if flip else patch
        return low, normal
