"""The module in a Python that holds only what a fresh Slicer bundles, as a new user's Slicer has it before the first
click: Slicer 5.10's bundled numpy, scipy, pydicom, packaging and Pillow (Slicer/Slicer v5.10.0
SuperBuild/External_python-*.cmake), plus the stand-ins for what Slicer itself provides (MRML from slicer-core, Qt
from PySide6, Testing/Python/slicer_shims). Nothing the module imports at load may need more, and the first action
must offer to install the rest.

Run by ``make test-fresh-slicer`` (part of ``make test``), in its own virtual environment.
"""

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "LDCTDenoise"
# Packages the engine needs that Slicer does not bundle: their absence is what this environment is about.
NOT_IN_SLICER = ("torch", "skimage", "matplotlib", "tqdm", "numba", "pylibjpeg", "openjpeg", "gdcm", "bm3d", "yaml")

present = [name for name in NOT_IN_SLICER if importlib.util.find_spec(name) is not None]
if present:
    pytest.fail(f"This environment has {', '.join(present)}, which a fresh Slicer lacks; run these tests with "
                "`make test-fresh-slicer`.", pytrace=False)

sys.path[:0] = [str(ROOT / "Testing" / "Python"), str(MODULE_DIR)]
import slicer_shims  # noqa: E402

SHIMS = slicer_shims.install()
module = importlib.import_module("LDCTDenoise")

from slicer_shims.scene import new_scene  # noqa: E402


@pytest.fixture
def widget():
    scene = new_scene()
    panel = slicer_shims.module_widget(module.LDCTDenoiseWidget)
    scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
    SHIMS.torch_utils.requests.clear()
    yield panel
    panel.cleanup()


def test_the_module_loads_without_any_package_slicer_lacks():
    loaded = {name.split(".")[0] for name in sys.modules}
    assert not loaded & set(NOT_IN_SLICER)
    assert module.LDCTDenoiseWidget and module.LDCTDenoiseLogic


def test_the_widget_builds_and_says_pytorch_comes_with_the_first_action(widget):
    assert widget.ui.modelComboBox.count() == 0 and widget.methodItems() == []
    assert "press Denoise to install it" in widget.ui.modelComboBox.toolTip()
    assert widget.ui.denoiseButton.isEnabled() and widget.ui.compareButton.isEnabled()


@pytest.mark.parametrize("action", ["onDenoiseButton", "onCompareButton", "onAdaptMethodChosen"])
def test_the_first_action_offers_to_install_pytorch_and_stops_cleanly_when_declined(widget, action):
    with pytest.raises(RuntimeError, match="PyTorch is required"):
        getattr(widget, action)()
    assert SHIMS.torch_utils.requests == [{"askConfirmation": True, "torchVersionRequirement": ">=2.1"}]
    assert widget.ui.denoiseButton.isEnabled() and not widget.ui.cancelButton.isEnabled()


def test_what_remains_to_install_is_what_slicer_lacks():
    from LDCTDenoiseSlicerLib.dependencies import missingRequirements

    missing = {line.split(">=")[0] for line in missingRequirements(str(MODULE_DIR / "Resources" / "requirements.txt"))}
    assert missing == {"scikit-image", "matplotlib", "tqdm", "numba"}
