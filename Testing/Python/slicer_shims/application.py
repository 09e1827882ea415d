"""Stand-ins for the parts of Slicer's application the module calls: ``slicer.app``, ``slicer.i18n``,
``slicer.packaging`` and the PyTorch extension's ``PyTorchUtils``."""

import importlib.metadata
import importlib.util
import re
import tempfile
from pathlib import Path

from PySide6.QtWidgets import QApplication


class Application:
    """``slicer.app`` in testing mode (no popups), with Qt's event loop."""

    applicationName = "Slicer"
    temporaryPath = tempfile.gettempdir()

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


class Packaging:
    """``slicer.packaging``: ``pip_ensure`` checks the requirements are installed instead of installing them."""

    def __init__(self) -> None:
        self.ensured = []

    @staticmethod
    def load_requirements(path) -> list[str]:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]

    def pip_ensure(self, requirements, requester=None, **kwargs) -> None:
        for requirement in requirements:
            name = re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0]
            importlib.metadata.version(name)  # raises PackageNotFoundError when it is missing
        self.ensured.append((list(requirements), requester))


class PyTorchUtilsLogic:
    """The PyTorch extension's logic with torch already installed (installing is out of reach here)."""

    @staticmethod
    def torchInstalled() -> bool:
        return importlib.util.find_spec("torch") is not None

    def installTorch(self, askConfirmation=False, torchVersionRequirement=None):
        raise RuntimeError("PyTorch cannot be installed outside Slicer")
