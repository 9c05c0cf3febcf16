"""The commands on images: ``simulate``, ``assess``, ``teacher`` and ``compare`` (read, score, write), and
``split-series`` (a folder of several DICOM series made into one folder per series)."""
from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..errors import InputError, UnknownModality
from .common import chosen_device, print_result, progress_for, refuse_twice, teacher_config, warn_lines

if TYPE_CHECKING:
    from ..dicom import SeriesListing
    from ..io import Geometry, Volume
    from ..progress import Progress
    from ..simulate import Acquisition

SIMULATION_TAG = "EDIQA_simulation"  # in each simulated image's header: its source and noise settings (JSON)


def cmd_simulate(args: argparse.Namespace) -> None:
    print_result(args, {"outputs": write_simulation(args)})


def simulated_path(out: Path, name: str, acquisition: Acquisition) -> Path:
    """Where ``simulate`` writes the image ``name`` acquired with ``acquisition`` (an :class:`Acquisition`)."""
    return out / f"{name}_dose{acquisition.dose:g}_views{acquisition.views}_{acquisition.filter}.nrrd"


def write_simulation(args: argparse.Namespace) -> list[str]:
    """Write the simulated series of ``args.input``; returns the written paths, best dose first."""
    from ..io import check_outputs, image_like, read_volume, staged_in, write_image
    from ..simulate import NO_GRAIN, Acquisition, estimate_noise_grain, simulate_series, slice_seed

    try:
        acqs = [Acquisition(dose=d, views=args.views, filter=args.filter) for d in args.doses]
    except ValueError as exc:
        raise InputError(str(exc)) from None
    try:
        vol = read_volume(args.input, args.modality)
    except UnknownModality:
        raise InputError(f"{args.input}: simulate needs a CT image in HU, and this one's tags and values do not "
                         "say it is one; if it is, give --modality ct") from None
    if vol.modality != "ct":
        raise InputError(f"{vol.name}: simulate needs a CT image (HU); got {vol.modality.upper()}")
    sx, sy = vol.spacing_xy
    if abs(sx - sy) > 1e-3 * sx:
        raise InputError(f"{vol.name}: simulate needs square pixels (spacing {sx} x {sy} mm)")
    photons = min(args.doses) * args.i0
    if photons < 1.0:
        raise InputError(f"dose {min(args.doses):g} at --i0 {args.i0:g} is {photons:.2g} photons per ray; "
                         "at least 1 is needed")
    paths = [simulated_path(Path(args.out), vol.name, a) for a in acqs]
    if len(set(paths)) < len(paths):
        raise InputError(f"--doses {','.join(f'{d:g}' for d in args.doses)}: two doses give one output name "
                         "(equal to 6 significant digits)")
    check_outputs(paths, [args.input])
    import hashlib

    settings = {"source_sha256": hashlib.sha256(vol.array.tobytes()).hexdigest(),  # its voxels, not its path
                "i0": args.i0, "seed": args.seed, "noiseless": args.noiseless,  # what a series' noise depends on:
                "doses": sorted(args.doses, reverse=True), "views": args.views}  # the draws follow the acquisitions
    _check_one_simulation(Path(args.out), vol.name, paths, settings)
    progress = progress_for(args)
    out_slices = [[] for _ in acqs]
    for k, hu in enumerate(vol.array):
        grain = NO_GRAIN if args.noiseless else estimate_noise_grain(hu)
        for i, rec in enumerate(simulate_series(hu, sx, acqs, i0=args.i0, seed=slice_seed(args.seed, k), grain=grain)):
            out_slices[i].append(rec)
        progress("simulate", k + 1, len(vol.array))
    with staged_in(Path(args.out)) as staging:  # the series whole, or none of it
        for path, slices in zip(paths, out_slices):
            # tagged: read back as CT, whether or not its values reach air's
            image = image_like(slices, vol.geometry)
            image.SetMetaData(SIMULATION_TAG, json.dumps(settings))
            write_image(image, staging / path.name, "CT")
        # again, as the images go in: another simulate into the folder may have ended meanwhile (two at once,
        # of other seeds, both passed the check at their start and left one series of two simulations)
        _check_one_simulation(Path(args.out), vol.name, paths, settings)
    return [str(p) for p in paths]


_SIMULATION_OPTIONS = {"source_sha256": "source image", "i0": "--i0", "seed": "--seed", "noiseless": "--noiseless",
                       "doses": "--doses", "views": "--views"}


def _check_one_simulation(out: Path, name: str, paths: list[Path], settings: dict) -> None:
    """A folder holds one simulation of an input's name: its images share the source and noise settings
    (``settings``: the source's voxels, photons, seed, noiseless, and the doses and views, which set the noise
    draws) that nest its doses; another filter may join them. Another ``simulate`` into it with other settings
    (another --i0, --seed, --doses or --views, or another image of the same name) replaced some of its
    images and left the others: a series that looked like one and was not (a dose added by a run of its own
    was drawn apart from the others, not nested in them).

    Raises:
        InputError: ``out`` holds an image of ``name`` that this run does not write again, simulated with
            other settings, with none recorded (by an earlier release), or that cannot be read.
    """
    import glob

    import SimpleITK as sitk

    for other in sorted(out.glob(f"{glob.escape(name)}_dose*_views*_*.nrrd")):
        if other in paths:
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(other))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise InputError(f"{out} holds {other.name}, which cannot be read to tell how it was simulated; "
                             "give another --out") from None
        try:
            was = json.loads(reader.GetMetaData(SIMULATION_TAG)) if reader.HasMetaDataKey(SIMULATION_TAG) else None
        except ValueError:
            was = None
        if not isinstance(was, dict):
            why = "by an earlier release, its settings unrecorded"
        elif "doses" not in was or "views" not in was:
            why = "by an earlier release, its --doses and --views unrecorded"
        elif differ := [option for key, option in _SIMULATION_OPTIONS.items() if was.get(key) != settings[key]]:
            why = f"with another {', '.join(differ)}"
        else:
            continue
        raise InputError(f"{out} holds {other.name}, simulated {why}: this run's images would sit beside it as "
                         "one series; give another --out")


def cmd_teacher(args: argparse.Namespace) -> None:
    from ..io import check_same_geometry
    from ..report import RESULT_FILES, SERIES_FILES, write_series_summary

    progress = progress_for(args)
    volumes, folders = _inputs_and_folders(args, progress, SERIES_FILES if len(args.inputs) > 1 else ())
    check_same_geometry(volumes, "inputs of one series")  # as assess_series does, before torch is loaded
    from ..models import load_model

    model, entry = load_model(args.model, "detector")  # torch loads from here on: a bad input or model answers at once,
    # and an unknown model before the device is asked for
    device = chosen_device(args.device)
    model.to(device)
    from ..assessment import assess_series
    from ..teacher import teacher_scorer

    config = teacher_config(args)
    scorer = teacher_scorer(model, config, device, progress, slices=volumes[0].array.shape[0])
    settings = {"method": "mD2IQA", **config.settings()}
    results = assess_series(volumes, scorer, "mD2IQA", entry.record(),
                            config.insertion, progress)
    _warn(volumes, results)
    if len(volumes) > 1 and any(not any(r.assessable) for r in results):
        warn_lines(["the images of a series are scored where all of them show body: where one shows none, "
                    "the others have no assessable slice either; score them apart"])
    for res in results:  # without one assessable slice, no repeat scores: empty, as in series.json
        res.details.update({"repeat_scores": [], "score_se": None, **res.details, **settings})
    series = ((lambda out: write_series_summary(results, args.inputs, out, {**settings, "model": entry.record()}))
              if len(volumes) > 1 else None)  # the summary names its detector, as each result.json does
    _write_results(volumes, results, folders, progress, Path(args.out), series)
    warn_lines(_other_layout_files(Path(args.out), SERIES_FILES if series else RESULT_FILES, args.inputs))
    summary = [{"name": r.name, "score": r.to_json()["score"], "out": str(f)} for r, f in zip(results, folders)]
    print_result(args, summary[0] if len(summary) == 1 else {"out": str(Path(args.out)), "inputs": summary})


def _write_results(volumes: list, results: list, folders: list[Path], progress: Progress, out: Path,
                   summary: Callable[[Path], None] | None = None) -> None:
    """Each input's result files (:func:`~EDIQALib.report.write_outputs`) in its folder under ``out``, then
    the files that set them side by side (``summary``, given the folder to write them into, staged in
    ``out``), as progress stage ``writing`` (a large volume's heatmap takes seconds to compress). All are staged and moved into place together at the end: an
    interrupt or an error before all are written leaves none of them, and an earlier run's set whole. Each
    folder is staged in itself, on its own file system (an input's folder may be a link to another)."""
    from ..io import staged_together
    from ..report import write_outputs

    total = len(results) + (summary is not None)
    progress("writing", 0, total)
    with staged_together() as stage_in:  # every folder's files renamed into place at the end, or all discarded
        summary_dir = None if summary is None else stage_in(out)  # renamed last
        for done, (vol, res, folder) in enumerate(zip(volumes, results, folders), start=1):
            write_outputs(res, vol, stage_in(folder))
            progress("writing", done, total)
        if summary is not None:
            summary(summary_dir)
            progress("writing", total, total)


def _other_layout_files(out: Path, kept: tuple[str, ...], inputs: list[str]) -> list[str]:
    """A warning line where ``out`` holds, beside this run's files, result or summary files of another layout
    than ``kept`` (a single input's ``result.json`` beside a series' ``series.json``, or the reverse: an
    earlier run's, which would be read as this run's, or files of the user's own); none is removed."""
    from ..io import input_files, is_input
    from ..report import COMPARISON_FILES, RESULT_FILES, SERIES_FILES

    sources = input_files(inputs)
    other = [name for name in (*RESULT_FILES, *SERIES_FILES, *COMPARISON_FILES)
             if name not in kept and (out / name).is_file() and not is_input(out / name, sources)]
    return [f"{out} also holds {', '.join(other)}, which this run did not write (an earlier run's of another kind, "
            "or files of your own): they are not of these inputs"] if other else []


def _warn(volumes: list, results: list) -> None:
    """The results' caveats (:func:`~EDIQALib.assessment.caveats`) as warning lines on stderr, after the work."""
    from ..assessment import caveats

    warn_lines([c for v, r in zip(volumes, results) for c in caveats(v, r)])


def _inputs_and_folders(args: argparse.Namespace, progress: Progress,
                        summary_files: tuple[str, ...] = ()) -> tuple[list, list[Path]]:
    """The input volumes (read as progress stage ``reading``) and the folder of each one's results
    (:func:`_result_folders`)."""
    from dataclasses import replace

    volumes, names = _read_inputs(args, progress, summary_files, keep=lambda v: v)
    return [replace(v, name=n) for v, n in zip(volumes, names)], _result_folders(args, names, summary_files)


def _result_folders(args: argparse.Namespace, names: list[str], summary_files: tuple[str, ...]) -> list[Path]:
    """The folder of each input's results: ``--out`` itself for one input without a summary, else
    ``--out/<name>``. Before any work, every result file and ``summary_files`` (in ``--out``) is checked
    to be writable without replacing an input."""
    from ..io import check_outputs
    from ..report import RESULT_FILES

    out = Path(args.out)
    folders = [out] if len(names) == 1 and not summary_files else [out / n for n in names]
    check_outputs([f / name for f in folders for name in RESULT_FILES] + [out / name for name in summary_files],
                  args.inputs)
    return folders


def cmd_assess(args: argparse.Namespace) -> None:
    from ..assessment import student_assessor
    from ..report import RESULT_FILES

    progress = progress_for(args)
    volumes, folders = _inputs_and_folders(args, progress)  # one input
    results = [student_assessor(args.model, args.device)(volumes[0], progress)]
    _warn(volumes, results)
    _write_results(volumes, results, folders, progress, Path(args.out))
    warn_lines(_other_layout_files(Path(args.out), RESULT_FILES, args.inputs))
    print_result(args, {"name": results[0].name, "score": results[0].to_json()["score"], "out": args.out})


def cmd_compare(args: argparse.Namespace) -> None:
    """Each input is read twice: first all of them, so that a bad one is refused before any work, then one
    at a time to be assessed and written, so that memory holds one input and its heatmap, however many."""
    from dataclasses import replace

    from ..assessment import caveats, student_assessor
    from ..io import read_volume, staged_together
    from ..report import COMPARISON_FILES, SLICE_COLUMN, compared_input, write_comparison, write_outputs

    progress = progress_for(args)
    grids, names = _read_inputs(args, progress, COMPARISON_FILES, keep=lambda v: v.geometry, reserved=(SLICE_COLUMN,))
    folders = _result_folders(args, names, COMPARISON_FILES)
    assess_one = student_assessor(args.model, args.device)
    depths = [len(g.slice_positions()[1]) for g in grids]
    total, compared, notes = sum(depths), [], _unpaired_slices(args.inputs, grids)  # progress: all inputs' slices
    with staged_together() as stage_in:  # every input's files and the comparison renamed into place at the end
        summary_dir = stage_in(Path(args.out))  # renamed last
        for i, (path, name, folder) in enumerate(zip(args.inputs, names, folders)):
            volume = replace(read_volume(path, args.modality), name=name)
            before = sum(depths[:i])
            result = assess_one(volume, lambda stage, done, _: progress(stage, before + done, total))
            notes += caveats(volume, result)
            write_outputs(result, volume, stage_in(folder))
            progress("writing", i + 1, len(names) + 1)
            compared.append(compared_input(result, volume, path))
            del volume, result  # before the next input is read
        write_comparison(compared, summary_dir)
        progress("writing", len(names) + 1, len(names) + 1)
    notes += _other_layout_files(Path(args.out), COMPARISON_FILES, args.inputs)
    warn_lines(notes)
    inputs = [{"name": c.name, "score": c.result["score"], "out": str(f)} for c, f in zip(compared, folders)]
    print_result(args, {"out": str(Path(args.out)), "inputs": inputs})


def _unpaired_slices(inputs: list[str], grids: list[Geometry]) -> list[str]:
    """A note where ``compare`` pairs slices that lie apart: ``compare.csv``'s rows and the curves put the
    inputs' slices side by side by number, which pairs like with like only where their slices lie at the
    same positions (inputs of one scan, reconstructed alike)."""
    import numpy as np

    first_normal, first = grids[0].slice_positions()
    for path, grid in zip(inputs[1:], grids[1:]):
        normal, positions = grid.slice_positions()
        if max(len(first), len(positions)) == 1:  # single slices: nothing to pair
            continue
        along = float(np.dot(normal, first_normal))
        positions = positions * np.sign(along)  # along the first input's slice axis: stacked either way
        steps = tuple(g.spacing[2] if g.dimension == 3 else 0.0 for g in (grids[0], grid))  # a 2-D image: one slice
        if len(positions) != len(first):
            why = f"{len(first)} and {len(positions)} slices"
        elif abs(along) < 0.9999:
            why = "slices in other planes"
        elif np.abs(positions - first).max() <= 0.25 * steps[0]:
            continue
        elif np.abs(positions[::-1] - first).max() <= 0.25 * steps[0]:
            why = "the same positions in reverse order"
        elif abs(steps[0] - steps[1]) > 1e-3 * steps[0]:
            why = f"slices {steps[0]:g} and {steps[1]:g} mm apart"
        elif along < 0:
            why = "slices stacked in opposite directions"
        else:
            why = f"first slices {abs(positions[0] - first[0]):.3g} mm apart"
        return [f"{inputs[0]} and {path} have their slices at different positions ({why}): compare.csv and "
                "the curves pair slices by number, not by position"]
    return []


Kept = TypeVar("Kept")


def _read_inputs(args: argparse.Namespace, progress: Progress, summary_files: tuple[str, ...],
                 keep: Callable[[Volume], Kept], reserved: tuple[str, ...] = ()) -> tuple[list[Kept], list[str]]:
    """Each input read in turn as progress stage ``reading`` (a DICOM series of hundreds of files takes
    seconds): what ``keep`` takes of its volume, and the name its results' folder will have
    (:func:`folder_names`: none is a summary file's name, nor one of ``reserved``)."""
    from ..io import input_file, read_volume

    refuse_twice([Path(p) for p in args.inputs], "input", input_file)  # its results would be compared with themselves
    kept, names = [], []
    for done, path in enumerate(args.inputs):
        progress("reading", done, len(args.inputs))
        volume = read_volume(path, args.modality)
        kept.append(keep(volume))
        names.append(volume.name)
    progress("reading", len(args.inputs), len(args.inputs))
    return kept, folder_names(names, (*summary_files, *reserved))


def folder_names(names: list[str], reserved: tuple[str, ...] = ()) -> list[str]:
    """One distinct folder name per input: its own name where no other input has it (letter case aside,
    for file systems that ignore it) and no summary file is called so (``reserved``); else the name (or
    ``image``, when empty, ``.`` or ``..``) with the first free ``-1``, ``-2``… after it, never another input's
    name."""
    folded = [n.casefold() for n in names]
    keep = [n not in ("", ".", "..") and folded.count(f) == 1 and f not in {r.casefold() for r in reserved}
            for n, f in zip(names, folded)]
    taken = {r.casefold() for r in reserved} | {f for f, k in zip(folded, keep) if k}
    out = []
    for name, kept in zip(names, keep):
        if not kept:
            base, i = name.strip(".") or "image", 1
            while f"{base}-{i}".casefold() in taken:
                i += 1
            name = f"{base}-{i}"
            taken.add(name.casefold())
        out.append(name)
    return out


def cmd_split_series(args: argparse.Namespace) -> None:
    """Copy each DICOM series of ``args.folder`` (as exported from a PACS: every series' files in one folder)
    into a folder of its own under ``args.out``, named by its Series Number and Description (or its UID),
    for the commands that take one series folder per input. The files are copied unchanged, all series
    together or none (interrupted), into folders that do not exist yet."""
    import shutil

    from ..dicom import no_series_error, series_in
    from ..io import check_outputs, input_not_found, staged_together

    folder, out = Path(args.folder), Path(args.out)
    if not folder.is_dir():
        if folder.exists():
            raise InputError(f"{folder} is a file, not a folder of DICOM series")
        raise input_not_found(folder)
    listed = series_in(folder)
    if not listed:
        raise no_series_error(folder)
    names = folder_names([_series_folder_name(s) for s in listed])
    _check_new_folders([out / n for n in names], set())
    check_outputs([out / n / Path(f).name for n, s in zip(names, listed) for f in s.files], [str(folder)])
    progress = progress_for(args)
    with staged_together() as stage_in:
        stagings = set()
        for done, (name, series) in enumerate(zip(names, listed), start=1):
            staging = stage_in(out / name)
            stagings.add(staging)
            for f in series.files:
                shutil.copyfile(f, staging / Path(f).name)
            progress("copying", done, len(listed))
        # again, as the series go in: another split-series into --out may have ended meanwhile (two at once
        # both found the folders new at their start, and put two exports' series into one folder)
        _check_new_folders([out / n for n in names], stagings)
    print_result(args, {"out": str(out), "series": [
        {"folder": str(out / n), "number": s.number, "description": s.description, "modality": s.modality,
         "files": len(s.files)} for n, s in zip(names, listed)]})


def _check_new_folders(folders: list[Path], stagings: set[Path]) -> None:
    """A series is copied into a folder of its own: each of ``folders`` must not exist, or hold nothing but
    this run's ``stagings``.

    Raises:
        InputError: naming the first that holds something else.
    """
    taken = next((f for f in folders if f.exists() and any(p not in stagings for p in f.iterdir())), None)
    if taken is not None:
        raise InputError(f"{taken} already exists: give another --out (a series is copied into a new folder, "
                         "not among other files)")


def _series_folder_name(series: SeriesListing) -> str:
    """``3-ABD_5mm``: a series' number and description, in letters, digits, '.', '_' and '-' (its UID where
    it has neither)."""
    named = "-".join(filter(None, (series.number, series.description)))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", named).strip("._") or series.uid
