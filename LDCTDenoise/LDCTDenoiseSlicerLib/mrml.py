"""MRML helpers of the Slicer module: HU arrays <-> volume nodes, the soft-tissue window, the compare layout and its
ROI zoom, and the way back from a DICOM-loaded volume to its source files for export.

Only MRML, VTK and numpy are used here, never ``qt``, so every helper runs (and is tested) against a real
``vtkMRMLScene`` from the ``slicer-core`` wheel as well as inside Slicer. Arrays are float32 HU shaped (z, y, x),
which is also the (k, j, i) order of a volume node's voxels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import slicer
import slicer.util
import vtk

from LDCTDenoiseLib.dicom_reader import SeriesLayout, open_series
from LDCTDenoiseLib.dicom_writer import write_derived_series
from LDCTDenoiseLib.errors import LDCTDenoiseError
from LDCTDenoiseLib.metrics import WINDOW_CENTER, WINDOW_WIDTH, Roi
from LDCTDenoiseLib.progress import CancelCheck, ProgressCallback

INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"  # set by Slicer's DICOMScalarVolumePlugin on every loaded volume
COMPARE_LAYOUT_ID = 4701  # custom layouts need an id above 100; this one is only used by LDCTDenoise
COMPARE_VIEW_PREFIX = "LDCTCompare"
COMPARE_COLUMNS = 3  # more methods than this wrap onto further rows so each view stays large enough to read
ZOOM_MARGIN = 1.2  # the zoomed field of view is a little larger than the ROI so its outline stays visible
AXIS_TOLERANCE = 1e-3  # cosines of voxel axes that count as parallel


def array_from_volume(volume_node: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """A float32 HU copy (z, y, x) of the node's voxels, so the engine never writes into the node's memory."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise LDCTDenoiseError("The volume has no voxels: load or select a CT volume first.")
    return np.array(slicer.util.arrayFromVolume(volume_node), dtype=np.float32)


def add_volume_from_array(hu: np.ndarray, like: slicer.vtkMRMLScalarVolumeNode, name: str,
                          volume_node: Optional[slicer.vtkMRMLScalarVolumeNode] = None
                          ) -> slicer.vtkMRMLScalarVolumeNode:
    """``hu`` as a volume with the geometry of ``like`` (a new node unless ``volume_node`` is given), shown at the
    soft-tissue window; a derived volume must overlay its source voxel for voxel."""
    hu = np.asarray(hu, dtype=np.float32)
    if hu.shape != tuple(reversed(like.GetImageData().GetDimensions())):
        raise LDCTDenoiseError(f"The result has shape {hu.shape} but '{like.GetName()}' has "
                               f"{tuple(reversed(like.GetImageData().GetDimensions()))}.")
    scene = like.GetScene()
    if volume_node is None:
        volume_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    slicer.util.updateVolumeFromArray(volume_node, hu)
    volume_node.CopyOrientation(like)
    volume_node.SetAndObserveTransformNodeID(like.GetTransformNodeID())
    set_display_window(volume_node)
    return volume_node


def set_display_window(volume_node: slicer.vtkMRMLScalarVolumeNode, window: float = WINDOW_WIDTH,
                       level: float = WINDOW_CENTER) -> None:
    """Show the volume at a fixed W/L (400/40 by default); automatic W/L would make methods look incomparable."""
    volume_node.CreateDefaultDisplayNodes()
    display = volume_node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(window, level)


def show_in_main_views(scene: slicer.vtkMRMLScene, volume_node: slicer.vtkMRMLScalarVolumeNode) -> list[str]:
    """Show the volume alone, fitted, in every slice view but the compare views, which keep the methods they were
    given (``slicer.util.setSliceViewerLayers`` would change every view, the compare views included). Returns the
    layout names of the views changed."""
    changed = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if (composite.GetLayoutName() or "").startswith(COMPARE_VIEW_PREFIX):
            continue
        composite.SetBackgroundVolumeID(volume_node.GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetLabelVolumeID(None)
        changed.append(composite.GetLayoutName())
    fit_slice_views(changed)
    return changed


def fit_slice_views(view_names: Sequence[str]) -> None:
    """Fit the named slice views to their background, through Slicer's layout manager (there is none outside the
    application, and then there is nothing to fit); views of other layouts have no widget now and are skipped."""
    layout_manager = slicer.app.layoutManager() if hasattr(slicer, "app") else None
    if layout_manager is None:
        return
    for name in view_names:
        slice_widget = layout_manager.sliceWidget(name)
        if slice_widget:
            slice_widget.sliceLogic().FitSliceToBackground()


def compare_view_names(count: int) -> list[str]:
    """Singleton tags (and layout names) of the compare views, one per method."""
    return [f"{COMPARE_VIEW_PREFIX}{index + 1}" for index in range(count)]


def compare_layout_xml(labels: Sequence[str]) -> str:
    """A layout of axial slice views, one per label (shown in each view's corner), in rows of COMPARE_COLUMNS."""
    if not labels:
        raise LDCTDenoiseError("Choose at least one method to compare.")
    views = [
        "<item><view class=\"vtkMRMLSliceNode\" singletontag=" + quoteattr(tag) + ">"
        "<property name=\"orientation\" action=\"default\">Axial</property>"
        "<property name=\"viewlabel\" action=\"default\">" + escape(label) + "</property>"
        "<property name=\"viewcolor\" action=\"default\">#8C8C8C</property>"
        "</view></item>"
        for tag, label in zip(compare_view_names(len(labels)), labels)
    ]
    rows = ["<item><layout type=\"horizontal\">" + "".join(views[start:start + COMPARE_COLUMNS]) + "</layout></item>"
            for start in range(0, len(views), COMPARE_COLUMNS)]
    return "<layout type=\"vertical\">" + "".join(rows) + "</layout>"


def show_compare_layout(scene: slicer.vtkMRMLScene, labels: Sequence[str]) -> list[slicer.vtkMRMLSliceNode]:
    """Switch the layout node to the compare layout and return its slice nodes in the order of ``labels``.

    Slicer's layout manager (or a ``vtkMRMLLayoutLogic`` outside Slicer) creates the slice nodes when the view
    arrangement changes.
    """
    layout_node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout_node is None:
        raise LDCTDenoiseError("The scene has no layout node; the compare views cannot be shown.")
    xml = compare_layout_xml(labels)
    if layout_node.IsLayoutDescription(COMPARE_LAYOUT_ID):
        layout_node.SetLayoutDescription(COMPARE_LAYOUT_ID, xml)
    else:
        layout_node.AddLayoutDescription(COMPARE_LAYOUT_ID, xml)
    layout_node.SetViewArrangement(COMPARE_LAYOUT_ID)
    slice_nodes = [scene.GetSingletonNode(tag, "vtkMRMLSliceNode") for tag in compare_view_names(len(labels))]
    if any(node is None for node in slice_nodes):
        raise LDCTDenoiseError("The compare layout did not create its slice views.")
    return slice_nodes


def link_views(slice_nodes: Sequence[slicer.vtkMRMLSliceNode],
               volume_nodes: Sequence[slicer.vtkMRMLScalarVolumeNode]) -> list[slicer.vtkMRMLSliceCompositeNode]:
    """Show one volume per view, alone, with linked control so panning, zooming and scrolling move all views."""
    if len(slice_nodes) != len(volume_nodes):
        raise LDCTDenoiseError(f"{len(volume_nodes)} volumes for {len(slice_nodes)} compare views")
    composites = []
    for slice_node, volume_node in zip(slice_nodes, volume_nodes):
        composite = slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(slice_node)
        if composite is None:
            raise LDCTDenoiseError(f"The view '{slice_node.GetLayoutName()}' has no composite node yet.")
        composite.SetBackgroundVolumeID(volume_node.GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetLabelVolumeID(None)
        composite.SetLinkedControl(True)
        composites.append(composite)
    return composites


def roi_ras_box(roi_node: slicer.vtkMRMLMarkupsROINode) -> tuple[np.ndarray, np.ndarray]:
    """Centre and size (RAS, mm) of the axis-aligned box around the ROI, rotated or not."""
    bounds = [0.0] * 6
    roi_node.GetRASBounds(bounds)
    low, high = np.array(bounds[0::2]), np.array(bounds[1::2])
    if np.any(high < low):
        raise LDCTDenoiseError(f"The ROI '{roi_node.GetName()}' is not placed yet.")
    return (low + high) / 2.0, high - low


def fit_field_of_view(width_mm: float, height_mm: float, view_dimensions: Sequence[int]) -> tuple[float, float]:
    """The smallest field of view with the view's aspect ratio that holds ``width_mm`` x ``height_mm``.

    A slice node scales x and y by field of view / pixels independently, so a field of view of another aspect ratio
    than the view would stretch the image.
    """
    columns, rows = max(int(view_dimensions[0]), 1), max(int(view_dimensions[1]), 1)
    aspect = columns / rows
    height = max(height_mm, width_mm / aspect, 1e-3)
    return height * aspect, height


def zoom_to_roi(slice_nodes: Sequence[slicer.vtkMRMLSliceNode], roi_node: slicer.vtkMRMLMarkupsROINode) -> None:
    """Centre every view on the ROI and zoom so the ROI (plus ZOOM_MARGIN) fills it."""
    center, size = roi_ras_box(roi_node)
    for slice_node in slice_nodes:
        slice_to_ras = slice_node.GetSliceToRAS()
        # Extent of the ROI box along the view's in-plane axes (columns 0 and 1 of SliceToRAS).
        extents = [sum(abs(slice_to_ras.GetElement(row, axis)) * size[row] for row in range(3)) for axis in (0, 1)]
        width, height = fit_field_of_view(extents[0] * ZOOM_MARGIN, extents[1] * ZOOM_MARGIN,
                                          slice_node.GetDimensions())
        slice_node.SetFieldOfView(width, height, slice_node.GetFieldOfView()[2])
        slice_node.JumpSliceByCentering(*center)


def roi_pixel_box(roi_node: slicer.vtkMRMLMarkupsROINode,
                  volume_node: slicer.vtkMRMLScalarVolumeNode) -> tuple[Roi, int]:
    """The ROI as the engine's pixel rectangle on one slice of ``volume_node``, and that slice's index.

    The rectangle holds the voxels whose centres lie inside the ROI's RAS box, clipped to the volume; the slice is
    the one through the ROI's centre.
    """
    if volume_node.GetParentTransformNode() is not None:
        raise LDCTDenoiseError(f"'{volume_node.GetName()}' is under a transform: harden it before measuring.")
    center, size = roi_ras_box(roi_node)
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume_node.GetRASToIJKMatrix(ras_to_ijk)
    matrix = np.array([[ras_to_ijk.GetElement(row, column) for column in range(4)] for row in range(4)])
    corners = np.array([[center[a] + sign[a] * size[a] / 2.0 for a in range(3)] + [1.0]
                        for sign in np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T])
    ijk = (matrix @ corners.T)[:3].T
    dimensions = volume_node.GetImageData().GetDimensions()
    low = np.maximum(np.ceil(ijk.min(axis=0) - 1e-6), 0).astype(int)
    high = np.minimum(np.floor(ijk.max(axis=0) + 1e-6), np.array(dimensions) - 1).astype(int)
    slice_index = int(math.floor((matrix @ np.append(center, 1.0))[2] + 0.5))
    if np.any(high[:2] < low[:2]) or not 0 <= slice_index < dimensions[2]:
        raise LDCTDenoiseError(f"The ROI '{roi_node.GetName()}' does not overlap '{volume_node.GetName()}'.")
    return Roi(int(low[0]), int(low[1]), int(high[0] - low[0] + 1), int(high[1] - low[1] + 1)), slice_index


def instance_uids(volume_node: slicer.vtkMRMLScalarVolumeNode) -> list[str]:
    """SOP instance UIDs of the DICOM files a volume was loaded from (empty when it was not loaded from DICOM)."""
    return (volume_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()


def source_files(volume_node: slicer.vtkMRMLScalarVolumeNode, file_for_instance: Callable[[str], str]) -> list[Path]:
    """Files of the DICOM series the volume was loaded from; ``file_for_instance`` is the DICOM database's lookup."""
    uids = instance_uids(volume_node)
    if not uids:
        raise LDCTDenoiseError(f"'{volume_node.GetName()}' was not loaded from DICOM, so there are no source headers "
                               "to write a derived series from. Load the series with the DICOM module.")
    files = [file_for_instance(uid) for uid in uids]
    missing = [uid for uid, file in zip(uids, files) if not file or not Path(file).is_file()]
    if missing:
        raise LDCTDenoiseError(f"{len(missing)} of the {len(uids)} source files of '{volume_node.GetName()}' are no "
                               f"longer in the DICOM database (first missing instance: {missing[0]}).")
    return [Path(file) for file in files]


def _lps_to_ras(vector: np.ndarray) -> np.ndarray:
    return np.asarray(vector, dtype=float) * np.array([-1.0, -1.0, 1.0])


def hu_in_series_order(volume_node: slicer.vtkMRMLScalarVolumeNode,
                       series: SeriesLayout) -> np.ndarray:
    """The node's voxels rearranged into the engine's (z, y, x) order of ``series``.

    Slicer's IJK axes and the engine's sorted slices may differ by axis order and direction; both describe the same
    voxels in patient space, so the axes are matched by direction and checked by the first voxel's position. A
    resampled or reoriented volume is refused rather than written onto the wrong slices.
    """
    hu = array_from_volume(volume_node)  # (k, j, i)
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    matrix = np.array([[ijk_to_ras.GetElement(row, column) for column in range(4)] for row in range(4)])
    node_axes = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)  # columns: i, j, k directions in RAS
    series_axes = [_lps_to_ras(series.direction[:, column]) for column in range(3)]  # x, y, z directions
    k_j_i_for_z_y_x, flips = [], []
    for axis in reversed(series_axes):  # z, y, x
        cosines = node_axes.T @ axis
        match = int(np.argmax(np.abs(cosines)))
        if abs(abs(cosines[match]) - 1.0) > AXIS_TOLERANCE:
            raise LDCTDenoiseError(f"'{volume_node.GetName()}' is not aligned with its DICOM series (resampled or "
                                   "reoriented?); export the volume as it was loaded and denoised.")
        k_j_i_for_z_y_x.append(2 - match)
        flips.append(cosines[match] < 0)
    ordered = np.transpose(hu, k_j_i_for_z_y_x)
    for array_axis, flip in enumerate(flips):
        if flip:
            ordered = np.flip(ordered, axis=array_axis)
    if ordered.shape != tuple(series.shape):
        raise LDCTDenoiseError(f"'{volume_node.GetName()}' has {ordered.shape} voxels (z, y, x) but its DICOM series "
                               f"has {tuple(series.shape)}.")
    first_voxel_kji = np.zeros(3)  # the node's (k, j, i) index of the series' first voxel
    for node_array_axis, flip in zip(k_j_i_for_z_y_x, flips):
        if flip:
            first_voxel_kji[node_array_axis] = hu.shape[node_array_axis] - 1
    first_ras = matrix[:3, :3] @ first_voxel_kji[::-1] + matrix[:3, 3]
    if np.linalg.norm(first_ras - _lps_to_ras(series.origin)) > 0.5 * min(series.spacing):
        raise LDCTDenoiseError(f"'{volume_node.GetName()}' does not start where its DICOM series starts (cropped or "
                               "moved?); export the volume as it was loaded and denoised.")
    return np.ascontiguousarray(ordered)


def export_derived_series(volume_node: slicer.vtkMRMLScalarVolumeNode, files: Sequence[Path], out_dir: Path, *,
                          derivation_description: str, series_description_suffix: str,
                          progress: Optional[ProgressCallback] = None,
                          cancel: Optional[CancelCheck] = None) -> list[Path]:
    """Write the node's HU as a derived series of the DICOM series in ``files`` (the engine's writer keeps every
    source header and writes atomically). Only the source headers are read: Slicer decoded the pixels when it loaded
    the series, so no DICOM decoder is needed here, whatever the source's transfer syntax."""
    series = open_series(list(files))
    return write_derived_series(series, hu_in_series_order(volume_node, series), out_dir,
                                derivation_description=derivation_description,
                                series_description_suffix=series_description_suffix, progress=progress,
                                cancel=cancel)
