"""The one definition of how HU map to the network's input and back.

CPCE ends in a ReLU, so the network works on a non-negative range. HU are shifted so that air (-1024 HU) is 0 and
divided by 4096 (the 12-bit CT range), which keeps bone and metal unclipped: the denoised series keeps the full HU
range of the input. Values below -1024 HU (outside the scan field of view) map to 0; the inference restores them.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

HU_MIN = -1024.0
HU_RANGE = 4096.0

ArrayLike = TypeVar("ArrayLike")

NORMALIZATION_CARD = {
    "name": "hu_shift_scale",
    "formula": "x = max(HU + 1024, 0) / 4096 ; HU = 4096 * x - 1024",
    "hu_min": HU_MIN,
    "hu_range": HU_RANGE,
}


def hu_to_model(hu: ArrayLike) -> ArrayLike:
    """HU (numpy array or torch tensor) -> network input in [0, ~1]."""
    scaled = (hu - HU_MIN) / HU_RANGE
    if isinstance(scaled, np.ndarray):
        return np.maximum(scaled, 0.0).astype(np.float32, copy=False)
    return scaled.clamp_min(0.0)


def model_to_hu(x: ArrayLike) -> ArrayLike:
    """Network output -> HU (numpy array or torch tensor)."""
    return x * HU_RANGE + HU_MIN


def check_card(card_normalization: dict) -> None:
    """Refuse weights trained with another normalisation: they would give silently wrong HU."""
    from .errors import WeightsError

    if card_normalization.get("name") != NORMALIZATION_CARD["name"] or float(
        card_normalization.get("hu_min", 0)
    ) != HU_MIN or float(card_normalization.get("hu_range", 0)) != HU_RANGE:
        raise WeightsError(
            f"The model card's normalisation {card_normalization!r} differs from this engine's "
            f"{NORMALIZATION_CARD!r}; the weights cannot be used."
        )
