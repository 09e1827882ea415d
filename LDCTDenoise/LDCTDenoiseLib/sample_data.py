"""The sample low-dose CT series: the digital phantom scanned at quarter dose, made on the user's machine.

A new user needs a low-dose series to try Denoise, Compare and Adapt on before loading their own, and the product
downloads nothing and ships no patient data. So the sample is simulated, as the demo's is: the abdomen phantom goes
through the projection-domain simulator with the protocol calibrated to the shipped model's domain (Mayo D45 quarter
dose) and is written as a DICOM series like any scan. At 512 px of 0.7 mm it has a real scan's size and noise
(about 70 HU), which is what the shipped model expects; three slices keep the simulation to seconds.

The series is made once per settings and engine version, in a folder named by a hash of both, inside a cache folder
the caller gives. It is written into a hidden sibling folder renamed into place only when complete, so a later call
reuses a complete series and never a half-written one; the seed fixes the pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import pydicom
from pydicom.uid import generate_uid

from . import __version__
from .atomic import StagingFolder, remove_stale_staging, staging_path
from .dicom_writer import write_derived_series
from .phantom import make_abdomen_phantom
from .progress import CancelCheck, ProgressCallback, check_cancel, report
from .simulator import d45_like_protocol, simulate_low_dose_volume
from .synthetic_series import synthetic_ct_volume

SAMPLE_FORMAT = 1
SAMPLE_PATIENT_NAME = "LDCTDenoise^Sample"
SAMPLE_PATIENT_ID = "LDCTDENOISE-SAMPLE"
MANIFEST_NAME = "sample.json"
DICOM_FOLDER = "dicom"
# A staging folder older than this was left by a run that was killed (a live run takes seconds); younger ones may
# belong to another process making the same sample right now, so they are left alone.
STALE_STAGING_S = 3600.0


@dataclass(frozen=True)
class SampleSettings:
    """What shapes the sample: phantom slices and geometry, dose and seed.

    The seed differs from the adaptation's phantom source bank (seed 0), so the sample's texture and noise are not
    the source pairs the adaptation trains on.
    """

    n_slices: int = 3
    size: int = 512
    pixel_mm: float = 0.7
    dose_fraction: float = 0.25
    seed: int = 1

    def recipe(self) -> dict:
        """Everything the series depends on, as JSON-ready values: the settings, the protocol and the engine version
        (a change to its headers here bumps :data:`SAMPLE_FORMAT`)."""
        return {"format": SAMPLE_FORMAT, "engine": __version__, "phantom": "make_abdomen_phantom",
                "settings": asdict(self), "protocol": d45_like_protocol(self.dose_fraction).to_card()}

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:16]

    def series_description(self) -> str:
        """Short, so that a denoised series' suffix (" [LDCTDenoise <model> <strength>]") still fits SeriesDescription's
        64 characters."""
        return f"Simulated phantom {100 * self.dose_fraction:g}% dose"


@dataclass
class SampleSeries:
    """A complete sample series on disk: its DICOM folder, files in slice order, series UID, and whether an earlier
    call had made it."""

    folder: Path
    files: list[Path]
    series_uid: str
    settings: SampleSettings
    reused: bool


def sample_series(cache_dir: str | Path, settings: Optional[SampleSettings] = None,
                  progress: Optional[ProgressCallback] = None,
                  cancel: Optional[CancelCheck] = None) -> SampleSeries:
    """The sample series in ``cache_dir``: reused when a complete one with these settings is there, made otherwise.

    ``progress(done, total)`` reports the simulation and the writing slice by slice (not called on reuse);
    ``cancel()`` stops between slices with :class:`CancelledError`, leaving nothing behind.
    """
    settings = settings or SampleSettings()
    cache_dir = Path(cache_dir).absolute()
    key = settings.key()
    final = cache_dir / f"sample-{key}"
    existing = _complete_sample(final, settings)
    if existing is not None:
        return existing
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final, STALE_STAGING_S)
    if final.exists():  # damaged (a file deleted by hand): set aside under a staging name, then removed
        damaged = staging_path(final)
        os.rename(final, damaged)
        shutil.rmtree(damaged, ignore_errors=True)
    with StagingFolder(final) as staged:  # removed on any error, a cancel, Ctrl-C, or a lost race below
        staging = staged.path
        files, series_uid = _write_sample(staging, settings, progress, cancel)
        manifest = {"recipe": settings.recipe(), "series_uid": series_uid,
                    "files": [path.relative_to(staging).as_posix() for path in files]}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        check_cancel(cancel)
        try:
            staged.commit()
        except OSError:
            # Another process finished the same sample first: use theirs.
            made = _complete_sample(final, settings)
            if made is None:
                raise
            return made
    return SampleSeries(final / DICOM_FOLDER, [final / DICOM_FOLDER / path.name for path in files], series_uid,
                        settings, reused=False)


def _write_sample(staging: Path, settings: SampleSettings, progress: Optional[ProgressCallback],
                  cancel: Optional[CancelCheck]) -> tuple[list[Path], str]:
    """Simulate the quarter-dose scan of the phantom and write it as one series into ``staging``."""
    steps = 2 * settings.n_slices  # simulate, then write, each slice
    phantom, spacing = make_abdomen_phantom(settings.n_slices, settings.size, settings.pixel_mm, settings.seed)
    protocol = d45_like_protocol(settings.dose_fraction)
    low_dose, _ = simulate_low_dose_volume(phantom, settings.pixel_mm, protocol, settings.seed,
                                           lambda done, total: report(progress, done, steps), cancel)
    description = settings.series_description()
    volume = synthetic_ct_volume(low_dose, spacing, series_description=description,
                                 patient_name=SAMPLE_PATIENT_NAME, patient_id=SAMPLE_PATIENT_ID,
                                 study_uid=generate_uid(), kernel=protocol.kernel)
    derivation = (f"Digital abdomen phantom scanned by the LDCTDenoise {__version__} fan-beam simulator at "
                  f"{100 * settings.dose_fraction:g} % dose (Poisson + electronic noise in the projections, seed "
                  f"{settings.seed}); {protocol.kernel} kernel, {protocol.n_views} views. Simulated, not a patient.")
    files = write_derived_series(volume, low_dose, staging / DICOM_FOLDER, derivation_description=derivation,
                                 series_description_suffix="", series_number=1,
                                 progress=lambda done, total: report(progress, settings.n_slices + done, steps),
                                 cancel=cancel)
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    return files, series_uid


def _complete_sample(folder: Path, settings: SampleSettings) -> Optional[SampleSeries]:
    """The series in ``folder`` when its manifest matches these settings and lists files that are all there."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        files = [folder / name for name in manifest["files"]]
        series_uid = str(manifest["series_uid"])
        matches = manifest["recipe"] == settings.recipe()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (matches and files and all(path.is_file() for path in files)):
        return None
    return SampleSeries(folder / DICOM_FOLDER, files, series_uid, settings, reused=True)
