"""Which model suits a series, without a reference: ``ldct-denoise denoise --model auto`` and the panel's Auto.

Every other registered model (shipped or the user's profile) is compared with the default model by the label-free
gain estimate (:func:`adaptation.gain.estimate_gain`: SURE with the series' own noise model) on a few slices spread
through the series. A model replaces the default only when its error is lower across the whole 95 % interval at
every noise level the noise estimate allows: the rule that decides whether an adapted profile is kept. Among several
such models, the one whose interval ends furthest below zero is chosen. Where the noise of the series cannot be
measured reliably, the default is kept and the user is told why.

The rule chose the better shipped model on every scored series of ``python -m training.validate_gain``
(docs/evaluation/gain-estimate.md); it keeps the default whenever the evidence is not clear.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .adaptation.gain import NOISE_VARIANCE_BAND, GainEstimate, estimate_gain
from .adaptation.target_noise import TargetNoise
from .errors import LDCTDenoiseError
from .inference import select_device
from .model_registry import DEFAULT_MODEL, ModelRegistry
from .noise_estimate import estimate_noise
from .progress import CancelCheck, check_cancel

SCORED_SLICES = 8  # SURE costs about 5 s per 512² slice and pair of models on 2 CPU cores
NOISE_SLICES = 32  # the noise model, the estimate's one assumption, is measured on more of the series


def spread(n_slices: int, count: int) -> np.ndarray:
    """Up to ``count`` slice indices evenly spread through ``n_slices``, ends included."""
    return np.unique(np.linspace(0, n_slices - 1, min(count, n_slices)).round().astype(int))


@dataclass
class ModelChoice:
    """The chosen model, the default it was weighed against, and each other model's estimate against it."""

    name: str
    default: str
    estimates: dict[str, GainEstimate] = field(default_factory=dict)
    reason: str = ""  # why nothing was compared, when nothing was

    def sentence(self) -> str:
        """What the user is told: the choice and the intervals it rests on (never the point values: see gain.py)."""
        band = f"95 % intervals, for a noise level within its estimate's ±{np.sqrt(NOISE_VARIANCE_BAND[1]) - 1:.0%}"
        if self.reason:
            return f"Auto chose {self.default} (the default): {self.reason}."
        compared = "; ".join(f"{name} {low:+.0f} to {high:+.0f} HU²" for name, (low, high) in
                             ((name, estimate.difference_interval_hu2) for name, estimate in self.estimates.items()))
        slices = next(iter(self.estimates.values())).slices
        text = (f"On {slices} slice{'s' if slices != 1 else ''} of these scans (no reference), the squared error in "
                f"the window's tissue against {self.default}'s: {compared} ({band}). ")
        if self.name == self.default:
            return text + f"No other model is clearly better: Auto chose {self.default} (the default)."
        return text + f"Auto chose {self.name}."

    def summary(self) -> dict:
        return {"chosen": self.name, "default": self.default, "reason": self.reason,
                "estimates": {name: estimate.summary() for name, estimate in self.estimates.items()}}


def choose_model(read_slice: Callable[[int], np.ndarray], n_slices: int, pixel_mm: float,
                 registry: Optional[ModelRegistry] = None, default: str = DEFAULT_MODEL, device: str = "auto",
                 cancel: Optional[CancelCheck] = None) -> ModelChoice:
    """Choose among the registry's models for the series whose slice ``i`` (HU, (y, x)) ``read_slice(i)`` returns.

    Reads at most :data:`NOISE_SLICES` slices; the models run on ``device``.
    """
    registry = registry or ModelRegistry()
    others = [name for name in registry.names() if name != default]
    registry.entry(default)  # an unknown default fails here, naming the models there are
    if not others:
        return ModelChoice(default, default, reason="it is the only model")
    if n_slices < 1:
        raise LDCTDenoiseError("The series has no slices to choose a model for.")
    volume = []
    for index in spread(n_slices, NOISE_SLICES):
        check_cancel(cancel)
        volume.append(np.asarray(read_slice(int(index)), np.float32))
    volume = np.stack(volume)
    try:
        estimate = estimate_noise(volume, pixel_mm)
    except LDCTDenoiseError as error:
        return ModelChoice(default, default, reason=f"the noise of these scans could not be measured ({error})")
    if not estimate.reliable:
        return ModelChoice(default, default, reason="the noise of these scans cannot be told apart from their "
                                                    "anatomy (a smooth kernel at a low noise level)")
    noise = TargetNoise(estimate, volume.shape)
    scored = spread(len(volume), SCORED_SLICES)
    scored_noise = copy.copy(noise)
    scored_noise.levels = noise.levels[scored]
    target = select_device(device)
    start, _ = registry.load(default, target)
    estimates = {}
    for name in others:
        check_cancel(cancel)
        other, _ = registry.load(name, target)
        try:
            estimates[name] = estimate_gain(start, other, [volume[scored]], [scored_noise], [pixel_mm], target,
                                            cancel=cancel)
        except LDCTDenoiseError as error:  # e.g. no tissue in the display window
            return ModelChoice(default, default, reason=str(error).rstrip("."))
    better = {name: value for name, value in estimates.items() if value.keep_adapted}
    chosen = min(better, key=lambda name: better[name].difference_interval_hu2[1]) if better else default
    return ModelChoice(chosen, default, estimates)
