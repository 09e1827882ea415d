"""Packaging. CMake configures the extension against Testing/fake_slicer (whose scripted-module macro fails on a
listed-but-missing file), every shipped file is listed, and the Extensions Index checks hold for CMakeLists.txt and
the catalog entry LDCTDenoise.json."""

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "LDCTDenoise"
FAKE_SLICER = ROOT / "Testing" / "fake_slicer"
# The Extensions Index categories this project could use (a subset of its ACCEPTED_EXTENSION_CATEGORIES).
ACCEPTED_CATEGORIES = {"Filtering", "Image Synthesis", "Segmentation", "Utilities", "Quantification"}

cmake = shutil.which("cmake")
pytestmark = pytest.mark.skipif(cmake is None, reason="cmake is not installed")


def configure(source: Path, build: Path) -> subprocess.CompletedProcess:
    return subprocess.run([cmake, "-S", str(source), "-B", str(build), f"-DSlicer_DIR={FAKE_SLICER}",
                           "-DBUILD_TESTING=ON"], capture_output=True, text=True, timeout=120)


def shipped_files(module_dir: Path) -> set[str]:
    """What the module folder ships: the module script, the engine package and every resource."""
    files = {"LDCTDenoise.py"}
    for package in ("LDCTDenoiseLib", "LDCTDenoiseSlicerLib"):
        files |= {p.relative_to(module_dir).as_posix() for p in (module_dir / package).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")}
    files |= {p.relative_to(module_dir).as_posix() for p in (module_dir / "Resources").rglob("*") if p.is_file()}
    return files


def copy_extension(destination: Path) -> Path:
    shutil.copy(ROOT / "CMakeLists.txt", destination / "CMakeLists.txt")
    shutil.copytree(MODULE, destination / "LDCTDenoise",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.nbi", "*.nbc"))
    return destination


@pytest.fixture(scope="module")
def real_configure(tmp_path_factory):
    build = tmp_path_factory.mktemp("build")
    result = configure(ROOT, build)
    listed = (build / "LDCTDenoise-listed-files.txt").read_text().split()
    missing_file = build / "LDCTDenoise-missing-files.txt"
    return result, listed, set(missing_file.read_text().split()) if missing_file.exists() else set()


def test_the_real_tree_configures_and_lists_every_file_it_ships(real_configure):
    result, listed, missing = real_configure
    assert set(listed) == shipped_files(MODULE)
    assert not missing and result.returncode == 0, result.stderr


def test_configure_fails_on_a_listed_but_missing_file(tmp_path):
    (tmp_path / "source").mkdir()
    source = copy_extension(tmp_path / "source")
    assert configure(source, tmp_path / "complete").returncode == 0
    (source / "LDCTDenoise" / "Resources" / "UI" / "LDCTDenoise.ui").unlink()
    result = configure(source, tmp_path / "broken")
    assert result.returncode != 0
    assert "missing file listed in module LDCTDenoise" in result.stderr
    assert (tmp_path / "broken" / "LDCTDenoise-missing-files.txt").read_text().split() == [
        "Resources/UI/LDCTDenoise.ui"]


def cmake_variables(text: str) -> dict[str, str]:
    return {name: value for name, value in re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text)}


def test_extensions_index_checks_hold_for_cmakelists_and_the_catalog_entry():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    catalog_path = ROOT / "LDCTDenoise.json"
    raw = catalog_path.read_bytes()
    assert b"\r" not in raw  # LF-only line endings
    catalog = json.loads(raw)
    project = re.findall(r"project\s*\(\s*([^\s)]+)", text, re.IGNORECASE)[0]
    assert project == catalog_path.stem == "LDCTDenoise"
    assert not project.lower().startswith("slicer")
    variables = cmake_variables(text)
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DESCRIPTION",
                 "EXTENSION_CONTRIBUTORS"):
        assert variables.get(name), name
    assert variables["EXTENSION_ICONURL"].startswith("https://") and variables["EXTENSION_ICONURL"].endswith(".png")
    assert variables["EXTENSION_CATEGORY"] == catalog["category"] and catalog["category"] in ACCEPTED_CATEGORIES
    assert variables["EXTENSION_DEPENDS"].split() == catalog["build_dependencies"] == ["PyTorch"]
    assert {"$schema", "category", "scm_url"} <= set(catalog)
    assert "slicer-extension-catalog-entry-schema" in catalog["$schema"]
    assert catalog["scm_url"].startswith("https://") and catalog["scm_url"] == variables["EXTENSION_HOMEPAGE"]
    assert "slicer" in catalog["scm_url"].rstrip("/").split("/")[-1].lower()
    assert "add_subdirectory(LDCTDenoise)" in text
    for url in [variables["EXTENSION_ICONURL"], *variables["EXTENSION_SCREENSHOTURLS"].split()]:
        prefix = variables["EXTENSION_HOMEPAGE"].replace("https://github.com/", "https://raw.githubusercontent.com/")
        assert url.startswith(prefix + "/main/") and (ROOT / url[len(prefix + "/main/"):]).is_file(), url


def test_the_catalog_entry_is_formatted_as_the_extensions_index_prettier_check_demands():
    """The index's pre-commit runs prettier 3.5.3 with prettier-plugin-multiline-arrays 4.0.3 and
    ``multilineArraysWrapThreshold: 0`` (Slicer/ExtensionsIndex 07f1d1b2, .pre-commit-config.yaml, .prettierrc.js):
    every non-empty array wraps, one element per line, two-space indent, a final newline; for a flat catalog entry
    that is exactly json.dumps(indent=2)."""
    text = (ROOT / "LDCTDenoise.json").read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_the_module_refuses_the_same_oldest_torch_that_pyproject_requires():
    source = (MODULE / "LDCTDenoiseSlicerLib" / "dependencies.py").read_text(encoding="utf-8")
    (minimum,) = re.findall(r'^MINIMUM_TORCH_VERSION = "([^"]+)"', source, re.MULTILINE)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert f"torch>={minimum}" in dependencies


def test_requirements_are_the_engine_dependencies_slicer_does_not_bundle():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    lines = (MODULE / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    bundled_or_extension = {"numpy", "pydicom", "torch"}
    # Slicer decodes the DICOM it loads itself and the export reads headers only (test_slicer_mrml); python-gdcm in
    # Slicer's Python would also load a second copy of the GDCM libraries that Slicer's ITK links.
    decoders = {"python-gdcm", "pylibjpeg", "pylibjpeg-openjpeg"}
    assert requirements == [d for d in dependencies
                            if re.split(r"[<>=!~]", d)[0] not in bundled_or_extension | decoders]
    assert all(">=" in requirement and "==" not in requirement for requirement in requirements)
