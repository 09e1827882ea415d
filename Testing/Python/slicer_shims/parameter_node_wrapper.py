"""A stand-in for ``slicer.parameterNodeWrapper`` (Slicer v5.10.0 c01481fb, Base/Python/slicer/parameterNodeWrapper/
wrapper.py, serializers.py, validators.py, guiConnectors.py): typed fields stored in a real
``vtkMRMLScriptedModuleNode`` and two-way binding to the widgets whose ``SlicerParameterName`` property names a field.

It supports the field types and widget/type pairs the module uses, each paired as Slicer's own GUI connectors pair
them (``SUPPORTED_PAIRS``, checked by the tests); anything else raises, as Slicer does.
"""

import enum
import typing
from dataclasses import dataclass

import slicer
import vtk

SlicerParameterNamePropertyName = "SlicerParameterName"


@dataclass(frozen=True)
class WithinRange:
    minimum: float
    maximum: float


def _split(hint):
    if typing.get_origin(hint) is typing.Annotated:
        base, *annotations = typing.get_args(hint)
        return base, annotations
    return hint, []


def _isNodeType(kind) -> bool:
    return isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode)


class _Field:
    def __init__(self, name: str, hint, default) -> None:
        self.name = name
        self.kind, self.annotations = _split(hint)
        self.range = next((a for a in self.annotations if isinstance(a, WithinRange)), None)
        self.default = default

    def read(self, node):
        if _isNodeType(self.kind):
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        if self.kind is bool:
            return text == "True"
        if isinstance(self.kind, type) and issubclass(self.kind, enum.Enum):
            return self.kind[text]
        return self.kind(text)

    def write(self, node, value) -> None:
        if _isNodeType(self.kind):
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
            return
        if self.range is not None and not self.range.minimum <= value <= self.range.maximum:
            raise ValueError(f"{self.name} = {value} is outside [{self.range.minimum}, {self.range.maximum}]")
        node.SetParameter(self.name, value.name if isinstance(value, enum.Enum) else str(value))

    def isIn(self, node) -> bool:
        if _isNodeType(self.kind):
            return True  # an unset reference reads as None, the default
        return self.name in node.GetParameterNames()


def _widgetType(widget) -> str:
    return type(widget).__name__


def _kindName(kind) -> str:
    if _isNodeType(kind):
        return "node"
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "Enum"
    return kind.__name__


# (widget class, field type) pairs that Slicer's guiConnectors.py connects (exact widget class, as Slicer checks).
SUPPORTED_PAIRS = {("QCheckBox", "bool"), ("QPushButton", "bool"), ("QSpinBox", "int"), ("QSlider", "int"),
                   ("QDoubleSpinBox", "float"), ("ctkSliderWidget", "float"), ("QComboBox", "Enum"),
                   ("QLineEdit", "str"), ("QTextEdit", "str"), ("ctkPathLineEdit", "PosixPath"),
                   ("ctkDirectoryButton", "PosixPath"), ("ctkPathLineEdit", "Path"), ("ctkDirectoryButton", "Path"),
                   ("qMRMLNodeComboBox", "node")}


class _Connector:
    """Reads and writes one widget as one field's type."""

    def __init__(self, widget, field: _Field) -> None:
        pair = (_widgetType(widget), _kindName(field.kind))
        if pair not in SUPPORTED_PAIRS:
            raise RuntimeError(f"Unable to create GUI connector from datatype '{field.kind}' to widget type "
                               f"'{type(widget)}'")
        self.widget, self.field, kind = widget, field, pair
        if kind[1] == "node":
            widget.setNodeTypes([field.kind.__name__])
            self.signal, self.read, self.write = widget.currentNodeChanged, widget.currentNode, widget.setCurrentNode
        elif kind[1] == "Enum":
            members = list(field.kind)
            widget.clear()
            for member in members:
                widget.addItem(member.label() if hasattr(member, "label") else member.name)
            self.signal = widget.currentIndexChanged
            self.read = lambda: members[widget.currentIndex()]
            self.write = lambda value: widget.setCurrentIndex(members.index(value))
        elif kind[0] in ("QSpinBox", "QDoubleSpinBox", "QSlider"):
            if field.range is not None:
                widget.setRange(field.range.minimum, field.range.maximum)
            self.signal, self.read, self.write = widget.valueChanged, widget.value, widget.setValue
        elif kind[0] == "ctkSliderWidget":  # guiConnectors.py sets the range as properties, and needs one
            if field.range is None:
                raise RuntimeError(f"{field.name}: a ctkSliderWidget needs a WithinRange annotation")
            widget.minimum, widget.maximum = field.range.minimum, field.range.maximum
            self.signal, self.read, self.write = widget.valueChanged, lambda: widget.value, widget.setValue
        elif kind[0] in ("QCheckBox", "QPushButton"):
            self.signal, self.read, self.write = widget.toggled, widget.isChecked, widget.setChecked
        elif kind[0] == "ctkDirectoryButton":
            self.signal = widget.directoryChanged
            self.read = lambda: field.kind(widget.directory)
            self.write = lambda value: widget.setDirectory(str(value))
        else:
            self.signal, self.read, self.write = widget.textChanged, widget.text, widget.setText


def parameterNodeWrapper(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {}
    for name, hint in hints.items():
        kind = _split(hint)[0]
        if hasattr(cls, name):
            default = getattr(cls, name)
        else:
            default = None if _isNodeType(kind) else kind()
        fields[name] = _Field(name, hint, default)
        setattr(cls, name, property(lambda self, f=fields[name]: f.read(self.parameterNode),
                                    lambda self, value, f=fields[name]: f.write(self.parameterNode, value)))

    def __init__(self, parameterNode) -> None:
        self.parameterNode = parameterNode
        self._guis = {}
        self._updatingGui = False
        for field in fields.values():
            if not field.isIn(parameterNode):
                field.write(parameterNode, field.default)
        parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *args: self._updateGui())

    def connectGui(self, gui):
        widgets = [w for w in gui.__dict__.values() if hasattr(w, "property") and w.property(
            SlicerParameterNamePropertyName)]
        connectors = []
        for widget in widgets:
            name = widget.property(SlicerParameterNamePropertyName)
            if name not in fields:
                raise ValueError(f"Cannot find a param with the given name: {name}")
            connector = _Connector(widget, fields[name])
            connector.write(getattr(self, name))
            connector.slot = lambda *args, c=connector: self._fromGui(c)
            connector.signal.connect(connector.slot)
            connectors.append(connector)
        tag = len(self._guis) + 1
        self._guis[tag] = connectors
        return tag

    def disconnectGui(self, tag) -> None:
        for connector in self._guis.pop(tag, []):
            connector.signal.disconnect(connector.slot)

    def _fromGui(self, connector) -> None:
        if not self._updatingGui:
            setattr(self, connector.field.name, connector.read())

    def _updateGui(self) -> None:
        self._updatingGui = True
        try:
            for connectors in self._guis.values():
                for connector in connectors:
                    connector.write(getattr(self, connector.field.name))
        finally:
            self._updatingGui = False

    cls.allParameters = fields
    cls.__init__ = __init__
    cls.connectGui, cls.disconnectGui = connectGui, disconnectGui
    cls._fromGui, cls._updateGui = _fromGui, _updateGui
    cls.dataType = staticmethod(lambda name: fields[name].kind)
    cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback,
                                                                                                  priority)
    cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
    cls.StartModify = lambda self: self.parameterNode.StartModify()
    cls.EndModify = lambda self, wasModifying: self.parameterNode.EndModify(wasModifying)
    return cls
