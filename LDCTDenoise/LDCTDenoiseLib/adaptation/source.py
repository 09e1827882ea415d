"""Where the source-domain pairs come from at run time.

The product cannot ship the Mayo images (data-use agreement), so by default the source signal is made on the user's
machine: slices of the digital abdomen phantom scanned by the engine's projection-domain simulator with the demo's
protocol, which is calibrated to the shipped model's domain (Mayo D45 quarter dose: ram-lak kernel, 1e6 photons per
ray at full dose, 25 % dose, "regen" mode). The pairs keep the starting model on the task it was trained for while
the alignment moves it towards the target scanner. Simulating one 512² slice takes seconds, so a small bank is made
once, cached in the user's cache folder under a key of everything that shapes it, and written atomically so an
interrupted run never leaves a half-written bank. Research runs pass explicit pairs (for example Mayo data) instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .. import __version__
from ..atomic import atomic_file
from ..errors import LDCTDenoiseError
from ..progress import CancelCheck, ProgressCallback
from ..simulator import ScanProtocol, d45_like_protocol, simulate_low_dose_volume

BANK_FORMAT = 1


@dataclass
class SourcePairs:
    """Aligned low-dose / normal-dose float32 HU slices (n, y, x) and a JSON-ready description for the model card."""

    low_dose: np.ndarray
    normal_dose: np.ndarray
    description: dict = field(default_factory=lambda: {"kind": "explicit pairs"})

    def __post_init__(self) -> None:
        self.low_dose = np.asarray(self.low_dose, np.float32)
        self.normal_dose = np.asarray(self.normal_dose, np.float32)
        if self.low_dose.ndim == 2:
            self.low_dose, self.normal_dose = self.low_dose[None], self.normal_dose[None]
        if self.low_dose.ndim != 3 or self.low_dose.shape != self.normal_dose.shape:
            raise LDCTDenoiseError(f"Source pairs must be two (z, y, x) volumes of the same shape, got "
                                   f"{self.low_dose.shape} and {self.normal_dose.shape}.")
        if not (np.isfinite(self.low_dose).all() and np.isfinite(self.normal_dose).all()):
            raise LDCTDenoiseError("The source pairs contain NaN or infinite values.")

    def card(self) -> dict:
        return dict(self.description, slices=int(self.low_dose.shape[0]),
                    slice_shape=[int(n) for n in self.low_dose.shape[1:]])


def user_cache_dir() -> Path:
    """Folder for the engine's rebuildable caches (``LDCTDENOISE_CACHE_DIR`` overrides it)."""
    override = os.environ.get("LDCTDENOISE_CACHE_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "LDCTDenoise" / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "LDCTDenoise"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ldct-denoise"


def phantom_source_bank(n_slices: int = 8, size: int = 512, pixel_mm: float = 0.7, seed: int = 0,
                        protocol: Optional[ScanProtocol] = None, cache_dir: Optional[Path] = None,
                        progress: Optional[ProgressCallback] = None,
                        cancel: Optional[CancelCheck] = None) -> SourcePairs:
    """Simulated (low-dose, noise-free reference) phantom slices, from the cache when they were made before.

    ``protocol`` defaults to :func:`simulator.d45_like_protocol`. ``progress`` reports the simulation, slice by
    slice, and is not called on a cache hit.
    """
    from ..phantom import make_abdomen_phantom

    protocol = protocol or d45_like_protocol()
    recipe = {"format": BANK_FORMAT, "engine": __version__, "phantom": "make_abdomen_phantom", "slices": int(n_slices),
              "size": int(size), "pixel_mm": float(pixel_mm), "seed": int(seed), "protocol": protocol.to_card()}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    description = {"kind": "phantom simulation",
                   "detail": "digital abdomen phantom scanned by the engine's fan-beam simulator with the protocol "
                             "calibrated to the shipped model's domain (Mayo D45 quarter dose); reference = noise-free "
                             "reconstruction with the same kernel",
                   "recipe": recipe, "cache_key": key}
    path = Path(cache_dir or user_cache_dir() / "source-banks") / f"phantom-{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as bank:
                return SourcePairs(bank["low_dose"], bank["normal_dose"], description)
        except (OSError, ValueError, KeyError, LDCTDenoiseError):
            pass  # a damaged cache is rebuilt below
    phantom, _ = make_abdomen_phantom(n_slices, size, pixel_mm, seed)
    low_dose, reference = simulate_low_dose_volume(phantom, pixel_mm, protocol, seed, progress, cancel)
    with atomic_file(path) as temporary, open(temporary, "wb") as stream:
        np.savez(stream, low_dose=low_dose, normal_dose=reference)
    return SourcePairs(low_dose, reference, description)
