"""Weights and model cards: find, verify and load the models the product ships and the profiles a user adapted.

Every ``<name>.pt`` (a plain state dict) has a ``<name>.json`` card beside it that says what the weights are, how
they were made and how good they are. Loading checks the card, the file's SHA-256 and the normalisation, and uses
``torch.load(weights_only=True)`` so a weights file can never run code. Listing and describing models reads only the
JSON cards: torch is imported where weights are loaded or saved, so the CLI's and the panel's model lists work (and
stay fast) without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from .atomic import atomic_file
from .errors import WeightsError
from .model_card import CARD_FORMAT, card_schema, check_card_layout
from .normalization import check_card

if TYPE_CHECKING:
    import torch

    from .cpce import CPCE2D

SHIPPED_MODELS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models"
DEFAULT_MODEL = "cpce2d-mayo-d45"
AUTO_MODEL = "auto"  # not a model: chooses one per series (model_choice.py)
REQUIRED_CARD_KEYS = tuple(card_schema()["required"])  # model_card.schema.json


def user_profiles_dir() -> Path:
    """Folder of the user's adapted model profiles (``LDCTDENOISE_PROFILES_DIR`` overrides it)."""
    override = os.environ.get("LDCTDENOISE_PROFILES_DIR")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "LDCTDenoise" / "profiles"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelEntry:
    """A model found on disk: its name, card, and where it came from ("shipped" or "profile")."""

    name: str
    card_path: Path
    card: dict
    origin: str

    @property
    def weights_path(self) -> Path:
        return self.card_path.parent / self.card["file"]


def read_card(card_path: Path) -> dict:
    """Parse a model card and check it against ``model_card.schema.json``; the error names the file and the field."""
    try:
        card = json.loads(Path(card_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"Model card not found: {card_path}") from None
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"Model card {card_path} cannot be read: {error}") from None
    if not isinstance(card, dict):
        raise WeightsError(f"Model card {card_path} is not a JSON object.")
    check_card_layout(card, card_path)
    return card


class ModelRegistry:
    """The models in a list of folders: the shipped ones first, then the user's profiles."""

    def __init__(self, directories: Optional[Sequence[Path]] = None) -> None:
        if directories is None:
            directories = [SHIPPED_MODELS_DIR, user_profiles_dir()]
        self.directories = [Path(directory) for directory in directories]

    def entries(self) -> list[ModelEntry]:
        """Every readable card in the folders; a broken card is skipped here and reported by :meth:`entry`."""
        found: dict[str, ModelEntry] = {}
        for index, directory in enumerate(self.directories):
            origin = "shipped" if index == 0 and directory == SHIPPED_MODELS_DIR else "profile"
            for card_path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
                try:
                    card = read_card(card_path)
                except WeightsError:
                    continue
                found.setdefault(card["name"], ModelEntry(card["name"], card_path, card, origin))
        return list(found.values())

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries()]

    def entry(self, name: str) -> ModelEntry:
        """The model called ``name``; a clear error lists the known ones otherwise."""
        for directory in self.directories:
            card_path = directory / f"{name}.json"
            if card_path.is_file():
                card = read_card(card_path)
                origin = "shipped" if directory == SHIPPED_MODELS_DIR else "profile"
                return ModelEntry(card["name"], card_path, card, origin)
        known = ", ".join(self.names()) or "none"
        raise WeightsError(f"Unknown model '{name}'. Known models: {known}.")

    def load(self, name: str, device: Optional[torch.device] = None) -> tuple[CPCE2D, dict]:
        """The verified network (in eval mode, on ``device``) and its card."""
        entry = self.entry(name)
        return load_weights(entry.card_path, device), entry.card


def card_summary(entry: ModelEntry) -> list[str]:
    """A card in a few lines for people (the CLI's list, the Slicer tooltip): what, from where, how good."""
    card = entry.card
    lines = [f"{entry.name} ({entry.origin})", card.get("description", "")]
    domains = card.get("training", {}).get("domains")
    if domains:
        lines.append("Trained on: " + "; ".join(map(str, domains)))
    validation = card.get("validation", {})
    if "model" in validation and "low_dose_input" in validation:
        model, low = validation["model"], validation["low_dose_input"]
        lines.append(f"Validation on {', '.join(validation.get('patients', [])) or '?'} (W/L 400/40): PSNR "
                     f"{low['psnr_display']['mean']:.2f} -> {model['psnr_display']['mean']:.2f} dB, SSIM "
                     f"{low['ssim_display']['mean']:.4f} -> {model['ssim_display']['mean']:.4f}")
    return [line for line in lines if line]


def load_weights(card_path: Path, device: Optional[torch.device] = None) -> CPCE2D:
    """Load the weights a card describes after checking file, checksum, architecture and normalisation."""
    import torch

    from .cpce import ARCHITECTURE_CARD, CPCE2D

    card = read_card(Path(card_path))
    if card["architecture"].get("name") != ARCHITECTURE_CARD["name"]:
        raise WeightsError(f"{card_path}: architecture {card['architecture'].get('name')!r} is not "
                           f"{ARCHITECTURE_CARD['name']!r}.")
    check_card(card["normalization"])
    weights_path = Path(card_path).parent / card["file"]
    if not weights_path.is_file():
        raise WeightsError(f"Weights file {weights_path} named by {card_path} is missing.")
    actual = sha256_file(weights_path)
    if actual != card["sha256"]:
        raise WeightsError(f"Weights file {weights_path} is altered or corrupt: SHA-256 {actual} does not match "
                           f"the card's {card['sha256']}.")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model = CPCE2D()
        model.load_state_dict(state)
    except Exception as error:  # torch raises several types for bad pickles and mismatched keys
        raise WeightsError(f"Weights file {weights_path} cannot be loaded as CPCE-2D: {error}") from None
    model.eval()
    return model.to(device) if device is not None else model


def save_model(model: CPCE2D, card: dict, directory: Path) -> Path:
    """Write ``<name>.pt`` and ``<name>.json`` atomically (temp file + rename); returns the card path.

    The card's ``card_format``, ``file``, ``sha256``, ``architecture`` and ``normalization`` are filled in here so
    they always match; a card that would not pass ``model_card.schema.json`` is refused before anything is written.
    """
    import torch

    from .cpce import ARCHITECTURE_CARD
    from .normalization import NORMALIZATION_CARD

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = card["name"]
    weights_path = directory / f"{name}.pt"
    card_path = directory / f"{name}.json"
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    # The card's staging file is opened first so that it is renamed last: a card never names weights not yet there.
    with atomic_file(card_path) as temp_card, atomic_file(weights_path) as temp_weights:
        with open(temp_weights, "wb") as stream:  # given a path, torch would name its archive after the random name
            torch.save(state, stream)
        full_card = {"card_format": CARD_FORMAT, **{key: value for key, value in card.items() if key != "card_format"},
                     "file": weights_path.name, "sha256": sha256_file(temp_weights),
                     "architecture": dict(ARCHITECTURE_CARD), "normalization": dict(NORMALIZATION_CARD)}
        check_card_layout(full_card, f"'{name}' (not saved)")  # a card that would not load is never written
        temp_card.write_text(json.dumps(full_card, indent=2) + "\n", encoding="utf-8")
    return card_path
