"""The evaluation report's domains: real Mayo pairs (D45, B30) and the simulated domains S, LS and VL.

- ``d45/<patient>``, ``b30/<patient>``: the Mayo 2016 quarter-dose / full-dose pairs (``../shared/data``).
- ``s/<patient>``: the paper's synthetic domain S: normal-dose slices re-scanned by the engine's fan-beam simulator at
  25 % dose with the protocol calibrated to the Mayo D45 quarter-dose noise (``d45_like_protocol``), scored against
  the simulator's own noise-free reconstruction.
- ``ls/<patient>``: the same slices at 10 % dose with a smooth (Hann) kernel, so the noise is stronger and more
  correlated than in any training domain.
- ``vl/<patient>``: the same slices at 5 % dose with the D45-like protocol: a fifth of the training domain's dose,
  so about sqrt(5) = 2.2 times its quantum noise; the one shift here that the source-only model clearly fails on
  (NLM beats it).

The simulated domains are made from L096's normal-dose series (every ``normal_dose_every``-th slice) and from the
full-dose slices of L286's D45 pairs, so the simulated domains keep the patient split of the real data.

The real slices are read from DICOM once and kept as integer HU in ``mayo.npz`` beside the report's other files, so
a run on another machine (a GPU box) needs that file alone; the simulated domains are rebuilt from it (seeded, so
every machine makes the same slices) and cached in ``simulated.npz``. Simulated HU are rounded to integers, as a
scanner stores them.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from LDCTDenoiseLib.atomic import atomic_file
from LDCTDenoiseLib.simulator import D45_LIKE_FULL_DOSE_PHOTONS, ScanProtocol, d45_like_protocol, \
    simulate_low_dose_volume

PAIRED = {"d45": ("D45_3mm", ("L096", "L143", "L192", "L286")), "b30": ("B30_3mm", ("L143", "L192"))}
NORMAL_DOSE_SERIES = {"L096": "mayo/normal_dose/L096_FD_3mm_D45"}
SIMULATED_PROTOCOLS = {
    "s": d45_like_protocol(0.25),
    "ls": ScanProtocol(dose_fraction=0.10, kernel="hann", full_dose_photons=D45_LIKE_FULL_DOSE_PHOTONS, mode="regen"),
    "vl": d45_like_protocol(0.05),
}
DOMAIN_TITLES = {
    "d45": "Mayo D45f (sharp), 3 mm, 25 % dose",
    "b30": "Mayo B30f (smooth), 3 mm, 25 % dose",
    "s": "simulated S: 25 % dose, D45-like kernel (calibrated to Mayo D45 quarter dose)",
    "ls": "simulated large shift: 10 % dose, smooth (Hann) kernel",
    "vl": "simulated very low dose: 5 % dose, D45-like kernel (a fifth of the training domain's dose)",
}


@dataclass
class Series:
    """Aligned float32 HU slices (z, y, x) of one patient in one domain; ``reference`` is None for unlabeled scans."""

    key: str
    low_dose: np.ndarray
    reference: Optional[np.ndarray]
    pixel_mm: float


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_file(path) as temporary, open(temporary, "wb") as stream:
        np.savez_compressed(stream, **arrays)


def paired_folders(domain: str, patient: str) -> tuple[str, str]:
    """The (quarter-dose, full-dose) folders of a Mayo pair, relative to the data root."""
    folder = PAIRED[domain][0]
    return f"mayo/paired/{folder}/{patient}/quarter", f"mayo/paired/{folder}/{patient}/full"


def extract_mayo(data_root: Path, normal_dose_every: int) -> dict[str, np.ndarray]:
    """Read the Mayo series the report uses into integer-HU arrays keyed by their folder under the data root.

    ``<folder>#pixel_mm`` holds each series' pixel size; the normal-dose series keep every ``normal_dose_every``-th
    slice. ``training.train_supervised --pack`` reads the same file, so one file carries the data to a GPU box.
    """
    from LDCTDenoiseLib.dicom_reader import read_series

    if not (data_root / "mayo").is_dir():
        raise SystemExit(f"The report needs the team's Mayo data at {data_root / 'mayo'} (../shared/data); it is "
                         f"not there.")
    folders = [folder for domain, (_, patients) in PAIRED.items() for patient in patients
               for folder in paired_folders(domain, patient)]
    arrays = {}
    for folder in folders + list(NORMAL_DOSE_SERIES.values()):
        series = read_series(data_root / folder)
        every = normal_dose_every if folder in NORMAL_DOSE_SERIES.values() else 1
        arrays[folder] = np.round(series.hu[::every]).astype(np.int16)
        arrays[f"{folder}#pixel_mm"] = np.float64(series.spacing[1])
    return arrays


def _simulate(arrays: dict[str, np.ndarray], domains: list[str]) -> dict[str, np.ndarray]:
    """The simulated ``domains`` from the normal-dose slices of L096 and the full-dose D45 slices of L286 (seeded per
    patient)."""
    clean = {"L096": NORMAL_DOSE_SERIES["L096"], "L286": paired_folders("d45", "L286")[1]}
    simulated = {}
    for domain in domains:
        protocol = SIMULATED_PROTOCOLS[domain]
        for seed, (patient, folder) in enumerate(clean.items()):
            pixel_mm = float(arrays[f"{folder}#pixel_mm"])
            low, reference = simulate_low_dose_volume(arrays[folder].astype(np.float32), pixel_mm, protocol,
                                                      seed=seed)
            simulated[f"{domain}/{patient}/low"] = np.round(low).astype(np.int16)
            simulated[f"{domain}/{patient}/ref"] = np.round(reference).astype(np.int16)
            simulated[f"{domain}/{patient}/pixel_mm"] = np.float64(pixel_mm)
    return simulated


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {key: stored[key] for key in stored.files}


def load_domains(run_dir: Path, data_root: Path, normal_dose_every: int) -> dict[str, Series]:
    """Every series the report can use, keyed ``<domain>/<patient>``; builds and caches the arrays on first use."""
    mayo_path, simulated_path = run_dir / "mayo.npz", run_dir / "simulated.npz"
    if not mayo_path.is_file():
        print(f"Reading the Mayo series from {data_root} ...", flush=True)
        _atomic_savez(mayo_path, extract_mayo(data_root, normal_dose_every))
    mayo = _load(mayo_path)
    simulated = _load(simulated_path) if simulated_path.is_file() else {}
    missing = [domain for domain in SIMULATED_PROTOCOLS if f"{domain}/L096/low" not in simulated]
    if missing:  # a domain added to SIMULATED_PROTOCOLS is simulated once; the others keep their cached slices
        print(f"Simulating the domains {', '.join(missing)} (about 1.5 s per slice on 2 cores) ...", flush=True)
        simulated.update(_simulate(mayo, missing))
        _atomic_savez(simulated_path, simulated)
    series = {}
    for domain, (_, patients) in PAIRED.items():
        for patient in patients:
            low, full = paired_folders(domain, patient)
            key = f"{domain}/{patient}"
            series[key] = Series(key, mayo[low].astype(np.float32), mayo[full].astype(np.float32),
                                 float(mayo[f"{low}#pixel_mm"]))
    for key in sorted({name.rsplit("/", 1)[0] for name in simulated}):
        series[key] = Series(key, simulated[f"{key}/low"].astype(np.float32),
                             simulated[f"{key}/ref"].astype(np.float32), float(simulated[f"{key}/pixel_mm"]))
    return dict(sorted(series.items()))


def domain_of(key: str) -> str:
    return key.split("/", 1)[0]
