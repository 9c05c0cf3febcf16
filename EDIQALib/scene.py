"""The MRML bridge: volume nodes ↔ engine volumes, heatmap/table/plot nodes, compare layout, rendering.

Works against real MRML, inside 3D Slicer and with the ``slicer-core`` wheel (Qt-free MRML and
logic), which is how it is tested. Every function takes the scene explicitly. The user's nodes are never
modified, except the display/composite settings this module owns; a result's nodes (heatmap, table,
chart) are filled again in place when the same volume is assessed again by the same model.

Importing it loads no PyTorch (the engine's assessment is imported where it is used): Slicer restores a
loaded scene's compare layout with it, also before PyTorch is installed.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
import slicer
import slicer.util
import vtk
from vtk.util import numpy_support

from .choices import DEFAULT_STUDENT, HEATMAP_CMAP, OVERLAY_OPACITY
from .errors import InputError
from .io import MODALITY_TAG, Volume, volume_from_image

if TYPE_CHECKING:
    from .assessment import QualityResult

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
COLOR_NODE_NAME = "EDIQA local quality"
RESULT_ATTRIBUTE = "EDIQA.Result"  # on the nodes a result fills: what they hold, for the next result to find them
# and, as node references (which a scene import renumbers with the nodes, where IDs written in attributes stay
# as they were): the nodes they are of, and themselves (a copy a user makes of one still refers to the original)
RESULT_INPUT_ROLE = "EDIQAResultOf"
RESULT_SELF_ROLE = "EDIQAResultNode"
DICOM_MODALITY = "DICOM.Modality"  # the attribute of Slicer's DICOM import, on the series' subject hierarchy item
COMPARE_PLOT_VIEW = "EDIQAPlot"  # the compare layout's plot view (its singleton tag and layout name)
COMPARE_VIEW_PREFIX = "EDIQA"  # the compare layout's slice views: EDIQA1, EDIQA2, ...
Scene = slicer.vtkMRMLScene  # the types of the functions' scene and volume nodes
VolumeNode = slicer.vtkMRMLScalarVolumeNode
COMPARE_LAYOUT_ID = 7501
COMPARE_VIEWS_ATTRIBUTE = "EDIQA.CompareViews"  # on the layout node (saved with the scene): the comparison's views


def ijk_to_ras(node: VolumeNode) -> np.ndarray:
    """The node's 4×4 IJK→RAS matrix."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def _set_ijk_to_ras(node: VolumeNode, matrix: np.ndarray) -> None:
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))


def node_shape(node: VolumeNode) -> tuple[int, int, int]:
    """The node's voxel grid as ``(slices, rows, columns)``, without copying its voxels.

    Raises:
        InputError: the node holds no voxels, or more than one value per voxel (a vector or colour volume).
    """
    image = node.GetImageData()
    name = node.GetName() or "the volume"
    if image is not None and image.GetPointData().GetTensors() is not None:
        raise InputError(f"{name}: a tensor per voxel; one value (a scalar volume) is needed")
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"{name}: the volume node holds no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"{name}: {image.GetNumberOfScalarComponents()} values per voxel; one (a scalar volume) is needed")
    nx, ny, nz = image.GetDimensions()
    return nz, ny, nx


def array_from_node(node: VolumeNode) -> np.ndarray:
    """A copy of the node's voxels as ``(slices, rows, columns)``.

    Raises:
        InputError: as :func:`node_shape`.
    """
    shape = node_shape(node)  # of any scalar volume node (slicer.util.arrayFromVolume refuses a streaming one)
    return numpy_support.vtk_to_numpy(node.GetImageData().GetPointData().GetScalars()).reshape(shape).copy()


def image_from_node(node: VolumeNode) -> sitk.Image:
    """The node as a 3-D SimpleITK image (LPS physical space, the same voxels).

    Raises:
        InputError: the node is a heatmap of an EDIQA result or a label map (no image to assess), or the frame
            a sequence browser shows (its voxels change with the frame, its result's would not), or its
            IJK-to-RAS matrix has a zero or non-finite spacing, or two of its axes point the same way (no
            image has either).
    """
    if node.GetAttribute(RESULT_ATTRIBUTE):
        raise InputError(f"{node.GetName()} is a quality heatmap made by EDIQA, not an image to assess; "
                         "choose the volume it is of")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"{node.GetName()} is a label map (segment numbers), not an image to assess; "
                         "choose the image it labels")
    scene = node.GetScene()
    browsers = [b.GetName() for b in (_nodes(scene, "vtkMRMLSequenceBrowserNode") if scene is not None else [])
                if b.IsProxyNodeID(node.GetID())]
    if browsers:
        raise InputError(f"{node.GetName()} is the frame that the sequence browser {browsers[0]} shows, which "
                         "changes with the frame; clone it (Data module, right-click > Clone) and assess the clone")
    matrix = ijk_to_ras(node)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    if not (np.all(np.isfinite(matrix)) and np.all(spacing > 0)):
        raise InputError(f"{node.GetName()}: its spacing ({', '.join(f'{s:g}' for s in spacing)} mm) or its "
                         "position is zero or not a number; set the volume's spacing in Volumes > Volume Information")
    direction_lps = LPS_TO_RAS @ (matrix[:3, :3] / spacing)
    if abs(np.linalg.det(direction_lps)) < 1e-6:
        raise InputError(f"{node.GetName()}: two of its axes point the same way (its IJK-to-RAS directions are "
                         "not independent); set its orientation in Volumes > Volume Information")
    image = sitk.GetImageFromArray(array_from_node(node).astype(np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(v) for v in LPS_TO_RAS @ matrix[:3, 3]))
    image.SetDirection(tuple(float(v) for v in direction_lps.ravel()))
    return image


def dicom_modality(node: VolumeNode) -> str | None:
    """The DICOM modality of a volume node (``CT``, ``MR``…), where it has one: the ``DICOM.Modality``
    attribute of its subject hierarchy item, where Slicer's DICOM import puts it, or of the node itself."""
    scene = node.GetScene()
    hierarchy = scene.GetFirstNodeByClass("vtkMRMLSubjectHierarchyNode") if scene is not None else None
    item = hierarchy.GetItemByDataNode(node) if hierarchy is not None else 0
    return (hierarchy.GetItemAttribute(item, DICOM_MODALITY) if item else "") or node.GetAttribute(DICOM_MODALITY)


def export_node(node: VolumeNode, path: str | Path) -> Path:
    """Write the node's voxels and geometry to ``path`` (NRRD) for the engine's child process, with its
    DICOM modality (:func:`dicom_modality`) as the file's modality tag, which the engine reads as it reads
    a DICOM file's. Uncompressed: the file is read once, and compressing a 512 × 512 × 300 volume took
    about 6 s, while the panel waited. The node is not touched.

    Raises:
        InputError: as :func:`image_from_node`.
    """
    image = image_from_node(node)
    modality = dicom_modality(node)
    if modality:
        image.SetMetaData(MODALITY_TAG, modality)
    sitk.WriteImage(image, str(path), False)
    return Path(path)


def volume_from_node(node: VolumeNode, modality: str | None = None) -> Volume:
    """An engine :class:`Volume` of a scalar volume node (checked like a file; the node is not touched)."""
    return volume_from_image(image_from_node(node), node.GetName() or "volume", dicom_modality(node), modality)


def _result_inputs(node) -> list[str | None]:
    return [node.GetNthNodeReferenceID(RESULT_INPUT_ROLE, i) for i in range(node.GetNumberOfNodeReferences(RESULT_INPUT_ROLE))]


def result_node(scene: Scene, class_name: str, name: str, key: str, inputs: list) -> slicer.vtkMRMLNode:
    """The node of ``class_name`` that an earlier result filled with ``key`` (what it holds) of ``inputs``
    (the nodes it is of, referenced by the node, since two volumes may share a name and a scene imported
    into another renumbers its nodes), to be filled again, or else a new one called ``name`` (made
    unique beside other nodes of that name; a user's node, a copy of a result's included, is never reused). Assessing a volume again with
    the same model thus updates its result where it is shown, instead of adding one more heatmap volume to
    memory and one more table and chart to the scene. (Result nodes of scenes saved by earlier releases name
    their input by an ID in an attribute, which an import may have made another node's: they are kept as
    they are, and a new result is shown in new nodes.)"""
    ids = [n.GetID() for n in inputs]
    nodes = scene.GetNodesByClass(class_name)
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if (node.GetAttribute(RESULT_ATTRIBUTE) == key and node.GetNodeReferenceID(RESULT_SELF_ROLE) == node.GetID()
                and _result_inputs(node) == ids):
            return node
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    node.SetAttribute(RESULT_ATTRIBUTE, key)
    node.SetNodeReferenceID(RESULT_SELF_ROLE, node.GetID())
    for i, node_id in enumerate(ids):
        node.SetNthNodeReferenceID(RESULT_INPUT_ROLE, i, node_id)
    return node


def fill_volume_node(node: VolumeNode, array: np.ndarray, like: VolumeNode) -> VolumeNode:
    """Make ``node`` (a scalar volume node) hold ``array`` (``(slices, rows, cols)``) on ``like``'s exact
    grid, under ``like``'s transform; returns ``node``."""
    slicer.util.updateVolumeFromArray(node, np.asarray(array, np.float32).reshape(node_shape(like)))
    _set_ijk_to_ras(node, ijk_to_ras(like))
    node.SetAndObserveTransformNodeID(like.GetTransformNodeID())  # where ``like`` sits, under its transform
    return node


def _label(result: QualityResult) -> str:
    """What made a result, as its nodes' names say it: method and model, e.g. ``EDIQA student-lite``."""
    return f"{result.method} {result.model.get('name', '')}".strip()


def quality_color_node(scene: Scene) -> slicer.vtkMRMLColorTableNode:
    """The heatmap's colour table (red = lesions missed → yellow → blue = found), the colours of the figures
    (:data:`~EDIQALib.choices.HEATMAP_CMAP`), created once per scene (a node of another kind that bears its
    name is not it)."""
    existing = scene.GetNodesByClassByName("vtkMRMLColorTableNode", COLOR_NODE_NAME)
    if existing.GetNumberOfItems():
        return existing.GetItemAsObject(0)
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(COLOR_NODE_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(256)
    from matplotlib import colormaps  # here: a scene's other work needs no plotting library

    for i, (r, g, b, _) in enumerate(colormaps[HEATMAP_CMAP](np.linspace(0.0, 1.0, 256))):
        node.SetColor(i, f"q{i}", float(r), float(g), float(b), 1.0)
    scene.AddNode(node)
    return node


def check_result_fits(result: QualityResult, input_node: VolumeNode) -> None:
    """Raises InputError unless ``result`` is of ``input_node``'s present voxel grid (a volume whose
    voxels were replaced while it was assessed has another)."""
    now = node_shape(input_node)
    if now != result.heatmap.shape:
        raise InputError(f"{input_node.GetName()}: its voxels changed while it was assessed "
                         f"({' × '.join(map(str, result.heatmap.shape))} assessed, "
                         f"{' × '.join(map(str, now))} now); assess it again")


def add_heatmap_node(scene: Scene, result: QualityResult, input_node: VolumeNode,
                     display_max: float | None = None) -> VolumeNode:
    """The result's heatmap as a volume node on the input's grid (:func:`result_node`: the one an earlier
    result of this model on this volume filled, or a new one), shown red→blue from 0 to ``display_max``
    (by default :func:`~EDIQALib.report.heatmap_display_max` of this result, as in ``overlay.png``; a
    comparison passes its common one); voxels without a value hold NaN, as in ``heatmap.nrrd``, and are
    hidden.

    Raises:
        InputError: as :func:`check_result_fits` (nothing is added to the scene).
    """
    from .report import heatmap_display_max

    check_result_fits(result, input_node)
    node = result_node(scene, "vtkMRMLScalarVolumeNode", f"{input_node.GetName()} quality ({_label(result)})",
                       f"heatmap by {_label(result)}", [input_node])
    fill_volume_node(node, result.heatmap, input_node)
    display = node.GetDisplayNode() or scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    display.SetAndObserveColorNodeID(quality_color_node(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, heatmap_display_max([result]) if display_max is None else display_max)
    display.AutoThresholdOff()
    display.SetThreshold(0.0, 1.0)
    display.ApplyThresholdOn()  # NaN lies outside any threshold: hidden
    display.SetInterpolate(False)  # interpolated, a hidden voxel's value drew a red rim along the map's edges
    node.SetAndObserveDisplayNodeID(display.GetID())
    return node


def assess_node(scene: Scene, node: VolumeNode, model: str = DEFAULT_STUDENT, device: str = "auto",
                modality: str | None = None) -> tuple[QualityResult, VolumeNode, slicer.vtkMRMLTableNode]:
    """Assess a volume node in this process, as ``ediqa assess`` does a file, and show the result in the
    scene: for scripts and headless Slicer (the module's panel runs the engine in a child process instead,
    so that it stays responsive). Returns ``(result, heatmap node, table node)``; the heatmap and table are
    those of :func:`add_heatmap_node` and :func:`add_results_table`. What ``ediqa assess`` prints as
    warnings (an MR input, no assessable slice) comes as Python warnings, as from
    :func:`~EDIQALib.assessment.assess`. The input node is not touched.

    Raises:
        InputError: the node is no volume that can be assessed (as a bad file is for ``ediqa assess``).
    """
    from .assessment import assess

    result = assess(volume_from_node(node, modality), model=model, device=device)
    return result, add_heatmap_node(scene, result, node), add_results_table(scene, result, node)


def show_overlay(composite_node: slicer.vtkMRMLSliceCompositeNode, background_node: VolumeNode,
                 heatmap_node: VolumeNode, opacity: float = OVERLAY_OPACITY) -> None:
    """Background = the image, foreground = its heatmap at ``opacity``."""
    composite_node.SetBackgroundVolumeID(background_node.GetID())
    composite_node.SetForegroundVolumeID(heatmap_node.GetID())
    composite_node.SetForegroundOpacity(float(opacity))


def _nodes(scene, class_name: str) -> list:
    nodes = scene.GetNodesByClass(class_name)
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


def show_overlay_in_all_views(scene: Scene, background_node: VolumeNode, heatmap_node: VolumeNode,
                              opacity: float = OVERLAY_OPACITY) -> None:
    """:func:`show_overlay` in every slice view of the scene (through their composite nodes, so that it
    works without the application's layout manager, as in headless Slicer)."""
    for composite in _nodes(scene, "vtkMRMLSliceCompositeNode"):
        show_overlay(composite, background_node, heatmap_node, opacity)


def set_heatmap_opacity(scene: Scene, heatmap_ids: set[str], opacity: float) -> None:
    """The overlay's opacity in every slice view whose foreground is one of the heatmaps ``heatmap_ids``."""
    for composite in _nodes(scene, "vtkMRMLSliceCompositeNode"):
        if composite.GetForegroundVolumeID() in heatmap_ids:
            composite.SetForegroundOpacity(float(opacity))


def slice_center_ras(node: VolumeNode, k: int) -> tuple[float, float, float]:
    """The world (RAS) position of the centre of slice ``k`` of a volume node, under its transforms: where
    to jump the views to show that slice."""
    nx, ny, _ = node.GetImageData().GetDimensions()
    local = ijk_to_ras(node) @ [(nx - 1) / 2, (ny - 1) / 2, k, 1.0]
    to_world = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(node.GetParentTransformNode(), None, to_world)
    return tuple(float(v) for v in to_world.TransformPoint(local[:3]))


def _slice_normal_ras(node: VolumeNode) -> np.ndarray:
    """The unit direction, in world (RAS) space under the node's transforms, from one of its slices to the next."""
    step = np.subtract(slice_center_ras(node, 1), slice_center_ras(node, 0))
    return step / np.linalg.norm(step)


def _normal(view: slicer.vtkMRMLSliceNode) -> np.ndarray:
    return slicer.util.arrayFromVTKMatrix(view.GetSliceToRAS())[:3, 2]


def show_slice(scene: Scene, node: VolumeNode, k: int) -> None:
    """Centre every slice view of the scene on slice ``k`` of ``node`` (:func:`slice_center_ras`). A view
    that faces the volume's slices (within 45°) but aslant (an oblique or tilted stack) is turned onto them,
    so that it shows that slice itself, not a cut through its neighbours; the others keep their planes."""
    normal = _slice_normal_ras(node)
    for view in _nodes(scene, "vtkMRMLSliceNode"):
        if np.sqrt(0.5) < abs(float(normal @ _normal(view))) < 1 - 1e-6:
            view.RotateToVolumePlane(node)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *slice_center_ras(node, k), slicer.vtkMRMLSliceNode.CenteredJumpSlice)


def add_results_table(scene: Scene, result: QualityResult, input_node: VolumeNode) -> slicer.vtkMRMLTableNode:
    """A table node (:func:`result_node`) with one row per slice of ``input_node``'s result: slice index,
    score (NaN when not assessable), assessable."""
    table = result_node(scene, "vtkMRMLTableNode", f"{input_node.GetName()} slice scores ({_label(result)})",
                        f"slice scores by {_label(result)}", [input_node])
    table.RemoveAllColumns()
    columns = [("slice", vtk.vtkIntArray()), ("score", vtk.vtkDoubleArray()), ("assessable", vtk.vtkIntArray())]
    for name, array in columns:
        array.SetName(name)
    for k, (score, ok) in enumerate(zip(result.slice_scores, result.assessable)):
        columns[0][1].InsertNextValue(k)
        columns[1][1].InsertNextValue(np.nan if score is None else float(score))
        columns[2][1].InsertNextValue(int(ok))
    for _, array in columns:
        table.AddColumn(array)
    return table


def saved_slice_scores(scene: Scene, input_node: VolumeNode) -> tuple[str, list[float | None]] | None:
    """The per-slice scores (``None``: not assessable) of a result of ``input_node`` that the scene holds in a
    table (:func:`add_results_table`; of this session, or of a saved scene loaded), and what made them
    (e.g. ``EDIQA student-lite``); the first such table's, or ``None`` without one."""
    for table in _nodes(scene, "vtkMRMLTableNode"):
        key = table.GetAttribute(RESULT_ATTRIBUTE) or ""
        if (key.startswith("slice scores by ") and table.GetNodeReferenceID(RESULT_SELF_ROLE) == table.GetID()
                and _result_inputs(table) == [input_node.GetID()]):
            scores, assessable = (table.GetTable().GetColumnByName(c) for c in ("score", "assessable"))
            if scores is None or assessable is None:  # emptied by hand
                continue
            return key.removeprefix("slice scores by "), [float(scores.GetValue(k)) if assessable.GetValue(k) else None
                                                          for k in range(table.GetNumberOfRows())]
    return None


def add_score_plot(scene: Scene, tables: list[slicer.vtkMRMLTableNode], names: list[str]
                   ) -> slicer.vtkMRMLPlotChartNode:
    """A plot chart (:func:`result_node`, one per set of ``tables``) with one line (score vs slice) per
    table, called by ``names``, each in its own colour (those of ``compare.png``); returns the chart node."""
    from matplotlib import colormaps

    chart = result_node(scene, "vtkMRMLPlotChartNode", f"EDIQA slice scores: {', '.join(names)}",
                        "chart of slice scores", tables)
    for series in [chart.GetNthPlotSeriesNode(k) for k in range(chart.GetNumberOfPlotSeriesNodes())]:
        scene.RemoveNode(series)  # the chart's own lines, of the result it showed before
    chart.RemoveAllPlotSeriesNodeIDs()
    chart.SetXAxisTitle("slice")
    chart.SetYAxisTitle("quality score")
    for k, (table, name) in enumerate(zip(tables, names)):
        series = slicer.vtkMRMLPlotSeriesNode()
        series.SetName(scene.GenerateUniqueName(name))
        scene.AddNode(series)
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("slice")
        series.SetYColumnName("score")
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetColor(*colormaps["tab10"](k % 10)[:3])  # all black by default
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


def compare_layout_xml(view_names: list[str]) -> str:
    """A Slicer layout description with one axial slice view per name, side by side, over the plot view
    :data:`COMPARE_PLOT_VIEW` for the comparison's slice scores."""
    items = "".join(
        f'<item><view class="vtkMRMLSliceNode" singletontag="{n}"><property name="orientation" action="default">'
        f'Axial</property><property name="viewlabel" action="default">{i + 1}</property></view></item>'
        for i, n in enumerate(view_names))
    plot = (f'<item><view class="vtkMRMLPlotViewNode" singletontag="{COMPARE_PLOT_VIEW}">'
            '<property name="viewlabel" action="default">P</property></view></item>')
    return f'<layout type="vertical"><item><layout type="horizontal">{items}</layout></item>{plot}</layout>'


def compare_view_names(count: int) -> list[str]:
    """The compare layout's slice view names for ``count`` volumes."""
    return [f"{COMPARE_VIEW_PREFIX}{i + 1}" for i in range(count)]


def show_compare_layout(layout_node: slicer.vtkMRMLLayoutNode, view_names: list[str]) -> None:
    """Register the side-by-side layout of ``view_names`` (or update it, when an earlier comparison had
    other views) and select it, so that its views exist before :func:`setup_compare` fills them."""
    if not layout_node.IsLayoutDescription(COMPARE_LAYOUT_ID):
        layout_node.AddLayoutDescription(COMPARE_LAYOUT_ID, compare_layout_xml(view_names))
    else:
        layout_node.SetLayoutDescription(COMPARE_LAYOUT_ID, compare_layout_xml(view_names))
    layout_node.SetAttribute(COMPARE_VIEWS_ATTRIBUTE, " ".join(view_names))
    layout_node.SetViewArrangement(COMPARE_LAYOUT_ID)


def restore_compare_layout(layout_node: slicer.vtkMRMLLayoutNode) -> bool:
    """After a scene saved while a comparison was shown is loaded: register the compare layout again, with
    that comparison's views, and show it. A scene file keeps the layout's number but not its description,
    so that the views were empty (or those of this session's last comparison). Returns whether it
    restored the layout."""
    names = (layout_node.GetAttribute(COMPARE_VIEWS_ATTRIBUTE) or "").split()
    if layout_node.GetViewArrangement() != COMPARE_LAYOUT_ID or not names:
        return False
    if layout_node.IsLayoutDescription(COMPARE_LAYOUT_ID) and layout_node.GetLayoutDescription(COMPARE_LAYOUT_ID) == compare_layout_xml(names):
        return False
    show_compare_layout(layout_node, names)
    return True


def result_heatmaps(scene: Scene) -> list[VolumeNode]:
    """The heatmap nodes of the EDIQA results in the scene (those of a loaded scene among them)."""
    return [node for node in _nodes(scene, "vtkMRMLScalarVolumeNode")
            if (node.GetAttribute(RESULT_ATTRIBUTE) or "").startswith("heatmap by ")]


def setup_compare(slice_logics: list[slicer.vtkMRMLSliceLogic], volumes: list[VolumeNode],
                  heatmaps: list[VolumeNode], opacity: float = OVERLAY_OPACITY) -> list[slicer.vtkMRMLSliceCompositeNode]:
    """Put each volume with its heatmap in its own view of the compare layout (:func:`show_compare_layout`),
    turned onto the volume's slices (those that were scored: sagittal ones for a sagittal stack) and fitted to
    it, all views linked. ``slice_logics`` are the views' logics (Slicer's layout manager makes
    them in the application; tests make them with ``vtkMRMLSliceLogic.AddSliceNode``). Returns the
    composite nodes."""
    composites = []
    for logic, volume, heat in zip(slice_logics, volumes, heatmaps):
        composite = logic.GetSliceCompositeNode()
        show_overlay(composite, volume, heat, opacity)
        composite.SetLinkedControl(True)
        view = logic.GetSliceNode()
        view.SetOrientation(("Sagittal", "Coronal", "Axial")[int(np.argmax(np.abs(_slice_normal_ras(volume))))])
        view.RotateToVolumePlane(volume)  # onto the slices themselves, where they are aslant
        logic.FitSliceToAll()  # a new view looks at the origin, where the volume may not be
        composites.append(composite)
    return composites


def show_compare_chart(scene: Scene, chart: slicer.vtkMRMLPlotChartNode) -> None:
    """Show ``chart`` in the compare layout's plot view (:data:`COMPARE_PLOT_VIEW`), which
    :func:`show_compare_layout` made. (Slicer's ``ShowChartInLayout`` would switch to a layout of its own,
    away from the compare views.)"""
    for view in _nodes(scene, "vtkMRMLPlotViewNode"):
        if view.GetLayoutName() == COMPARE_PLOT_VIEW:
            view.SetPlotChartNodeID(chart.GetID())
