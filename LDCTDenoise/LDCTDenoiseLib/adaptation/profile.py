"""Naming and saving an adapted model as a user profile, alike from the command line and the Slicer panel.

A profile is ``<name>.pt`` + ``<name>.json`` (the card) in :func:`model_registry.user_profiles_dir`, with its loss
curve ``<name>.loss.png`` beside it. The card is written last, so an interrupted save registers no profile.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from ..errors import LDCTDenoiseError
from ..figure import loss_curve_figure
from ..model_registry import AUTO_MODEL, ModelRegistry, save_model, user_profiles_dir
from .adapt import AdaptationResult

PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_profile_name(name: str, registry: Optional[ModelRegistry] = None) -> None:
    """Refuse a name that is unsafe as a file name or already taken, before any work is done."""
    if not PROFILE_NAME.fullmatch(name):
        raise LDCTDenoiseError(f"Profile name '{name}' must be 1-64 letters, digits, '.', '_' or '-', starting with "
                               "a letter or digit.")
    if name.lower() == AUTO_MODEL:
        raise LDCTDenoiseError(f"'{name}' is the name of the automatic choice of a model; choose another name.")
    registry = registry or ModelRegistry()
    if name in registry.names():
        raise LDCTDenoiseError(f"A model named '{name}' already exists ({registry.entry(name).card_path}); choose "
                               "another name.")


def save_adapted_profile(result: AdaptationResult, base_model: str,
                         folder: Optional[Path] = None) -> tuple[Path, Path]:
    """Write the adapted model's loss curve, then its weights and card; returns (card path, curve path)."""
    folder = Path(folder or user_profiles_dir())
    name = result.card["name"]
    curve = loss_curve_figure(result.history, folder / f"{name}.loss.png",
                              title=f"{name}: adaptation of {base_model}")
    try:
        card_path = save_model(result.model, result.card, folder)
    except BaseException:
        os.remove(curve)  # no curve without its profile
        raise
    return card_path, curve
