"""EDIQA: task-based, no-reference image quality in 3D Slicer (thin Qt layer over EDIQALib)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# EDIQALib sits beside this module's folder (source tree) or beside this file (installed extension)
ENGINE_ROOT = next((c for c in (Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent)
                    if (c / "EDIQALib").is_dir()), Path(__file__).resolve().parent)
if str(ENGINE_ROOT) not in sys.path:
    sys.path.insert(0, str(ENGINE_ROOT))
# the bundled models (EDIQALib.choices.MODELS_DIR), found without importing the engine: the panel must
# open before PyTorch is installed, so that "Assess quality" can offer to install it
BUNDLED_MODELS = ENGINE_ROOT / "Resources" / "Models"

# scalar volume nodes that hold no image to assess, hidden by the volume selectors (as in the .ui)
NOT_IMAGES = ("vtkMRMLLabelMapVolumeNode", "vtkMRMLTensorVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode")
TEACHER_CHOICE = "Teacher (mD2IQA, slow)"
USER_MODELS = Path(qt.QStandardPaths.writableLocation(qt.QStandardPaths.AppDataLocation) or tempfile.gettempdir()) / "EDIQA" / "Models"
PACKAGES = {"SimpleITK": "SimpleITK", "scikit-image": "skimage", "PyWavelets": "pywt", "pycocotools": "pycocotools",
            "safetensors": "safetensors", "matplotlib": "matplotlib", "pydicom": "pydicom", "scipy": "scipy"}  # pip name: module


class EDIQA(ScriptedLoadableModule):
    """Module description (the Slicer module template)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "EDIQA"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["EDIQA developers"]
        self.parent.helpText = (
            "Task-based, no-reference image quality for CT and MR: a score per volume and per slice and a "
            "local detectability heatmap. <b>Assess quality</b> runs the fast student; the teacher "
            "(mD2IQA) inserts synthetic lesions and measures how well a trained detector finds them. "
            "Scores: 0 (lesions missed) to 1 (all found); compare within a series. See the "
            '<a href="https://github.com/ediqa/SlicerEDIQA#in-3d-slicer">module documentation</a>.')
        self.parent.acknowledgementText = (
            "After W. Lee, G. E. Gold, J.-H. Choi, \"Efficient Deep-Detector Image Quality Assessment Based on "
            "Knowledge Distillation\", IEEE Trans. Instrum. Meas. 73 (2024) 4501715, doi:10.1109/TIM.2023.3346519. "
            "Sample data: pydicom test files (MIT licence).")
        slicer.app.connect("startupCompleted()", registerSampleData)
        slicer.app.connect("startupCompleted()", observeSceneLoads)


def observeSceneLoads():
    """Restore the compare layout of a scene saved while it was shown, whenever a scene is loaded (a scene
    file keeps the layout's number but not the layout), whether or not the module's panel was opened."""
    slicer.mrmlScene.AddObserver(slicer.mrmlScene.EndImportEvent, _restoreCompareLayout)


def _restoreCompareLayout(caller, event) -> None:
    layout_manager = slicer.app.layoutManager()
    if layout_manager is None:  # headless: no views to show
        return
    from EDIQALib.scene import restore_compare_layout  # imports no PyTorch

    restore_compare_layout(layout_manager.layoutLogic().GetLayoutNode())


def registerSampleData():
    """The bundled head CT slice in the Sample Data module."""
    import SampleData

    root = Path(__file__).resolve().parent
    sample = next(p for p in (root / "Resources" / "SampleData" / "head-ct-slice.nrrd",
                              root.parent / "Resources" / "SampleData" / "head-ct-slice.nrrd") if p.exists())
    # with its checksum: Sample Data keeps a copy in its cache, and would load an earlier release's sample
    checksum = "SHA256:" + hashlib.sha256(sample.read_bytes()).hexdigest()
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="EDIQA", sampleName="EDIQAHeadCT", thumbnailFileName=str(root / "Resources" / "Icons" / "EDIQA.png"),
        uris=sample.as_uri(), fileNames="head-ct-slice.nrrd", nodeNames="EDIQAHeadCT", checksums=checksum,
        loadFileType="VolumeFile")


@parameterNodeWrapper
class EDIQAParameterNode:
    """The module's settings, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    modality: Annotated[str, Choice(["auto", "ct", "mr"])] = "auto"  # auto: the DICOM tag, or CT's HU range
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.45  # EDIQALib.choices.OVERLAY_OPACITY (not imported at load)
    realizations: Annotated[int, WithinRange(1, 1000)] = 100
    repeats: Annotated[int, WithinRange(1, 50)] = 5
    seed: Annotated[int, WithinRange(0, 1_000_000)] = 0  # the CLI takes no negative seed
    epochs: Annotated[int, WithinRange(1, 1000)] = 30
    learningRate: Annotated[float, WithinRange(1e-6, 0.1)] = 1e-3  # nor a learning rate of 0
    model: str = ""  # the model list's choice, as the list names it (the teacher too; "": none chosen yet)


class EDIQAWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: assess, compare, relabel, retrain — each a background ``ediqa`` process with cancel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._runner = None
        self._installing = False  # while the engine's dependencies install (Slicer handles clicks meanwhile)
        self._running_button = None
        self._on_done = None
        self._workdir = None
        self._unfinished = None  # a folder the running job fills, removed unless it finishes (a retraining's run)
        self._names: dict[str, str] = {}  # the running job's exported files: the names of their nodes
        self._last_args: list[str] = []
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._poll)
        self._polled = False  # the running job was polled once: its button cancels it from then on
        self._heatmap_ids: set[str] = set()  # of the heatmap nodes this panel shows (for the opacity slider)
        self._slice_scores = None  # of the result shown (its worst slice is where the button goes)
        self._assessed = None  # the volume it is of

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/EDIQA.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = EDIQALogic()
        self._fill_models()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self.onNodeRemoved)
        self.ui.assessButton.connect("clicked(bool)", self.onAssess)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.relabelButton.connect("clicked(bool)", self.onRelabel)
        self.ui.retrainButton.connect("clicked(bool)", self.onRetrain)
        self.ui.worstSliceButton.connect("clicked(bool)", self.onWorstSlice)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacity)
        self.ui.compareSelector.connect("checkedNodesChanged()", self._update_buttons)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChosen)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._update_buttons)

    def onSceneStartClose(self, caller, event) -> None:
        """Assessing and comparing end with the scene whose volumes they read; relabelling and retraining,
        which read folders, go on."""
        if self._running_button in (self.ui.assessButton, self.ui.compareButton):
            self._cancel()
            self.ui.statusLabel.text = "Cancelled: the scene was closed."
        elif self._runner is None:
            self.ui.statusLabel.text = ""
        self._slice_scores = self._assessed = None  # their nodes leave with the scene
        self._heatmap_ids.clear()
        self.ui.scoreLabel.text = "—"
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event) -> None:
        if self._parameterNode is not None:  # a scene loaded into the parameter node shown
            self._choose_saved_model()
        self._restore_saved_result()

    def _restore_saved_result(self) -> None:
        """A loaded scene's heatmaps answer the opacity slider, as those of this session do; where no result
        is shown, the input volume's result saved with the scene gives its score and worst slice. On a scene
        loaded while the panel is open, and when the panel opens (on a scene loaded before)."""
        from EDIQALib.scene import result_heatmaps, saved_slice_scores  # neither imports PyTorch, nor a
        from EDIQALib.scoring import score_text, volume_score  # package that Slicer lacks

        self._heatmap_ids.update(h.GetID() for h in result_heatmaps(slicer.mrmlScene))
        node = self._parameterNode.inputVolume if self._parameterNode else None
        saved = saved_slice_scores(slicer.mrmlScene, node) if node is not None and self._assessed is None else None
        if saved is None:
            return
        made_by, scores = saved
        self._slice_scores, self._assessed = scores, node
        score = score_text(volume_score(scores))
        self.ui.scoreLabel.text = f"{node.GetName()}: {score} ({made_by}, an earlier result)"
        self._update_buttons()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeRemoved(self, caller, event, node) -> None:
        """The result shown goes with its volume (its worst slice is nowhere to go then)."""
        self._heatmap_ids.discard(node.GetID())
        if node is self._assessed:
            self._slice_scores = self._assessed = None
            self.ui.scoreLabel.text = "—"
            self._update_buttons()

    def initializeParameterNode(self) -> None:
        from EDIQALib.scene import RESULT_ATTRIBUTE  # imports no PyTorch

        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            # the first volume the selector offers (it hides hidden nodes and these scalar volume nodes' kinds)
            # that is no result's heatmap
            first = next((n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                          if not any(n.IsA(kind) for kind in NOT_IMAGES) and not n.GetHideFromEditors()
                          and not n.GetAttribute(RESULT_ATTRIBUTE)), None)
            if first:
                self._parameterNode.inputVolume = first
        self._restore_saved_result()

    def setParameterNode(self, node) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._update_buttons)
        self._parameterNode = node
        if self._parameterNode:
            self._choose_saved_model()
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._update_buttons)
            self._update_buttons()

    def _fill_models(self, select: str | None = None) -> None:
        """The model list: bundled and user students, then the teacher; ``select`` (a weights path), or else
        the model chosen before, stays chosen."""
        chosen = select if select is not None else self.ui.modelSelector.currentData
        self.ui.modelSelector.clear()
        for name, path in self.logic.available_students():
            self.ui.modelSelector.addItem(name, path)
        self.ui.modelSelector.addItem(TEACHER_CHOICE, "")
        index = self.ui.modelSelector.findData(chosen) if chosen is not None else -1
        self.ui.modelSelector.setCurrentIndex(max(index, 0))

    def onModelChosen(self, index: int) -> None:
        """The model chosen is kept in the parameter node, saved with the scene, by its name in the list (the
        list is filled by the panel, not bound to it; a path would change with the extension's folder)."""
        if self._parameterNode is not None:
            self._parameterNode.model = self.ui.modelSelector.currentText
        self._update_buttons()

    def _choose_saved_model(self) -> None:
        """The model the parameter node names, chosen in the list where this Slicer has it."""
        saved = self.ui.modelSelector.findText(self._parameterNode.model) if self._parameterNode.model else -1
        if saved >= 0:
            self.ui.modelSelector.setCurrentIndex(saved)

    def _update_buttons(self, *args) -> None:
        """While a job runs, its button (now Cancel) is the only one enabled; otherwise each action is
        enabled when it has its input."""
        self.ui.worstSliceButton.enabled = self._slice_scores is not None
        if self._runner is not None:  # its Cancel from the first poll on: not a second click queued meanwhile
            for button in (self.ui.assessButton, self.ui.compareButton, self.ui.relabelButton, self.ui.retrainButton):
                button.enabled = button is self._running_button and self._polled
            return
        self.ui.assessButton.enabled = bool(self._parameterNode and self._parameterNode.inputVolume)
        # compare runs a student: not the teacher entry of the model list
        self.ui.compareButton.enabled = len(self.ui.compareSelector.checkedNodes()) >= 2 and bool(
            self.ui.modelSelector.currentData)
        self.ui.relabelButton.enabled = self.ui.retrainButton.enabled = True

    # --- background work -------------------------------------------------------------------------
    def _busy(self, button) -> bool:
        """Whether a job runs or the dependencies install; a running job's own button (its Cancel) cancels it."""
        if self._runner is not None:
            if button is self._running_button:
                if self._runner.running:
                    self._cancel()
                else:  # it ended before the click was handled: its results are kept, not thrown away
                    self._poll()
            return True
        return self._installing

    def _ready(self, button) -> bool:
        """Whether ``button``'s action may start: not while a job runs or the dependencies install, and only
        with the engine's dependencies installed (asked for here, before anything imports the engine). The
        install lets Slicer handle clicks: another action, or a closed scene, is checked for after it."""
        if self._busy(button):
            return False
        self._installing = True
        try:
            installed = self.logic.ensure_dependencies()
        finally:
            self._installing = False
        return installed and self._runner is None and self._parameterNode is not None

    def _start(self, button, args: list[str], on_done, unfinished: Path | None = None,
               names: dict[str, str] | None = None) -> None:
        """Run ``ediqa args`` in the background; ``button`` turns into Cancel while it runs. The folder
        ``unfinished``, which the job fills, is removed if the job is cancelled or fails. ``names`` maps the
        files exported for the job to the names of their nodes, for its messages."""
        from EDIQALib.runner import Runner

        runner = Runner(args, python=self.logic.python_executable(), env=self.logic.child_environment(),
                        cwd=ENGINE_ROOT)  # not Slicer's working folder, whose files the child would import
        try:
            runner.start()
        except OSError as exc:  # no Python to run, or (on Windows) a command line over its length limit
            self._remove_workdir()
            slicer.util.errorDisplay(f"Could not start the engine: {exc}")
            return
        self._unfinished = unfinished
        self._names = names or {}
        self._runner = runner
        self._last_args = args
        self._running_button, self._on_done = button, on_done
        self._label = button.text
        button.text = "Cancel"
        if button is self.ui.assessButton:  # not the previous result's score and worst slice beside this job
            self._slice_scores = self._assessed = None
            self.ui.scoreLabel.text = "—"
        self.ui.progressBar.visible = True
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Starting…"
        self._polled = False
        self._timer.start()
        self._update_buttons()

    def _poll(self) -> None:
        if not self._polled:
            self._polled = True
            self._update_buttons()
        for event in self._runner.events():
            self.ui.progressBar.maximum = max(event.total, 1)
            self.ui.progressBar.value = event.done
            self.ui.statusLabel.text = f"{event.stage}: {event.done}/{event.total}"
        if self._runner.running:
            return
        outcome = self._runner.wait()
        self._finish()
        if outcome.cancelled:
            self._remove_unfinished()
            self.ui.statusLabel.text = "Cancelled."
        elif outcome.returncode != 0:
            self._remove_unfinished()
            error = self._in_user_terms(outcome.error or f"it ended with exit code {outcome.returncode}")
            self.ui.statusLabel.text = f"Failed: {error}"
            logging.error(f"EDIQA: {' '.join(self._last_args)} failed:\n{outcome.stderr}")  # in Slicer's log
            slicer.util.errorDisplay(f"EDIQA failed: {error}", detailedText=self._in_user_terms(outcome.stderr))
        else:
            self._unfinished = None
            self.ui.statusLabel.text = "Done." if not outcome.warnings else "Done, with warnings."
            try:  # one dialog, not a traceback: the warnings and the clean-up below still follow
                self._on_done(outcome.result)
            except Exception as exc:  # a result that does not load (a file, a node removed meanwhile)
                self.ui.statusLabel.text = "Done, but the results could not be loaded."
                slicer.util.errorDisplay(f"Could not load the results: {exc}")
        if outcome.warnings and not outcome.cancelled:  # e.g. an MR volume (not validated), or no slice assessable
            slicer.util.warningDisplay("\n".join(self._in_user_terms(w) for w in outcome.warnings))
        self._remove_workdir()  # the results are in the scene now

    def _in_user_terms(self, text: str) -> str:
        """``text`` with the files exported for the job (by path, or by file name) named as the volumes the
        user chose."""
        from EDIQALib.io import MODALITY_OPTIONS

        for path, name in self._names.items():
            text = text.replace(path, name).replace(Path(path).name, name)
        text = text.replace(MODALITY_OPTIONS, "the panel's Modality")
        return text

    def _finish(self) -> None:
        self._timer.stop()
        if self._running_button is not None:
            self._running_button.text = self._label
        self._runner, self._running_button = None, None
        self.ui.progressBar.visible = False
        self._update_buttons()

    def _cancel(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            self._finish()
            self._remove_workdir()
            self._remove_unfinished()
            self.ui.statusLabel.text = "Cancelled."

    def _new_workdir(self, prefix: str) -> Path:
        """A fresh temporary folder for one job's exported inputs and outputs."""
        self._remove_workdir()
        self._workdir = Path(tempfile.mkdtemp(prefix=prefix))
        return self._workdir

    def _remove_workdir(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _remove_unfinished(self) -> None:
        if self._unfinished is not None:
            shutil.rmtree(self._unfinished, ignore_errors=True)
            self._unfinished = None

    # --- actions ---------------------------------------------------------------------------------
    def onAssess(self) -> None:
        if not self._ready(self.ui.assessButton):
            return
        node = self._parameterNode.inputVolume
        if node is None:  # the scene was closed while the dependencies installed
            return
        work = self._new_workdir("EDIQA-")
        exported = self._export([node], work)
        if exported is None:
            return
        [src] = exported
        names = {src: node.GetName()}
        model = self.ui.modelSelector.currentData
        p = self._parameterNode
        if model:
            args = ["assess", src, "--model", model]
        else:
            args = ["teacher", src, "--realizations", str(p.realizations), "--repeats", str(p.repeats), "--seed", str(p.seed)]
        args += [*self._modality_args(), "--device", p.device, "--out", str(work / "out")]
        self._start(self.ui.assessButton, args, lambda _: self._show_result(node, work / "out"), names=names)

    def _modality_args(self) -> list[str]:
        """``--modality`` as chosen in the panel; none for auto (the DICOM tag, or CT's HU range)."""
        modality = self._parameterNode.modality
        return [] if modality == "auto" else ["--modality", modality]

    def _export(self, nodes: list, work: Path) -> list[str] | None:
        """The nodes written for the child process (:meth:`EDIQALogic.export_volumes`), or ``None`` after
        telling the user why they could not be."""
        try:
            return self.logic.export_volumes(nodes, work)
        except Exception as exc:  # VTK, ITK and OS errors alike: one message, and nothing started
            self._remove_workdir()
            slicer.util.errorDisplay(f"Could not export the volume for assessment: {exc}")
            return None

    def _show_result(self, node, out_dir: Path) -> None:
        from EDIQALib.report import volume_score_text

        if node.GetScene() is None:
            self.ui.statusLabel.text = f"{node.GetName()} was removed from the scene while it was assessed."
            return
        result, heat = self.logic.load_result(node, out_dir, self._parameterNode.opacity)
        self._heatmap_ids.add(heat.GetID())
        self._slice_scores, self._assessed = result.slice_scores, node
        text = volume_score_text(result)  # "not assessable", or the score ± the teacher's standard error
        shown = text if result.score != result.score else f"{text} ({result.method})"
        self.ui.scoreLabel.text = f"{node.GetName()}: {shown}"
        self._update_buttons()

    def onOpacity(self, value: float) -> None:
        """The heatmaps' opacity in every view that shows one of them (the compare views included)."""
        if not self._heatmap_ids:  # none yet: the engine's packages may not be installed yet either
            return
        from EDIQALib.scene import set_heatmap_opacity

        set_heatmap_opacity(slicer.mrmlScene, self._heatmap_ids, value)

    def onWorstSlice(self) -> None:
        from EDIQALib.scene import show_slice
        from EDIQALib.scoring import worst_slice

        node = self._assessed  # the volume the result is of, whatever the input selector shows now
        if node is None or self._slice_scores is None:  # removed from the scene meanwhile
            return
        show_slice(slicer.mrmlScene, node, worst_slice(self._slice_scores))

    def onCompare(self) -> None:
        if not self._ready(self.ui.compareButton):
            return
        self._update_buttons()  # volumes unticked, or the teacher chosen, while the dependencies installed
        if not self.ui.compareButton.enabled:
            return
        model = self.ui.modelSelector.currentData  # a student: the button is disabled for the teacher
        nodes = list(self.ui.compareSelector.checkedNodes())
        work = self._new_workdir("EDIQA-compare-")
        sources = self._export(nodes, work)
        if sources is None:
            return
        args = ["compare", *sources, "--model", model, *self._modality_args(), "--device", self._parameterNode.device,
                "--out", str(work / "out")]
        # compare's result names each input's results folder (its file name, made distinct where need be)
        self._start(self.ui.compareButton, args,
                    lambda result: self._show_comparison(nodes, [Path(entry["out"]) for entry in result["inputs"]]),
                    names={src: node.GetName() for src, node in zip(sources, nodes)})

    def _show_comparison(self, nodes: list, folders: list[Path]) -> None:
        """Each compared volume beside its heatmap, but those removed from the scene while the job ran."""
        kept = [(node, folder) for node, folder in zip(nodes, folders) if node.GetScene() is not None]
        if kept:
            heats = self.logic.load_comparison([n for n, _ in kept], [f for _, f in kept], self._parameterNode.opacity)
            self._heatmap_ids.update(h.GetID() for h in heats)
        if len(kept) < len(nodes):
            slicer.util.warningDisplay(f"{len(nodes) - len(kept)} of the compared volumes were removed from the scene "
                                       "while they were assessed: their results are not shown.")

    def onRelabel(self) -> None:
        if self._busy(self.ui.relabelButton):  # its Cancel, whatever the folder field holds now
            return
        folder = self.ui.relabelFolderPathLineEdit.currentPath
        if not folder or not Path(folder).is_dir():
            slicer.util.errorDisplay(f"{folder} is no folder." if folder else "Choose a folder of series to relabel.")
            return
        if not self._ready(self.ui.relabelButton):
            return
        p = self._parameterNode
        root = Path(folder).resolve()  # the child runs elsewhere: no path relative to here
        labels = root / "labels.csv"
        maps = labels.with_name(f"{labels.stem}_maps")  # written by label beside its CSV: not a series
        series = sorted(str(s) for s in root.iterdir()  # hidden folders (a copy's, an archive's) are no series
                        if s.is_dir() and s != maps and not s.name.startswith(".") and s.name != "__MACOSX")
        if not series:
            slicer.util.errorDisplay(f"{root} holds no series folders: relabelling reads a folder of series "
                                     "folders (one per series, its images inside).")
            return
        args = ["label", *series, "--out", str(labels), "--resume", "--realizations", str(p.realizations),
                "--repeats", str(p.repeats), "--seed", str(p.seed), *self._modality_args(),
                "--device", p.device]
        self._start(self.ui.relabelButton, args, lambda r: slicer.util.infoDisplay(f"Labels written: {labels}"))

    def onRetrain(self) -> None:
        if self._busy(self.ui.retrainButton):  # its Cancel, whatever the folder field holds now
            return
        folder = self.ui.relabelFolderPathLineEdit.currentPath
        labels = Path(folder or ".").resolve() / "labels.csv"  # the child runs elsewhere
        if not labels.exists():
            slicer.util.errorDisplay("Relabel a folder first: retraining reads its labels.csv.")
            return
        if not self._ready(self.ui.retrainButton):
            return
        run = USER_MODELS / f"run-{qt.QDateTime.currentDateTime().toString('yyyyMMdd-hhmmss')}"
        p = self._parameterNode
        # the teacher entry: the bundled student
        start = self.ui.modelSelector.currentData or str(BUNDLED_MODELS / "student-lite.safetensors")
        try:
            preset = self.logic.student_preset(start)
        except (OSError, ValueError) as exc:  # its card removed or damaged since the list was filled
            slicer.util.errorDisplay(f"The model's card ({Path(start).with_suffix('.json')}) cannot be read: {exc}")
            return
        # fine-tune the chosen student on the new labels (stage 2); a student from scratch needs the
        # detector's training bank and hours: `ediqa train` in a terminal
        args = ["train", "--labels", str(labels), "--out", str(run), "--epochs", str(p.epochs), "--lr", str(p.learningRate),
                "--init", start, "--preset", preset, "--stage1-iterations", "0",
                "--device", p.device]
        self._start(self.ui.retrainButton, args, lambda r: self._publish(run), unfinished=run)

    def _publish(self, run: Path) -> None:
        """The finished run's best student into the user's models, as ``ediqa publish-student`` publishes
        (its card records the run's training), then into the model list, chosen."""
        args = ["publish-student", str(run), "--name", run.name, "--models-dir", str(USER_MODELS)]
        self._start(self.ui.retrainButton, args, lambda published: self._published(run, published["weights"]))

    def _published(self, run: Path, weights: str) -> None:
        from EDIQALib.training_log import CURVES_NAME

        self._fill_models(select=weights)
        slicer.util.infoDisplay(f"New model saved in {USER_MODELS} and added to the model list.\n"
                                f"Its training curves: {run / 'stage2' / CURVES_NAME}")


class EDIQALogic(ScriptedLoadableModuleLogic):
    """Glue between Slicer and EDIQALib: dependencies, export, results into the scene."""

    def getParameterNode(self):
        return EDIQAParameterNode(super().getParameterNode())

    def python_executable(self) -> str:
        return shutil.which("PythonSlicer") or sys.executable

    def child_environment(self) -> dict:
        env = dict(os.environ)
        lib_parent = str(Path(sys.modules["EDIQALib"].__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (lib_parent, env.get("PYTHONPATH")) if p)  # no empty entry:
        return env  # it would put the working folder on the child's path

    def ensure_dependencies(self) -> bool:
        """PyTorch through Slicer's PyTorch extension, the rest with pip — each after the user agrees."""
        if _importable("torch") and not _importable("torchvision"):  # installed without it, by hand or elsewhere
            slicer.util.errorDisplay("EDIQA needs torchvision beside PyTorch: install the torchvision that matches "
                                     "your PyTorch (or reinstall PyTorch with the PyTorch extension).")
            return False
        if not _importable("torch"):
            try:
                import PyTorchUtils
            except ImportError:
                slicer.util.errorDisplay("EDIQA needs the PyTorch extension: install it from the Extensions Manager.")
                return False
            try:
                installed = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True)
            except Exception as exc:  # no network, a proxy, pip failing: one message, not a traceback
                slicer.util.errorDisplay(f"Installing PyTorch failed: {exc}")
                return False
            if installed is None:
                slicer.util.errorDisplay("PyTorch was not installed; EDIQA cannot run without it.")
                return False
        missing = self.missing_packages()
        if missing:
            if not slicer.util.confirmOkCancelDisplay(f"EDIQA needs these Python packages: {', '.join(missing)}. Install them now?"):
                return False
            try:
                slicer.util.pip_install(" ".join(missing))
            except Exception as exc:  # pip failures come in many types; show the user one clear line
                slicer.util.errorDisplay(f"Installing {', '.join(missing)} failed: {exc}")
                return False
        return True

    def missing_packages(self) -> list[str]:
        """The pip names of the engine's packages (PyTorch aside) that do not import here."""
        return [name for name, module in PACKAGES.items() if not _importable(module)]

    def available_students(self) -> list[tuple[str, str]]:
        """(label, weights path) of bundled and user student models, from their cards (JSON only: this runs
        when the panel opens, before the engine's dependencies may be installed)."""
        out = []
        for folder in (BUNDLED_MODELS, USER_MODELS):
            for card in sorted(Path(folder).glob("*.json")) if Path(folder).exists() else []:
                try:
                    info = json.loads(card.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue  # not a model card
                if isinstance(info, dict) and info.get("kind") == "student":
                    out.append((info.get("name", card.stem), str(card.with_suffix(".safetensors"))))
        return out

    def export_volumes(self, nodes: list, folder: Path) -> list[str]:
        """Write each node (unchanged) to a NRRD file the child process reads, named after the node, made
        safe as a file name and unique among ``nodes`` (the engine names each result after its file)."""
        from EDIQALib.scene import export_node

        paths, taken = [], set()
        for node in nodes:
            stem = re.sub(r"[^A-Za-z0-9._ -]+", "_", node.GetName() or "").strip(" .") or "volume"
            name, k = stem, 1
            while name.lower() in taken:
                k += 1
                name = f"{stem}-{k}"
            taken.add(name.lower())
            paths.append(str(export_node(node, folder / f"{name}.nrrd")))
        return paths

    def load_result(self, node: vtkMRMLScalarVolumeNode, out_dir: Path, opacity: float) -> tuple:
        """Heatmap, table and plot nodes for one result; the heatmap shown over the input in every view."""
        from EDIQALib import scene as bridge
        from EDIQALib.report import read_outputs

        result = read_outputs(out_dir)
        heat = bridge.add_heatmap_node(slicer.mrmlScene, result, node)
        table = bridge.add_results_table(slicer.mrmlScene, result, node)
        chart = bridge.add_score_plot(slicer.mrmlScene, [table], [node.GetName()])
        bridge.show_overlay_in_all_views(slicer.mrmlScene, node, heat, opacity)
        self._show_color_legend(heat)
        if slicer.app.layoutManager() is not None:  # not headless: the views fitted to the volume, its chart shown
            slicer.util.resetSliceViews()
            slicer.modules.plots.logic().ShowChartInLayout(chart)
        return result, heat

    def load_comparison(self, nodes: list, folders: list[Path], opacity: float) -> list:
        """Each volume with its heatmap (from its result ``folders``) side by side in linked views, curves in
        one chart; returns the heatmap nodes. Headless, the result nodes only (there are no views)."""
        from EDIQALib import scene as bridge
        from EDIQALib.report import heatmap_display_max, read_outputs

        results = [read_outputs(folder) for folder in folders]
        for result, node in zip(results, nodes):  # all of them before any is shown
            bridge.check_result_fits(result, node)
        scale = heatmap_display_max(results)  # one colour scale for all, as in compare.png
        heats = [bridge.add_heatmap_node(slicer.mrmlScene, r, node, scale) for r, node in zip(results, nodes)]
        tables = [bridge.add_results_table(slicer.mrmlScene, r, node) for r, node in zip(results, nodes)]
        chart = bridge.add_score_plot(slicer.mrmlScene, tables, [n.GetName() for n in nodes])
        layout_manager = slicer.app.layoutManager()
        if layout_manager is None:
            return heats
        names = bridge.compare_view_names(len(nodes))
        bridge.show_compare_layout(layout_manager.layoutLogic().GetLayoutNode(), names)  # its views exist from here on
        bridge.setup_compare([layout_manager.sliceWidget(n).sliceLogic() for n in names], nodes, heats, opacity=opacity)
        bridge.show_compare_chart(slicer.mrmlScene, chart)
        for heat in heats:
            self._show_color_legend(heat)
        return heats

    def student_preset(self, weights: str) -> str:
        """The preset (``lite`` or ``paper``) of the student whose weights are ``weights``, from its card."""
        card = json.loads(Path(weights).with_suffix(".json").read_text(encoding="utf-8"))
        return card.get("preset", "lite")

    def _show_color_legend(self, heat) -> None:
        legend = slicer.modules.colors.logic().AddDefaultColorLegendDisplayNode(heat)
        legend.SetTitleText("Local detectability")
        legend.SetLabelFormat("%.2f")


def _importable(module: str) -> bool:
    """Whether ``module`` is installed (found, not imported: importing PyTorch into Slicer takes seconds)."""
    return importlib.util.find_spec(module) is not None


class EDIQATest(ScriptedLoadableModuleTest):
    """Self-test, headless as the README shows it (``slicer.testing.runUnitTest(['EDIQA'], 'EDIQA')``, then
    ``slicer.util.exit`` with its outcome), or the module's Reload and Test button."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        try:
            self.test_teacher_overlay_on_sample()
        except unittest.SkipTest as skipped:  # Reload and Test calls this directly: a skip is not a failure
            self.delayDisplay(f"EDIQA self-test skipped: {skipped}")

    def test_teacher_overlay_on_sample(self) -> None:
        import SampleData

        from EDIQALib import scene as bridge
        from EDIQALib.choices import OVERLAY_OPACITY
        from EDIQALib.runner import Runner

        registerSampleData()
        node = SampleData.downloadSample("EDIQAHeadCT")
        logic = EDIQALogic()
        # no dialogs: a headless run could not answer them
        missing = ([] if _importable("torch") and _importable("torchvision") else
                   ["torch and torchvision (the PyTorch extension)"]) + logic.missing_packages()
        if missing:  # as on an extension build machine: PyTorch is installed on demand
            self.skipTest(f"install first: {', '.join(missing)}")
        work = Path(tempfile.mkdtemp(prefix="EDIQA-test-"))
        try:
            [src] = logic.export_volumes([node], work)
            runner = Runner(["teacher", src, "--realizations", "2", "--repeats", "1", "--out", str(work / "out")],
                            python=logic.python_executable(), env=logic.child_environment(), cwd=ENGINE_ROOT)
            runner.start()
            try:
                outcome = runner.wait(timeout=600)
            finally:
                runner.cancel()  # a no-op once the child has ended
            self.assertEqual(outcome.returncode, 0, outcome.error)
            result, heat = logic.load_result(node, work / "out", OVERLAY_OPACITY)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.assertTrue(0.0 <= result.score <= 1.0)
        self.assertEqual(bridge.ijk_to_ras(heat).tolist(), bridge.ijk_to_ras(node).tolist())
        self.delayDisplay("EDIQA self-test passed")
