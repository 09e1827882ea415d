"""The module (LDCTDenoise.py) wired to its real .ui under PySide6 offscreen and a real vtkMRMLScene.

Real here: the .ui file and Qt widgets (PySide6), MRML (slicer-core), slicer.util, the engine, torch, pydicom.
Stand-ins (Testing/Python/slicer_shims): PythonQt's ``qt`` namespace, the CTK/qMRML widget classes, the scripted
module base classes, the parameter node wrapper, ``slicer.app`` and the PyTorch extension's installer.
"""

import csv
import importlib
import importlib.metadata
import logging
import os
import re
import sys
import time
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("slicer_core")

import slicer_shims  # noqa: E402

SHIMS = slicer_shims.install()

import torch  # noqa: E402
from dicom_factory import phantom_hu, write_ct_series  # noqa: E402
from LDCTDenoiseSlicerLib import mrml  # noqa: E402
from LDCTDenoiseSlicerLib.process import AdaptationProcess  # noqa: E402
from LDCTDenoiseLib.cpce import CPCE2D  # noqa: E402
from LDCTDenoiseLib.dicom_reader import read_series  # noqa: E402
from LDCTDenoiseLib.model_registry import DEFAULT_MODEL, SHIPPED_MODELS_DIR, ModelRegistry, save_model  # noqa: E402
from slicer_shims.parameter_node_wrapper import SUPPORTED_PAIRS, SlicerParameterNamePropertyName  # noqa: E402

SHIPPED = ModelRegistry([SHIPPED_MODELS_DIR]).names()  # the default model first, then the others by name
from slicer_shims.scene import load_dicom_series, new_scene  # noqa: E402

import qt  # noqa: E402  (the shim, registered by install())
import slicer  # noqa: E402

MODULE_DIR = Path(__file__).resolve().parents[2] / "LDCTDenoise"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "LDCTDenoise.ui"
sys.path.insert(0, str(MODULE_DIR))
module = importlib.import_module("LDCTDenoise")


@pytest.fixture
def profile(tmp_path, monkeypatch):
    """A real (untrained, seeded) CPCE saved as the user profile 'tiny', beside the shipped model."""
    torch.manual_seed(0)
    save_model(CPCE2D(), {"name": "tiny", "description": "test profile", "training": {"domains": ["D45"]},
                          "losses": {"mse": 1.0}, "validation": {}, "command": "pytest"}, tmp_path / "profiles")
    monkeypatch.setenv("LDCTDENOISE_PROFILES_DIR", str(tmp_path / "profiles"))
    return "tiny"


@pytest.fixture
def mrml_scene():
    return new_scene()


@pytest.fixture
def ct(mrml_scene, tmp_path):
    """A 4-slice CT series loaded as Slicer's DICOM plugin loads it, and the engine's view of the same files."""
    files = write_ct_series(tmp_path / "series", phantom_hu(4, 40))
    series = read_series(files)
    uids = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in series.source_files]
    node = load_dicom_series(mrml_scene.volumes_logic, series.source_files, "ct", uids)
    return node, series, dict(zip(uids, map(str, series.source_files)))


@pytest.fixture
def scanner_b(mrml_scene, tmp_path):
    """A 3-slice, 192 px series loaded as Slicer loads DICOM: the unlabeled scans of a new scanner (large enough for
    the default method's noise estimate, which needs flat soft-tissue regions of 64² px)."""
    files = write_ct_series(tmp_path / "scanner-b", phantom_hu(3, 192))
    series = read_series(files)
    uids = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in series.source_files]
    return load_dicom_series(mrml_scene.volumes_logic, series.source_files, "scanner-b", uids)


@pytest.fixture
def widget(profile, mrml_scene):
    panel = slicer_shims.module_widget(module.LDCTDenoiseWidget)
    panel.ui.modelComboBox.setCurrentIndex(panel.ui.modelComboBox.findText(profile))  # the user picks the profile
    panel.refreshMethods()
    panel._parameterNode.device = module.Device.CPU
    panel._parameterNode.exportDirectory = Path(mrml_scene.scene.GetRootDirectory() or ".").absolute()
    yield panel
    panel.cleanup()


def ui_source_names() -> set[str]:
    return set(re.findall(r"self\.ui\.(\w+)", (MODULE_DIR / "LDCTDenoise.py").read_text(encoding="utf-8")))


def test_module_metadata():
    parent = type("ModuleParent", (), {})()
    module.LDCTDenoise(parent)
    assert parent.title == "LDCT Denoise"
    assert parent.categories == ["Filtering.Denoising"]
    assert "documentation" in parent.helpText and "Shan" in parent.acknowledgementText


def test_the_sample_is_registered_once_slicer_has_started():
    """Sample Data makes its buttons from the sources registered by then (SampleData.py v5.10.0:282)."""
    from LDCTDenoiseSlicerLib.sampleData import registerSampleData

    slicer.app.connections.clear()
    module.LDCTDenoise(type("ModuleParent", (), {})())
    assert slicer.app.connections == [("startupCompleted()", registerSampleData)]


def test_every_ui_name_the_code_uses_exists_and_every_custom_widget_has_its_stand_in(widget):
    tree = ElementTree.parse(UI_FILE)
    declared = {w.get("name"): w.get("class") for w in tree.iter("widget")}
    used = ui_source_names()
    assert used <= set(declared), f"missing in the .ui: {used - set(declared)}"
    for name in used:
        assert type(getattr(widget.ui, name)).__name__ == declared[name]  # nothing fell back to a plain QWidget
    custom = {c.findtext("class") for c in tree.iter("customwidget")}
    assert custom == {"qMRMLWidget", "qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox", "ctkCollapsibleButton",
                      "ctkCollapsibleGroupBox", "ctkDirectoryButton", "ctkSliderWidget"}
    root = tree.getroot().find("widget")
    assert root.get("class") == "qMRMLWidget"
    assert [w.findtext("property/string") for w in root.iter("widget") if w.get("class") == "ctkCollapsibleButton"
            ] == ["Denoise", "Compare", "Adapt to a new scanner", "Export"]
    connected = {c.findtext("receiver") for c in tree.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)" and c.findtext("sender") == root.get("name")}
    assert connected == {name for name, kind in declared.items()
                         if kind in ("qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox")}
    # QUiLoader made each of those connections (the stand-ins carry the C++ signatures).
    assert widget.ui.inputSelector.parent().parent().receivers(qt.SIGNAL("mrmlSceneChanged(vtkMRMLScene*)")) == len(
        connected)


def test_a_widget_made_without_a_parent_sets_itself_up_as_slicers_base_class_does(profile, mrml_scene):
    panel = module.LDCTDenoiseWidget()  # the base class calls setup() inside __init__ here
    assert panel.logic is not None and panel.ui.denoiseButton is not None and panel._parameterNode is not None
    panel.cleanup()


def test_bound_widgets_match_parameter_node_fields_with_pairs_slicer_can_connect(widget):
    bound = {w.property(SlicerParameterNamePropertyName): w for w in vars(widget.ui).values()
             if hasattr(w, "property") and w.property(SlicerParameterNamePropertyName)}
    fields = module.LDCTDenoiseParameterNode.allParameters
    assert set(bound) == set(fields) - {"modelName", "baseModelName"}  # model lists are filled at run time
    for name, bound_widget in bound.items():
        kind = fields[name].kind
        kind_name = ("node" if isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode)
                     else "Enum" if issubclass(kind, module.enum.Enum) else kind.__name__)
        assert (type(bound_widget).__name__, kind_name) in SUPPORTED_PAIRS, name


def test_parameter_node_round_trips_through_a_saved_scene(widget, ct, mrml_scene, tmp_path):
    node, _, _ = ct
    widget.ui.batchSizeSpinBox.setValue(7)  # GUI -> parameter node
    widget.ui.deviceComboBox.setCurrentIndex(list(module.Device).index(module.Device.GPU))
    roi = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "lesion")
    parameters = widget._parameterNode
    parameters.roi = roi  # parameter node -> GUI
    assert widget.ui.roiSelector.currentNode() is roi
    assert (parameters.batchSize, parameters.device, parameters.inputVolume) == (7, module.Device.GPU, node)
    mrml_scene.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert mrml_scene.scene.Commit()
    reloaded = new_scene()
    reloaded.scene.SetURL(str(tmp_path / "scene.mrml"))
    reloaded.scene.Connect()
    again = module.LDCTDenoiseLogic().getParameterNode()
    assert (again.batchSize, again.device, again.modelName) == (7, module.Device.GPU, "tiny")
    assert again.roi.GetName() == "lesion" and again.inputVolume.GetName() == "ct"


def test_buttons_follow_the_inputs(widget, mrml_scene):
    ui = widget.ui
    assert not ui.denoiseButton.isEnabled() and not ui.compareButton.isEnabled()
    assert not ui.cancelButton.isEnabled() and not ui.exportButton.isEnabled()
    assert not ui.copyMetricsButton.isEnabled() and not ui.saveMetricsButton.isEnabled()
    volume = mrml_scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
    assert ui.inputSelector.currentNode() is volume  # the scene -> combo box -> parameter node path
    assert ui.denoiseButton.isEnabled() and ui.compareButton.isEnabled()
    widget._parameterNode.exportVolume = volume
    assert ui.exportButton.isEnabled()
    widget._parameterNode.inputVolume = None
    assert not ui.denoiseButton.isEnabled()


def test_model_list_and_methods_come_from_the_registry_with_cards_as_tooltips(widget):
    ui = widget.ui
    assert [ui.modelComboBox.itemText(i) for i in range(ui.modelComboBox.count())] == [*SHIPPED, "tiny", "auto"]
    shipped, tooltip = (ui.modelComboBox.itemData(i, qt.Qt.ToolTipRole) for i in (0, len(SHIPPED)))
    assert "(shipped)" in shipped and "Validation on L286" in shipped
    assert "test profile" in tooltip and "D45" in tooltip and "(profile)" in tooltip
    methods = [item.text() for item in widget.methodItems()]
    assert methods[:len(SHIPPED) + 2] == ["input", *SHIPPED, "tiny"] and {"gaussian", "tv", "nlm"} <= set(methods)
    assert widget.checkedMethods() == ["input", DEFAULT_MODEL]  # ticked at setup, kept when the lists are refreshed
    assert widget._parameterNode.modelName == "tiny"


def test_denoise_runs_in_batches_and_shows_the_output_at_the_soft_tissue_window(widget, ct):
    node, _, _ = ct
    widget._parameterNode.batchSize = 1
    seen = []
    widget.ui.progressBar.valueChanged.connect(seen.append)
    widget.ui.denoiseButton.click()
    output = widget._parameterNode.outputVolume
    assert output is not None and output is widget._parameterNode.exportVolume
    display = output.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel(), display.GetAutoWindowLevel()) == (400, 40, 0)
    assert mrml.array_from_volume(output).shape == mrml.array_from_volume(node).shape
    assert seen[-1] == 4 and widget.ui.progressBar.maximum() == 4 and len(seen) == 4
    assert "Denoised" in widget.ui.statusLabel.text()
    assert widget.ui.denoiseButton.isEnabled() and not widget.ui.cancelButton.isEnabled()
    assert output.GetAttribute(module.LDCTDenoiseLogic.METHOD_ATTRIBUTE) == "tiny"


def test_auto_chooses_a_model_for_the_input_and_says_which_and_why(widget, scanner_b):
    """The last model entry, auto: the engine's choice (model_choice.py) on the input volume; the untrained profile
    'tiny' is never chosen over the shipped default, and the status line gives the choice and its evidence."""
    widget._parameterNode.inputVolume = scanner_b
    widget.ui.modelComboBox.setCurrentIndex(widget.ui.modelComboBox.findText(module.AUTO_MODEL))
    assert widget._parameterNode.modelName == "auto"
    widget.ui.denoiseButton.click()
    choice = widget.logic.lastModelChoice
    assert choice is not None and choice.name in SHIPPED and "tiny" in choice.estimates
    assert choice.estimates["tiny"].difference_interval_hu2[0] > 0  # clearly worse than the default
    output = widget._parameterNode.outputVolume
    assert output.GetAttribute(module.LDCTDenoiseLogic.METHOD_ATTRIBUTE) == choice.name
    assert f"Auto chose {choice.name}" in widget.ui.statusLabel.text()


def test_the_strength_slider_blends_the_output_and_the_export_and_table_record_it(widget, ct, tmp_path):
    node, _, lookup = ct
    full = widget.logic.denoise(node, "tiny", device="cpu")
    widget.ui.strengthSliderWidget.setValue(70)  # GUI -> parameter node
    assert widget._parameterNode.strength == 70.0
    widget.ui.denoiseButton.click()
    output = widget._parameterNode.outputVolume
    assert output is not full
    original = mrml.array_from_volume(node)
    np.testing.assert_allclose(mrml.array_from_volume(output),
                               original + 0.7 * (mrml.array_from_volume(full) - original), atol=1e-3)
    assert output.GetName().endswith("tiny 70%")
    header = pydicom.dcmread(widget.logic.exportDicom(output, tmp_path / "export", lookup.get)[0])
    assert "at strength 70 %" in header.DerivationDescription
    assert header.SeriesDescription.endswith("[LDCTDenoise tiny 70%]")

    for item in widget.methodItems():
        item.setCheckState(qt.Qt.Checked if item.text() in ("input", "tiny") else qt.Qt.Unchecked)
    widget.ui.compareButton.click()
    shown = [slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(s).GetBackgroundVolumeID()
             for s in widget.logic.compareSliceNodes]
    assert shown == [node.GetID(), output.GetID()]  # the 70 % output is reused, the full-strength one is not shown
    table = widget.ui.metricsTable
    assert [table.verticalHeaderItem(r).text() for r in range(table.rowCount())] == ["input", "tiny 70%"]


def test_cancel_reaches_the_engine_between_batches_and_changes_nothing(widget, ct, mrml_scene):
    widget._parameterNode.batchSize = 1
    volumes_before = mrml_scene.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    batches = []

    def press_cancel_after_first_batch(value: int) -> None:
        batches.append(value)
        if value == 1:
            assert widget.ui.cancelButton.isEnabled() and not widget.ui.denoiseButton.isEnabled()
            widget.ui.cancelButton.click()

    widget.ui.progressBar.valueChanged.connect(press_cancel_after_first_batch)
    widget.ui.denoiseButton.click()
    assert batches == [1]  # the engine checked the flag before the second batch
    assert "Cancelled" in widget.ui.statusLabel.text()
    assert mrml_scene.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes_before
    assert widget._parameterNode.outputVolume is None
    assert widget.ui.denoiseButton.isEnabled() and not widget.ui.cancelButton.isEnabled()


def test_compare_shows_one_linked_view_per_method_zoomed_on_the_roi_and_measures_it(widget, ct, mrml_scene,
                                                                                    tmp_path):
    node, _, _ = ct
    widget.ui.denoiseButton.click()
    denoised = widget._parameterNode.outputVolume
    for item in widget.methodItems():
        item.setCheckState(qt.Qt.Checked if item.text() in ("input", "tiny", "gaussian") else qt.Qt.Unchecked)
    roi = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    roi.SetCenter(node.GetOrigin()[0] - 14.0, node.GetOrigin()[1] - 14.0, node.GetOrigin()[2])
    roi.SetSize(6.0, 6.0, 1.0)
    background = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "background")
    background.SetCenter(node.GetOrigin()[0] - 4.0, node.GetOrigin()[1] - 4.0, node.GetOrigin()[2])
    background.SetSize(4.0, 4.0, 1.0)
    widget._parameterNode.roi, widget._parameterNode.backgroundRoi = roi, background
    widget.ui.compareButton.click()

    slice_nodes = widget.logic.compareSliceNodes
    assert [s.GetLayoutLabel() for s in slice_nodes] == ["input", "tiny", "gaussian"]
    shown = [slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(s).GetBackgroundVolumeID() for s in slice_nodes]
    assert shown[:2] == [node.GetID(), denoised.GetID()]  # the model's output was reused, not recomputed
    assert mrml_scene.scene.GetNodeByID(shown[2]).GetAttribute(module.LDCTDenoiseLogic.METHOD_ATTRIBUTE) == "gaussian"
    centre = [slice_nodes[1].GetSliceToRAS().GetElement(row, 3) for row in range(3)]
    assert centre == pytest.approx(list(roi.GetCenter()))
    roi.SetCenter(np.array(roi.GetCenter()) + np.array([3.0, 2.0, 0.0]))  # PointModifiedEvent -> views follow
    for slice_node in slice_nodes:
        assert [slice_node.GetSliceToRAS().GetElement(row, 3) for row in range(3)] == pytest.approx(
            list(roi.GetCenter()))

    table = widget.ui.metricsTable
    assert [table.verticalHeaderItem(r).text() for r in range(table.rowCount())] == ["input", "tiny", "gaussian"]
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert {"ROI mean (HU)", "Noise SD (HU)", "CNR", "NPS peak (cycles/mm)"} <= set(headers)
    assert not any("PSNR" in header for header in headers)  # no reference volume
    assert widget.ui.copyMetricsButton.isEnabled() and widget.ui.saveMetricsButton.isEnabled()
    widget.ui.copyMetricsButton.click()
    copied = qt.QApplication.clipboard().text()
    assert copied == widget.metricsText() and copied.splitlines()[0].split("\t") == ["Method", *headers]
    saved = widget.logic.saveMetrics(widget._metrics, str(tmp_path / "numbers.csv"))
    with open(saved, newline="") as handle:
        rows = list(csv.reader(handle))
    columns = list(dict.fromkeys(key for values in widget._metrics.values() for key in values))
    assert rows[0] == ["method", *columns] and {"roi_mean_hu", "roi_sd_hu", "cnr"} <= set(columns)
    assert [row[0] for row in rows[1:]] == ["input", "tiny", "gaussian"]


def test_compare_with_a_reference_adds_full_reference_metrics(widget, ct, mrml_scene):
    node, series, _ = ct
    reference = mrml.add_volume_from_array(series.hu + 3.0, node, "normal dose")
    volumes = widget.logic.compare(node, ["input", "gaussian"], device="cpu")
    metrics = widget.logic.comparisonMetrics(volumes, reference)
    assert metrics["input"]["rmse"] == pytest.approx(3.0) and metrics["gaussian"]["rmse"] > 0.0
    assert "roi_mean_hu" not in metrics["input"]


def test_compare_on_a_second_volume_computes_that_volumes_own_output(widget, ct):
    """Compare reuses an output only when it was made from the same input: patient B never gets patient A's image."""
    from LDCTDenoiseLib.methods import make_method

    node, series, _ = ct
    other = mrml.add_volume_from_array(np.ascontiguousarray(series.hu[:, ::-1]) + 50.0, node, "patient B")
    first = widget.logic.compare(node, ["input", "gaussian"], device="cpu")["gaussian"]
    second = widget.logic.compare(other, ["input", "gaussian"], device="cpu")["gaussian"]
    assert first.GetNodeReference(module.LDCTDenoiseLogic.INPUT_REFERENCE_ROLE) is node
    assert second.GetNodeReference(module.LDCTDenoiseLogic.INPUT_REFERENCE_ROLE) is other
    expected = make_method("gaussian", device="cpu")(mrml.array_from_volume(other))
    np.testing.assert_allclose(mrml.array_from_volume(second), expected, atol=1e-3)
    assert widget.logic.compare(other, ["gaussian"], device="cpu")["gaussian"] is second  # its own output is reused


def test_export_writes_the_denoised_volume_as_a_derived_series_of_its_input(widget, ct, tmp_path):
    node, series, lookup = ct
    widget.ui.denoiseButton.click()
    denoised = widget._parameterNode.exportVolume
    files = widget.logic.exportDicom(denoised, tmp_path / "export", lookup.get)
    written = read_series(files)
    np.testing.assert_array_equal(written.hu, np.clip(np.rint(mrml.array_from_volume(denoised)), -1024, 3071))
    assert written.origin == series.origin and written.spacing == series.spacing
    header = pydicom.dcmread(files[0])
    assert header.SeriesDescription.endswith("[LDCTDenoise tiny]") and "'tiny'" in header.DerivationDescription
    assert header.StudyInstanceUID == pydicom.dcmread(series.source_files[0]).StudyInstanceUID
    with pytest.raises(module.LDCTDenoiseError, match="not made by Denoise"):
        widget.logic.exportDicom(node, tmp_path / "export", lookup.get)


def test_on_slicer_5_12_dependencies_are_ensured_through_slicer_packaging(widget):
    SHIMS.packaging.ensured.clear()
    widget.ensureDependencies()
    (requirements, requester, missing), = SHIMS.packaging.ensured
    assert requester == "LDCTDenoise" and any(r.startswith("scikit-image") for r in requirements) and missing == []


@pytest.fixture
def slicer_before_5_12(monkeypatch):
    """Slicer 5.8 and 5.10: no ``slicer.packaging`` (added by Slicer 2cf12e60, first released in v5.12.0), and
    ``slicer.util.pip_install(requirements)`` runs pip at once, without asking, even in testing mode
    (Base/Python/slicer/util.py v5.10.0:3991); here it records what it would install."""
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)
    monkeypatch.delattr(slicer, "packaging")
    installed = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda requirements: installed.append(list(requirements)))
    return installed


def test_before_slicer_5_12_missing_packages_are_installed_only_after_the_user_agreed(widget, slicer_before_5_12,
                                                                                      monkeypatch, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# what the engine needs\nnumpy>=1.0\nldct-not-installed>=1.0\n")
    monkeypatch.setattr(widget, "resourcePath", lambda name: str(requirements))
    questions, answers = [], [False, True]
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda text, *args, **kwargs: questions.append(text) or answers.pop(0))
    with pytest.raises(RuntimeError, match="cannot run without these packages: ldct-not-installed>=1.0"):
        widget.ensureDependencies()  # declined
    assert slicer_before_5_12 == [] and "ldct-not-installed>=1.0" in questions[0] and "numpy" not in questions[0]
    widget.ensureDependencies()  # accepted
    assert slicer_before_5_12 == [["ldct-not-installed>=1.0"]] and len(questions) == 2


def test_before_slicer_5_12_nothing_is_asked_or_installed_when_everything_is_there(widget, slicer_before_5_12,
                                                                                    monkeypatch):
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *args, **kwargs: pytest.fail("asked"))
    widget.ensureDependencies()
    assert slicer_before_5_12 == []


def test_a_torch_older_than_the_engine_needs_is_refused_with_a_message(widget, monkeypatch):
    installed_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "2.0.1" if name == "torch" else installed_version(name))
    with pytest.raises(RuntimeError, match="PyTorch 2.0.1 is installed, but LDCT Denoise needs 2.1 or later"):
        widget.ensureDependencies()


def test_the_background_process_output_is_read_as_pythonqt_hands_it_over(tmp_path):
    """PythonQt gives QProcess reads as a wrapped QByteArray that bytes() refuses (see slicer_shims.qt); the slots
    are called here directly, so a regression fails with its TypeError instead of inside a Qt slot."""
    fake_job = tmp_path / "fake-python"
    fake_job.write_text('#!/bin/sh\necho \'{"event": "done", "name": "x"}\'\necho "a warning" >&2\n')
    fake_job.chmod(0o755)
    finished = []
    adaptation = AdaptationProcess(tmp_path / "job", onEvent=lambda event: None, onFinished=finished.append)
    adaptation.process.blockSignals(True)  # the test calls the slots itself
    adaptation.start(str(fake_job), str(MODULE_DIR))
    assert adaptation.process.waitForFinished(10000)
    adaptation._finished()
    assert adaptation.lastEvent == {"event": "done", "name": "x"} and adaptation.stderr.strip() == "a warning"
    assert finished == [adaptation]


def test_an_ended_adaptation_process_is_released(widget, tmp_path):
    """Connected bound methods keep the process object alive (PythonQt's signal receiver holds them) until cleanup
    disconnects them."""
    (tmp_path / "job").mkdir()
    adaptation = AdaptationProcess(tmp_path / "job", onEvent=lambda event: None, onFinished=lambda a: None)
    finished = qt.SIGNAL("finished(int,QProcess::ExitStatus)")
    assert adaptation.process.receivers(finished) == 1
    adaptation.cleanup()
    assert adaptation.process.receivers(finished) == 0 and not (tmp_path / "job").exists()
    adaptation.cleanup()  # twice is harmless (the panel and the self-test both clean up)


@pytest.fixture
def dicom_database(monkeypatch, ct):
    """``slicer.dicomDatabase.fileForInstance`` (CTK Libs/DICOM/Core/ctkDICOMDatabase.h:206) over the test series,
    and Slicer's ``DICOMLib.DICOMUtils.importDicom``, which logs a failure and returns False instead of raising
    (Modules/Scripted/DICOMLib/DICOMUtils.py v5.10.0:485-500); ``accept`` sets what it returns."""
    _, _, lookup = ct
    imported = types.SimpleNamespace(folders=[], accept=True)

    def import_dicom(folder, dicomDatabase=None, copyFiles=False):
        imported.folders.append(Path(folder))
        return imported.accept

    monkeypatch.setattr(slicer, "dicomDatabase", types.SimpleNamespace(fileForInstance=lookup.get), raising=False)
    monkeypatch.setitem(sys.modules, "DICOMLib", types.SimpleNamespace(
        DICOMUtils=types.SimpleNamespace(importDicom=import_dicom)))
    return imported


def test_export_adds_the_series_to_the_dicom_database_or_says_it_could_not(widget, ct, dicom_database, tmp_path):
    widget.ui.denoiseButton.click()
    widget._parameterNode.exportDirectory = tmp_path
    widget.onExportButton()
    (folder,) = dicom_database.folders
    assert len(list(folder.iterdir())) == 4 and "added them to the DICOM database" in widget.ui.statusLabel.text()
    dicom_database.accept = False
    with pytest.raises(module.LDCTDenoiseError, match="did not accept it"):
        widget.onExportButton()
    assert "added them" not in widget.ui.statusLabel.text()


def test_denoise_after_compare_leaves_the_compare_views_as_they_were(widget, ct, mrml_scene):
    node, _, _ = ct
    for item in widget.methodItems():
        item.setCheckState(qt.Qt.Checked if item.text() in ("input", "gaussian") else qt.Qt.Unchecked)
    widget.ui.compareButton.click()

    def backgrounds():
        scene = mrml_scene.scene
        composites = [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
                      for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]
        return {composite.GetLayoutName(): composite.GetBackgroundVolumeID() for composite in composites}

    compared = {name: volume for name, volume in backgrounds().items() if name.startswith(mrml.COMPARE_VIEW_PREFIX)}
    assert len(compared) == 2
    widget.ui.denoiseButton.click()
    shown = backgrounds()
    assert {name: shown[name] for name in compared} == compared
    assert {shown[name] for name in ("Red", "Green", "Yellow")} == {widget._parameterNode.outputVolume.GetID()}


def test_panel_and_section_screenshots_render_from_the_real_ui(tmp_path):
    from slicer_shims.screenshot import SECTIONS, render_panels

    saved = render_panels(tmp_path, width=440)
    assert set(saved) == {"panel", *SECTIONS}
    images = {name: qt.QImage(str(path)) for name, path in saved.items()}
    assert len({images[section].width() for section in SECTIONS}) == 1
    assert images["panel"].width() >= max(440, images["denoise"].width())
    assert images["panel"].height() > sum(images[section].height() for section in SECTIONS) * 0.9


@pytest.fixture
def python_slicer(tmp_path, monkeypatch):
    """Slicer's ``PythonSlicer`` on the PATH, as inside Slicer: here a launcher of this test's own interpreter."""
    folder = tmp_path / "slicer-bin"
    folder.mkdir()
    launcher = slicer_shims.python_slicer_launcher(folder)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return launcher


def wait_for_adaptation(widget, timeout_s: float = 300.0) -> None:
    """Let Qt deliver the background process's output and its end, as Slicer's event loop does."""
    deadline = time.monotonic() + timeout_s
    while widget._adaptation is not None:
        assert time.monotonic() < deadline, "the adaptation process did not finish"
        widget._adaptation.process.waitForFinished(100)
        qt.QApplication.processEvents()


def start_adaptation(widget, node, name: str, steps: int) -> None:
    widget.ui.targetVolumesSelector.setCheckState(node, qt.Qt.Checked)
    widget.ui.profileNameLineEdit.setText(name)
    widget._parameterNode.adaptSteps = steps
    assert widget.ui.startAdaptButton.isEnabled()
    widget.ui.startAdaptButton.click()


def test_adapt_button_needs_ticked_targets_and_a_profile_name(widget, ct):
    node, _, _ = ct
    ui = widget.ui
    assert not ui.startAdaptButton.isEnabled() and not ui.cancelAdaptButton.isEnabled()
    ui.targetVolumesSelector.setCheckState(node, qt.Qt.Checked)
    assert not ui.startAdaptButton.isEnabled()
    ui.profileNameLineEdit.setText("scanner-b")  # GUI -> parameter node -> buttons
    assert widget._parameterNode.profileName == "scanner-b" and ui.startAdaptButton.isEnabled()
    ui.targetVolumesSelector.setCheckState(node, qt.Qt.Unchecked)
    assert not ui.startAdaptButton.isEnabled()
    assert [ui.baseModelComboBox.itemText(i) for i in range(ui.baseModelComboBox.count())] == [*SHIPPED, "tiny"]
    assert widget._parameterNode.baseModelName == DEFAULT_MODEL


@pytest.mark.slow
def test_adaptation_runs_in_a_background_process_and_its_profile_is_selectable_at_once(
        widget, scanner_b, python_slicer, monkeypatch, source_bank_cache):
    monkeypatch.setenv("LDCTDENOISE_CACHE_DIR", str(source_bank_cache))
    node = scanner_b
    before = mrml.array_from_volume(node).copy()
    widget.ui.baseModelComboBox.setCurrentIndex(widget.ui.baseModelComboBox.findText("tiny"))
    steps = []
    widget.ui.adaptProgressBar.valueChanged.connect(steps.append)
    for item in widget.methodItems():
        item.setCheckState(qt.Qt.Checked if item.text() in ("input", "gaussian") else qt.Qt.Unchecked)
    widget.ui.saveAnywayCheckBox.setChecked(True)  # three steps show no clear gain on the held-out slice
    start_adaptation(widget, node, "scanner-b", steps=3)
    job_dir = widget._adaptation.jobDir
    assert widget.ui.cancelAdaptButton.isEnabled() and not widget.ui.startAdaptButton.isEnabled()
    wait_for_adaptation(widget)

    assert steps[-3:] == [1, 2, 3] and widget.ui.adaptProgressBar.maximum() == 3
    assert "Saved the profile 'scanner-b'" in widget.ui.adaptStatusLabel.text()
    assert "Noise measured in flat soft tissue: target scans" in widget.ui.adaptStatusLabel.text()  # the default
    assert "held-out slice (no reference)" in widget.ui.adaptStatusLabel.text()
    assert not widget.ui.lossCurveLabel.pixmap().isNull()
    assert widget.ui.modelComboBox.itemText(widget.ui.modelComboBox.currentIndex()) == "scanner-b"
    assert widget._parameterNode.modelName == "scanner-b"
    assert "scanner-b" in [item.text() for item in widget.methodItems()]
    assert widget.checkedMethods() == ["input", "gaussian"]  # the user's ticks survive the new profile
    assert "adapted from tiny" in widget.ui.modelComboBox.itemData(widget.ui.modelComboBox.currentIndex(),
                                                                   qt.Qt.ToolTipRole)
    assert not job_dir.exists()  # the job folder is removed
    np.testing.assert_array_equal(mrml.array_from_volume(node), before)
    assert widget.ui.startAdaptButton.isEnabled() and not widget.ui.cancelAdaptButton.isEnabled()
    widget.ui.denoiseButton.click()  # and Denoise uses it
    assert widget._parameterNode.outputVolume.GetAttribute(module.LDCTDenoiseLogic.METHOD_ATTRIBUTE) == "scanner-b"


@pytest.mark.slow
def test_cancel_stops_the_background_adaptation_and_saves_no_profile(widget, scanner_b, python_slicer, monkeypatch,
                                                                      source_bank_cache, tmp_path):
    monkeypatch.setenv("LDCTDENOISE_CACHE_DIR", str(source_bank_cache))
    node = scanner_b
    widget.ui.baseModelComboBox.setCurrentIndex(widget.ui.baseModelComboBox.findText("tiny"))

    def cancel_after_the_first_step(value: int) -> None:
        if value == 1 and widget._adaptation and not widget._adaptation.cancelRequested:
            widget.ui.cancelAdaptButton.click()

    widget.ui.adaptProgressBar.valueChanged.connect(cancel_after_the_first_step)
    start_adaptation(widget, node, "never-saved", steps=10000)
    started = time.monotonic()
    wait_for_adaptation(widget)
    assert time.monotonic() - started < 120
    assert widget.ui.adaptStatusLabel.text() == "Cancelled; no profile was saved."
    assert sorted(p.name for p in (tmp_path / "profiles").iterdir()) == ["tiny.json", "tiny.pt"]
    assert "never-saved" not in [widget.ui.modelComboBox.itemText(i) for i in range(widget.ui.modelComboBox.count())]


def test_errors_of_the_background_process_reach_the_user(widget, scanner_b, python_slicer, tmp_path, caplog):
    node = scanner_b
    widget.ui.baseModelComboBox.setCurrentIndex(widget.ui.baseModelComboBox.findText("tiny"))
    # Damaged before the start: the panel checks only the card, so the weights' checksum fails in the background job.
    (tmp_path / "profiles" / "tiny.pt").write_bytes(b"damaged weights")
    start_adaptation(widget, node, "scanner-c", steps=2)
    with caplog.at_level(logging.ERROR):
        wait_for_adaptation(widget)
    assert widget.ui.adaptStatusLabel.text() == "The adaptation failed; no profile was saved."
    assert any("The adaptation failed" in record.getMessage() and "tiny" in record.getMessage()
               for record in caplog.records)


def test_start_refuses_a_taken_name_or_too_small_scans_at_once(widget, ct, scanner_b, python_slicer):
    # In testing mode tryWithErrorDisplay raises instead of showing a dialog, so the handler is called directly.
    widget.ui.targetVolumesSelector.setCheckState(scanner_b, qt.Qt.Checked)
    widget.ui.profileNameLineEdit.setText("tiny")
    with pytest.raises(module.LDCTDenoiseError, match="already exists"):
        widget.onStartAdaptButton()
    assert widget._adaptation is None and widget.ui.startAdaptButton.isEnabled()
    widget.ui.targetVolumesSelector.setCheckState(scanner_b, qt.Qt.Unchecked)
    widget.ui.targetVolumesSelector.setCheckState(ct[0], qt.Qt.Checked)
    widget.ui.profileNameLineEdit.setText("new-name")
    with pytest.raises(module.LDCTDenoiseError, match="smaller than the 64 px"):
        widget.onStartAdaptButton()
    assert widget._adaptation is None
    assert not list(Path(module.tempfile.gettempdir()).glob("LDCTDenoiseAdapt-*"))  # no job folder left behind


def test_start_refuses_scans_without_flat_soft_tissue_at_once_with_the_default_method(widget, mrml_scene, tmp_path,
                                                                                      python_slicer):
    files = write_ct_series(tmp_path / "small", phantom_hu(2, 72))  # holds a patch, too small to measure noise
    series = read_series(files)
    uids = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in series.source_files]
    node = load_dicom_series(mrml_scene.volumes_logic, series.source_files, "small", uids)
    widget.ui.targetVolumesSelector.setCheckState(node, qt.Qt.Checked)
    widget.ui.profileNameLineEdit.setText("new-name")
    with pytest.raises(module.LDCTDenoiseError, match="choose the alignment method"):
        widget.onStartAdaptButton()
    assert widget._adaptation is None
    assert not list(Path(module.tempfile.gettempdir()).glob("LDCTDenoiseAdapt-*"))


def test_adapt_settings_start_at_the_engines_default_method(widget):
    from LDCTDenoiseLib.adaptation import DEFAULT_METHOD, AdaptationConfig, method_settings

    engine = AdaptationConfig(**method_settings(DEFAULT_METHOD))
    assert widget._parameterNode.adaptMethod.value == DEFAULT_METHOD
    assert widget.adaptationSettings() == {
        "method": DEFAULT_METHOD, "steps": engine.steps, "learning_rate": engine.learning_rate,
        "adversarial_weight": engine.adversarial_weight,
        "anchor_weight": engine.anchor_weight, "mask": engine.mask, "match_target_noise": engine.match_target_noise,
        "save_anyway": False, "device": "cpu"}


def test_choosing_a_method_puts_its_settings_into_the_advanced_ones(widget):
    from LDCTDenoiseLib.adaptation import method_settings

    combo = widget.ui.adaptMethodComboBox
    index = combo.findText(module.AdaptMethod.ALIGNMENT.label())
    combo.setCurrentIndex(index)
    assert widget._parameterNode.adaptMethod is module.AdaptMethod.ALIGNMENT
    assert widget.adaptationSettings()["adversarial_weight"] == 0.0  # a scene load or a script changes nothing else
    combo.activated.emit(index)  # what the user's choice sends
    settings = widget.adaptationSettings()
    shown = module.LDCTDenoiseLogic.ADAPTATION_SETTING_PARAMETERS  # the others travel with the method's name
    assert {name: settings[name] for name in shown} == {name: method_settings("alignment")[name] for name in shown}
    assert settings["method"] == "alignment"
    assert widget.ui.anchorWeightSpinBox.value() == 0.1 and not widget.ui.matchTargetNoiseCheckBox.isChecked()
    widget.ui.anchorWeightSpinBox.setValue(0.25)  # still editable after the choice
    assert widget.adaptationSettings()["anchor_weight"] == 0.25


def test_recorruption_reaches_the_engine_with_the_settings_the_panel_does_not_show(widget):
    from LDCTDenoiseLib.adaptation import method_settings
    from LDCTDenoiseLib.adaptation.job import _config

    combo = widget.ui.adaptMethodComboBox
    index = combo.findText(module.AdaptMethod.RECORRUPTION.label())
    combo.setCurrentIndex(index)
    combo.activated.emit(index)
    settings = widget.adaptationSettings()
    assert settings["method"] == "recorruption" and settings["learning_rate"] == method_settings("recorruption")[
        "learning_rate"]
    config = _config("new", "tiny", settings)  # as the background job builds it
    engine = method_settings("recorruption")
    assert (config.recorruption_weight, config.recorruption_alpha, config.holdout_share, config.lambda_rec) == (
        engine["recorruption_weight"], engine["recorruption_alpha"], engine["holdout_share"], engine["lambda_rec"])
    assert not config.uses_source


def test_an_adaptation_that_kept_the_starting_model_says_so_and_selects_nothing_new(widget, tmp_path):
    from LDCTDenoiseSlicerLib.process import AdaptationProcess

    selected = widget.ui.modelComboBox.currentText()
    (tmp_path / "job").mkdir()
    process = AdaptationProcess(tmp_path / "job", widget.onAdaptationEvent, widget.onAdaptationFinished)
    # the job's last event when its held-out slices showed no clear gain (test_adaptation_job.py runs the real one)
    process.lastEvent = {"event": "done", "kept": "start", "wall_time_s": 12.0,
                         "gain": "On 2 held-out slices (no reference), ... It is not clearly better: tiny is kept."}
    widget.onAdaptationFinished(process)
    assert widget.ui.adaptStatusLabel.text().endswith("tiny is kept. No profile was saved.")
    assert widget.ui.modelComboBox.currentText() == selected
    assert not (tmp_path / "job").exists()  # cleaned up as after any other ending
