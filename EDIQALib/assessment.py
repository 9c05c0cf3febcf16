"""Whole volumes → :class:`QualityResult`: per-slice scores, volume score, heatmap in input geometry.

The per-slice work is done by a *slice scorer* that sees, for one slice position, the co-registered
versions of that slice from every input of a series (one input alone is a series of one). The teacher
is such a scorer; so is the student.
"""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from .backgrounds import Background, slice_background
from .choices import DEFAULT_STUDENT, MAP_STRIDE
from .errors import InputError
from .io import (MAX_CANONICAL_PIXELS, MODALITY_TAG, Volume, check_same_geometry, image_like, looks_stored_across,
                 read_volume, shows_air_in_hu, volume_from_image)
from .models import load_model, resolve_device
from .preprocess import canonical_range, canonical_shape, from_canonical, to_canonical
from .progress import Progress
from .scoring import ScoredSlice, SliceScorer, paired_standard_error, standard_error, volume_score
from .signals import InsertionConfig, is_assessable

if TYPE_CHECKING:
    from .student import Student, StudentEnsemble


BATCH_SLICES = 32  # slices per student forward pass: at 320² the lite network costs 1.9 ms a slice, 2.8 ms at 8
BATCH_PIXELS = MAX_CANONICAL_PIXELS  # per scorer call at most, or one slice position's (a slice of each input of
# a series, each slice up to MAX_CANONICAL_PIXELS) where that is more: coarse pixels grow large at 0.7 mm


@dataclass(eq=False)  # the heatmap is an array: compare fields, not results
class QualityResult:
    """The verdict on one volume.

    Attributes:
        name: input name.
        score: mean of the assessable slices' scores (NaN when none is assessable); higher is better.
        slice_scores: per slice, ``None`` where not assessable.
        assessable: per slice.
        heatmap: local quality ``(slices, rows, cols)`` on the input grid, NaN where undefined.
        method: ``"mD2IQA"`` (teacher) or ``"EDIQA"`` (student).
        model: name and sha256 of the weights used.
        seconds: wall time of the assessment (resampling, masks, the network or the teacher, the heatmap
            resampled back); reading the input, loading the model and writing outputs are not counted.
        shape, spacing: of the input, as its image has them (x, y[, z]).
        modality: of the input as read, ``"ct"`` or ``"mr"`` (MR scores are not validated).
        details: method-specific extras: the teacher's settings, and its :func:`repeat_summary`.
    """

    name: str
    score: float
    slice_scores: list[float | None]
    assessable: list[bool]
    heatmap: np.ndarray
    method: str
    model: dict
    seconds: float
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    modality: str
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The ``result.json`` content (the heatmap goes to its own file)."""
        return {"name": self.name, "method": self.method,
                "score": None if not np.isfinite(self.score) else round(self.score, 6),
                "slice_scores": [None if s is None else round(s, 6) for s in self.slice_scores],
                "assessable": self.assessable, "model": self.model, "seconds": round(self.seconds, 3),
                "shape": list(self.shape), "spacing": list(self.spacing), "modality": self.modality, **self.details}


def mr_caveat(name: str) -> str:
    """The warning an MR input's scores (or labels) carry."""
    return (f"{name}: MR; the shipped detector and student were trained on CT only, and their MR scores are not "
            "validated (see the README)")


def caveats(volume: Volume, result: QualityResult) -> list[str]:
    """What a user must know to read ``result`` (the CLI prints each as a warning line): a result assessed as
    MR (the shipped models learnt from CT only, and their MR scores are not validated), or as another modality
    than the file's Modality tag names (``--modality`` chose it), values that do not look
    like the modality assessed (a CT without a value below 0 HU, an MR with a CT's air), a volume that looks stored
    across its acquired slices (its slices are scored as stored), and a result without one assessable slice
    (it has no score: null in ``result.json``, NaN in Python)."""
    notes = [mr_caveat(result.name)] if result.modality == "mr" else []
    if volume.tagged and volume.tagged != result.modality:
        notes.append(f"{result.name}: its Modality tag says {volume.tagged.upper()}; assessed as "
                     f"{result.modality.upper()}, as asked")
    # a padding value below air's (-2000, -3024 outside the field of view) is no value of the body
    if result.modality == "ct" and np.min(volume.array, where=volume.array >= -1024, initial=np.inf) >= 0:
        notes.append(f"{result.name}: assessed as CT, but no value lies below 0 HU (no air, no fat; padding aside): "
                     "if its values are not Hounsfield units (a rescale left out, a windowed export, an MR image), "
                     "its scores mean nothing")
    if result.modality == "mr" and shows_air_in_hu(volume.array):
        notes.append(f"{result.name}: assessed as MR, but its values reach −1000 as a CT's air does: if it is a CT, "
                     "assess it as CT")
    if looks_stored_across(volume.spacing, volume.array.shape[0]):
        (sx, sy), sz = volume.spacing_xy, volume.spacing[2]
        notes.append(f"{result.name}: its pixels are {sx:g} × {sy:g} mm and its slices {sz:g} mm apart, as in a "
                     "volume stored across its acquired slices; the slices were scored as stored: reorient the "
                     "volume (the acquired slices along its third axis) to score those")
    if not any(result.assessable):
        notes.append(f"{result.name}: no slice is assessable (too little body for a lesion); it has no score "
                     "(null in result.json, NaN in Python)")
    return notes


def usable_cpus() -> int:
    """The logical CPUs this process may run on (its affinity where the system reports one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def assess_series(volumes: list[Volume], scorer: SliceScorer, method: str, model: dict,
                  config: InsertionConfig, progress: Progress | None = None, chunk: int = 1,
                  with_psf: bool = True) -> list[QualityResult]:
    """Assess co-registered volumes, ``chunk`` slice positions per scorer call, fewer where the slices at
    the canonical spacing are so large that ``chunk`` of them would exceed ``BATCH_PIXELS``. The slices of
    one call are resampled to the canonical spacing, scored and their maps resampled back before the next
    call's, so that memory holds the inputs, their heatmaps and one call's slices, whatever the volumes' length.

    Raises:
        InputError: when the volumes of one series do not share their geometry.
    """
    start = time.perf_counter()
    check_same_geometry(volumes, "inputs of one series")
    ranges = [canonical_range(v) for v in volumes]
    ranks = volumes[0].geometry.slice_ranks()
    n_slices = volumes[0].array.shape[0]
    rows, cols = canonical_shape(volumes[0])
    chunk = max(1, min(chunk, BATCH_PIXELS // (rows * cols * len(volumes))))
    maps = [np.empty(v.array.shape, np.float32) for v in volumes]
    scores: list[list[float | None]] = [[] for _ in volumes]
    flags: list[list[bool]] = [[] for _ in volumes]
    repeats: list[list[tuple[float, ...]]] = [[] for _ in volumes]

    def position(slabs: list[np.ndarray], j: int) -> list[Background]:
        return [slice_background(s[j], v.modality, config, with_psf, r) for s, v, r in zip(slabs, volumes, ranges)]

    # masks and PSF fits are NumPy/SciPy work that releases the GIL: one thread per core
    with ThreadPoolExecutor(usable_cpus()) as pool:
        for first in range(0, n_slices, chunk):
            block = slice(first, min(first + chunk, n_slices))
            slabs = [to_canonical(v, slices=block) for v in volumes]
            indices = list(range(block.start, block.stop))
            positions = list(pool.map(lambda j: position(slabs, j), range(len(indices))))
            heat = [np.full(s.shape, np.nan, np.float32) for s in slabs]
            for j, verdicts in enumerate(scorer(positions, [ranks[k] for k in indices])):
                for i, verdict in enumerate(verdicts):
                    score, hmap, ok, repeat_scores = ScoredSlice(*verdict)
                    scores[i].append(float(score) if ok else None)
                    flags[i].append(bool(ok))
                    repeats[i].append(tuple(repeat_scores) if ok else ())
                    heat[i][j] = hmap
            for m, h, v in zip(maps, heat, volumes):
                m[block] = from_canonical(h, v)
            if progress:
                progress("slices", indices[-1] + 1, n_slices)
    seconds = time.perf_counter() - start
    results = []
    for v, s, ok, hmap, reps in zip(volumes, scores, flags, maps, repeats):
        results.append(QualityResult(
            name=v.name, score=volume_score(s), slice_scores=s,
            assessable=ok, heatmap=hmap, method=method, model=model, seconds=seconds / len(volumes),
            shape=v.shape, spacing=v.spacing, modality=v.modality, details=repeat_summary(reps)))
    return results


def repeat_summary(slice_repeats: list[tuple[float, ...]]) -> dict:
    """The volume's score in each repeat (the mean over its assessable slices of their scores in that
    repeat: their mean is the volume's score) and its standard error over the repeats, ``score_se`` (``None``
    with one repeat); empty where no slice has repeat scores (the student)."""
    scored = [r for r in slice_repeats if r]
    if not scored:
        return {}
    with warnings.catch_warnings():  # a repeat without one finite score stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        per_repeat = np.nanmean(np.array(scored, np.float64), axis=0)
    return {"repeat_scores": [round(float(x), 6) for x in per_repeat], "score_se": standard_error(per_repeat)}


def paired_difference(result: QualityResult, reference: QualityResult) -> tuple[float, float | None]:
    """``result``'s score minus ``reference``'s, and the standard error of that difference over the teacher's
    repeats, paired: the versions of one series are scored on the same insertion maps in each repeat, so
    the maps' share of the scatter cancels (``None`` with one repeat or without repeat scores)."""
    a, b = result.details.get("repeat_scores"), reference.details.get("repeat_scores")
    return result.score - reference.score, paired_standard_error(a, b)


def student_scorer(model: Student | StudentEnsemble, config: InsertionConfig, device: str = "cpu",
                   batch_size: int = BATCH_SLICES) -> SliceScorer:
    """The student as a slice scorer: batched forward passes on slices mirrored out as in training
    (``field_batch``); its map upsampled and cut back to the slice, NaN outside the body and, as the
    teacher's, all NaN on a slice that is not assessable (where the teacher could not have inserted a
    lesion; such a slice does not go through the network). In float32 on a GPU as on a CPU, so that scores
    compare across devices (bfloat16 autocast moved the sample's score by 0.0017)."""
    import torch
    import torch.nn.functional as F

    from .student import field_batch

    model = model.for_inference()

    @torch.inference_mode()
    def scorer(positions: list[list[Background]], ranks: list[int]) -> list[list[ScoredSlice]]:
        flat = [bg for pos in positions for bg in pos]
        verdicts: list[ScoredSlice | None] = [None] * len(flat)
        scored = [i for i, b in enumerate(flat) if is_assessable(b.body, b.salient, config)]  # no air in the network
        for start in range(0, len(scored), batch_size):
            chunk = scored[start:start + batch_size]
            x = torch.from_numpy(field_batch([flat[i].image01 for i in chunk]))
            score, heat = model(x.to(device))
            if not (torch.isfinite(score).all() and torch.isfinite(heat).all()):
                raise InputError("the student gives NaN or infinite outputs: its weights are broken "
                                 "(a training that diverged?)")
            heat = F.interpolate(torch.sigmoid(heat), scale_factor=MAP_STRIDE, mode="bilinear", align_corners=False)
            for j, i in enumerate(chunk):
                b = flat[i]
                hmap = heat[j, 0, :b.image01.shape[0], :b.image01.shape[1]].cpu().numpy()
                verdicts[i] = ScoredSlice(float(torch.sigmoid(score[j])), np.where(b.body, hmap, np.nan), True)
        verdicts = [ScoredSlice(float("nan"), np.full(b.image01.shape, np.nan, np.float32), False) if v is None else v
                    for v, b in zip(verdicts, flat)]  # what a slice that is not assessable gets
        n = len(positions[0]) if positions else 0
        return [verdicts[j * n:(j + 1) * n] for j in range(len(positions))]

    return scorer


def student_assessor(model: str = DEFAULT_STUDENT, device: str = "auto") -> Callable[..., QualityResult]:
    """A student model (bundled name or ``.safetensors`` path), loaded once, as a function that assesses
    one volume on its own: ``assess_one(volume, progress=None)``, progress ``("slices", done, total)`` over
    the volume's slices."""
    net, entry = load_model(model, "student")  # an unknown model answers before torch asks for a device
    device = resolve_device(device)
    net.to(device)
    scorer = student_scorer(net, InsertionConfig(), device)
    record = entry.record()

    def assess_one(volume: Volume, progress: Progress | None = None) -> QualityResult:
        # no shared insertion maps are needed: each volume on its own
        return assess_series([volume], scorer, "EDIQA", record, InsertionConfig(), progress, chunk=BATCH_SLICES,
                             with_psf=False)[0]

    return assess_one


def assess(image: str | os.PathLike | sitk.Image | Volume, model: str | os.PathLike | None = DEFAULT_STUDENT,
           device: str | None = "auto", modality: str | None = None, progress: Progress | None = None) -> QualityResult:
    """The Python API of ``ediqa assess``: one image → its :class:`QualityResult` (scores, per-slice scores,
    heatmap on the input grid).

    Args:
        image: a path (NRRD, NIfTI, MHA/MHD, a DICOM file or series folder), a SimpleITK image (CT in HU),
            or a :class:`~EDIQALib.io.Volume` from :func:`~EDIQALib.io.read_volume`.
        model: a student's name in the registry or the path of its ``.safetensors`` (with its card); ``None``:
            the bundled default.
        device: ``"auto"`` (CUDA when available; also ``None``), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (the GPU
            of index N).
        modality: ``"ct"`` or ``"mr"``, over what the file says (or, for CT, its Hounsfield units tell).
        progress: called as ``progress("slices", done, total)`` as slices are scored; an exception raised
            in it stops the assessment (a way to cancel).

    Raises:
        EDIQALib.errors.InputError: (a ``ValueError``) for input the engine refuses, with a one-line reason.
        TypeError: an argument of another type than the above.

    What ``ediqa assess`` prints as warnings (an MR input, no assessable slice) comes as Python warnings.
    To write ``result.json``, ``heatmap.nrrd`` and ``overlay.png``, pass the result and the volume it
    assessed to :func:`EDIQALib.report.write_outputs`. Example::

        import EDIQALib
        from EDIQALib.io import read_volume
        from EDIQALib.report import write_outputs

        volume = read_volume("scan.nrrd")
        result = EDIQALib.assess(volume)
        print(result.score, result.slice_scores)
        write_outputs(result, volume, "out/scan")
    """
    model = DEFAULT_STUDENT if model is None else model
    device = "auto" if device is None else device
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model is a student's name or the path of its .safetensors, not {type(model).__name__}")
    if not isinstance(device, str):
        raise TypeError(f"device is 'auto', 'cpu', 'cuda' or 'cuda:N', not {type(device).__name__}")
    if modality is not None and not isinstance(modality, str):
        raise TypeError(f"modality is 'ct', 'mr' or None, not {type(modality).__name__}")
    if progress is not None and not callable(progress):  # found only after the first batch of slices
        raise TypeError(f"progress is a function of (stage, done, total) or None, not {type(progress).__name__}")
    if isinstance(image, Volume):  # checked as a file's voxels are (one made by hand may hold NaN)
        volume = volume_from_image(image_like(image.array, image.geometry), image.name,
                                   modality=modality or image.modality)
    elif isinstance(image, sitk.Image):  # its DICOM Modality, where it was read from DICOM
        tag = image.GetMetaData(MODALITY_TAG).strip() if image.HasMetaDataKey(MODALITY_TAG) else None
        volume = volume_from_image(image, "image", tag, modality)
    elif isinstance(image, (str, os.PathLike)):
        volume = read_volume(image, modality)
    else:
        raise TypeError(f"assess takes a path, a SimpleITK image or an EDIQALib.io.Volume, not {type(image).__name__}")
    result = student_assessor(model, device)(volume, progress)
    for caveat in caveats(volume, result):
        warnings.warn(caveat, stacklevel=2)
    return result
