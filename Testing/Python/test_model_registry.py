"""Weights registry: saving, verifying and loading models and their cards; the shipped models."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from LDCTDenoiseLib.cpce import CPCE2D
from LDCTDenoiseLib.errors import WeightsError
from LDCTDenoiseLib.methods import ModelDenoiser, available_methods, make_method
from LDCTDenoiseLib.model_registry import (DEFAULT_MODEL, REQUIRED_CARD_KEYS, SHIPPED_MODELS_DIR, ModelRegistry,
                                           save_model, sha256_file, user_profiles_dir)


def _card(name="tiny"):
    return {"name": name, "description": "test model", "training": {"data": "none"}, "losses": {"mse": 1.0},
            "validation": {}, "command": "pytest"}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = CPCE2D()
    card_path = save_model(model, _card(), tmp_path)
    return model, card_path, ModelRegistry([tmp_path])


def test_save_then_load_gives_the_same_network(saved):
    model, card_path, registry = saved
    loaded, card = registry.load("tiny")
    assert card["sha256"] == sha256_file(card_path.parent / "tiny.pt")
    assert card["architecture"]["parameters"] == 62016 and card["normalization"]["hu_min"] == -1024.0
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert not loaded.training
    assert sorted(p.name for p in card_path.parent.iterdir()) == ["tiny.json", "tiny.pt"]


def test_saving_is_atomic_and_the_same_model_gives_the_same_bytes(saved, tmp_path):
    """The weights go through a hidden temporary file (none is left), and their bytes do not depend on its random
    name, so a profile's SHA-256 is reproducible."""
    model, card_path, _ = saved
    again = save_model(model, _card(), tmp_path / "again")
    assert (again.parent / "tiny.pt").read_bytes() == (card_path.parent / "tiny.pt").read_bytes()
    assert sorted(p.name for p in again.parent.iterdir()) == ["tiny.json", "tiny.pt"]


def test_altered_weights_are_refused(saved):
    _, card_path, registry = saved
    weights = card_path.parent / "tiny.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="altered or corrupt"):
        registry.load("tiny")


def test_missing_weights_file_is_named(saved):
    _, card_path, registry = saved
    (card_path.parent / "tiny.pt").unlink()
    with pytest.raises(WeightsError, match=r"tiny\.pt.*is missing"):
        registry.load("tiny")


def test_unknown_model_lists_the_known_ones(saved):
    *_, registry = saved
    with pytest.raises(WeightsError, match="Unknown model 'nope'. Known models: tiny"):
        registry.load("nope")


def test_card_without_required_keys_or_broken_json_is_refused(saved):
    _, card_path, registry = saved
    card = json.loads(card_path.read_text())
    del card["sha256"]
    card_path.write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="lacks the field 'sha256'"):
        registry.load("tiny")
    card_path.write_text("{not json")
    with pytest.raises(WeightsError, match="cannot be read"):
        registry.load("tiny")


def test_other_normalisation_is_refused(saved):
    _, card_path, registry = saved
    card = json.loads(card_path.read_text())
    card["normalization"]["hu_range"] = 600.0
    card_path.write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="normalisation"):
        registry.load("tiny")


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_weights_that_would_execute_code_are_refused(tmp_path):
    torch.manual_seed(0)
    card_path = save_model(CPCE2D(), _card("evil"), tmp_path)
    weights = tmp_path / "evil.pt"
    torch.save({"payload": _Payload()}, weights)
    card = json.loads(card_path.read_text())
    card["sha256"] = sha256_file(weights)
    card_path.write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="cannot be loaded"):
        ModelRegistry([tmp_path]).load("evil")
    assert isinstance(pickle.dumps(_Payload()), bytes)


def test_profiles_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LDCTDENOISE_PROFILES_DIR", str(tmp_path))
    assert user_profiles_dir() == tmp_path


def test_model_denoiser_through_the_method_interface(saved):
    *_, registry = saved
    method = make_method("tiny", registry=registry, device="cpu")
    assert isinstance(method, ModelDenoiser) and method.name == "tiny"
    volume = np.full((2, 24, 24), 40.0, np.float32)
    assert method(volume).shape == volume.shape
    assert "tiny" in available_methods(registry) and "nlm" in available_methods(registry)


def test_the_default_model_is_shipped_with_a_complete_card():
    registry = ModelRegistry([SHIPPED_MODELS_DIR])
    assert DEFAULT_MODEL in registry.names(), f"{DEFAULT_MODEL} must be shipped in {SHIPPED_MODELS_DIR}"
    for entry in registry.entries():
        assert all(key in entry.card for key in REQUIRED_CARD_KEYS)
        model, card = registry.load(entry.name)
        validation = card["validation"]
        assert validation["model"]["psnr_display"]["mean"] > validation["low_dose_input"]["psnr_display"]["mean"]
        assert card["training"]["split_by"] == "patient"
        assert not set(card["training"]["split"]["train"]) & set(card["training"]["split"]["validation"])


def test_listing_and_describing_models_does_not_import_torch(saved, tmp_path):
    """The CLI's and the Slicer panel's model lists read JSON cards only: a fresh Slicer has no torch until the user
    agrees to install it, and importing it would cost seconds. Run in a fresh interpreter, as the panel does it."""
    _, card_path, _ = saved
    script = (
        "import json, sys\n"
        "from LDCTDenoiseLib.model_registry import DEFAULT_MODEL, ModelRegistry, card_summary\n"
        "from LDCTDenoiseLib.methods import available_methods\n"
        "registry = ModelRegistry()\n"
        "summaries = {entry.name: card_summary(entry) for entry in registry.entries()}\n"
        "print(json.dumps({'names': registry.names(), 'default': registry.entry(DEFAULT_MODEL).name,\n"
        "                  'methods': available_methods(registry), 'summaries': summaries,\n"
        "                  'torch': 'torch' in sys.modules}))\n"
    )
    engine = Path(__file__).resolve().parents[2] / "LDCTDenoise"
    env = dict(os.environ, LDCTDENOISE_PROFILES_DIR=str(card_path.parent),
               PYTHONPATH=os.pathsep.join([str(engine), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert DEFAULT_MODEL in listed["names"] and "tiny" in listed["names"] and listed["default"] == DEFAULT_MODEL
    assert "tiny" in listed["methods"] and listed["summaries"]["tiny"][0] == "tiny (profile)"
    assert listed["torch"] is False, "listing models imported torch"
