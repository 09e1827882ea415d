"""Stand-ins for the parts of Slicer's application the module calls: ``slicer.app``, ``slicer.i18n``,
``slicer.packaging`` and the PyTorch extension's ``PyTorchUtils``. Each behaves as the real source named in its
docstring does in testing mode, and records what the module asked of it so tests can check the questions asked."""

import importlib.metadata
import importlib.util
import os
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from PySide6.QtWidgets import QApplication


class Application:
    """``slicer.app`` in testing mode (no popups), with Qt's event loop. ``connect`` records the module's
    connections to application signals (``startupCompleted()``) in ``connections``; ``cachePath`` stands for the
    folder Slicer downloads sample data into (Base/QTCore/qSlicerCoreApplication.h v5.10.0:79; a test points it at
    its own folder)."""

    applicationName = "Slicer"
    temporaryPath = tempfile.gettempdir()
    cachePath = os.path.join(tempfile.gettempdir(), "slicer-shims-cache")

    def __init__(self) -> None:
        self.connections = []

    def connect(self, signal: str, slot) -> bool:
        """PythonQt's string-signature connect on the application object. Slicer emits ``startupCompleted()`` once
        every module is loaded (Base/QTGUI/qSlicerApplication.h v5.10.0:246); nothing emits it here."""
        self.connections.append((signal, slot))
        return True

    def topLevelWidgets(self) -> list:
        """Where ``slicer.util.mainWindow`` looks for the main window; outside Slicer there is none."""
        return QApplication.topLevelWidgets()

    def testingEnabled(self) -> bool:
        return True

    def processEvents(self) -> None:
        QApplication.processEvents()

    def setOverrideCursor(self, cursor) -> None:
        QApplication.setOverrideCursor(cursor)

    def restoreOverrideCursor(self) -> None:
        QApplication.restoreOverrideCursor()

    def layoutManager(self):
        """No views outside Slicer; ``slicer.util`` skips what needs them when this is None."""
        return None


def tr(text: str) -> str:
    return text


def translate(context: str, text: str) -> str:
    return text


def requirement_met(requirement: Requirement) -> bool:
    """What ``slicer.packaging.pip_check`` answers: installed, at a version the specifier allows."""
    try:
        installed = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return requirement.specifier.contains(installed, prereleases=True)


class Packaging:
    """``slicer.packaging`` of Slicer 5.12 (Base/Python/slicer/packaging.py, v5.12.0 a7dbf804): ``load_requirements``
    returns ``packaging`` Requirements, skipping blank, comment and option lines (L42-72); ``pip_ensure`` returns at
    once when every requirement is met and, in testing mode, skips the rest without installing or asking (L329-424).
    Each call is recorded in ``ensured`` as (requirement strings, requester, the ones that were missing)."""

    def __init__(self) -> None:
        self.ensured = []

    @staticmethod
    def load_requirements(path) -> list[Requirement]:
        lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
        return [Requirement(line) for line in lines if line and not line.startswith("-")]

    def pip_ensure(self, requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
                   requester=None, skip_in_testing=True, show_progress=True):
        missing = [str(requirement) for requirement in requirements if not requirement_met(requirement)]
        self.ensured.append(([str(requirement) for requirement in requirements], requester, missing))
        return None  # met, or skipped in testing mode


class PyTorchUtilsLogic:
    """The PyTorch extension's logic (fepegar/SlicerPyTorch e1c85cc, PyTorchUtils/PyTorchUtils.py):
    ``torchInstalled`` looks torch up without importing it (L157-170); ``installTorch`` asks when ``askConfirmation``
    and returns None when the user declines (L194-214). Installing is out of reach here, so ``installTorch`` records
    the request in ``requests`` and gives the user's answer from ``accept`` (a class attribute a test may set): only
    a decline can be played out."""

    requests = []
    accept = False

    @staticmethod
    def torchInstalled() -> bool:
        return importlib.util.find_spec("torch") is not None

    def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                     torchvisionVersionRequirement=None):
        PyTorchUtilsLogic.requests.append({"askConfirmation": askConfirmation,
                                           "torchVersionRequirement": torchVersionRequirement})
        if not self.accept:
            return None
        raise RuntimeError("PyTorch cannot be installed outside Slicer")
