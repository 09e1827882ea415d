"""A real ``vtkMRMLScene`` wired the way Slicer's application wires it, minus the Qt parts.

Slicer's application logic provides the colour nodes volumes need; its layout manager creates a slice logic (and
with it a composite node) for every slice view the layout node asks for, and its slice link logic propagates
changes between linked views. Here the same MRML logic classes (real ones, from slicer-core) do that without any
widget, as Slicer v5.10.0 (c01481fb) Libs/MRML/Widgets/qMRMLLayoutManager.cxx creates a slice logic per view.
"""

import types

import slicer
import vtk

VIEW_DIMENSIONS = (400, 300, 1)  # a landscape view, so the ROI zoom must respect the aspect ratio


def new_scene() -> types.SimpleNamespace:
    """A fresh scene set as ``slicer.mrmlScene``, with volumes, layout and slice logics."""
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    application_logic = slicer.vtkSlicerApplicationLogic()
    application_logic.SetMRMLScene(scene)
    application_logic.GetColorLogic().SetMRMLScene(scene)
    application_logic.GetColorLogic().AddDefaultColorNodes()
    application_logic.SetModuleLogic("Colors", application_logic.GetColorLogic())
    volumes_logic = slicer.vtkSlicerVolumesLogic()
    volumes_logic.SetMRMLApplicationLogic(application_logic)
    volumes_logic.SetMRMLScene(scene)
    slice_logics = []

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def on_node_added(caller, event, node) -> None:
        if node.IsA("vtkMRMLSliceNode"):
            node.SetDimensions(*VIEW_DIMENSIONS)
            slice_logic = slicer.vtkMRMLSliceLogic()
            slice_logic.SetMRMLApplicationLogic(application_logic)
            slice_logic.SetMRMLScene(scene)
            slice_logic.SetSliceNode(node)
            slice_logics.append(slice_logic)

    scene.AddObserver(scene.NodeAddedEvent, on_node_added)
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    return types.SimpleNamespace(scene=scene, application_logic=application_logic, volumes_logic=volumes_logic,
                                 layout_logic=layout_logic, slice_logics=slice_logics,
                                 observer=on_node_added)


def load_dicom_series(volumes_logic, files, name: str, instance_uids):
    """Load files as Slicer's DICOMScalarVolumePlugin does (one archetype reader over the file list) and record
    the instance UIDs on the node as the plugin does."""
    file_list = vtk.vtkStringArray()
    for path in files:
        file_list.InsertNextValue(str(path))
    node = volumes_logic.AddArchetypeVolume(str(files[0]), name, 0, file_list)
    node.SetAttribute("DICOM.instanceUIDs", " ".join(instance_uids))
    return node
