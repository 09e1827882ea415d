"""Render the module panel and each of its sections offscreen from the real ``.ui``, after really using them.

    cd Testing/Python && python -m slicer_shims.screenshot ../../Resources/Screenshots --adapt-steps 60

On a small phantom series "scanned" by the simulator as a new scanner would (10 % dose, smooth kernel), the panel
denoises with the shipped model, compares it with a Gaussian filter in an ROI, and (with ``--adapt-steps``) adapts
the shipped model to the series in a real background process, as a user would; then it saves
``panel.png`` (the whole panel) and ``panel-<section>.png`` for Denoise, Compare, Adapt and Export. The panel is
the module's own Widget on a real MRML scene; only the stand-ins of this package replace Slicer.
"""

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

import pydicom

from . import install, module_widget, python_slicer_launcher
from .scene import load_dicom_series, new_scene

MODULE_DIR = Path(__file__).resolve().parents[3] / "LDCTDenoise"
SECTIONS = {"denoise": "denoiseCollapsibleButton", "compare": "compareCollapsibleButton",
            "adapt": "adaptCollapsibleButton", "export": "exportCollapsibleButton"}


def _save(widget, path: Path) -> Path:
    if not widget.grab().save(str(path)):
        raise RuntimeError(f"Could not write {path}")
    return path


def render_panels(out_dir: Path, width: int = 440, adapt_steps: int = 0) -> dict[str, Path]:
    """Use every section of the panel on a phantom series, then save the whole panel and each section."""
    install()
    from LDCTDenoiseLib.dicom_writer import write_derived_series
    from LDCTDenoiseLib.model_registry import DEFAULT_MODEL
    from LDCTDenoiseLib.phantom import make_abdomen_phantom
    from LDCTDenoiseLib.simulator import D45_LIKE_FULL_DOSE_PHOTONS, ScanProtocol, simulate_low_dose_volume
    from LDCTDenoiseLib.synthetic_series import synthetic_ct_volume

    sys.path.insert(0, str(MODULE_DIR))
    module = importlib.import_module("LDCTDenoise")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = new_scene()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        os.environ["LDCTDENOISE_PROFILES_DIR"] = str(work / "profiles")  # the adapted profile is not kept
        os.environ["PATH"] = f"{python_slicer_launcher(work).parent}{os.pathsep}{os.environ['PATH']}"
        phantom, spacing = make_abdomen_phantom(2, size=256, pixel_mm=1.5)  # room for the noise estimate's ROIs
        new_scanner = ScanProtocol(dose_fraction=0.1, kernel="hann", full_dose_photons=D45_LIKE_FULL_DOSE_PHOTONS,
                                   mode="regen")
        low_dose, _ = simulate_low_dose_volume(phantom, 1.5, new_scanner, seed=0)
        source = synthetic_ct_volume(low_dose, spacing, series_description="Scanner B phantom")
        files = write_derived_series(source, source.hu, work / "input", derivation_description="phantom",
                                     series_description_suffix="")
        uids = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files]
        volume = load_dicom_series(scene.volumes_logic, files, "Scanner B phantom", uids)
        widget = module_widget(module.LDCTDenoiseWidget)
        widget.parent.resize(width, 400)
        widget._parameterNode.device = module.Device.CPU
        widget.onDenoiseButton()

        roi = scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "Liver ROI")
        roi.SetCenter(95.0, 15.0, 0.0)  # RAS: the liver lies on the patient's right (phantom.ROI_TABLE_MM "liver")
        roi.SetSize(40.0, 40.0, 3.0)
        widget._parameterNode.roi = roi
        for item in widget.methodItems():
            item.setCheckState(module.qt.Qt.Checked if item.text() in ("input", DEFAULT_MODEL, "gaussian") else
                               module.qt.Qt.Unchecked)
        widget.onCompareButton()

        widget.ui.targetVolumesSelector.setCheckState(volume, module.qt.Qt.Checked)
        widget.ui.profileNameLineEdit.setText("my-scanner")
        if adapt_steps:
            widget._parameterNode.adaptSteps = adapt_steps
            widget.onStartAdaptButton()
            while widget._adaptation is not None:
                widget._adaptation.process.waitForFinished(100)
                module.qt.QApplication.processEvents()
        widget._parameterNode.exportVolume = widget._parameterNode.outputVolume

        widget.parent.resize(width, widget.parent.sizeHint().height())
        widget.parent.show()
        module.qt.QApplication.processEvents()
        saved = {"panel": _save(widget.parent, out_dir / "panel.png")}
        for section, name in SECTIONS.items():
            saved[section] = _save(getattr(widget.ui, name), out_dir / f"panel-{section}.png")
        widget.parent.hide()
        widget.cleanup()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--width", type=int, default=440)
    parser.add_argument("--adapt-steps", type=int, default=0, help="run a real adaptation of this many steps first")
    args = parser.parse_args()
    for path in render_panels(args.out_dir, args.width, args.adapt_steps).values():
        print(path)


if __name__ == "__main__":
    main()
