"""Stand-ins for ``slicer.ScriptedLoadableModule``'s base classes, as far as a module's own code relies on them,
mirroring Slicer v5.10.0 (c01481fb) Base/Python/slicer/ScriptedLoadableModule.py."""

import importlib.util
import os
import sys
import unittest

import slicer
from PySide6.QtWidgets import QVBoxLayout

__all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
           "ScriptedLoadableModuleTest"]


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__


class ScriptedLoadableModuleWidget:
    """Slicer creates the widget with its module panel as parent and then calls ``setup()``; without a parent the
    base class makes one and calls ``setup()`` itself, inside ``__init__`` (v5.10.0 lines 89-110), so a subclass must
    have set its own attributes before it calls this ``__init__``."""

    def __init__(self, parent=None) -> None:
        self.moduleName = self.__class__.__name__.removesuffix("Widget")
        self.parent = parent
        if parent is None:
            from .qmrml import qMRMLWidget

            self.parent = qMRMLWidget()
            self.parent.setLayout(QVBoxLayout())
            self.parent.setMRMLScene(slicer.mrmlScene)
        self.parent.isEntered = False  # a property of Slicer's module panel
        self.layout = self.parent.layout()
        if parent is None:
            self.setup()
            self.parent.show()

    def onReload(self) -> None:
        """The developer section's Reload: ``slicer.util.reloadScriptedModule`` (Base/Python/slicer/util.py
        v5.10.0, reloadScriptedModule) executes the module's file again as a fresh module under the same name; the
        modules it imports stay cached. Rebuilding the panel, its second half, needs the application's module
        representation and is left out here."""
        path = sys.modules[self.__module__].__file__
        spec = importlib.util.spec_from_file_location(self.moduleName, path)
        reloaded = importlib.util.module_from_spec(spec)
        sys.modules[self.moduleName] = reloaded
        spec.loader.exec_module(reloaded)

    def resourcePath(self, filename: str) -> str:
        """Resources/<filename> beside the module's .py file, as Slicer resolves it."""
        return os.path.join(os.path.dirname(sys.modules[self.__module__].__file__), "Resources", filename)

    def setup(self) -> None:
        """Slicer adds the reload/test developer section here; nothing else."""

    def cleanup(self) -> None:
        """Called when the application closes."""


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None) -> None:
        self.moduleName = self.__class__.__name__.removesuffix("Logic")

    def getParameterNode(self):
        """The module's singleton ``vtkMRMLScriptedModuleNode``, created on first use."""
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetModuleName(self.moduleName)
            node.SetName(scene.GenerateUniqueName(self.moduleName))
            node = scene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message: str, msec: int = 1000) -> None:
        """Slicer shows the message in a popup; here it is only logged."""
