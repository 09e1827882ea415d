"""The module's MRML bridge (LDCTDenoiseSlicerLib/mrml.py) against a real vtkMRMLScene from the slicer-core wheel.

Volumes, display nodes, layouts, slice/composite nodes, markups ROIs and the DICOM reader are Slicer's own C++
classes here; only the Qt application around them is absent.
"""

import xml.etree.ElementTree as ElementTree

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEGLosslessSV1

slicer = pytest.importorskip("slicer_core") and pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from dicom_factory import phantom_hu, snapshot, write_ct_series  # noqa: E402
from LDCTDenoiseSlicerLib import mrml  # noqa: E402
from LDCTDenoiseLib.dicom_reader import read_series  # noqa: E402
from LDCTDenoiseLib.errors import LDCTDenoiseError  # noqa: E402
from LDCTDenoiseLib.metrics import roi_stats  # noqa: E402
from slicer_shims.scene import VIEW_DIMENSIONS, load_dicom_series, new_scene  # noqa: E402


@pytest.fixture
def mrml_scene():
    return new_scene()


def load(mrml_scene, folder, name="ct", **series_options):
    """Write a pydicom series and load it the way Slicer's DICOM plugin does; returns (node, engine volume)."""
    files = write_ct_series(folder, **series_options)
    series = read_series(files)
    uids = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in series.source_files]
    return load_dicom_series(mrml_scene.volumes_logic, series.source_files, name, uids), series


def ras_box_of_voxels(volume_node, low_ijk, high_ijk):
    """RAS centre and size of the box spanning voxel centres low..high (inclusive) of an axis-aligned volume."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    corners = [np.array(matrix.MultiplyPoint([*point, 1.0])[:3]) for point in (low_ijk, high_ijk)]
    return (corners[0] + corners[1]) / 2, np.abs(corners[1] - corners[0])


def test_dicom_series_loads_as_slicer_does_with_the_engine_s_slice_order(mrml_scene, tmp_path):
    for orientation in [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, -1, 0), (0, 1, 0, -1, 0, 0)]:
        node, series = load(mrml_scene, tmp_path / str(orientation), hu=phantom_hu(4, 16),
                            orientation=orientation)
        np.testing.assert_array_equal(mrml.array_from_volume(node), series.hu)  # HU, int16 stored -> float32
        np.testing.assert_array_equal(mrml.hu_in_series_order(node, series), series.hu)
        assert node.GetSpacing() == pytest.approx((0.7, 0.75, 2.5))


def test_array_round_trip_keeps_geometry_and_shows_the_soft_tissue_window(mrml_scene, tmp_path):
    source, _ = load(mrml_scene, tmp_path / "in", hu=phantom_hu(3, 16))
    hu = mrml.array_from_volume(source) + 5.0
    derived = mrml.add_volume_from_array(hu, source, "ct denoised")
    assert derived.GetName() == "ct denoised"
    assert mrml.array_from_volume(derived).dtype == np.float32
    np.testing.assert_array_equal(mrml.array_from_volume(derived), hu)
    for getter in ("GetSpacing", "GetOrigin"):
        assert getattr(derived, getter)() == getattr(source, getter)()
    display = derived.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel(), display.GetAutoWindowLevel()) == (400, 40, 0)
    copy = mrml.array_from_volume(derived)
    copy[:] = 0  # the engine gets a copy, never the node's memory
    assert mrml.array_from_volume(derived).max() > 0
    again = mrml.add_volume_from_array(hu * 0, source, "ignored", derived)
    assert again is derived and mrml.array_from_volume(derived).max() == 0
    with pytest.raises(LDCTDenoiseError, match="shape"):
        mrml.add_volume_from_array(hu[:2], source, "wrong")


def test_compare_layout_xml_has_one_labelled_axial_view_per_method_in_rows_of_three():
    labels = ["input", "cpce2d-mayo-d45", "gaussian", "nlm", "a<b&c"]
    root = ElementTree.fromstring(mrml.compare_layout_xml(labels))
    rows = root.findall("./item/layout")
    assert [len(row.findall("./item/view")) for row in rows] == [3, 2]
    views = root.findall(".//view")
    assert [view.get("singletontag") for view in views] == mrml.compare_view_names(5)
    assert [view.find("./property[@name='viewlabel']").text for view in views] == labels
    assert {view.find("./property[@name='orientation']").text for view in views} == {"Axial"}
    with pytest.raises(LDCTDenoiseError, match="at least one"):
        mrml.compare_layout_xml([])


def test_compare_layout_creates_linked_views_each_showing_its_volume(mrml_scene, tmp_path):
    source, _ = load(mrml_scene, tmp_path / "in", hu=phantom_hu(3, 16))
    volumes = [source] + [mrml.add_volume_from_array(mrml.array_from_volume(source) + k, source, f"v{k}")
                          for k in (1, 2)]
    slice_nodes = mrml.show_compare_layout(mrml_scene.scene, ["input", "one", "two"])
    layout_node = mrml_scene.layout_logic.GetLayoutNode()
    assert layout_node.GetViewArrangement() == mrml.COMPARE_LAYOUT_ID
    assert [node.GetLayoutLabel() for node in slice_nodes] == ["input", "one", "two"]
    composites = mrml.link_views(slice_nodes, volumes)
    assert [c.GetBackgroundVolumeID() for c in composites] == [v.GetID() for v in volumes]
    assert all(c.GetLinkedControl() and c.GetForegroundVolumeID() is None for c in composites)
    # A second comparison with fewer methods rewrites the same layout id.
    assert len(mrml.show_compare_layout(mrml_scene.scene, ["input", "one"])) == 2
    assert "one" in layout_node.GetLayoutDescription(mrml.COMPARE_LAYOUT_ID)
    assert "two" not in layout_node.GetLayoutDescription(mrml.COMPARE_LAYOUT_ID)


def test_field_of_view_keeps_the_view_aspect_ratio():
    assert mrml.fit_field_of_view(40, 10, (400, 300)) == pytest.approx((40, 30))
    assert mrml.fit_field_of_view(10, 30, (400, 300)) == pytest.approx((40, 30))
    width, height = mrml.fit_field_of_view(25, 25, (300, 600))
    assert (width, height) == pytest.approx((25, 50))


def test_roi_zoom_centres_every_view_on_the_roi_and_fits_it(mrml_scene, tmp_path):
    source, _ = load(mrml_scene, tmp_path / "in", hu=phantom_hu(4, 32))
    slice_nodes = mrml.show_compare_layout(mrml_scene.scene, ["a", "b"])
    mrml.link_views(slice_nodes, [source, source])
    roi = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter(3.0, -4.0, -35.0)
    roi.SetSize(12.0, 6.0, 2.0)
    mrml.zoom_to_roi(slice_nodes, roi)
    aspect = VIEW_DIMENSIONS[0] / VIEW_DIMENSIONS[1]
    for node in slice_nodes:
        width, height, _ = node.GetFieldOfView()
        assert width / height == pytest.approx(aspect)
        assert width == pytest.approx(12.0 * mrml.ZOOM_MARGIN) and height >= 6.0 * mrml.ZOOM_MARGIN
        slice_to_ras = node.GetSliceToRAS()
        assert [slice_to_ras.GetElement(row, 3) for row in range(3)] == pytest.approx([3.0, -4.0, -35.0])


def test_roi_ras_box_becomes_the_engine_pixel_box_on_the_right_slice(mrml_scene, tmp_path):
    # A flipped column direction makes RAS and IJK disagree in sign: the conversion must still pick the voxels.
    node, series = load(mrml_scene, tmp_path / "in", hu=phantom_hu(5, 32), orientation=(1, 0, 0, 0, -1, 0))
    center, size = ras_box_of_voxels(node, (4, 6, 3), (13, 9, 3))
    roi = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter(*center)
    roi.SetSize(*(size + np.array([0.2, 0.2, 1.0])))  # a little more than the voxel centres: same voxels
    pixel_roi, slice_index = mrml.roi_pixel_box(roi, node)
    assert (pixel_roi.x, pixel_roi.y, pixel_roi.width, pixel_roi.height, slice_index) == (4, 6, 10, 4, 3)
    hu = mrml.array_from_volume(node)
    assert roi_stats(hu[slice_index], pixel_roi)["mean"] == pytest.approx(float(hu[3, 6:10, 4:14].mean()))
    roi.SetSize(1000.0, 1000.0, 1.0)  # larger than the volume: clipped to it
    clipped, _ = mrml.roi_pixel_box(roi, node)
    assert (clipped.x, clipped.y, clipped.width, clipped.height) == (0, 0, 32, 32)
    roi.SetCenter(500.0, 500.0, 500.0)
    roi.SetSize(1.0, 1.0, 1.0)
    with pytest.raises(LDCTDenoiseError, match="does not overlap"):
        mrml.roi_pixel_box(roi, node)


def test_source_files_follow_the_instance_uids_slicer_records(mrml_scene, tmp_path):
    node, series = load(mrml_scene, tmp_path / "in", hu=phantom_hu(3, 16))
    lookup = {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID): str(path)
              for path in series.source_files}
    assert mrml.source_files(node, lookup.get) == series.source_files
    lookup.pop(mrml.instance_uids(node)[1])
    with pytest.raises(LDCTDenoiseError, match="1 of the 3 source files"):
        mrml.source_files(node, lambda uid: lookup.get(uid, ""))
    in_memory = mrml.add_volume_from_array(mrml.array_from_volume(node), node, "made here")
    with pytest.raises(LDCTDenoiseError, match="not loaded from DICOM"):
        mrml.source_files(in_memory, lookup.get)


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, -1, 0)])
def test_export_writes_each_slice_s_hu_onto_its_own_source_slice(mrml_scene, tmp_path, orientation):
    node, series = load(mrml_scene, tmp_path / "in", hu=phantom_hu(4, 16), orientation=orientation)
    expected = series.hu + 100.0 * np.arange(4)[:, None, None]  # each slice gets its own offset
    denoised = mrml.add_volume_from_array(expected, node, "denoised")
    before = snapshot(tmp_path / "in")
    files = mrml.export_derived_series(denoised, series.source_files, tmp_path / "out",
                                       derivation_description="test", series_description_suffix=" [test]")
    assert snapshot(tmp_path / "in") == before
    written = read_series(files)
    np.testing.assert_array_equal(written.hu, expected)
    assert written.spacing == series.spacing and written.origin == series.origin
    np.testing.assert_array_equal(written.slice_positions, series.slice_positions)
    np.testing.assert_array_equal(written.direction, series.direction)
    assert pydicom.dcmread(files[0]).SeriesDescription.endswith("[test]")


def test_export_of_a_compressed_series_reads_no_source_pixels(mrml_scene, tmp_path, monkeypatch):
    """Slicer decoded the pixels when it loaded the series; the export needs only the headers, so a JPEG Lossless
    source exports inside Slicer, where the engine's DICOM decoders are not installed."""
    node, series = load(mrml_scene, tmp_path / "in", hu=phantom_hu(3, 16), transfer_syntax=JPEGLosslessSV1)
    expected = series.hu + 7.0

    def no_decoder(self):
        raise RuntimeError("no pixel decoder in this Python")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    files = mrml.export_derived_series(mrml.add_volume_from_array(expected, node, "denoised"), series.source_files,
                                       tmp_path / "out", derivation_description="test", series_description_suffix="")
    monkeypatch.undo()
    np.testing.assert_array_equal(read_series(files).hu, expected)


def test_export_reorders_a_volume_whose_ijk_axes_run_against_the_series(mrml_scene, tmp_path):
    """Slicer's IJK order is not guaranteed to be the engine's: a k axis reversed (and i flipped) still lands each
    slice on its source slice, because axes are matched by direction in patient space."""
    node, series = load(mrml_scene, tmp_path / "in", hu=phantom_hu(4, 16))
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    flipped = vtk.vtkMatrix4x4()
    flipped.DeepCopy(ijk_to_ras)
    for axis, count in ((0, 16), (2, 4)):  # reverse i and k: new index 0 is old index count - 1
        for row in range(3):
            flipped.SetElement(row, 3, ijk_to_ras.GetElement(row, 3) + (count - 1) * ijk_to_ras.GetElement(row, axis))
            flipped.SetElement(row, axis, -ijk_to_ras.GetElement(row, axis))
        ijk_to_ras.DeepCopy(flipped)
    reversed_node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "reversed")
    slicer.util.updateVolumeFromArray(reversed_node, series.hu[::-1, :, ::-1].copy())
    reversed_node.SetIJKToRASMatrix(flipped)
    np.testing.assert_array_equal(mrml.hu_in_series_order(reversed_node, series), series.hu)
    files = mrml.export_derived_series(reversed_node, series.source_files, tmp_path / "out",
                                       derivation_description="test", series_description_suffix="")
    np.testing.assert_array_equal(read_series(files).hu, series.hu)


def test_export_refuses_a_resampled_or_moved_volume(mrml_scene, tmp_path):
    node, series = load(mrml_scene, tmp_path / "in", hu=phantom_hu(3, 16))
    rotated = mrml.add_volume_from_array(mrml.array_from_volume(node), node, "rotated")
    directions = vtk.vtkMatrix4x4()
    directions.SetElement(0, 0, np.cos(0.3))
    directions.SetElement(0, 1, -np.sin(0.3))
    directions.SetElement(1, 0, np.sin(0.3))
    directions.SetElement(1, 1, np.cos(0.3))
    rotated.SetIJKToRASDirectionMatrix(directions)
    with pytest.raises(LDCTDenoiseError, match="not aligned"):
        mrml.hu_in_series_order(rotated, series)
    moved = mrml.add_volume_from_array(mrml.array_from_volume(node), node, "moved")
    moved.SetOrigin(np.array(node.GetOrigin()) + 10.0)
    with pytest.raises(LDCTDenoiseError, match="does not start"):
        mrml.hu_in_series_order(moved, series)
    cropped = mrml.add_volume_from_array(mrml.array_from_volume(node), node, "cropped")
    slicer.util.updateVolumeFromArray(cropped, mrml.array_from_volume(node)[:2])
    with pytest.raises(LDCTDenoiseError, match="voxels"):
        mrml.hu_in_series_order(cropped, series)
