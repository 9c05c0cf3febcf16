"""The MRML bridge under the real slicer-core wheel: geometry round trips, heatmap node, table, plot,
compare layout, and the overlay rendered offscreen by vtkMRMLSliceLogic."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")

from EDIQALib.assessment import QualityResult  # noqa: E402
from EDIQALib import scene as bridge  # noqa: E402
from conftest import ct_image  # noqa: E402
from vtk.util import numpy_support  # noqa: E402


def _render_slice(slice_logic, width: int, height: int) -> np.ndarray:
    """Composite the view's layers offscreen, as Slicer does, into an RGBA array ``(height, width, 4)``
    (row 0 at the top)."""
    slice_logic.GetSliceNode().SetDimensions(width, height, 1)
    slice_logic.FitSliceToAll()
    producer = slice_logic.GetImageDataConnection().GetProducer()
    producer.Update()
    out = producer.GetOutput()
    rgba = numpy_support.vtk_to_numpy(out.GetPointData().GetScalars()).reshape(height, width, -1)
    return rgba[::-1].copy()


def _scene():
    scene = slicer.vtkMRMLScene()
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    return scene, colors


def _node_from_image(scene, image: sitk.Image, name="ct"):
    """A volume node loaded as Slicer loads a file: the image written to NRRD and read by Slicer's own volume
    reader (its LPS file geometry turned into IJK→RAS by Slicer, not by the bridge under test)."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    with tempfile.TemporaryDirectory() as folder:
        sitk.WriteImage(image, str(Path(folder) / "image.nrrd"))
        reader = slicer.vtkMRMLVolumeArchetypeStorageNode()
        reader.SetFileName(str(Path(folder) / "image.nrrd"))
        assert reader.ReadData(node)
    node.SetName(name)
    return node


def _slice_logics(scene, names) -> list:
    """One slice view's logic per name, as Slicer's layout manager makes them for a layout's views."""
    logics = []
    for name in names:
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.AddSliceNode(name)
        logics.append(logic)
    return logics


def _result(name, heat, scores):
    return QualityResult(name=name, score=float(np.nanmean([s for s in scores if s is not None])),
                         slice_scores=scores, assessable=[s is not None for s in scores], heatmap=heat,
                         method="EDIQA", model={}, seconds=0.0, shape=(), spacing=(), modality="ct")


def test_oblique_anisotropic_volume_round_trips():
    scene, _ = _scene()
    image = ct_image(slices=3, size=80, spacing=(0.6, 0.8, 2.5), origin=(-40.0, 12.5, 7.0))
    node = _node_from_image(scene, image)
    vol = bridge.volume_from_node(node)
    assert vol.modality == "ct" and vol.name == "ct"
    np.testing.assert_allclose(vol.array, sitk.GetArrayFromImage(image), atol=1e-4)
    np.testing.assert_allclose(vol.geometry.spacing, image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(vol.geometry.origin, image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(vol.geometry.direction, image.GetDirection(), atol=1e-6)
    # one voxel, two routes to physical space: SimpleITK (LPS) and the node's IJK→RAS
    ras = bridge.ijk_to_ras(node) @ np.array([5, 7, 2, 1.0])
    lps = np.array(image.TransformIndexToPhysicalPoint((5, 7, 2)))
    np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-5)  # RAS: x and y of LPS negated


def test_heatmap_node_table_and_plot():
    scene, _ = _scene()
    node = _node_from_image(scene, ct_image(slices=3, size=80))
    heat = np.full((3, 80, 80), np.nan, np.float32)
    heat[:, 20:60, 20:60] = 0.7
    result = _result("ct", heat, [0.4, None, 0.3])
    heat_node = bridge.add_heatmap_node(scene, result, node)
    np.testing.assert_allclose(bridge.ijk_to_ras(heat_node), bridge.ijk_to_ras(node))
    stored = bridge.array_from_node(heat_node)
    assert stored.shape == (3, 80, 80) and np.isnan(stored[0, 0, 0]) and stored[0, 30, 30] == pytest.approx(0.7)
    display = heat_node.GetDisplayNode()
    assert display.GetColorNode().GetName() == bridge.COLOR_NODE_NAME and display.GetApplyThreshold()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx((0.0, 0.7))  # its own 99th pct
    shared = bridge.add_heatmap_node(scene, result, node, display_max=0.35)  # a comparison's common scale
    assert shared.GetDisplayNode().GetWindowLevelMax() == pytest.approx(0.35)
    table = bridge.add_results_table(scene, result, node)
    assert table.GetNumberOfRows() == 3
    assert np.isnan(table.GetTable().GetColumnByName("score").GetValue(1))
    chart = bridge.add_score_plot(scene, [table, table], ["a", "b"])
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = chart.GetNthPlotSeriesNode(0)
    assert series.GetTableNodeID() == table.GetID() and series.GetYColumnName() == "score"
    assert series.GetColor() != chart.GetNthPlotSeriesNode(1).GetColor()  # the lines were all black


def test_a_node_of_another_kind_named_as_the_colour_table_is_not_taken_for_it():
    """The heatmap took any node named "EDIQA local quality" (a user's text note) as its colour table, and
    was shown with none."""
    scene, _ = _scene()
    note = slicer.vtkMRMLTextNode()
    note.SetName(bridge.COLOR_NODE_NAME)
    scene.AddNode(note)
    table = bridge.quality_color_node(scene)
    assert table.IsA("vtkMRMLColorTableNode") and bridge.quality_color_node(scene) is table


def test_assessing_again_with_the_same_model_fills_the_same_nodes():
    scene, _ = _scene()
    node = _node_from_image(scene, ct_image(slices=2, size=80))
    users = bridge.fill_volume_node(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct quality (EDIQA student-lite)"),
                                    np.zeros((2, 80, 80)), node)  # a user's node that happens to bear the name
    first = _result("ct", np.full((2, 80, 80), 0.2, np.float32), [0.2, 0.2])
    first.model = {"name": "student-lite"}

    def shown(result):
        heat = bridge.add_heatmap_node(scene, result, node)
        table = bridge.add_results_table(scene, result, node)
        chart = bridge.add_score_plot(scene, [table], [node.GetName()])
        return heat, table, chart

    nodes = shown(first)
    count = scene.GetNumberOfNodes()
    assert nodes[0] is not users and nodes[0].GetName() != users.GetName()
    again = _result("ct", np.full((2, 80, 80), 0.5, np.float32), [0.5, None])
    again.model = {"name": "student-lite"}
    assert [n.GetID() for n in shown(again)] == [n.GetID() for n in nodes]
    assert scene.GetNumberOfNodes() == count  # nothing added: no second heatmap, display node, table or line
    assert bridge.array_from_node(nodes[0])[1, 40, 40] == pytest.approx(0.5)
    assert nodes[0].GetDisplayNode().GetWindowLevelMax() == pytest.approx(0.5)
    assert np.isnan(nodes[1].GetTable().GetColumnByName("score").GetValue(1)) and nodes[1].GetNumberOfRows() == 2
    assert nodes[2].GetNumberOfPlotSeriesNodes() == 1
    assert bridge.array_from_node(users).max() == 0.0  # the user's node untouched
    other = _result("ct", np.full((2, 80, 80), 0.3, np.float32), [0.3, 0.3])
    other.model = {"name": "my-student"}
    kept = slicer.vtkMRMLScalarVolumeNode()  # a user's copy of the heatmap, its original deleted
    kept.Copy(nodes[0])
    scene.AddNode(kept)
    scene.RemoveNode(nodes[0])
    refilled = bridge.add_heatmap_node(scene, again, node)
    assert refilled.GetID() != kept.GetID() and bridge.array_from_node(kept)[1, 40, 40] == pytest.approx(0.5)
    nodes = (refilled, *nodes[1:])
    assert shown(other)[0].GetID() != nodes[0].GetID()  # another model's result stands beside it
    assert bridge.array_from_node(nodes[0])[1, 40, 40] == pytest.approx(0.5)
    twin = _node_from_image(scene, ct_image(slices=2, size=80))  # another volume of the same name
    assert twin.GetName() == node.GetName()
    heat = bridge.add_heatmap_node(scene, again, twin)
    assert heat.GetID() != nodes[0].GetID() and bridge.array_from_node(nodes[0])[1, 40, 40] == pytest.approx(0.5)
    assert bridge.add_results_table(scene, again, twin).GetID() != nodes[1].GetID()


def test_a_saved_scene_s_slice_scores_are_found_for_their_volume(tmp_path):
    """The panel shows a loaded scene's score and worst slice from the result table saved with it."""
    first, _ = _scene()
    ct = _node_from_image(first, ct_image(slices=3, size=80), name="ct")
    other = _node_from_image(first, ct_image(slices=3, size=80), name="other")
    result = _result("ct", np.full((3, 80, 80), 0.2, np.float32), [0.3, None, 0.1])
    table = bridge.add_results_table(first, result, ct)
    table.AddDefaultStorageNode()  # saved with the scene as Slicer saves it: a TSV file and its schema
    table.GetStorageNode().SetFileName(str(tmp_path / "scores.tsv"))
    assert table.GetStorageNode().WriteData(table)
    first.SetURL(str(tmp_path / "saved.mrml"))
    assert first.Commit()
    scene, _ = _scene()
    scene.SetURL(str(tmp_path / "saved.mrml"))
    assert scene.Import()
    loaded = scene.GetFirstNodeByName("ct")
    label, scores = bridge.saved_slice_scores(scene, loaded)
    assert label == "EDIQA" and scores == pytest.approx([0.3, None, 0.1])
    assert bridge.saved_slice_scores(scene, scene.GetFirstNodeByName("other")) is None
    assert bridge.saved_slice_scores(first, other) is None


def test_a_scene_imported_into_another_keeps_its_results_apart(tmp_path):
    """An import renumbers the nodes whose IDs the scene already holds: a result found by its input's ID
    was the imported volume's when another volume took that ID."""
    first, _ = _scene()
    ct = _node_from_image(first, ct_image(slices=2, size=80), name="ct")
    result = _result("ct", np.full((2, 80, 80), 0.2, np.float32), [0.2, 0.2])
    saved = bridge.add_results_table(first, result, ct), bridge.add_heatmap_node(first, result, ct)
    first.SetURL(str(tmp_path / "first.mrml"))
    assert first.Commit()
    scene, _ = _scene()
    other = _node_from_image(scene, ct_image(slices=2, size=80), name="other")
    users = scene.AddNewNodeByClass("vtkMRMLTableNode", "my table")
    assert (other.GetID(), users.GetID()) == (ct.GetID(), saved[0].GetID())  # the IDs the imported nodes had
    scene.SetURL(str(tmp_path / "first.mrml"))
    assert scene.Import()
    imported = scene.GetFirstNodeByName("ct")
    table = scene.GetFirstNodeByName(saved[0].GetName())
    assert imported.GetID() != ct.GetID() and table.GetID() != saved[0].GetID()  # renumbered
    shown = bridge.add_results_table(scene, result, other), bridge.add_heatmap_node(scene, result, other)
    assert [n.GetName() for n in shown] == ["other slice scores (EDIQA)", "other quality (EDIQA)"]
    assert table.GetID() not in {n.GetID() for n in shown} and users.GetNumberOfColumns() == 0
    tables = scene.GetNumberOfNodesByClass("vtkMRMLTableNode")
    assert bridge.add_results_table(scene, result, imported).GetID() == table.GetID()  # ct's own, refilled
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == tables


def test_a_result_that_no_longer_fits_its_volume_adds_nothing():
    from EDIQALib.errors import InputError

    scene, _ = _scene()
    node = _node_from_image(scene, ct_image(slices=3, size=80))
    result = _result("ct", np.full((2, 80, 80), 0.2, np.float32), [0.2, 0.2])  # assessed with 2 slices
    count = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=r"ct: its voxels changed while it was assessed \(2 × 80 × 80 assessed, "
                                         r"3 × 80 × 80 now\)"):
        bridge.add_heatmap_node(scene, result, node)
    assert scene.GetNumberOfNodes() == count


def test_a_node_assessed_in_process_gets_the_file_s_scores_and_its_result_nodes(tmp_path):
    import EDIQALib

    scene, _ = _scene()
    image = ct_image(slices=2, size=200, spacing=(0.7, 0.7, 2.5))
    node = _node_from_image(scene, image)
    voxels = bridge.array_from_node(node).copy()
    result, heat_node, table = bridge.assess_node(scene, node, device="cpu")
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    from_file = EDIQALib.assess(tmp_path / "ct.nrrd", device="cpu")
    assert result.score == pytest.approx(from_file.score, abs=1e-6) and result.score > 0
    assert result.slice_scores == pytest.approx(from_file.slice_scores, abs=1e-6)
    stored = bridge.array_from_node(heat_node)
    inside = np.isfinite(result.heatmap)
    assert inside.any() and np.allclose(stored[inside], result.heatmap[inside], atol=1e-6)
    assert np.isnan(stored[~inside]).all()  # as in heatmap.nrrd: no value, no number
    np.testing.assert_allclose(bridge.ijk_to_ras(heat_node), bridge.ijk_to_ras(node))
    assert table.GetNumberOfRows() == 2
    assert table.GetTable().GetColumnByName("score").GetValue(0) == pytest.approx(result.slice_scores[0])
    assert np.array_equal(bridge.array_from_node(node), voxels)  # the input untouched


def test_a_node_that_cannot_be_assessed_is_one_clear_error_and_mr_warns():
    import vtk

    from EDIQALib.errors import InputError

    scene, _ = _scene()
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="empty: the volume node holds no image data"):
        bridge.assess_node(scene, empty, device="cpu")
    colour = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "colour")
    data = vtk.vtkImageData()
    data.SetDimensions(100, 100, 1)
    data.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    colour.SetAndObserveImageData(data)
    with pytest.raises(InputError, match="colour: 3 values per voxel"):
        bridge.assess_node(scene, colour, device="cpu")
    flat = _node_from_image(scene, ct_image(slices=1, size=128), name="flat")
    flat.SetSpacing(0.9, 0.9, 0.0)  # SimpleITK's RuntimeError, with an address of its own, before
    with pytest.raises(InputError, match=r"flat: its spacing \(0.9, 0.9, 0 mm\) or its position is zero"):
        bridge.assess_node(scene, flat, device="cpu")
    skew = _node_from_image(scene, ct_image(slices=1, size=128), name="skew")
    matrix = bridge.ijk_to_ras(skew)
    matrix[:3, 1] = matrix[:3, 0]  # rows along the columns: ITK's RuntimeError, before
    bridge._set_ijk_to_ras(skew, matrix)
    with pytest.raises(InputError, match="skew: two of its axes point the same way"):
        bridge.assess_node(scene, skew, device="cpu")
    mr = _node_from_image(scene, ct_image(slices=1, size=200, spacing=(0.7, 0.7, 2.5)) + 1000, name="mr")
    with pytest.warns(UserWarning, match="mr: MR; .* not validated"):
        result, _, _ = bridge.assess_node(scene, mr, device="cpu", modality="mr")
    assert result.modality == "mr" and result.slice_scores[0] is not None and 0 < result.score < 1


def test_a_result_s_heatmap_is_no_image_to_assess_and_the_scene_s_heatmaps_are_found(tmp_path):
    """The panel's volume selectors offer the heatmaps too: one assessed as a CT gave a meaningless score."""
    from EDIQALib.errors import InputError

    scene, _ = _scene()
    node = _node_from_image(scene, ct_image(slices=1, size=80))
    heat = bridge.add_heatmap_node(scene, _result("ct", np.full((1, 80, 80), 0.5, np.float32), [0.5]), node)
    with pytest.raises(InputError, match=r"ct quality \(EDIQA\) is a quality heatmap made by EDIQA, not an image"):
        bridge.export_node(heat, tmp_path / "heat.nrrd")
    with pytest.raises(InputError, match="is a quality heatmap made by EDIQA"):
        bridge.volume_from_node(heat)
    assert not (tmp_path / "heat.nrrd").exists()
    assert [h.GetID() for h in bridge.result_heatmaps(scene)] == [heat.GetID()]


def test_compare_sets_one_composite_node_per_view():
    scene, _ = _scene()
    layout = slicer.vtkMRMLLayoutNode()
    scene.AddNode(layout)
    far = (300.0, -200.0, 150.0)  # far from the origin, where a new view looks
    vols = [_node_from_image(scene, ct_image(slices=1, size=80, seed=s, origin=far), f"v{s}") for s in (3, 4, 5)]
    heats = [bridge.add_heatmap_node(scene, _result("v", np.full((1, 80, 80), 0.5, np.float32), [0.5]), v)
             for v in vols]
    logics = _slice_logics(scene, ("EDIQA1", "EDIQA2", "EDIQA3"))
    bridge.show_compare_layout(layout, ["EDIQA1", "EDIQA2"])  # an earlier comparison of two
    bridge.show_compare_layout(layout, ["EDIQA1", "EDIQA2", "EDIQA3"])  # this one: the layout grows a view
    assert layout.GetViewArrangement() == 7501
    assert "EDIQA3" in layout.GetLayoutDescription(7501)
    composites = bridge.setup_compare(logics, vols, heats, opacity=0.3)
    assert len({c.GetID() for c in composites}) == 3
    for c, v, h, logic in zip(composites, vols, heats, logics):
        assert c.GetBackgroundVolumeID() == v.GetID() and c.GetForegroundVolumeID() == h.GetID()
        assert c.GetLinkedControl() and c.GetForegroundOpacity() == pytest.approx(0.3)
        centre = bridge.ijk_to_ras(v) @ [39.5, 39.5, 0, 1]
        view_centre = np.array([logic.GetSliceNode().GetXYToRAS().GetElement(r, 3) for r in range(3)]) + (
            np.array([[logic.GetSliceNode().GetXYToRAS().GetElement(r, c) for c in range(2)] for r in range(3)])
            @ np.array(logic.GetSliceNode().GetDimensions()[:2]) / 2)
        assert np.allclose(view_centre[:2], centre[:2], atol=1.0)  # fitted: the volume in the middle of its view


def test_a_scene_saved_with_a_comparison_shown_reopens_in_its_layout(tmp_path):
    """A scene file keeps the layout's number, not its description: reopened where no comparison had been
    made, the views were empty."""
    def scene_with_layout():
        scene, _ = _scene()
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
        layout_logic = slicer.vtkMRMLLayoutLogic()  # as the application's layout manager has it
        layout_logic.SetMRMLScene(scene)
        return scene, layout_logic

    saved, logic = scene_with_layout()
    bridge.show_compare_layout(logic.GetLayoutNode(), bridge.compare_view_names(3))
    bridge.show_compare_layout(logic.GetLayoutNode(), bridge.compare_view_names(2))  # the views of 3 stay in the scene
    saved.SetURL(str(tmp_path / "compared.mrml"))
    assert saved.Commit()
    scene, logic = scene_with_layout()
    assert not bridge.restore_compare_layout(logic.GetLayoutNode())  # not shown: nothing to restore
    scene.SetURL(str(tmp_path / "compared.mrml"))
    assert scene.Import()
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == bridge.COMPARE_LAYOUT_ID and not layout.GetCurrentLayoutDescription()
    assert bridge.restore_compare_layout(layout)
    assert layout.GetCurrentLayoutDescription() == bridge.compare_layout_xml(["EDIQA1", "EDIQA2"])
    assert not bridge.restore_compare_layout(layout)  # registered now
    # loaded where this session showed a comparison of three: the scene's own two
    bridge.show_compare_layout(layout, bridge.compare_view_names(3))
    scene.SetURL(str(tmp_path / "compared.mrml"))
    assert scene.Import() and bridge.restore_compare_layout(layout)
    assert layout.GetCurrentLayoutDescription() == bridge.compare_layout_xml(["EDIQA1", "EDIQA2"])


def test_the_bridge_imports_no_pytorch():
    """Slicer restores a loaded scene's compare layout with the bridge, also where PyTorch is not installed."""
    import subprocess
    import sys

    code = "import sys, EDIQALib.scene; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_the_compare_layout_keeps_its_views_and_shows_the_chart_in_its_own_plot_view():
    scene, _ = _scene()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    layout_logic = slicer.vtkMRMLLayoutLogic()  # makes a layout's views, as the application's layout manager does
    layout_logic.SetMRMLScene(scene)
    layout = layout_logic.GetLayoutNode()
    bridge.show_compare_layout(layout, ["EDIQA1", "EDIQA2"])
    node = _node_from_image(scene, ct_image(slices=1, size=80))
    table = bridge.add_results_table(scene, _result("ct", np.full((1, 80, 80), 0.5, np.float32), [0.5]), node)
    chart = bridge.add_score_plot(scene, [table, table], ["a", "b"])
    bridge.show_compare_chart(scene, chart)
    assert layout.GetViewArrangement() == 7501  # Slicer's ShowChartInLayout had switched it to Four-Up Plot
    views = {scene.GetNodesByClass("vtkMRMLSliceNode").GetItemAsObject(i).GetLayoutName()
             for i in range(scene.GetNodesByClass("vtkMRMLSliceNode").GetNumberOfItems())}
    assert {"EDIQA1", "EDIQA2"} <= views
    plot_view = scene.GetNodesByClass("vtkMRMLPlotViewNode").GetItemAsObject(0)
    assert plot_view.GetLayoutName() == bridge.COMPARE_PLOT_VIEW and plot_view.GetPlotChartNodeID() == chart.GetID()


def test_overlay_shows_in_every_view_and_the_worst_slice_is_found_under_the_input_s_transform():
    import vtk

    scene, _ = _scene()
    node = _node_from_image(scene, ct_image(slices=3, size=80))
    heat = bridge.add_heatmap_node(scene, _result("ct", np.full((3, 80, 80), 0.5, np.float32), [0.5] * 3), node)
    logics = _slice_logics(scene, ("Red", "Yellow", "EDIQA1"))
    bridge.show_overlay_in_all_views(scene, node, heat, 0.4)
    bridge.set_heatmap_opacity(scene, {heat.GetID()}, 0.7)
    for logic in logics:
        composite = logic.GetSliceCompositeNode()
        assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()) == (node.GetID(), heat.GetID())
        assert composite.GetForegroundOpacity() == pytest.approx(0.7)
    local = bridge.ijk_to_ras(node) @ [39.5, 39.5, 2, 1]
    assert bridge.slice_center_ras(node, 2) == pytest.approx(tuple(local[:3]))
    moved = slicer.vtkMRMLLinearTransformNode()  # a registration: the volume is shown 25 mm right, 40 mm up
    scene.AddNode(moved)
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 25.0)
    shift.SetElement(2, 3, 40.0)
    moved.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(moved.GetID())
    assert bridge.slice_center_ras(node, 2) == pytest.approx(tuple(local[:3] + [25.0, 0.0, 40.0]))


def test_heatmap_sits_under_the_input_s_transform():
    scene, _ = _scene()
    node = _node_from_image(scene, ct_image(slices=1, size=80))
    moved = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(moved)
    node.SetAndObserveTransformNodeID(moved.GetID())
    heat = bridge.add_heatmap_node(scene, _result("v", np.full((1, 80, 80), 0.5, np.float32), [0.5]), node)
    assert heat.GetTransformNodeID() == moved.GetID()
    assert bridge.ijk_to_ras(heat).tolist() == bridge.ijk_to_ras(node).tolist()


@pytest.mark.parametrize("tag, on, values, modality", [
    ("MR", "item", (0.0, 800.0), "mr"), ("MR", "node", (0.0, 800.0), "mr"), (None, None, (-1000.0, 400.0), "ct")])
def test_an_exported_node_reads_back_with_its_geometry_and_modality(tmp_path, tag, on, values, modality):
    from EDIQALib.io import read_volume

    scene, _ = _scene()
    image = ct_image(slices=2, size=80, spacing=(0.8, 0.9, 3.0))
    array = np.linspace(*values, sitk.GetArrayFromImage(image).size, dtype=np.float32)
    node = _node_from_image(scene, _like(image, array.reshape(sitk.GetArrayFromImage(image).shape)))
    if on == "item":  # where Slicer's DICOM import puts it: the series' subject hierarchy item
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        hierarchy.SetItemAttribute(hierarchy.CreateItem(hierarchy.GetSceneItemID(), node), "DICOM.Modality", tag)
    elif on == "node":
        node.SetAttribute("DICOM.Modality", tag)
    vol = read_volume(bridge.export_node(node, tmp_path / "node.nrrd"))
    header = (tmp_path / "node.nrrd").read_bytes().split(b"\n\n", 1)[0]
    assert b"encoding: raw" in header  # read once by the child: compressing it kept the panel waiting
    assert vol.modality == modality and bridge.volume_from_node(node).modality == modality
    assert np.allclose(vol.geometry.origin, image.GetOrigin()) and np.allclose(vol.spacing, image.GetSpacing())
    assert np.allclose(vol.geometry.direction, image.GetDirection())
    assert np.array_equal(vol.array, array.reshape(vol.array.shape))


def _like(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def test_overlay_renders_colours_where_the_map_is_high_and_grey_where_hidden(tmp_path):
    scene, _ = _scene()
    image = ct_image(slices=1, size=128, spacing=(0.7, 0.7, 1.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    node = _node_from_image(scene, image)
    display = slicer.vtkMRMLScalarVolumeDisplayNode()
    scene.AddNode(display)
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(-1000, 400)
    node.SetAndObserveDisplayNodeID(display.GetID())
    heat = np.full((1, 128, 128), np.nan, np.float32)
    heat[0, :64, :64] = 0.95  # rows 0..63 (anterior), columns 0..63 (patient right): a high value; elsewhere none
    heat_node = bridge.add_heatmap_node(scene, _result("ct", heat, [0.9]), node)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLScene(scene)
    logic.AddSliceNode("Red")
    assert logic.GetSliceNode().SetOrientation("Axial")  # as Slicer's red view
    bridge.show_overlay(logic.GetSliceCompositeNode(), node, heat_node, opacity=0.5)
    rgba = _render_slice(logic, 512, 512).astype(int)  # 4 view pixels a voxel: between voxels shows
    r, g, b = rgba[..., 0], rgba[..., 1], rgba[..., 2]
    coloured = (b - r > 30) & (b - g > 30)  # blue-tinted: the heatmap's high end
    grey = (np.abs(r - g) <= 2) & (np.abs(g - b) <= 2)
    assert not (r - g > 40).any()  # no red rim where the map meets hidden voxels (as interpolated, it had one)
    # an axial view is radiological, as overlay.png (report.edge_letters): anterior up, the patient's right
    # on the view's left, so the map's quadrant is the view's top-left one and the other three are grey
    halves = {"top": slice(0, 256), "bottom": slice(256, 512), "left": slice(0, 256), "right": slice(256, 512)}
    quadrants = {(v, h): (halves[v], halves[h]) for v in ("top", "bottom") for h in ("left", "right")}
    assert coloured[quadrants["top", "left"]].mean() > 0.8
    # the colour of overlay.png's map at its top, half over the grey image: Slicer shows the figures' colours
    from matplotlib import colormaps

    from EDIQALib.choices import HEATMAP_CMAP

    top = 255 * np.array(colormaps[HEATMAP_CMAP](1.0)[:3])
    inside = quadrants["top", "left"]
    assert np.median((g - r)[inside][coloured[inside]]) == pytest.approx(0.5 * (top[1] - top[0]), abs=4)
    assert np.median((g - b)[inside][coloured[inside]]) == pytest.approx(0.5 * (top[1] - top[2]), abs=4)
    for where in [q for q in quadrants if q != ("top", "left")]:
        assert coloured[quadrants[where]].mean() < 0.02 and grey[quadrants[where]].mean() > 0.95, where
    import matplotlib.pyplot as plt
    plt.imsave(tmp_path / "overlay-slicer.png", rgba[..., :3].astype(np.uint8))  # what a user would see


def _tilted(degrees: float) -> tuple:
    """The direction of an axial stack tilted about the left-right axis (a tilted gantry, an oblique MR)."""
    t = np.radians(degrees)
    return (1, 0, 0, 0, np.cos(t), -np.sin(t), 0, np.sin(t), np.cos(t))


def _share_on_slice(view, node, k: int) -> float:
    """The share of an 80 mm field around the view's centre that lies on slice ``k`` of ``node``."""
    to_ijk = np.linalg.inv(bridge.ijk_to_ras(node))
    slice_to_ras = slicer.util.arrayFromVTKMatrix(view.GetSliceToRAS())
    ks = [round((to_ijk @ slice_to_ras @ [x, y, 0, 1])[2]) for x in np.linspace(-40, 40, 9) for y in np.linspace(-40, 40, 9)]
    return float(np.mean(np.array(ks) == k))


def test_the_worst_slice_of_an_oblique_stack_is_shown_whole_and_an_axial_one_turns_no_view():
    """The views jumped to the slice's centre but stayed axial: on a stack tilted 20°, the red view cut
    through five slices and showed 11 % of the one it was sent to."""
    scene, _ = _scene()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    views = {}
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        [logic] = _slice_logics(scene, [name])
        assert logic.GetSliceNode().SetOrientation(orientation)
        views[name] = logic.GetSliceNode()
    straight = _node_from_image(scene, ct_image(slices=10, size=80, spacing=(0.8, 0.8, 3.0)), "straight")
    bridge.show_slice(scene, straight, 7)
    assert views["Red"].GetOrientation() == "Axial" and _share_on_slice(views["Red"], straight, 7) == 1.0
    tilted = _node_from_image(scene, ct_image(slices=10, size=80, spacing=(0.8, 0.8, 3.0), direction=_tilted(20)),
                              "tilted")
    heat = bridge.add_heatmap_node(scene, _result("v", np.full((10, 80, 80), 0.5, np.float32), [0.5] * 10), tilted)
    bridge.setup_compare(_slice_logics(scene, ["EDIQA1"]), [tilted], [heat])  # a compare view, out of the layout
    bridge.show_slice(scene, tilted, 7)  # (once turned onto the slices, it took the turn from the red view)
    assert _share_on_slice(views["Red"], tilted, 7) == 1.0
    centre = slicer.util.arrayFromVTKMatrix(views["Red"].GetSliceToRAS())[:3, 3]
    assert np.allclose(centre, bridge.slice_center_ras(tilted, 7), atol=1e-4)
    assert [views[n].GetOrientation() for n in ("Yellow", "Green")] == ["Sagittal", "Coronal"]  # the others untouched


def test_compare_views_show_the_slices_that_were_scored():
    """Every compare view was axial: two sagittal series were shown across the slices that were scored."""
    scene, _ = _scene()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    sagittal = (0, 0, 1, 1, 0, 0, 0, 1, 0)  # LPS: columns along P, rows along S, slices along L
    vols = [_node_from_image(scene, ct_image(slices=4, size=80, seed=s, direction=d), f"v{s}")
            for s, d in ((3, sagittal), (4, _tilted(15)))]
    heats = [bridge.add_heatmap_node(scene, _result("v", np.full((4, 80, 80), 0.5, np.float32), [0.5] * 4), v)
             for v in vols]
    logics = _slice_logics(scene, ("EDIQA1", "EDIQA2"))
    bridge.setup_compare(logics, vols, heats)
    for logic, volume in zip(logics, vols):
        k_axis = bridge.ijk_to_ras(volume)[:3, 2] / np.linalg.norm(bridge.ijk_to_ras(volume)[:3, 2])
        view_normal = slicer.util.arrayFromVTKMatrix(logic.GetSliceNode().GetSliceToRAS())[:3, 2]
        assert abs(k_axis @ view_normal) == pytest.approx(1.0, abs=1e-6), volume.GetName()
    assert logics[0].GetSliceNode().GetOrientation() != "Axial"


def test_label_maps_tensors_and_a_sequence_s_frame_are_refused_in_one_line():
    import vtk

    from EDIQALib.errors import InputError

    scene, _ = _scene()
    image = ct_image(slices=2, size=80)
    labels = _node_from_image(scene, image, "labels")
    as_label_map = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "segments")
    as_label_map.SetAndObserveImageData(labels.GetImageData())
    with pytest.raises(InputError, match=r"segments is a label map \(segment numbers\), not an image to assess"):
        bridge.volume_from_node(as_label_map, modality="ct")  # scored 0.45 as a CT before
    tensors = scene.AddNewNodeByClass("vtkMRMLDiffusionTensorVolumeNode", "dti")
    data = vtk.vtkImageData()
    data.SetDimensions(80, 80, 2)
    values = vtk.vtkFloatArray()
    values.SetNumberOfComponents(9)
    values.SetNumberOfTuples(80 * 80 * 2)
    data.GetPointData().SetTensors(values)
    tensors.SetAndObserveImageData(data)
    with pytest.raises(InputError, match="dti: a tensor per voxel; one value"):
        bridge.volume_from_node(tensors)
    sequences = slicer.vtkSlicerSequencesLogic()
    sequences.SetMRMLScene(scene)
    phases = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "phases")
    for k in range(2):
        frame = _node_from_image(scene, ct_image(slices=1, size=80, seed=k), f"f{k}")
        phases.SetDataNodeAtValue(frame, str(k))
        scene.RemoveNode(frame)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cardiac")
    browser.SetAndObserveMasterSequenceNodeID(phases.GetID())
    browser.SetSelectedItemNumber(0)
    sequences.UpdateAllProxyNodes()
    with pytest.raises(InputError, match="is the frame that the sequence browser cardiac shows"):
        bridge.volume_from_node(browser.GetProxyNode(phases), modality="ct")
    assert bridge.volume_from_node(labels, modality="ct").array.shape == (2, 80, 80)  # a plain volume still reads
