"""Developer mode's Reload brings back the engine and the Slicer-side library as well as the module file, so editing
them needs no Slicer restart. Run in a subprocess: re-importing the engine in the test session would split its
classes in two for the tests that follow."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("slicer_core")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
sys.path[:0] = [{shims!r}, {module_dir!r}]
import slicer_shims
slicer_shims.install()
from slicer_shims.scene import new_scene
new_scene()
import LDCTDenoise
widget = slicer_shims.module_widget(LDCTDenoise.LDCTDenoiseWidget)
engine, slicerSide, module = (sys.modules[name] for name in
                              ("LDCTDenoiseLib.errors", "LDCTDenoiseSlicerLib.dependencies", "LDCTDenoise"))
widget.onReload()
reloaded = sys.modules["LDCTDenoise"]
assert reloaded is not module, "the module file was not executed again"
assert sys.modules["LDCTDenoiseLib.errors"] is not engine, "the engine was not re-imported"
assert sys.modules["LDCTDenoiseSlicerLib.dependencies"] is not slicerSide, "the Slicer-side library was not re-imported"
assert reloaded.LDCTDenoiseError is sys.modules["LDCTDenoiseLib.errors"].LDCTDenoiseError
assert reloaded.dependencies is sys.modules["LDCTDenoiseSlicerLib.dependencies"]
print("reloaded")
"""


def test_reload_imports_the_engine_and_the_slicer_side_library_again():
    script = SCRIPT.format(shims=str(ROOT / "Testing" / "Python"), module_dir=str(ROOT / "LDCTDenoise"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0 and result.stdout.strip().endswith("reloaded"), result.stdout + result.stderr
