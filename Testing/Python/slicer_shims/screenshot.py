"""Render the module panel offscreen from the real ``.ui`` with a small phantom compared in it.

    cd Testing/Python && python -m slicer_shims.screenshot ../../Resources/Screenshots/panel.png

The panel is the module's own Widget on a real MRML scene; only the stand-ins of this package replace Slicer.
"""

import importlib
import os
import sys
import tempfile
from pathlib import Path

import pydicom

from . import install
from .scene import load_dicom_series, new_scene

MODULE_DIR = Path(__file__).resolve().parents[3] / "LDCTDenoise"


def render_panel(out_path: Path, size: tuple[int, int] = (420, 900)) -> Path:
    """Save a screenshot of the panel after a comparison of the input with every model and a Gaussian filter."""
    install()
    import torch
    from LDCTDenoiseLib.cpce import CPCE2D
    from LDCTDenoiseLib.dicom_writer import write_derived_series
    from LDCTDenoiseLib.model_registry import ModelRegistry, save_model
    from LDCTDenoiseLib.phantom import make_abdomen_phantom
    from LDCTDenoiseLib.synthetic_series import synthetic_ct_volume

    sys.path.insert(0, str(MODULE_DIR))
    module = importlib.import_module("LDCTDenoise")
    scene = new_scene()
    with tempfile.TemporaryDirectory() as work:
        if not ModelRegistry().entries():  # before the shipped model exists, show a random-weight profile
            torch.manual_seed(0)
            save_model(CPCE2D(), {"name": "example-profile", "description": "random weights (screenshot only)",
                                  "training": {}, "losses": {"mse": 1.0}, "validation": {}, "command": "screenshot"},
                       Path(work) / "profiles")
            os.environ["LDCTDENOISE_PROFILES_DIR"] = str(Path(work) / "profiles")
        hu, spacing = make_abdomen_phantom(2, size=64, pixel_mm=6.0)
        source = synthetic_ct_volume(hu, spacing, series_description="Abdomen phantom")
        files = write_derived_series(source, source.hu, Path(work) / "input", derivation_description="phantom",
                                     series_description_suffix="")
        uids = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files]
        volume = load_dicom_series(scene.volumes_logic, files, "Abdomen phantom", uids)
        widget = module.LDCTDenoiseWidget()
        widget.setup()
        widget._parameterNode.device = module.Device.CPU
        roi = scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "Liver ROI")
        roi.SetCenter(95.0, 15.0, 0.0)  # RAS: the liver lies on the patient's right (phantom.ROI_TABLE_MM "liver")
        roi.SetSize(40.0, 40.0, 3.0)
        widget._parameterNode.roi = roi
        for item in widget.methodItems():
            item.setCheckState(module.qt.Qt.Checked if item.text() in ("input", "gaussian") else
                               module.qt.Qt.Unchecked)
        widget.onCompareButton()
        widget._parameterNode.exportVolume = widget.logic.existingOutput(volume, "gaussian")
        widget.parent.resize(*size)
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if not widget.parent.grab().save(str(out_path)):
            raise RuntimeError(f"Could not write {out_path}")
        widget.cleanup()
    return out_path


if __name__ == "__main__":
    print(render_panel(Path(sys.argv[1])))
