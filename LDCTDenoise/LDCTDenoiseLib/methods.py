"""Every denoising method behind one name: the classic baselines and any model the registry knows.

The command line, the comparison and the Slicer module ask for methods by name and call them the same way:
``method(hu, progress=..., cancel=...) -> hu``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import __version__
from .baselines import BASELINES, Denoiser, make_baseline
from .errors import LDCTDenoiseError
from .inference import denoise_volume, select_device
from .model_registry import ModelRegistry
from .progress import CancelCheck, ProgressCallback

INPUT = "input"


@dataclass
class ModelDenoiser:
    """A registered CPCE model as a :class:`Denoiser`; weights are loaded (and verified) on first use."""

    name: str
    registry: ModelRegistry = field(default_factory=ModelRegistry)
    device: str = "auto"
    batch_size: int = 4

    def __post_init__(self) -> None:
        self.card = self.registry.entry(self.name).card
        select_device(self.device)  # an unusable device fails here, before any slice is read
        self._model = None

    def __call__(self, hu: np.ndarray, progress: Optional[ProgressCallback] = None,
                 cancel: Optional[CancelCheck] = None) -> np.ndarray:
        device = select_device(self.device)
        if self._model is None:
            self._model, self.card = self.registry.load(self.name, device)
        return denoise_volume(self._model, hu, device=device, batch_size=self.batch_size, progress=progress,
                              cancel=cancel)

    def derivation(self) -> str:
        """DerivationDescription of a series this model denoised: which model, which card, which weights."""
        return (f"Denoised slice by slice by LDCTDenoise {__version__} with model '{self.name}' "
                f"({self.card['architecture']['name']}, card {self.name}.json, weights sha256 {self.card['sha256']})")


def available_methods(registry: Optional[ModelRegistry] = None) -> list[str]:
    """Names accepted by :func:`make_method`: the registered models, then the baselines."""
    return (registry or ModelRegistry()).names() + list(BASELINES)


def make_method(name: str, registry: Optional[ModelRegistry] = None, device: str = "auto",
                batch_size: int = 4) -> Denoiser:
    """The method called ``name``; a clear error lists every known name otherwise."""
    registry = registry or ModelRegistry()
    if name in BASELINES:
        return make_baseline(name)
    if name in registry.names():
        return ModelDenoiser(name, registry, device, batch_size)
    raise LDCTDenoiseError(f"Unknown method '{name}'. Known methods: {', '.join(available_methods(registry))}.")
