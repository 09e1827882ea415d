"""Every denoising method behind one name: the classic baselines and any model the registry knows.

The command line, the comparison and the Slicer module ask for methods by name and call them the same way:
``method(hu, progress=..., cancel=...) -> hu``. Every method also has a denoising ``strength`` (like the levels of
vendors' iterative reconstructions, e.g. ASiR-V 0-100 %): the output is ``input + strength * (denoised - input)``, so
a reader who finds full denoising too smooth can keep part of the original texture. Each method describes what it
did, strength included, in one place: :meth:`Method.derivation`, the text of the derived series'
DerivationDescription.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import __version__
from .baselines import BASELINES, Denoiser, make_baseline
from .errors import LDCTDenoiseError
from .model_registry import ModelRegistry
from .progress import CancelCheck, ProgressCallback

__all__ = ["DERIVATION_PREFIX", "INPUT", "BaselineMethod", "Method", "ModelDenoiser", "apply_strength",
           "available_methods", "check_strength", "make_method", "strength_text"]

INPUT = "input"
DERIVATION_PREFIX = "Denoised slice by slice by LDCTDenoise"  # how every derived series' DerivationDescription starts


def check_strength(strength: float) -> float:
    """``strength`` as a float in [0, 1], or a clear error: a percentage passed by mistake must not extrapolate."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise LDCTDenoiseError(f"The denoising strength must be a number from 0 to 1, got {strength!r}.") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        hint = f"; for {value:g} % pass {value / 100:g}" if 1.0 < value <= 100.0 else ""
        raise LDCTDenoiseError(f"The denoising strength must be a fraction from 0 (the input unchanged) to 1 (fully "
                               f"denoised), got {strength!r}{hint}.")
    return value


def strength_text(strength: float) -> str:
    """How a derived series records a partial strength; empty at full strength, so such series read as before."""
    if strength == 1.0:
        return ""
    return f" at strength {100 * strength:g} % (output = input + {strength:g} x (denoised - input))"


def apply_strength(input_hu: np.ndarray, denoised_hu: np.ndarray, strength: float, *,
                   out: Optional[np.ndarray] = None) -> np.ndarray:
    """``input + strength * (denoised - input)`` in float32, for ``strength`` in [0, 1].

    Strength 1 gives the denoised values and 0 the input values exactly (no rounding through the formula). The blend
    is computed in a single array, ``out`` or a new one: pass ``out=denoised_hu`` to blend in place when the
    denoised volume is yours to overwrite (never ``input_hu``). Without ``out``, strength 1 returns the denoised
    array itself (as float32) rather than a copy. Pixels the denoiser left unchanged (outside the field of view)
    stay unchanged at every strength.
    """
    fraction = check_strength(strength)
    original = np.asarray(input_hu, dtype=np.float32)
    denoised = np.asarray(denoised_hu, dtype=np.float32)
    if denoised.shape != original.shape:
        raise LDCTDenoiseError(f"The denoised volume has shape {denoised.shape} but the input has {original.shape}.")
    if out is None:
        if fraction == 1.0:
            return denoised
        out = np.empty(original.shape, dtype=np.float32)
    elif out.shape != original.shape or out.dtype != np.float32:
        raise LDCTDenoiseError(f"out must be a float32 array of shape {original.shape}, got {out.dtype} {out.shape}.")
    elif np.may_share_memory(out, original):
        raise LDCTDenoiseError("out must not overlap the input volume: the input is never modified.")
    if fraction == 1.0:
        if out is not denoised:
            np.copyto(out, denoised)
    elif fraction == 0.0:
        np.copyto(out, original)
    else:
        np.subtract(denoised, original, out=out)
        out *= np.float32(fraction)
        out += original
    return out


class Method:
    """What every method shares: the strength blend after denoising and the derivation text.

    Subclasses are dataclasses with a ``strength`` field (a fraction in [0, 1]) and implement :meth:`denoise` (full
    strength) and :meth:`description` (what denoised, for the derivation text).
    """

    name: str
    strength: float

    def __call__(self, hu: np.ndarray, progress: Optional[ProgressCallback] = None,
                 cancel: Optional[CancelCheck] = None) -> np.ndarray:
        """Denoise a float32 HU volume (z, y, x) at this method's strength; the input is never modified."""
        denoised = self.denoise(hu, progress=progress, cancel=cancel)
        # The denoised volume is a new array of the method's own: blend into it rather than into another volume.
        own = denoised.dtype == np.float32 and denoised.flags.writeable and not np.may_share_memory(denoised, hu)
        return apply_strength(hu, denoised, self.strength, out=denoised if own else None)

    def denoise(self, hu: np.ndarray, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelCheck] = None) -> np.ndarray:
        """The fully denoised volume (strength 1)."""
        raise NotImplementedError

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Get ready for a series of this (z, y, x) shape that will come a batch at a time (nothing by default)."""

    def description(self) -> str:
        """What denoised, e.g. "model 'x' (...)" or "the baseline 'nlm'"."""
        raise NotImplementedError

    def derivation(self) -> str:
        """DerivationDescription of a series this method denoised: what denoised it, and at which strength."""
        return (f"{DERIVATION_PREFIX} {__version__} with {self.description()}"
                f"{strength_text(self.strength)}")


@dataclass
class ModelDenoiser(Method):
    """A registered CPCE model as a method; weights are loaded (and verified) on first use."""

    name: str
    registry: ModelRegistry = field(default_factory=ModelRegistry)
    device: str = "auto"
    batch_size: int = 4
    strength: float = 1.0

    def __post_init__(self) -> None:
        self.strength = check_strength(self.strength)
        from .inference import select_device  # torch only here: naming and listing methods does not need it

        self.card = self.registry.entry(self.name).card
        select_device(self.device)  # an unusable device fails here, before any slice is read
        self._model = None

    def denoise(self, hu: np.ndarray, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelCheck] = None) -> np.ndarray:
        from .inference import denoise_volume

        return denoise_volume(self._loaded(), hu, device=self.device, batch_size=self.batch_size, progress=progress,
                              cancel=cancel)

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Load the weights, and compile the network for the CPU runtime when the whole series pays for it (a batch
        alone would not: see ``inference.OPENVINO_MIN_PIXELS``)."""
        from .inference import prepare_model

        prepare_model(self._loaded(), int(np.prod(shape)), self.device)

    def _loaded(self):
        from .inference import select_device

        if self._model is None:
            self._model, self.card = self.registry.load(self.name, select_device(self.device))
        return self._model

    def description(self) -> str:
        """Which model, which card, which weights."""
        return (f"model '{self.name}' ({self.card['architecture']['name']}, card {self.name}.json, "
                f"weights sha256 {self.card['sha256']})")


@dataclass
class BaselineMethod(Method):
    """A classic baseline (see :mod:`baselines`) as a method, with its strength and derivation text."""

    baseline: Denoiser
    strength: float = 1.0

    def __post_init__(self) -> None:
        self.strength = check_strength(self.strength)

    @property
    def name(self) -> str:
        return self.baseline.name

    def denoise(self, hu: np.ndarray, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelCheck] = None) -> np.ndarray:
        return self.baseline(hu, progress=progress, cancel=cancel)

    def description(self) -> str:
        return f"the baseline '{self.name}'"


def available_methods(registry: Optional[ModelRegistry] = None) -> list[str]:
    """Names accepted by :func:`make_method`: the registered models, then the baselines."""
    return (registry or ModelRegistry()).names() + list(BASELINES)


def make_method(name: str, registry: Optional[ModelRegistry] = None, device: str = "auto", batch_size: int = 4,
                strength: float = 1.0) -> Method:
    """The method called ``name`` at ``strength`` (a fraction in [0, 1]); a clear error lists every known name
    otherwise."""
    strength = check_strength(strength)  # before any weights are looked up
    registry = registry or ModelRegistry()
    if name in BASELINES:
        return BaselineMethod(make_baseline(name), strength)
    if name in registry.names():
        return ModelDenoiser(name, registry, device, batch_size, strength)
    raise LDCTDenoiseError(f"Unknown method '{name}'. Known methods: {', '.join(available_methods(registry))}.")
