"""PythonQt's single ``qt`` namespace built from PySide6, for running Slicer module code outside Slicer.

PythonQt exposes ``objectName`` as ``name`` (``slicer.util.childWidgetVariables`` relies on it), and Slicer's
``QUiLoader`` knows the CTK/qMRML classes a module's ``.ui`` names; both are reproduced here.
"""

from PySide6.QtCore import *  # noqa: F401,F403 (the flattened namespace is the point)
from PySide6.QtGui import *  # noqa: F401,F403
from PySide6.QtWidgets import *  # noqa: F401,F403
from PySide6 import QtCore as _QtCore
from PySide6.QtUiTools import QUiLoader as _QUiLoader

_QtCore.QObject.name = property(lambda self: self.objectName())


class QUiLoader(_QUiLoader):
    """A loader that builds the CTK/qMRML stand-ins instead of falling back to empty QWidgets."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        from . import ctk, qmrml

        for widget_class in (*ctk.WIDGETS, *qmrml.WIDGETS):
            self.registerCustomWidget(widget_class)
