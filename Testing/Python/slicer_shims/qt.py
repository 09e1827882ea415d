"""PythonQt's single ``qt`` namespace built from PySide6, for running Slicer module code outside Slicer.

Where PythonQt and PySide6 differ in a way the module meets, the names here behave as PythonQt does, checked against
MeVisLab/pythonqt v3.6.1 (a2687828), the upstream base of the PythonQt that Slicer 5.10 pins through
commontk/CTK dd4caeae (CMakeExternals/PythonQt.cmake):

- A QObject's ``objectName`` is also its ``name``: Slicer's ``slicer.util.childWidgetVariables``
  (Base/Python/slicer/util.py, v5.10.0:342-390) names the ``ui`` attributes by it.
- A ``QByteArray`` that a C++ method returns is a wrapped object (src/PythonQtConversion.cpp:193, "implicit conversion
  from QByteArray to str has been removed"), with the generated wrapper's methods (``data()`` gives ``bytes``;
  generated_cpp_515/com_trolltech_qt_core_builtin/com_trolltech_qt_core_builtin0.h) but no buffer protocol,
  ``__bytes__`` or ``__len__`` (src/PythonQtInstanceWrapper.cpp:912-933 leaves ``tp_as_buffer`` null). So
  ``bytes(process.readAllStandardOutput())`` raises ``TypeError`` in Slicer, and here.

Slicer's ``QUiLoader`` knows the CTK/qMRML classes a module's ``.ui`` names; that is reproduced here too.
"""

from PySide6.QtCore import *  # noqa: F401,F403 (the flattened namespace is the point)
from PySide6.QtGui import *  # noqa: F401,F403
from PySide6.QtWidgets import *  # noqa: F401,F403
from PySide6 import QtCore as _QtCore
from PySide6.QtUiTools import QUiLoader as _QUiLoader

_QtCore.QObject.name = property(lambda self: self.objectName())


class PythonQtByteArray:
    """A ``QByteArray`` as PythonQt hands it to Python: methods of the C++ class, no conversion to ``bytes``."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def data(self) -> bytes:
        return self._value

    def size(self) -> int:
        return len(self._value)

    length = count = size

    def isEmpty(self) -> bool:
        return not self._value

    def __repr__(self) -> str:
        return f"QByteArray({self._value!r})"


class QProcess(_QtCore.QProcess):
    """PySide6's QProcess, whose reads return what PythonQt returns (see :class:`PythonQtByteArray`)."""

    def readAllStandardOutput(self) -> PythonQtByteArray:
        return PythonQtByteArray(super().readAllStandardOutput().data())

    def readAllStandardError(self) -> PythonQtByteArray:
        return PythonQtByteArray(super().readAllStandardError().data())

    def readAll(self) -> PythonQtByteArray:
        return PythonQtByteArray(super().readAll().data())


class QUiLoader(_QUiLoader):
    """A loader that builds the CTK/qMRML stand-ins instead of falling back to empty QWidgets."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        from . import ctk, qmrml

        for widget_class in (*ctk.WIDGETS, *qmrml.WIDGETS):
            self.registerCustomWidget(widget_class)
