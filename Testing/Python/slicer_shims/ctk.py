"""Stand-ins for the CTK widgets the module's ``.ui`` uses, with the properties and signals the module and Slicer's
GUI connectors read, as declared in commontk/CTK dd4caeae (the commit Slicer v5.10.0 pins in
SuperBuild/External_CTK.cmake): Libs/Widgets/ctkCollapsibleButton.h (text, collapsed), ctkCollapsibleGroupBox.h
(title, collapsed), ctkDirectoryButton.h (directory, directoryChanged(QString)) and ctkSliderWidget.h (value,
minimum, maximum, singleStep, pageStep, decimals, suffix; valueChanged(double))."""

from PySide6.QtCore import Property, Qt, Signal
from PySide6.QtWidgets import QDoubleSpinBox, QFileDialog, QGroupBox, QHBoxLayout, QPushButton, QSlider, QWidget


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


class ctkSliderWidget(QWidget):
    """A slider and a spin box that hold one double ``value`` and emit ``valueChanged(double)`` when it changes (the
    spin box decides the precision, from ``decimals``, as in CTK's ctkSliderWidget.cpp)."""

    valueChanged = Signal(float)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.slider = QSlider(Qt.Horizontal, self)
        self.spinBox = QDoubleSpinBox(self)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider)
        layout.addWidget(self.spinBox)
        self.spinBox.valueChanged.connect(self._fromSpinBox)
        self.slider.valueChanged.connect(lambda position: self.setValue(position * self.singleStep))

    def _fromSpinBox(self, value: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(value / self.singleStep))
        self.slider.blockSignals(False)
        self.valueChanged.emit(value)

    def _setRange(self) -> None:
        self.slider.setRange(round(self.spinBox.minimum() / self.singleStep),
                             round(self.spinBox.maximum() / self.singleStep))

    def _singleStep(self) -> float:
        return self.spinBox.singleStep()

    def _setSingleStep(self, step: float) -> None:
        self.spinBox.setSingleStep(step)
        self._setRange()

    def _setMinimum(self, minimum: float) -> None:
        self.spinBox.setMinimum(minimum)
        self._setRange()

    def _setMaximum(self, maximum: float) -> None:
        self.spinBox.setMaximum(maximum)
        self._setRange()

    def setValue(self, value: float) -> None:
        self.spinBox.setValue(value)

    value = Property(float, lambda self: self.spinBox.value(), setValue)
    minimum = Property(float, lambda self: self.spinBox.minimum(), _setMinimum)
    maximum = Property(float, lambda self: self.spinBox.maximum(), _setMaximum)
    singleStep = Property(float, _singleStep, _setSingleStep)
    pageStep = Property(float, lambda self: self.slider.pageStep() * self.singleStep,
                        lambda self, step: self.slider.setPageStep(round(step / self.singleStep)))
    decimals = Property(int, lambda self: self.spinBox.decimals(), lambda self, count: self.spinBox.setDecimals(count))
    suffix = Property(str, lambda self: self.spinBox.suffix(), lambda self, text: self.spinBox.setSuffix(text))


WIDGETS = (ctkCollapsibleButton, ctkCollapsibleGroupBox, ctkDirectoryButton, ctkSliderWidget)
