"""Stand-ins for the qMRML widgets of the module's ``.ui``: a node combo box over a real ``vtkMRMLScene``, with the
properties, signals and slots of Slicer v5.10.0 (c01481fb) Libs/MRML/Widgets/qMRMLWidget.h, qMRMLNodeComboBox.h
(nodeTypes, noneEnabled, addEnabled, removeEnabled, showChildNodeTypes, noneDisplay; currentNodeChanged(vtkMRMLNode*))
and qMRMLCheckableNodeComboBox.h (checkedNodes(), checkState/setCheckState, checkedNodesChanged()).

The signal and slot carry the C++ signatures ``mrmlSceneChanged(vtkMRMLScene*)`` / ``setMRMLScene(vtkMRMLScene*)``, so
QUiLoader makes the ``.ui``'s connections exactly as in Slicer (the tests count them). PySide6 cannot pass a VTK
object through such a signal, so ``qMRMLWidget.setMRMLScene`` then calls its node combo boxes itself.
"""

from PySide6.QtCore import Property, Qt, Signal, Slot
from PySide6.QtWidgets import QComboBox, QWidget


class qMRMLWidget(QWidget):
    mrmlSceneChanged = Signal("vtkMRMLScene*")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._scene = None

    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene) -> None:
        self._scene = scene
        for combo in self.findChildren(qMRMLNodeComboBox):
            combo.setMRMLScene(scene)


def _stored(name: str, kind: type, default):
    """A Qt property kept in a Python attribute, so ``.ui`` values land where the stand-in reads them."""
    attribute = f"_{name}"

    def getter(self):
        return getattr(self, attribute, default)

    def setter(self, value) -> None:
        setattr(self, attribute, value)
        self._refresh()

    return Property(kind, getter, setter)


class qMRMLNodeComboBox(QComboBox):
    """Lists the scene's nodes of ``nodeTypes`` (plus "None" when ``noneEnabled``) and emits the selected node."""

    currentNodeChanged = Signal(object)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._scene = None
        self._observations = []
        self._refreshing = False
        self.currentIndexChanged.connect(self._emitCurrentNode)

    nodeTypes = _stored("nodeTypes", "QStringList", [])
    noneEnabled = _stored("noneEnabled", bool, False)
    addEnabled = _stored("addEnabled", bool, False)
    removeEnabled = _stored("removeEnabled", bool, False)
    showChildNodeTypes = _stored("showChildNodeTypes", bool, True)
    noneDisplay = _stored("noneDisplay", str, "None")

    def setNodeTypes(self, nodeTypes) -> None:
        self.nodeTypes = list(nodeTypes)

    def mrmlScene(self):
        return self._scene

    @Slot("vtkMRMLScene*")
    def setMRMLScene(self, scene) -> None:
        for observed, tag in self._observations:
            observed.RemoveObserver(tag)
        self._scene = scene
        self._observations = [(scene, scene.AddObserver(event, lambda *args: self._refresh()))
                              for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent)] if scene else []
        self._refresh()

    def nodes(self) -> list:
        if self._scene is None:
            return []
        found = []
        for index in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(index)
            if node.GetHideFromEditors():
                continue
            if any(node.GetClassName() == kind or (self.showChildNodeTypes and node.IsA(kind))
                   for kind in self.nodeTypes):
                found.append(node)
        return found

    def _refresh(self) -> None:
        if self._refreshing:
            return
        current = self.currentNodeID()
        self._refreshing = True
        self.blockSignals(True)
        try:
            self.clear()
            if self.noneEnabled:
                self.addItem(self.noneDisplay, None)
            for node in self.nodes():
                self.addItem(node.GetName(), node.GetID())
            index = self.findData(current) if current else -1
            if index < 0 and not self.noneEnabled and self.count():
                index = 0
            self.setCurrentIndex(max(index, 0) if self.count() else -1)
        finally:
            self.blockSignals(False)
            self._refreshing = False
        if self.currentNodeID() != current:
            self._emitCurrentNode()

    def currentNodeID(self):
        return self.currentData() if self.currentIndex() >= 0 else None

    def currentNode(self):
        nodeID = self.currentNodeID()
        return self._scene.GetNodeByID(nodeID) if nodeID and self._scene else None

    def setCurrentNode(self, node) -> None:
        index = self.findData(node.GetID()) if node is not None else (0 if self.noneEnabled else -1)
        if index >= 0:
            self.setCurrentIndex(index)

    def _emitCurrentNode(self, *args) -> None:
        if not self._refreshing:
            self.currentNodeChanged.emit(self.currentNode())


class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):
    """The node list with a check box per node: ``checkedNodes``, ``setCheckState``, ``checkState`` and
    ``checkedNodesChanged`` as in Slicer; the checks survive the scene's node additions and removals."""

    checkedNodesChanged = Signal()

    def __init__(self, parent=None) -> None:
        self._checked: list[str] = []
        super().__init__(parent)

    def _refresh(self) -> None:
        super()._refresh()
        model = self.model()
        for row in range(self.count()):
            item = model.item(row)
            item.setCheckable(True)
            item.setCheckState(Qt.Checked if self.itemData(row) in self._checked else Qt.Unchecked)

    def checkState(self, node):
        return Qt.Checked if node is not None and node.GetID() in self._checked else Qt.Unchecked

    def setCheckState(self, node, state) -> None:
        checked = [node_id for node_id in self._checked if node_id != node.GetID()]
        if state == Qt.Checked:
            checked.append(node.GetID())
        if checked != self._checked:
            self._checked = checked
            self._refresh()
            self.checkedNodesChanged.emit()

    def checkedNodes(self) -> tuple:
        """A tuple, as PythonQt converts the C++ ``QList<vtkMRMLNode*>`` (MeVisLab/pythonqt v3.6.1
        src/PythonQtConversion.cpp, ConvertQListOfPointerTypeToPythonList)."""
        present = {node.GetID(): node for node in self.nodes()}
        return tuple(present[node_id] for node_id in self._checked if node_id in present)


WIDGETS = (qMRMLWidget, qMRMLNodeComboBox, qMRMLCheckableNodeComboBox)
