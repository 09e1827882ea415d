"""Stand-ins for the CTK widgets the module's ``.ui`` uses, with the properties and signals the module reads."""

from PySide6.QtCore import Property, Signal
from PySide6.QtWidgets import QFileDialog, QGroupBox, QPushButton


class ctkCollapsibleButton(QGroupBox):
    """A titled section; CTK calls its title ``text``."""

    def _text(self) -> str:
        return self.title()

    def _setText(self, text: str) -> None:
        self.setTitle(text)

    def _collapsed(self) -> bool:
        return not self.isChecked() if self.isCheckable() else False

    def _setCollapsed(self, collapsed: bool) -> None:
        self.setCheckable(True)
        self.setChecked(not collapsed)

    text = Property(str, _text, _setText)
    collapsed = Property(bool, _collapsed, _setCollapsed)


class ctkDirectoryButton(QPushButton):
    """A button that holds a directory and emits ``directoryChanged`` when it changes."""

    directoryChanged = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._directory = ""
        self.clicked.connect(self._browse)

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "", self._directory)
        if chosen:
            self.setDirectory(chosen)

    def directoryValue(self) -> str:
        return self._directory

    def setDirectory(self, directory: str) -> None:
        if directory != self._directory:
            self._directory = str(directory)
            self.setText(self._directory)
            self.directoryChanged.emit(self._directory)

    directory = Property(str, directoryValue, setDirectory)


WIDGETS = (ctkCollapsibleButton, ctkDirectoryButton)
