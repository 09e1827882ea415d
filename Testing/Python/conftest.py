"""Shared pytest fixtures: where the team's real CT lives, and skipping cleanly when it is absent."""

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# What Slicer puts on sys.path for the module: its folder, with the engine and the Slicer-side library.
sys.path.insert(0, str(REPO_ROOT / "LDCTDenoise"))
SHARED_DATA = Path(os.environ.get("LDCTDENOISE_DATA") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(autouse=True)
def torch_cpu_runtime(monkeypatch):
    """PyTorch runs the network on the CPU in every test (and the processes they start) unless a test asks for
    OpenVINO: compiling each test's fresh network with OpenVINO would cost about 3 s, and PyTorch's tiled path is
    the one whose identities (tiles = whole slice, body skip) the tests check; test_openvino_runtime.py checks
    OpenVINO against it."""
    monkeypatch.setenv("LDCTDENOISE_CPU_RUNTIME", "torch")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real CT folder ($LDCTDENOISE_DATA, else ../shared/data); tests that need it skip with a message when it
    is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real CT data not found at {SHARED_DATA} (team-internal, never committed)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def source_bank_cache(tmp_path_factory) -> Path:
    """A cache folder holding the adaptation's default phantom source bank, simulated once per test session
    (about 35 s on 2 cores); point LDCTDENOISE_CACHE_DIR at it."""
    from LDCTDenoiseLib.adaptation import phantom_source_bank

    cache = tmp_path_factory.mktemp("cache")
    phantom_source_bank(cache_dir=cache / "source-banks")
    return cache


@pytest.fixture
def profile(tmp_path, monkeypatch) -> str:
    """A real (untrained, seeded) CPCE saved as a user profile named 'tiny', in tmp_path/profiles, which
    LDCTDENOISE_PROFILES_DIR points to (child processes inherit it)."""
    import torch
    from LDCTDenoiseLib.cpce import CPCE2D
    from LDCTDenoiseLib.model_registry import save_model

    torch.manual_seed(0)
    folder = tmp_path / "profiles"
    save_model(CPCE2D(), {"name": "tiny", "description": "test profile", "training": {}, "losses": {"mse": 1.0},
                          "validation": {}, "command": "pytest"}, folder)
    monkeypatch.setenv("LDCTDENOISE_PROFILES_DIR", str(folder))
    return "tiny"
