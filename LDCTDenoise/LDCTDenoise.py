import contextlib
import enum
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import (
    parameterNodeWrapper,
    WithinRange,
)

from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode

from LDCTDenoiseSlicerLib import dependencies, mrml
from LDCTDenoiseSlicerLib.process import AdaptationProcess
from LDCTDenoiseSlicerLib.sampleData import registerSampleData
from LDCTDenoiseLib.errors import CancelledError, LDCTDenoiseError

# Everything that needs torch (models, methods, comparison) is imported where it is used, after the Widget made sure
# PyTorch is installed: importing it here would stop the module from loading before the user could install it.

RELOADED_PACKAGES = ("LDCTDenoiseLib", "LDCTDenoiseSlicerLib")  # re-imported by Reload, with the module
INPUT_METHOD = "input"  # the engine's name (LDCTDenoiseLib.methods.INPUT) for "the input volume itself"
AUTO_MODEL = "auto"  # the engine's name (LDCTDenoiseLib.model_registry.AUTO_MODEL) for "choose a model per series"
LOSS_CURVE_REFRESH_S = 2.0  # redraw the live loss curve at most this often
LOSS_CURVE_WIDTH_PX = 380


#
# LDCTDenoise
#


class LDCTDenoise(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LDCT Denoise")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering.Denoising")]
        self.parent.dependencies = []
        self.parent.contributors = ["LDCTDenoise team"]
        self.parent.helpText = _("""
Denoise a low-dose CT series slice by slice with a CPCE network, compare it with classic filters in linked views
zoomed onto a region of interest, adapt the network to a new scanner's scans without normal-dose references
(experimental: compare an adapted profile with the model it started from), and export the result as a derived DICOM
series.
See the <a href="https://github.com/ldctdenoise/SlicerLDCTDenoise#readme">documentation</a>. Not for clinical use.
""")
        self.parent.acknowledgementText = _("""
CPCE-2D: H. Shan et al., "3-D Convolutional Encoder-Decoder Network for Low-Dose CT via Transfer Learning From a
2-D Trained Network", IEEE TMI 37(6), 2018. Adaptation: J. Huang et al., "Cross domain low-dose CT image denoising
with semantic information alignment". Shipped weights were trained on the AAPM/Mayo Clinic 2016 Low-Dose CT
Grand Challenge data.
""")
        # The sample series appears in the Sample Data module, whose buttons are made from the sources registered
        # once Slicer has started (as Slicer's scripted-module template registers its samples).
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# LDCTDenoiseParameterNode
#


class Device(enum.Enum):
    """Where the network runs; the value is the engine's device name."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "cuda"

    def label(self) -> str:
        return {Device.AUTO: _("Automatic (GPU if available)"), Device.CPU: _("CPU"), Device.GPU: _("GPU")}[self]


class AdaptMethod(enum.Enum):
    """How the adaptation uses the target scans; the value is the engine's method name (ADAPTATION_METHODS)."""

    NOISE_MATCHING = "noise-matching"
    ALIGNMENT = "alignment"
    RECORRUPTION = "recorruption"

    def label(self) -> str:
        return {AdaptMethod.NOISE_MATCHING: _("Match the target's noise (recommended)"),
                AdaptMethod.ALIGNMENT: _("Semantic alignment (paper)"),
                AdaptMethod.RECORRUPTION: _("Learn from the scans themselves (recorruption)")}[self]


class AdaptMask(enum.Enum):
    """What the adaptation's discriminator sees of the outputs; the value is the engine's mask name."""

    ADAPTIVE = "adaptive"
    BERNOULLI = "bernoulli"
    FIXED = "fixed"
    NONE = "none"

    def label(self) -> str:
        return {AdaptMask.ADAPTIVE: _("Adaptive random frequency mask (paper)"),
                AdaptMask.BERNOULLI: _("Bernoulli random mask"), AdaptMask.FIXED: _("Fixed radial low-pass"),
                AdaptMask.NONE: _("None (plain adversarial)")}[self]


@parameterNodeWrapper
class LDCTDenoiseParameterNode:
    """
    The parameters needed by module.

    inputVolume - The low-dose CT volume to denoise.
    modelName - The registered model that denoises (empty: the engine's default model; "auto": chosen per input).
    baseModelName - The registered model the adaptation starts from.
    device - Where the network runs.
    strength - How much of the denoising to apply, in percent: output = input + strength/100 * (denoised - input).
    batchSize - Slices sent to the device at once.
    outputVolume - Where the denoised volume goes (a new volume when none).
    referenceVolume - Optional normal-dose volume for PSNR/SSIM/RMSE.
    roi, backgroundRoi - Regions of the comparison: zoom, ROI numbers and CNR.
    profileName - Name of the profile the adaptation saves.
    adaptMethod - How the adaptation uses the target scans; choosing one puts its settings into the advanced ones.
    adaptSteps, learningRate - Length and step size of the adaptation's fine-tuning.
    saveAnyway - Save the adapted profile even when its held-out slices show no clear gain over the starting model.
    adversarialWeight, anchorWeight, mask, matchTargetNoise - The adaptation's advanced settings (see the engine's
        AdaptationConfig); their defaults are the engine's default method (noise matching).
    exportVolume - The denoised volume to write as a derived DICOM series.
    exportDirectory - The folder that receives the exported series (in a new subfolder).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    modelName: str = ""
    baseModelName: str = ""
    device: Device = Device.AUTO
    strength: Annotated[float, WithinRange(0.0, 100.0)] = 100.0
    batchSize: Annotated[int, WithinRange(1, 64)] = 4
    outputVolume: vtkMRMLScalarVolumeNode
    referenceVolume: vtkMRMLScalarVolumeNode
    roi: vtkMRMLMarkupsROINode
    backgroundRoi: vtkMRMLMarkupsROINode
    profileName: str = ""
    adaptMethod: AdaptMethod = AdaptMethod.NOISE_MATCHING
    adaptSteps: Annotated[int, WithinRange(1, 100000)] = 300
    learningRate: Annotated[float, WithinRange(1e-6, 1e-2)] = 5e-5
    adversarialWeight: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    anchorWeight: Annotated[float, WithinRange(0.0, 10.0)] = 0.1
    mask: AdaptMask = AdaptMask.ADAPTIVE
    matchTargetNoise: bool = True
    saveAnyway: bool = False
    exportVolume: vtkMRMLScalarVolumeNode
    exportDirectory: Path = Path.home()


#
# LDCTDenoiseWidget
#


class LDCTDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent=None) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        # Set before the base class's __init__, which calls setup() itself when there is no parent.
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._busy = False
        self._cancelRequested = False
        self._metrics = {}
        self._adaptation = None
        self._lossHistory = []
        self._lossCurveShownAt = 0.0
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        """Called when the user opens the module the first time and the widget is initialized."""
        ScriptedLoadableModuleWidget.setup(self)

        # Load widget from .ui file (created by Qt Designer).
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LDCTDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        # Set scene in MRML widgets. The .ui connects the top-level qMRMLWidget's "mrmlSceneChanged(vtkMRMLScene*)"
        # signal to each MRML widget's "setMRMLScene(vtkMRMLScene*)" slot.
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = LDCTDenoiseLogic()

        # Connections

        # These connections ensure that we update parameter node when scene is closed
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelSelected)
        self.ui.denoiseButton.clicked.connect(self.onDenoiseButton)
        self.ui.cancelButton.clicked.connect(self.onCancelButton)
        self.ui.compareButton.clicked.connect(self.onCompareButton)
        self.ui.copyMetricsButton.clicked.connect(self.onCopyMetricsButton)
        self.ui.saveMetricsButton.clicked.connect(self.onSaveMetricsButton)
        self.ui.exportButton.clicked.connect(self.onExportButton)
        self.ui.baseModelComboBox.currentIndexChanged.connect(self.onBaseModelSelected)
        self.ui.adaptMethodComboBox.activated.connect(self.onAdaptMethodChosen)  # the user's choice only
        self.ui.targetVolumesSelector.checkedNodesChanged.connect(self._checkCanApply)
        self.ui.startAdaptButton.clicked.connect(self.onStartAdaptButton)
        self.ui.cancelAdaptButton.clicked.connect(self.onCancelAdaptButton)

        # Make sure parameter node is initialized (needed for module reload)
        self.initializeParameterNode()
        self.refreshMethods()

    def onReload(self) -> None:
        """Developer mode's Reload: Slicer executes this file again but keeps the packages it imports, so the engine
        and the Slicer-side library are dropped from ``sys.modules`` first and come back fresh (MONAIAuto3DSeg
        reloads its Lib the same way). A running adaptation is stopped: its process object is the old code's."""
        if self._adaptation:
            self._adaptation.stop()
        for name in [name for name in sys.modules if name.partition(".")[0] in RELOADED_PACKAGES]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed."""
        if self._adaptation:
            self._adaptation.stop()
        self.removeObservers()
        self.logic.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        # Make sure parameter node exists and observed
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
        # Do not react to parameter node changes (GUI will be updated when the user enters into the module)
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        # Parameter node will be reset, do not use it anymore
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed."""
        # If this module is shown while the scene is closed then recreate a new parameter node immediately
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Ensure parameter node exists and observed."""
        # Parameter node stores all user choices in parameter values, node selections, etc.
        # so that when the scene is saved and reloaded, these settings are restored.

        self.setParameterNode(self.logic.getParameterNode())

        # Select default input nodes if nothing is selected yet to save a few clicks for the user
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[LDCTDenoiseParameterNode]) -> None:
        """
        Set and observe parameter node.
        Observation is needed because when the parameter node is changed then the GUI must be updated immediately.
        """

        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Note: in the .ui file, a Qt dynamic property called "SlicerParameterName" is set on each
            # ui element that needs connection.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        """Enable each action only when its inputs are there and nothing is running."""
        parameterNode = self._parameterNode
        hasInput = bool(parameterNode and parameterNode.inputVolume)
        self.ui.denoiseButton.setEnabled(hasInput and not self._busy)
        self.ui.denoiseButton.setToolTip(_("Denoise the input volume with the chosen model.") if hasInput
                                         else _("Select an input volume."))
        self.ui.compareButton.setEnabled(hasInput and not self._busy)
        self.ui.exportButton.setEnabled(bool(parameterNode and parameterNode.exportVolume) and not self._busy)
        self.ui.cancelButton.setEnabled(self._busy)
        self.ui.copyMetricsButton.setEnabled(bool(self._metrics))
        self.ui.saveMetricsButton.setEnabled(bool(self._metrics))
        adapting = self._adaptation is not None
        hasTargets = bool(self.ui.targetVolumesSelector.checkedNodes())
        hasName = bool(parameterNode and parameterNode.profileName.strip())
        self.ui.startAdaptButton.setEnabled(hasTargets and hasName and not adapting)
        self.ui.startAdaptButton.setToolTip(
            _("Adapt the model to the ticked scans in a background process.") if hasTargets and hasName
            else _("Tick the target scans and name the new profile."))
        self.ui.cancelAdaptButton.setEnabled(adapting)

    def refreshMethods(self) -> None:
        """List the models (shipped ones and the user's profiles, each with its card as tooltip) and the methods
        that Compare can show; the methods ticked before stay ticked."""
        previouslyChecked = self.checkedMethods()
        self.ui.modelComboBox.clear()
        self.ui.baseModelComboBox.clear()
        self.ui.methodsListWidget.clear()
        if not self.logic.torchAvailable():
            self.ui.modelComboBox.setToolTip(_("PyTorch is not installed yet: press Denoise to install it."))
            return
        for comboBox, chosen, onSelected in (
                (self.ui.modelComboBox, self._parameterNode.modelName, self.onModelSelected),
                (self.ui.baseModelComboBox, self._parameterNode.baseModelName, self.onBaseModelSelected)):
            comboBox.blockSignals(True)
            entries = self.logic.modelEntries()
            for index, entry in enumerate(entries):
                comboBox.addItem(entry.name)
                comboBox.setItemData(index, self.logic.modelDescription(entry), qt.Qt.ToolTipRole)
            if comboBox is self.ui.modelComboBox:
                comboBox.addItem(AUTO_MODEL)
                comboBox.setItemData(len(entries), _(
                    "Choose the model for each input: another model replaces the default only when an estimate of "
                    "the error made without a reference shows it clearly better on a few slices of the input (tens "
                    "of seconds more on a CPU)."), qt.Qt.ToolTipRole)
            comboBox.blockSignals(False)
            selected = max(comboBox.findText(chosen or self.logic.defaultModelName()), 0)
            comboBox.setCurrentIndex(selected)
            onSelected(selected)
        for method in self.logic.compareMethodNames():
            item = qt.QListWidgetItem(method, self.ui.methodsListWidget)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            checked = method in (previouslyChecked or (INPUT_METHOD, self._parameterNode.modelName))
            item.setCheckState(qt.Qt.Checked if checked else qt.Qt.Unchecked)

    def onModelSelected(self, index: int) -> None:
        if index >= 0:
            self._parameterNode.modelName = self.ui.modelComboBox.itemText(index)

    def onBaseModelSelected(self, index: int) -> None:
        if index >= 0:
            self._parameterNode.baseModelName = self.ui.baseModelComboBox.itemText(index)

    def methodItems(self) -> list:
        """Every entry of the methods list (findItems works alike in PythonQt and PySide6, unlike ``count``)."""
        return self.ui.methodsListWidget.findItems("*", qt.Qt.MatchWildcard)

    def checkedMethods(self) -> list[str]:
        return [item.text() for item in self.methodItems() if item.checkState() == qt.Qt.Checked]

    def ensureDependencies(self) -> None:
        """Install PyTorch and the engine's other packages on first use, asking the user first; never at import
        time. Then fill the model lists, which stay empty until torch is there."""
        dependencies.ensureDependencies(self.resourcePath("requirements.txt"))
        if not self.methodItems():
            self.refreshMethods()

    @contextlib.contextmanager
    def running(self, message: str):
        """Show progress and enable Cancel while a long operation runs in chunks; restore the panel afterwards."""
        self._busy, self._cancelRequested = True, False
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.setText(message)
        self._checkCanApply()
        try:
            yield
        finally:
            self._busy = False
            self._checkCanApply()

    def onProgress(self, done: int, total: int) -> None:
        """Engine progress callback: update the bar and let Qt handle clicks (Cancel) between batches."""
        self.ui.progressBar.setMaximum(max(total, 1))
        self.ui.progressBar.setValue(done)
        slicer.app.processEvents()

    def progressFor(self, method: str) -> Callable[[int, int], None]:
        self.ui.statusLabel.setText(_("Computing {method}...").format(method=method))
        return self.onProgress

    def cancelRequested(self) -> bool:
        return self._cancelRequested

    def onCancelButton(self) -> None:
        self._cancelRequested = True
        self.ui.statusLabel.setText(_("Cancelling after the current batch..."))

    def onDenoiseButton(self) -> None:
        """Run the chosen model on the input volume and show the result at W/L 400/40."""
        with slicer.util.tryWithErrorDisplay(_("Failed to denoise."), waitCursor=True):
            self.ensureDependencies()
            parameterNode = self._parameterNode
            auto = parameterNode.modelName == AUTO_MODEL
            try:
                with self.running(_("Choosing the model for this input (auto), then denoising...") if auto
                                  else _("Denoising...")):
                    startTime = time.perf_counter()
                    outputVolume = self.logic.denoise(
                        parameterNode.inputVolume, parameterNode.modelName or self.logic.defaultModelName(),
                        device=parameterNode.device.value, batchSize=parameterNode.batchSize,
                        strength=parameterNode.strength / 100.0, outputVolume=parameterNode.outputVolume,
                        progress=self.onProgress, cancel=self.cancelRequested)
            except CancelledError:
                self.ui.statusLabel.setText(_("Cancelled; nothing was changed."))
                return
            parameterNode.outputVolume = outputVolume
            parameterNode.exportVolume = outputVolume
            self.logic.showVolume(outputVolume)
            status = _("Denoised in {seconds:.1f} s.").format(seconds=time.perf_counter() - startTime)
            if self.logic.lastModelChoice is not None:
                status += " " + self.logic.lastModelChoice.sentence()
            self.ui.statusLabel.setText(status)

    def onCompareButton(self) -> None:
        """Compute the missing outputs of the ticked methods, show them in linked views and fill the table."""
        with slicer.util.tryWithErrorDisplay(_("Failed to compare."), waitCursor=True):
            self.ensureDependencies()  # first: the methods are listed once PyTorch is there
            methods = self.checkedMethods()
            if not methods:
                raise ValueError(_("Tick at least one method to compare."))
            parameterNode = self._parameterNode
            try:
                with self.running(_("Comparing...")):
                    volumes = self.logic.compare(parameterNode.inputVolume, methods,
                                                 device=parameterNode.device.value, batchSize=parameterNode.batchSize,
                                                 strength=parameterNode.strength / 100.0,
                                                 progressFor=self.progressFor, cancel=self.cancelRequested)
            except CancelledError:
                self.ui.statusLabel.setText(_("Cancelled; outputs computed so far are kept."))
                return
            self.logic.showComparison(volumes, parameterNode.roi)
            metrics = self.logic.comparisonMetrics(volumes, parameterNode.referenceVolume, parameterNode.roi,
                                                   parameterNode.backgroundRoi)
            self.showMetrics({self.logic.methodLabel(method, volumes[method]): values
                              for method, values in metrics.items()})
            self.ui.statusLabel.setText(_("Compared {count} methods.").format(count=len(volumes)))

    @staticmethod
    def metricsCells(metrics: dict) -> tuple[list[str], list[list[str]]]:
        """Column names and the shown text of each method's row, in the column order of the engine's CSV."""
        columns = list(dict.fromkeys(key for values in metrics.values() for key in values))
        return columns, [[f"{values[key]:.4g}" if key in values else "" for key in columns]
                         for values in metrics.values()]

    @staticmethod
    def metricLabels(columns: Sequence[str]) -> list[str]:
        """The engine's words and units for its metric keys ("roi_sd_hu" -> "Noise SD (HU)")."""
        from LDCTDenoiseLib.comparison import metric_label

        return [metric_label(key) for key in columns]

    def showMetrics(self, metrics: dict) -> None:
        """One row per method, one column per number, headed in words with units."""
        self._metrics = metrics
        columns, rows = self.metricsCells(metrics)
        table = self.ui.metricsTable
        table.clear()
        table.setRowCount(len(rows))
        table.setColumnCount(len(columns))
        table.setHorizontalHeaderLabels(self.metricLabels(columns))
        table.setVerticalHeaderLabels(list(metrics))
        for row, cells in enumerate(rows):
            for column, text in enumerate(cells):
                table.setItem(row, column, qt.QTableWidgetItem(text))
        table.resizeColumnsToContents()  # the headers are words with units; the table scrolls sideways
        self._checkCanApply()

    def metricsText(self) -> str:
        """The table as shown, tab separated, for pasting into a spreadsheet (the saved CSV keeps the engine's keys,
        for scripts)."""
        columns, rows = self.metricsCells(self._metrics)
        lines = [["Method", *self.metricLabels(columns)]] + [[method, *cells]
                                                               for method, cells in zip(self._metrics, rows)]
        return "\n".join("\t".join(cells) for cells in lines) + "\n"

    def onCopyMetricsButton(self) -> None:
        qt.QApplication.clipboard().setText(self.metricsText())

    def onSaveMetricsButton(self) -> None:
        path = qt.QFileDialog.getSaveFileName(None, _("Save ROI numbers"), str(self._parameterNode.exportDirectory),
                                              _("CSV files (*.csv)"))
        path = path[0] if isinstance(path, tuple) else path
        if path:
            with slicer.util.tryWithErrorDisplay(_("Failed to save the table.")):
                self.ui.statusLabel.setText(_("Saved {path}.").format(path=self.logic.saveMetrics(self._metrics,
                                                                                                  path)))

    def onAdaptMethodChosen(self) -> None:
        """Put the chosen method's settings into the advanced ones, where they stay editable."""
        with slicer.util.tryWithErrorDisplay(_("Failed to apply the adaptation method.")):
            self.ensureDependencies()
            parameterNode = self._parameterNode
            for name, value in self.logic.adaptationMethodSettings(parameterNode.adaptMethod.value).items():
                setattr(parameterNode, name, value)

    def adaptationSettings(self) -> dict:
        """The panel's adaptation settings under the engine's names (LDCTDenoiseLib.adaptation.AdaptationConfig)."""
        parameterNode = self._parameterNode
        return {"method": parameterNode.adaptMethod.value,
                "steps": parameterNode.adaptSteps, "learning_rate": parameterNode.learningRate,
                "adversarial_weight": parameterNode.adversarialWeight, "anchor_weight": parameterNode.anchorWeight,
                "mask": parameterNode.mask.value, "match_target_noise": parameterNode.matchTargetNoise,
                "save_anyway": parameterNode.saveAnyway,
                "device": parameterNode.device.value}

    def onStartAdaptButton(self) -> None:
        """Adapt the chosen model to the ticked scans in a background PythonSlicer process."""
        with slicer.util.tryWithErrorDisplay(_("Failed to start the adaptation."), waitCursor=True):
            self.ensureDependencies()
            parameterNode = self._parameterNode
            self._lossHistory = []
            self.ui.lossCurveLabel.clear()
            self.ui.adaptProgressBar.setValue(0)
            self._adaptation = self.logic.startAdaptation(
                self.ui.targetVolumesSelector.checkedNodes(), parameterNode.profileName.strip(),
                parameterNode.baseModelName or self.logic.defaultModelName(), self.adaptationSettings(),
                onEvent=self.onAdaptationEvent, onFinished=self.onAdaptationFinished)
            self.ui.adaptStatusLabel.setText(_("Starting the adaptation in the background..."))
            self._checkCanApply()

    def onCancelAdaptButton(self) -> None:
        if self._adaptation:
            self._adaptation.cancel()
            self.ui.adaptStatusLabel.setText(_("Cancelling after the current step..."))

    def onAdaptationEvent(self, event: dict) -> None:
        """Show the background process's progress: the source simulation (first run only), then each step."""
        if event["event"] == "source":
            self.ui.adaptProgressBar.setMaximum(max(event["total"], 1))
            self.ui.adaptProgressBar.setValue(event["done"])
            self.ui.adaptStatusLabel.setText(_("Simulating the phantom source pairs (first run only): {done}/{total} "
                                               "slices").format(done=event["done"], total=event["total"]))
        elif event["event"] == "step":
            self._lossHistory.append({"step": event["step"], **event["losses"]})
            self.ui.adaptProgressBar.setMaximum(max(event["steps"], 1))
            self.ui.adaptProgressBar.setValue(event["step"])
            self.ui.adaptStatusLabel.setText(_("Adapting: step {step} of {steps}").format(step=event["step"],
                                                                                           steps=event["steps"]))
            if time.monotonic() - self._lossCurveShownAt >= LOSS_CURVE_REFRESH_S:
                self.showLossCurve()

    def showLossCurve(self, path: Optional[Path] = None) -> None:
        """Show a loss-curve PNG (by default, the curve of the running adaptation so far)."""
        if path is None:
            if not self._lossHistory or not self._adaptation:
                return
            path = self.logic.lossCurve(self._lossHistory, self._adaptation.jobDir / "loss.png")
        self.ui.lossCurveLabel.setPixmap(qt.QPixmap(str(path)).scaledToWidth(LOSS_CURVE_WIDTH_PX,
                                                                            qt.Qt.SmoothTransformation))
        self._lossCurveShownAt = time.monotonic()

    def onAdaptationFinished(self, adaptation) -> None:
        """Select the new profile, or say why there is none."""
        self._adaptation = None
        self._checkCanApply()
        event = adaptation.lastEvent
        try:
            if event.get("event") == "done" and event.get("kept") == "start":  # the loss curve so far stays shown
                self.ui.adaptStatusLabel.setText(" ".join(text for text in (event.get("gain"), _(
                    "No profile was saved.")) if text))
            elif event.get("event") == "done":
                self.showLossCurve(Path(event["curve"]))
                self.refreshMethods()
                self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.findText(event["name"]))
                saved = _("Saved the profile '{name}' after {seconds:.0f} s of adaptation; it is selected under "
                          "Model and listed in Compare.").format(name=event["name"], seconds=event["wall_time_s"])
                texts = (saved, event.get("noise"), event.get("gain"))
                self.ui.adaptStatusLabel.setText(" ".join(text for text in texts if text))
            elif adaptation.cancelRequested:
                self.ui.adaptStatusLabel.setText(_("Cancelled; no profile was saved."))
            else:
                self.ui.adaptStatusLabel.setText(_("The adaptation failed; no profile was saved."))
                slicer.util.errorDisplay(_("The adaptation failed:\n{message}").format(
                    message=adaptation.errorMessage()))
        finally:
            adaptation.cleanup()

    def onExportButton(self) -> None:
        """Write the denoised volume as a derived DICOM series and add it to Slicer's DICOM database."""
        with slicer.util.tryWithErrorDisplay(_("Failed to export DICOM."), waitCursor=True):
            parameterNode = self._parameterNode
            try:
                with self.running(_("Exporting...")):
                    files = self.logic.exportDicom(parameterNode.exportVolume, parameterNode.exportDirectory,
                                                   slicer.dicomDatabase.fileForInstance, progress=self.onProgress,
                                                   cancel=self.cancelRequested)
            except CancelledError:
                self.ui.statusLabel.setText(_("Cancelled; nothing was written."))
                return
            self.logic.importIntoDicomDatabase(files[0].parent)
            self.ui.statusLabel.setText(_("Exported {count} files to {folder} and added them to the DICOM "
                                          "database.").format(count=len(files), folder=files[0].parent))


#
# LDCTDenoiseLogic
#


class LDCTDenoiseLogic(ScriptedLoadableModuleLogic, VTKObservationMixin):
    """This class should implement all the actual
    computation done by your module.  The interface
    should be such that other python code can import
    this class and make use of the functionality without
    requiring an instance of the Widget.
    Uses ScriptedLoadableModuleLogic base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py

    All computing is done by the engine (LDCTDenoiseLib); this class moves volumes between MRML and the engine.
    """

    # How a computed volume remembers what it is, so Compare reuses it and Export can describe and trace it.
    METHOD_ATTRIBUTE = "LDCTDenoise.method"
    STRENGTH_ATTRIBUTE = "LDCTDenoise.strength"
    DERIVATION_ATTRIBUTE = "LDCTDenoise.derivation"
    INPUT_REFERENCE_ROLE = "LDCTDenoiseInput"
    # The engine's names of the settings an adaptation method sets, and the parameter node's.
    ADAPTATION_SETTING_PARAMETERS = {"adversarial_weight": "adversarialWeight", "anchor_weight": "anchorWeight",
                                     "match_target_noise": "matchTargetNoise", "learning_rate": "learningRate"}

    def __init__(self) -> None:
        """Called when the logic class is instantiated. Can be used for initializing member variables."""
        ScriptedLoadableModuleLogic.__init__(self)
        VTKObservationMixin.__init__(self)
        self.compareSliceNodes = []
        self.lastModelChoice = None  # the last Auto choice (LDCTDenoiseLib.model_choice.ModelChoice), for the panel

    def getParameterNode(self):
        return LDCTDenoiseParameterNode(super().getParameterNode())

    @staticmethod
    def torchAvailable() -> bool:
        return importlib.util.find_spec("torch") is not None

    @staticmethod
    def modelEntries() -> list:
        """The shipped models and the user's profiles (LDCTDenoiseLib.model_registry.ModelEntry)."""
        from LDCTDenoiseLib.model_registry import ModelRegistry

        return ModelRegistry().entries()

    @staticmethod
    def defaultModelName() -> str:
        from LDCTDenoiseLib.model_registry import DEFAULT_MODEL

        return DEFAULT_MODEL

    @staticmethod
    def modelDescription(entry) -> str:
        """A model card in a few lines: what it is, where it comes from and how well it did on validation."""
        from LDCTDenoiseLib.model_registry import card_summary

        return "\n".join(card_summary(entry))

    @staticmethod
    def compareMethodNames() -> list[str]:
        """The input, every registered model, then the classic baselines (BM3D only when its package is there)."""
        from LDCTDenoiseLib.methods import INPUT, available_methods

        return [INPUT] + [name for name in available_methods()
                          if name != "bm3d" or importlib.util.find_spec("bm3d") is not None]

    def denoise(self, inputVolume: vtkMRMLScalarVolumeNode, method: str, *, device: str = "auto", batchSize: int = 4,
                strength: float = 1.0, outputVolume: Optional[vtkMRMLScalarVolumeNode] = None,
                progress: Optional[Callable[[int, int], None]] = None,
                cancel: Optional[Callable[[], bool]] = None) -> vtkMRMLScalarVolumeNode:
        """
        Run one method (a model or a baseline) on the input volume, in chunks that report progress and can be
        cancelled; the result is shown at W/L 400/40.
        Can be used without GUI widget.
        :param inputVolume: CT volume in HU
        :param method: a model name or a baseline name (see compareMethodNames), or "auto": the model chosen for
          this input (LDCTDenoiseLib.model_choice; the choice and its evidence are in ``lastModelChoice``)
        :param strength: the share of the denoising applied, 0 to 1: input + strength * (denoised - input)
        :param outputVolume: volume to overwrite; a new one is created when None
        :return: the output volume
        """
        if not inputVolume:
            raise ValueError(_("Input volume is invalid"))
        from LDCTDenoiseLib.methods import make_method

        startTime = time.perf_counter()
        hu = mrml.array_from_volume(inputVolume)
        self.lastModelChoice = None
        if method == AUTO_MODEL:
            from LDCTDenoiseLib.model_choice import choose_model

            spacing = inputVolume.GetSpacing()
            self.lastModelChoice = choose_model(lambda index: hu[index], len(hu), (spacing[0] + spacing[1]) / 2.0,
                                                device=device, cancel=cancel)
            method = self.lastModelChoice.name
            logging.info(f"LDCTDenoise: {self.lastModelChoice.sentence()}")
        denoiser = make_method(method, device=device, batch_size=batchSize, strength=strength)
        result = denoiser(hu, progress=progress, cancel=cancel)
        name = f"{inputVolume.GetName()} {method}" + (f" {strength:.0%}" if strength < 1.0 else "")
        outputVolume = mrml.add_volume_from_array(result, inputVolume, name, outputVolume)
        outputVolume.SetAttribute(self.METHOD_ATTRIBUTE, method)
        outputVolume.SetAttribute(self.STRENGTH_ATTRIBUTE, repr(float(strength)))
        outputVolume.SetAttribute(self.DERIVATION_ATTRIBUTE, denoiser.derivation())
        outputVolume.SetNodeReferenceID(self.INPUT_REFERENCE_ROLE, inputVolume.GetID())
        logging.info(f"LDCTDenoise: {method} on {inputVolume.GetName()} took {time.perf_counter() - startTime:.2f} s")
        return outputVolume

    def existingOutput(self, inputVolume: vtkMRMLScalarVolumeNode, method: str, strength: float = 1.0
                       ) -> Optional[vtkMRMLScalarVolumeNode]:
        """A volume this logic already computed with ``method`` at ``strength`` from ``inputVolume``, if any."""
        for volume in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if (volume.GetAttribute(self.METHOD_ATTRIBUTE) == method
                    and self.volumeStrength(volume) == float(strength)
                    and volume.GetNodeReference(self.INPUT_REFERENCE_ROLE) is inputVolume):
                return volume
        return None

    def volumeStrength(self, volume: vtkMRMLScalarVolumeNode) -> float:
        """The strength a computed volume was made at (1 for volumes made before strengths existed)."""
        return float(volume.GetAttribute(self.STRENGTH_ATTRIBUTE) or 1.0)

    def methodLabel(self, method: str, volume: vtkMRMLScalarVolumeNode) -> str:
        """A method's name as the Compare table and an exported series' description show it: with its strength
        when that is below 100 % (as the command line writes it)."""
        strength = self.volumeStrength(volume) if volume.GetAttribute(self.METHOD_ATTRIBUTE) else 1.0
        return method if strength == 1.0 else f"{method} {strength:.0%}"

    def compare(self, inputVolume: vtkMRMLScalarVolumeNode, methods: Sequence[str], *, device: str = "auto",
                batchSize: int = 4, strength: float = 1.0,
                progressFor: Optional[Callable[[str], Callable[[int, int], None]]] = None,
                cancel: Optional[Callable[[], bool]] = None) -> dict:
        """The volume of each method at ``strength`` (method name -> volume node), computing only those not computed
        before; the input stays the input."""
        volumes = {}
        for method in methods:
            if method == INPUT_METHOD:
                volumes[method] = inputVolume
                continue
            volumes[method] = self.existingOutput(inputVolume, method, strength) or self.denoise(
                inputVolume, method, device=device, batchSize=batchSize, strength=strength,
                progress=progressFor(method) if progressFor else None, cancel=cancel)
        return volumes

    @staticmethod
    def showVolume(volume: vtkMRMLScalarVolumeNode) -> None:
        """Show the volume alone in every slice view but the compare views (they keep their methods), fitted."""
        mrml.set_display_window(volume)
        mrml.show_in_main_views(slicer.mrmlScene, volume)

    def showComparison(self, volumes: dict, roi: Optional[vtkMRMLMarkupsROINode] = None) -> list:
        """One linked, labelled view per method; the views zoom onto the ROI and follow it when it moves."""
        self.compareSliceNodes = mrml.show_compare_layout(slicer.mrmlScene, list(volumes))
        mrml.link_views(self.compareSliceNodes, list(volumes.values()))
        self.followRoi(roi)
        return self.compareSliceNodes

    def followRoi(self, roi: Optional[vtkMRMLMarkupsROINode]) -> None:
        """Zoom every compare view onto ``roi`` now and whenever it is moved or resized."""
        self.removeObservers(self.onRoiModified)
        if roi is None:
            return
        self.addObserver(roi, vtkMRMLMarkupsROINode.PointModifiedEvent, self.onRoiModified)
        mrml.zoom_to_roi(self.compareSliceNodes, roi)

    def onRoiModified(self, roi, event) -> None:
        mrml.zoom_to_roi(self.compareSliceNodes, roi)

    @staticmethod
    def comparisonMetrics(volumes: dict, referenceVolume: Optional[vtkMRMLScalarVolumeNode] = None,
                          roi: Optional[vtkMRMLMarkupsROINode] = None,
                          backgroundRoi: Optional[vtkMRMLMarkupsROINode] = None) -> dict:
        """The engine's comparison numbers (method -> name -> value) on the ROI's slice, ROI given in pixels."""
        from LDCTDenoiseLib.comparison import comparison_metrics

        geometry = next(iter(volumes.values()))
        outputs = {method: mrml.array_from_volume(volume) for method, volume in volumes.items()}
        reference = mrml.array_from_volume(referenceVolume) if referenceVolume else None
        pixelRoi, sliceIndex = (mrml.roi_pixel_box(roi, geometry) if roi
                                else (None, geometry.GetImageData().GetDimensions()[2] // 2))
        backgroundPixelRoi = mrml.roi_pixel_box(backgroundRoi, geometry)[0] if roi and backgroundRoi else None
        return comparison_metrics(outputs, reference, pixel_mm=geometry.GetSpacing()[0], slice_index=sliceIndex,
                                  roi=pixelRoi, background_roi=backgroundPixelRoi)

    @staticmethod
    def saveMetrics(metrics: dict, csvPath: str) -> Path:
        """Write the numbers with the engine's writer: ``<name>.csv`` and ``<name>.json``; returns the CSV path."""
        from LDCTDenoiseLib.figure import write_metrics

        return write_metrics(metrics, Path(csvPath).with_suffix(""))[0]

    def exportDicom(self, volume: vtkMRMLScalarVolumeNode, outputDirectory: Path,
                    fileForInstance: Callable[[str], str], *, progress: Optional[Callable[[int, int], None]] = None,
                    cancel: Optional[Callable[[], bool]] = None) -> list[Path]:
        """
        Write a volume made by this module as a derived DICOM series of the series its input was loaded from.
        :param fileForInstance: the DICOM database's lookup from SOP instance UID to file
            (slicer.dicomDatabase.fileForInstance inside Slicer)
        :return: the written files, in a new subfolder of outputDirectory
        """
        if not volume:
            raise ValueError(_("Select the denoised volume to export."))
        derivation = volume.GetAttribute(self.DERIVATION_ATTRIBUTE)
        source = volume.GetNodeReference(self.INPUT_REFERENCE_ROLE)
        if not derivation or source is None:
            raise LDCTDenoiseError(_("'{name}' was not made by Denoise or Compare from a loaded input, so it has no "
                                     "source series to export against.").format(name=volume.GetName()))
        method = volume.GetAttribute(self.METHOD_ATTRIBUTE)
        folderName = "".join(c if c.isalnum() or c in "-_" else "_" for c in volume.GetName())
        stamped = Path(outputDirectory) / f"{folderName}_{time.strftime('%Y%m%d-%H%M%S')}"
        folder, copy = stamped, 1
        while folder.exists():  # a second export within the same second
            copy += 1
            folder = stamped.with_name(f"{stamped.name}-{copy}")
        label = self.methodLabel(method, volume)
        return mrml.export_derived_series(volume, mrml.source_files(source, fileForInstance), folder,
                                          derivation_description=derivation,
                                          series_description_suffix=f" [LDCTDenoise {label}]",
                                          progress=progress, cancel=cancel)

    @staticmethod
    def pythonSlicerExecutable() -> str:
        """Slicer's own Python interpreter, which sees the same packages (torch) as the application."""
        executable = shutil.which("PythonSlicer")
        if not executable:
            raise RuntimeError(_("PythonSlicer was not found on the PATH, so the adaptation cannot run in the "
                                 "background. Start Slicer from its launcher."))
        return executable

    def adaptationMethodSettings(self, method: str) -> dict:
        """The engine's settings of one adaptation method that the panel shows, under the parameter node's names (the
        others travel with the method's name)."""
        from LDCTDenoiseLib.adaptation import method_settings

        return {self.ADAPTATION_SETTING_PARAMETERS[name]: value for name, value in method_settings(method).items()
                if name in self.ADAPTATION_SETTING_PARAMETERS}

    def startAdaptation(self, targetVolumes: Sequence[vtkMRMLScalarVolumeNode], profileName: str, baseModel: str,
                        settings: dict, onEvent: Callable[[dict], None],
                        onFinished: Callable[[AdaptationProcess], None]) -> AdaptationProcess:
        """
        Start adapting ``baseModel`` to the target volumes in a background process that saves the profile
        ``profileName``. The name, model and settings are checked here, so mistakes show at once.
        :param settings: LDCTDenoiseLib.adaptation.AdaptationConfig fields (steps, learning_rate, ...)
        :param onEvent: called with each of the job's events (see LDCTDenoiseLib.adaptation.job)
        :param onFinished: called with the process when it has ended, however it ended
        """
        from LDCTDenoiseLib.adaptation.job import prepare_job

        if not targetVolumes:
            raise ValueError(_("Tick at least one loaded scan of the new scanner."))
        jobDir = Path(tempfile.mkdtemp(prefix="LDCTDenoiseAdapt-"))
        try:
            # the in-plane pixel size (GetSpacing is column, row, slice) for each scan's noise model
            prepare_job(jobDir, [mrml.array_from_volume(volume) for volume in targetVolumes], profileName, baseModel,
                        settings, pixel_mm=[float(volume.GetSpacing()[0]) for volume in targetVolumes])
            process = AdaptationProcess(jobDir, onEvent, onFinished)
            process.start(self.pythonSlicerExecutable(), os.path.dirname(os.path.abspath(__file__)))
        except BaseException:
            shutil.rmtree(jobDir, ignore_errors=True)
            raise
        return process

    @staticmethod
    def lossCurve(history: list[dict], pngPath: Path) -> Path:
        """The engine's loss-curve figure of the steps so far."""
        from LDCTDenoiseLib.figure import loss_curve_figure

        return loss_curve_figure(history, pngPath)

    @staticmethod
    def importIntoDicomDatabase(folder: Path) -> None:
        """Add an exported series to Slicer's DICOM database (only inside Slicer: DICOMLib needs the application).
        DICOMUtils.importDicom logs its failures and returns False instead of raising."""
        from DICOMLib import DICOMUtils

        if not DICOMUtils.importDicom(os.fspath(folder)):
            raise LDCTDenoiseError(_("The series was written to {folder}, but Slicer's DICOM database did not accept "
                                     "it (see the Python console). Add the folder in the DICOM module.").format(
                folder=folder))


#
# LDCTDenoiseTest
#


class LDCTDenoiseTest(ScriptedLoadableModuleTest):
    """
    This is the test case for your scripted module.
    Uses ScriptedLoadableModuleTest base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py

    Runs inside Slicer on CPU with a small synthetic DICOM series and a tiny random-weight model, so it needs no data
    download and finishes in seconds.
    """

    def setUp(self):
        """Do whatever is needed to reset the state - typically a scene clear will be enough."""
        slicer.mrmlScene.Clear()

    ADAPTATION_TIMEOUT_S = 600  # the background adaptation takes seconds; a hung one must not hang the test run

    def runTest(self):
        """Run as few or as many tests as needed here."""
        self.setUp()
        if not LDCTDenoiseLogic.torchAvailable():
            # The extension factory's Slicer has no PyTorch, and the test must not install gigabytes there
            # (TotalSegmentator and MONAIAuto3DSeg skip their logic tests the same way).
            logging.warning("LDCTDenoise self-test: PyTorch is not installed, so the logic test is skipped.")
            self.delayDisplay(_("PyTorch is not installed: the logic test is skipped."))
            return
        self.test_LDCTDenoise_DenoiseCompareExportAdapt()

    def test_LDCTDenoise_DenoiseCompareExportAdapt(self):
        """Load a synthetic series through Slicer's DICOM database, denoise it with a random-weight profile,
        compare it with a Gaussian filter inside an ROI, export and re-import the derived series, and adapt the
        profile to the series in a background process (2 steps, a small simulated source)."""
        self.delayDisplay(_("Starting the test"))
        workDir = Path(tempfile.mkdtemp(prefix="LDCTDenoiseTest"))
        # Slicer's "Reload and Test" calls runTest() directly, so unittest's cleanups would not run: restore the
        # user's model folders (and remove the work folder) in a finally.
        saved = {name: os.environ.get(name) for name in ("LDCTDENOISE_PROFILES_DIR", "LDCTDENOISE_CACHE_DIR")}
        os.environ["LDCTDENOISE_PROFILES_DIR"] = str(workDir / "profiles")
        os.environ["LDCTDENOISE_CACHE_DIR"] = str(workDir / "cache")
        try:
            self.denoiseCompareExportAdapt(workDir)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            shutil.rmtree(workDir, ignore_errors=True)
        self.delayDisplay(_("Test passed"))

    def denoiseCompareExportAdapt(self, workDir: Path) -> None:
        import numpy as np
        import torch
        from DICOMLib import DICOMUtils

        from LDCTDenoiseLib.cpce import CPCE2D
        from LDCTDenoiseLib.dicom_writer import write_derived_series
        from LDCTDenoiseLib.metrics import WINDOW_CENTER, WINDOW_WIDTH
        from LDCTDenoiseLib.model_registry import save_model
        from LDCTDenoiseLib.phantom import make_abdomen_phantom
        from LDCTDenoiseLib.synthetic_series import synthetic_ct_volume

        torch.manual_seed(0)
        save_model(CPCE2D(), {"name": "test-random", "description": "random weights for the self-test",
                              "training": {}, "losses": {"mse": 1.0}, "validation": {}, "command": "self-test"},
                   workDir / "profiles")

        hu, spacing = make_abdomen_phantom(3, size=64, pixel_mm=6.0)
        source = synthetic_ct_volume(hu, spacing, series_description="LDCTDenoise self-test")
        write_derived_series(source, source.hu, workDir / "input", derivation_description="self-test input")
        with DICOMUtils.TemporaryDICOMDatabase() as database:
            self.assertTrue(DICOMUtils.importDicom(str(workDir / "input"), database))
            loadedNodeIDs = DICOMUtils.loadPatientByUID(database.patients()[0])
            inputVolume = slicer.mrmlScene.GetNodeByID(loadedNodeIDs[0])
            self.delayDisplay(_("Loaded the synthetic series"))

            logic = LDCTDenoiseLogic()
            outputVolume = logic.denoise(inputVolume, "test-random", device="cpu", batchSize=2)
            self.assertEqual(outputVolume.GetDisplayNode().GetWindow(), WINDOW_WIDTH)
            self.assertEqual(outputVolume.GetDisplayNode().GetLevel(), WINDOW_CENTER)
            self.assertFalse(outputVolume.GetDisplayNode().GetAutoWindowLevel())
            self.assertEqual(slicer.util.arrayFromVolume(outputVolume).shape,
                             slicer.util.arrayFromVolume(inputVolume).shape)

            roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
            bounds = [0.0] * 6
            inputVolume.GetRASBounds(bounds)
            roi.SetCenter([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2])
            roi.SetSize(40, 40, 5)
            volumes = logic.compare(inputVolume, [INPUT_METHOD, "test-random", "gaussian"], device="cpu")
            self.assertIs(volumes["test-random"], outputVolume)  # reused, not recomputed
            sliceNodes = logic.showComparison(volumes, roi)
            self.assertEqual(len(sliceNodes), 3)
            fieldOfView = sliceNodes[0].GetFieldOfView()
            roi.SetCenter(np.array(roi.GetCenter()) + np.array([5.0, 0.0, 0.0]))
            self.assertEqual(sliceNodes[0].GetFieldOfView(), fieldOfView)
            metrics = logic.comparisonMetrics(volumes, roi=roi)
            self.assertEqual(set(metrics), {INPUT_METHOD, "test-random", "gaussian"})
            self.delayDisplay(_("Compared"))

            files = logic.exportDicom(outputVolume, workDir / "export", slicer.dicomDatabase.fileForInstance)
            logic.importIntoDicomDatabase(files[0].parent)
            self.assertEqual(len(files), 3)

            self.delayDisplay(_("Adapting in a background PythonSlicer process"))
            finished = []
            smallSource = {"source_slices": 1, "source_size": 128, "source_pixel_mm": 3.0}  # seconds, not minutes
            adaptation = logic.startAdaptation([inputVolume], "test-adapted", "test-random",
                                               {"steps": 2, "device": "cpu", **smallSource},
                                               onEvent=lambda event: None, onFinished=finished.append)
            deadline = time.monotonic() + self.ADAPTATION_TIMEOUT_S
            while not finished:
                if time.monotonic() > deadline:
                    adaptation.stop()
                    self.fail(f"the adaptation did not finish in {self.ADAPTATION_TIMEOUT_S} s")
                adaptation.process.waitForFinished(100)
                slicer.app.processEvents()
            adaptation.cleanup()
            self.assertEqual(adaptation.lastEvent.get("event"), "done", adaptation.errorMessage())
            self.assertIn("test-adapted", [entry.name for entry in logic.modelEntries()])
            adaptedVolume = logic.denoise(inputVolume, "test-adapted", device="cpu")
            self.assertEqual(adaptedVolume.GetAttribute(logic.METHOD_ATTRIBUTE), "test-adapted")

