"""Stand-ins for the CTK widgets the module's ``.ui`` uses, with the properties and signals the module and Slicer's
GUI connectors read, as declared in commontk/CTK dd4caeae (the commit Slicer v5.10.0 pins in
SuperBuild/External_CTK.cmake): Libs/Widgets/ctkCollapsibleButton.h (text, collapsed), ctkCollapsibleGroupBox.h
(title, collapsed), ctkDirectoryButton.h (directory, directoryChanged(QString)) and ctkSliderWidget.h (value,
minimum, maximum, singleStep, pageStep, decimals, suffix; valueChanged(double))."""

from PySide6.QtCore import Property, Signal
from PySide6.QtWidgets import QFileDialog, QGroupBox, QPushButton, QWidget


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


class ctkCollapsibleGroupBox(QGroupBox):
    """A group box that folds its content away when ``collapsed`` (applied again when shown, because the ``.ui``
    sets the property before it adds the children)."""

    def _collapsed(self) -> bool:
        return getattr(self, "_is_collapsed", False)

    def _setCollapsed(self, collapsed: bool) -> None:
        self._is_collapsed = bool(collapsed)
        self._apply()

    def _apply(self) -> None:
        for child in self.findChildren(QWidget):
            child.setVisible(not self._collapsed())

    def showEvent(self, event) -> None:
        self._apply()
        super().showEvent(event)

    collapsed = Property(bool, _collapsed, _setCollapsed)


WIDGETS = (ctkCollapsibleButton, ctkCollapsibleGroupBox, ctkDirectoryButton)
