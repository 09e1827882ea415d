"""Run Slicer module code under plain pytest: real MRML and ``slicer.util`` from ``slicer-core``, real Qt from
PySide6 (offscreen), and small stand-ins for what neither provides (PythonQt's ``qt``, CTK/qMRML widgets, the
scripted-module base classes, the parameter node wrapper, ``slicer.app``, ``slicer.packaging``, the PyTorch
extension, Sample Data and the DICOM module's Python API). Each stand-in names, in its docstring, the real source
(repository, commit, file) whose behaviour it reproduces; where PySide6 and PythonQt differ, the stand-in does what
PythonQt does.

This package must not be called ``slicer``: slicer-core imports every module of any ``slicer`` folder on sys.path.
"""

import os
import sys
import types
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def install() -> types.SimpleNamespace:
    """Register the stand-ins in ``sys.modules`` (once) and return them; needs PySide6 and slicer-core."""
    import slicer
    import slicer.util
    from PySide6.QtWidgets import QApplication

    from . import application, ctk, parameter_node_wrapper, qmrml, qt, sample_data, scripted_module

    application_instance = QApplication.instance() or QApplication(["pytest"])
    if not isinstance(getattr(slicer, "app", None), application.Application):
        packaging = application.Packaging()
        i18n = types.ModuleType("slicer.i18n")
        i18n.tr, i18n.translate = application.tr, application.translate
        packaging_module = types.ModuleType("slicer.packaging")
        packaging_module.load_requirements = packaging.load_requirements
        packaging_module.pip_ensure = packaging.pip_ensure
        packaging_module.ensured = packaging.ensured
        torch_utils = types.ModuleType("PyTorchUtils")
        torch_utils.PyTorchUtilsLogic = application.PyTorchUtilsLogic
        sys.modules.update({
            "qt": qt,
            "ctk": ctk,
            "slicer.ScriptedLoadableModule": scripted_module,
            "slicer.i18n": i18n,
            "slicer.parameterNodeWrapper": parameter_node_wrapper,
            "slicer.packaging": packaging_module,
            "PyTorchUtils": torch_utils,
            **sample_data.modules(),
        })
        slicer.app = application.Application()
        # Slicer's namespace of loaded modules; SampleData keeps its sources there, and a test sets ``volumes``.
        slicer.modules = getattr(slicer, "modules", None) or types.SimpleNamespace()
        slicer.ScriptedLoadableModule = scripted_module
        slicer.i18n, slicer.parameterNodeWrapper, slicer.packaging = i18n, parameter_node_wrapper, packaging_module
        slicer.qMRMLNodeComboBox, slicer.qMRMLWidget = qmrml.qMRMLNodeComboBox, qmrml.qMRMLWidget
    return types.SimpleNamespace(qapp=application_instance, slicer=slicer, packaging=sys.modules["slicer.packaging"],
                                 torch_utils=sys.modules["PyTorchUtils"].PyTorchUtilsLogic)



def module_widget(widget_class):
    """The module's widget as Slicer's module panel makes it: created with a parent that has a vertical layout, then
    ``setup()``."""
    from PySide6.QtWidgets import QVBoxLayout, QWidget

    parent = QWidget()
    parent.setLayout(QVBoxLayout())
    widget = widget_class(parent)
    widget.setup()
    return widget


def python_slicer_launcher(folder: Path) -> Path:
    """Slicer starts background jobs with its ``PythonSlicer``; outside Slicer that is this interpreter under that
    name. Writes the launcher into ``folder``; put ``folder`` on the PATH to use it."""
    launcher = Path(folder) / "PythonSlicer"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    launcher.chmod(0o755)
    return launcher
