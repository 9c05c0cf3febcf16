"""The ``ediqa`` command line (also ``python -m EDIQALib``). See README for the contract.

Exit codes: 0 success; 2 bad input or usage, with one line on stderr and no traceback.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import math
import os
import platform
import re
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .choices import (DEFAULT_DETECTOR, DEFAULT_STUDENT, DEVICES, ENGINE_ROOT, FILTERS, KINDS, MAX_PHOTONS, MAX_VIEWS,
                      MIN_FIELD_PX, MIN_SIZE, MIN_VIEWS, MODELS_DIR, PRESETS, READOUTS, is_device_name)
from .errors import InputError
from .progress import end_line

if TYPE_CHECKING:
    from torch import nn

    from .progress import Progress
    from .io import Geometry, Volume

DEMO_SAMPLE = ENGINE_ROOT / "Resources" / "SampleData" / "head-ct-slice.nrrd"
STAGE1_ITERATIONS = 1000  # stage 1's detector steps, where a `train` run trains its own
SIMULATION_TAG = "EDIQA_simulation"  # in each simulated image's header: its source and noise settings (JSON)
NOISY_FIRST_SEED = 100  # series seeds of the noisy real variants, apart from the plain ones (0, 1, ...)


class _Parser(argparse.ArgumentParser):
    """One-line errors (exit 2), and help that states each option's default."""

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.option_strings and action.nargs != 0 and "default" not in (action.help or "") \
                and all(action.default is not v for v in (None, argparse.SUPPRESS)):
            shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in action.default) \
                if isinstance(action.default, (list, tuple)) else "%(default)s"  # as the option is written
            action.help = f"{action.help} (default: {shown})" if action.help else f"default: {shown}"
        return action

    def error(self, message: str) -> None:  # one line, exit 2
        _say("error", message)
        raise SystemExit(2)


_ONE_LINE = str.maketrans({"\n": "\\n", "\r": "\\r"})


def _say(kind: str, text: str) -> None:
    """``ediqa: <kind>: <text>`` as one line on stderr: a line break in ``text`` (a file's name may hold one)
    is written as ``\\n``; a progress bar's line cut short is ended first."""
    end_line()
    sys.stderr.write(f"ediqa: {kind}: {text.translate(_ONE_LINE)}\n")


def _model_name(text: str) -> str:
    """A registry name: letters, digits, '.', '_' and '-', not starting with '.' (no paths)."""
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a model name (letters, digits, '.', '_', '-')")
    return text


def _kind_list(text: str) -> list[str]:
    """Evaluation series kinds, comma-separated, from dose, views, texture, blur."""
    kinds = [k for k in text.split(",") if k]
    if not kinds or any(k not in KINDS for k in kinds):
        raise argparse.ArgumentTypeError(f"{text!r}: choose among {', '.join(KINDS)}, comma-separated")
    if len(set(kinds)) < len(kinds):
        raise argparse.ArgumentTypeError(f"{text!r} names a kind twice")
    return kinds


def _option_type(convert: Callable[[str], float], accept: Callable[[float], bool], says: str) -> Callable:
    """An argparse type: ``convert`` the option's text, and refuse a value that ``accept`` rejects, saying
    ``says`` (formatted with the text). A text ``convert`` cannot read is argparse's "invalid int value"."""
    def parse(text: str):
        value = convert(text)
        if not accept(value):
            raise argparse.ArgumentTypeError(says.format(text))
        return value

    parse.__name__ = convert.__name__
    return parse


_positive_int = _option_type(int, lambda v: v >= 1, "{} is not a positive integer")
_count = _option_type(int, lambda v: v >= 0, "{} is not a count (0 or more)")


def _up_to(limit: int, lowest: int = 1) -> Callable:
    """A whole number from ``lowest`` to ``limit``: counts that size what is built before the work starts
    (insertion plans, batches, series lists), where an absurd value would fill the memory, not just take time."""
    return _option_type(int, lambda v: lowest <= v <= limit, f"{{}}: choose from {lowest} to {limit:,}")


_realizations, _repeats, _batch = _up_to(100_000), _up_to(1_000), _up_to(1_024)
_bases = _up_to(10_000, lowest=0)  # phantoms and variants of a dataset or bank
_seed = _option_type(int, lambda v: 0 <= v < 2**32, f"{{}} is not a seed (0 to {2**32 - 1})")
_views = _option_type(int, lambda v: MIN_VIEWS <= v <= MAX_VIEWS, f"{{}} views: choose from {MIN_VIEWS} to {MAX_VIEWS}")
_positive_float = _option_type(float, lambda v: 0 < v < math.inf, "{} is not a positive number")
_weight = _option_type(float, lambda v: 0 <= v < math.inf, "{} is not a weight (a number, 0 or more)")
_fraction = _option_type(float, lambda v: 0.0 <= v < 1.0, "{} is not a fraction in [0, 1)")
_device_name = _option_type(str, is_device_name, f"{{!r}} is not a device: choose {DEVICES}")
_photons = _option_type(float, lambda v: 1 <= v <= MAX_PHOTONS, f"{{}} photons per ray: choose from 1 to {MAX_PHOTONS:g}")


MAX_BENCH_VOXELS = 200_000_000  # 2.5 times the 512 × 512 × 300 default: some 3 GB while the bench builds it


def _path(text: str) -> str:
    """An argparse type: a file or folder's path, refusing an empty one (which would name the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty text names no file or folder")
    return text


def _volume_shape(text: str) -> list[int]:
    """``slices,rows,cols`` of the bench's synthetic volume: its slice is resampled to 320 px along its longer
    side (as a 512² slice at 0.7 mm × 320 / 512), so that the shorter side must keep ``MIN_SIZE`` pixels."""
    try:
        shape = [int(x) for x in text.split(",")]
    except ValueError:
        shape = []
    if len(shape) != 3 or not 1 <= shape[0] <= 2_000 or not MIN_SIZE <= min(shape[1:]) <= max(shape[1:]) <= 2_048:
        raise argparse.ArgumentTypeError(f"{text!r} is not three sizes, slices,rows,cols, of 1 to 2,000 slices of "
                                         f"{MIN_SIZE} to 2,048 pixels a side")
    if math.prod(shape) > MAX_BENCH_VOXELS:
        raise argparse.ArgumentTypeError(f"{text!r} is {math.prod(shape):,} voxels; at most {MAX_BENCH_VOXELS:,} "
                                         "(the bench builds the volume in memory, some 16 bytes a voxel)")
    if min(shape[1:]) * MIN_FIELD_PX < MIN_SIZE * max(shape[1:]):
        raise argparse.ArgumentTypeError(f"{text!r}: rows and columns differ more than 5 times (the slice is "
                                         f"resampled to {MIN_FIELD_PX} pixels along its longer side)")
    return shape


def _float_list(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers")
    return values


_contrasts = _option_type(_float_list, lambda v: all(0 < c < 1 for c in v),
                          "contrasts {} do not all lie in (0, 1) (window-normalised units)")


def _device(name: str) -> str:
    from .models import resolve_device

    return resolve_device(name)


def _progress(args: argparse.Namespace):
    from .progress import ProgressReporter

    return ProgressReporter(args.progress)


def _print_result(args: argparse.Namespace, result) -> None:
    """The command's result as JSON on stdout: indented for a reader, on one line after ``--progress
    jsonl`` events, so that the whole output stays one JSON object per line."""
    print(json.dumps(result, indent=None if args.progress == "jsonl" else 2))


def cmd_simulate(args: argparse.Namespace) -> None:
    _print_result(args, {"outputs": _simulate(args)})


def _simulated_path(out: Path, name: str, acquisition) -> Path:
    """Where ``simulate`` writes the image ``name`` acquired with ``acquisition`` (an :class:`Acquisition`)."""
    return out / f"{name}_dose{acquisition.dose:g}_views{acquisition.views}_{acquisition.filter}.nrrd"


def _simulate(args: argparse.Namespace) -> list[str]:
    """Write the simulated series of ``args.input``; returns the written paths, best dose first."""
    from .io import check_outputs, image_like, read_volume, staged_in, write_image
    from .simulate import NO_GRAIN, Acquisition, estimate_noise_grain, simulate_series, slice_seed

    try:
        acqs = [Acquisition(dose=d, views=args.views, filter=args.filter) for d in args.doses]
    except ValueError as exc:
        raise InputError(str(exc)) from None
    vol = read_volume(args.input, args.modality)
    if vol.modality != "ct":
        raise InputError(f"{vol.name}: simulate needs a CT image (HU); got {vol.modality.upper()}")
    sx, sy = vol.spacing_xy
    if abs(sx - sy) > 1e-3 * sx:
        raise InputError(f"{vol.name}: simulate needs square pixels (spacing {sx} x {sy} mm)")
    photons = min(args.doses) * args.i0
    if photons < 1.0:
        raise InputError(f"dose {min(args.doses):g} at --i0 {args.i0:g} is {photons:.2g} photons per ray; "
                         "at least 1 is needed")
    paths = [_simulated_path(Path(args.out), vol.name, a) for a in acqs]
    if len(set(paths)) < len(paths):
        raise InputError(f"--doses {','.join(f'{d:g}' for d in args.doses)}: two doses give one output name "
                         "(equal to 6 significant digits)")
    check_outputs(paths, [args.input])
    import hashlib

    settings = {"source_sha256": hashlib.sha256(vol.array.tobytes()).hexdigest(),  # its voxels, not its path
                "i0": args.i0, "seed": args.seed, "noiseless": args.noiseless}  # what a series' noise depends on
    _check_one_simulation(Path(args.out), vol.name, paths, settings)
    progress = _progress(args)
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
    return [str(p) for p in paths]


_SIMULATION_OPTIONS = {"source_sha256": "source image", "i0": "--i0", "seed": "--seed", "noiseless": "--noiseless"}


def _check_one_simulation(out: Path, name: str, paths: list[Path], settings: dict) -> None:
    """A folder holds one simulation of an input's name: its doses, views and filters share the source and
    noise settings (``settings``: the source's voxels, photons, seed, noiseless) that nest its doses. Another
    ``simulate`` into it with other settings (another --i0 or --seed, or another image of the same name)
    replaced some of its images and left the others: a series that looked like one and was not.

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
        elif differ := [option for key, option in _SIMULATION_OPTIONS.items() if was.get(key) != settings[key]]:
            why = f"with another {', '.join(differ)}"
        else:
            continue
        raise InputError(f"{out} holds {other.name}, simulated {why}: this run's images would sit beside it as "
                         "one series; give another --out")


def cmd_teacher(args: argparse.Namespace) -> None:
    from .io import check_same_geometry
    from .report import RESULT_FILES, SERIES_FILES, write_series_summary

    progress = _progress(args)
    volumes, folders = _inputs_and_folders(args, progress, SERIES_FILES if len(args.inputs) > 1 else ())
    check_same_geometry(volumes, "inputs of one series")  # as assess_series does, before torch is loaded
    from .models import load_model

    model, entry = load_model(args.model, "detector")  # torch loads from here on: a bad input or model answers at once,
    # and an unknown model before the device is asked for
    device = _device(args.device)
    model.to(device)
    from .assessment import assess_series
    from .teacher import teacher_scorer

    config = _teacher_config(args)
    scorer = teacher_scorer(model, config, device, progress, slices=volumes[0].array.shape[0])
    settings = {"method": "mD2IQA", **config.settings()}
    results = assess_series(volumes, scorer, "mD2IQA", entry.record(),
                            config.insertion, progress)
    _warn(volumes, results)
    if len(volumes) > 1 and any(not any(r.assessable) for r in results):
        _warn_lines(["the images of a series are scored where all of them show body: where one shows none, "
                     "the others have no assessable slice either; score them apart"])
    for res in results:  # without one assessable slice, no repeat scores: empty, as in series.json
        res.details.update({"repeat_scores": [], "score_se": None, **res.details, **settings})
    series = ((lambda out: write_series_summary(results, args.inputs, out, {**settings, "model": entry.record()}))
              if len(volumes) > 1 else None)  # the summary names its detector, as each result.json does
    _write_results(volumes, results, folders, progress, Path(args.out), series)
    _warn_lines(_other_layout_files(Path(args.out), SERIES_FILES if series else RESULT_FILES, args.inputs))
    summary = [{"name": r.name, "score": r.to_json()["score"], "out": str(f)} for r, f in zip(results, folders)]
    _print_result(args, summary if len(summary) > 1 else summary[0])


def _write_results(volumes: list, results: list, folders: list[Path], progress: Progress, out: Path,
                   summary: Callable[[Path], None] | None = None) -> None:
    """Each input's result files (:func:`~EDIQALib.report.write_outputs`) in its folder under ``out``, then
    the files that set them side by side (``summary``, given the folder to write them into, staged in
    ``out``), as progress stage ``writing`` (a large volume's heatmap takes seconds to compress). All are staged and moved into place together at the end: an
    interrupt or an error before all are written leaves none of them, and an earlier run's set whole. Each
    folder is staged in itself, on its own file system (an input's folder may be a link to another)."""
    from .io import staged_together
    from .report import write_outputs

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
    from .io import input_files, is_input
    from .report import COMPARISON_FILES, RESULT_FILES, SERIES_FILES

    sources = input_files(inputs)
    other = [name for name in (*RESULT_FILES, *SERIES_FILES, *COMPARISON_FILES)
             if name not in kept and (out / name).is_file() and not is_input(out / name, sources)]
    return [f"{out} also holds {', '.join(other)}, which this run did not write (an earlier run's of another kind, "
            "or files of your own): they are not of these inputs"] if other else []


def _warn(volumes: list, results: list) -> None:
    """The results' caveats (:func:`~EDIQALib.assessment.caveats`) as warning lines on stderr, after the work."""
    from .assessment import caveats

    _warn_lines([c for v, r in zip(volumes, results) for c in caveats(v, r)])


def _warn_lines(lines: list[str]) -> None:
    for line in lines:
        _say("warning", line)


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
    from .io import check_outputs
    from .report import RESULT_FILES

    out = Path(args.out)
    folders = [out] if len(names) == 1 and not summary_files else [out / n for n in names]
    check_outputs([f / name for f in folders for name in RESULT_FILES] + [out / name for name in summary_files],
                  args.inputs)
    return folders


def cmd_assess(args: argparse.Namespace) -> None:
    from .assessment import student_assessor
    from .report import RESULT_FILES

    progress = _progress(args)
    volumes, folders = _inputs_and_folders(args, progress)  # one input
    results = [student_assessor(args.model, args.device)(volumes[0], progress)]
    _warn(volumes, results)
    _write_results(volumes, results, folders, progress, Path(args.out))
    _warn_lines(_other_layout_files(Path(args.out), RESULT_FILES, args.inputs))
    _print_result(args, {"name": results[0].name, "score": results[0].to_json()["score"], "out": args.out})


def cmd_compare(args: argparse.Namespace) -> None:
    """Each input is read twice: first all of them, so that a bad one is refused before any work, then one
    at a time to be assessed and written, so that memory holds one input and its heatmap, however many."""
    from dataclasses import replace

    from .assessment import caveats, student_assessor
    from .io import read_volume, staged_together
    from .report import COMPARISON_FILES, compared_input, write_comparison, write_outputs

    progress = _progress(args)
    grids, names = _read_inputs(args, progress, COMPARISON_FILES, keep=lambda v: v.geometry)
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
    _warn_lines(notes)
    _print_result(args, [{"name": c.name, "score": c.result["score"]} for c in compared])


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
        if len(positions) != len(first):
            why = f"{len(first)} and {len(positions)} slices"
        elif abs(float(np.dot(normal, first_normal))) < 0.9999:
            why = "slices in other planes"
        elif np.abs(positions - first).max() > 0.25 * grids[0].spacing[2]:
            steps = (grids[0].spacing[2], grid.spacing[2])
            why = (f"slices {steps[0]:g} and {steps[1]:g} mm apart" if abs(steps[0] - steps[1]) > 1e-3 * steps[0]
                   else f"first slices {abs(positions[0] - first[0]):.3g} mm apart")
        else:
            continue
        return [f"{inputs[0]} and {path} have their slices at different positions ({why}): compare.csv and "
                "the curves pair slices by number, not by position"]
    return []


def _teacher_config(args: argparse.Namespace):
    from .signals import InsertionConfig
    from .teacher import TeacherConfig

    insertion = InsertionConfig(contrasts=tuple(args.contrasts)) if args.contrasts else InsertionConfig()
    return TeacherConfig(realizations=args.realizations, repeats=args.repeats, seed=args.seed,
                         readout=args.readout, psf_aware=not args.no_psf, insertion=insertion)


Kept = TypeVar("Kept")


def _read_inputs(args: argparse.Namespace, progress: Progress, summary_files: tuple[str, ...],
                 keep: Callable[[Volume], Kept]) -> tuple[list[Kept], list[str]]:
    """Each input read in turn as progress stage ``reading`` (a DICOM series of hundreds of files takes
    seconds): what ``keep`` takes of its volume, and the name its results' folder will have
    (:func:`folder_names`)."""
    from .io import input_file, read_volume

    _refuse_twice([Path(p) for p in args.inputs], "input", input_file)  # its results would be compared with themselves
    kept, names = [], []
    for done, path in enumerate(args.inputs):
        progress("reading", done, len(args.inputs))
        volume = read_volume(path, args.modality)
        kept.append(keep(volume))
        names.append(volume.name)
    progress("reading", len(args.inputs), len(args.inputs))
    return kept, folder_names(names, summary_files)


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


def cmd_train_detector(args: argparse.Namespace) -> None:
    from .io import check_outputs
    from .models import model_of_kind

    out = Path(args.out)  # a run folder that cannot be written or resumed, an unknown --init: before torch
    check_outputs([out / "run.json"], [])
    inputs = {"init": model_of_kind(args.init, "detector").sha256 if args.init else None}
    _check_resume(out, _read_run_record(out), "ediqa train-detector", args, inputs)
    from io import BytesIO

    import numpy as np
    import torch

    from . import training_log
    from .backgrounds import build_bank, load_bank, training_bases
    from .detector import DetectorTraining, build_detector, check_batch, train_detector
    from .distributed import barrier, distributed_context, world_from_environment
    from .io import write_bytes
    from .teacher import TeacherConfig
    from .validation import default_validation_series, validity_metric

    check_batch(args.batch_size, args.accumulate, world_from_environment()[1])  # before the bank is built
    device = _device(args.device)
    initial, provenance = _initial_model(args.init, "detector", args.preset) if args.init else (None, None)  # before any output
    with distributed_context(device) as (rank, world), _run_lock(out, rank):
        progress = _progress(args) if rank == 0 else None
        bank_path = out / "bank.npz"
        new_run = not (out / "run.json").exists()
        if rank == 0:
            if new_run:  # its settings before its bank: a run stopped while building it resumes only with them
                _write_run_record(out, "ediqa train-detector", args, inputs, world, provenance)
            if not bank_path.exists():
                bank = build_bank(training_bases(args.phantoms, args.back_phantoms), args.bank_projections, seed=args.seed,
                                  workers=args.workers, progress=progress)
                packed = BytesIO()
                np.savez_compressed(packed, **bank)
                write_bytes(packed.getvalue(), bank_path)
        barrier(world)
        bank = load_bank(bank_path)  # a damaged bank of an earlier run: refused before its run.json is rewritten
        if rank == 0 and not new_run:  # a resume records its ranks and free settings (device, workers) anew
            _write_run_record(out, "ediqa train-detector", args, inputs, world, provenance)
        schedule = DetectorTraining(iterations=args.iterations, batch_size=args.batch_size, crop_px=args.crop,
                                    lr=args.lr, snapshot_every=args.snapshot_every, accumulate=args.accumulate,
                                    seed=args.seed)
        validate = None
        if args.validate and rank == 0:
            validate = validity_metric(default_validation_series(),
                                       TeacherConfig(realizations=args.val_realizations, repeats=1), device, progress)
        torch.manual_seed(args.seed)
        model = initial if initial is not None else build_detector(args.preset)
        best = train_detector(model, bank, out, schedule, validate=validate,
                              progress=progress, device=device, rank=rank, world=world)
    if rank == 0:
        print(json.dumps({"best": str(best), "log": str(out / training_log.LOG_NAME)}))


def cmd_validate(args: argparse.Namespace) -> None:
    from .io import check_outputs
    from .models import load_model
    from .report import VALIDITY_FILES, write_validity

    check_outputs([Path(args.out) / name for name in VALIDITY_FILES], [])
    model, entry = load_model(args.model, "detector")  # an unknown model answers before the device is asked for
    from .validation import validity_report  # torch: bad outputs and models answer without it
    device = _device(args.device)
    model.to(device)
    config = _teacher_config(args)
    start = time.perf_counter()
    report = validity_report(model, config, tuple(args.kinds), device=device, progress=_progress(args))
    settings = {"model": entry.record(), **config.settings(),
                "seconds": round(time.perf_counter() - start, 1)}
    write_validity(report, args.out, settings)
    _print_result(args, report["summary"])


def cmd_bench(args: argparse.Namespace) -> None:
    from .io import check_outputs
    from .labels import read_labels
    from .models import load_model, model_of_kind
    from .report import BENCH_FILES, write_bench

    check_outputs([Path(args.out) / name for name in BENCH_FILES], args.labels or [])
    model_of_kind(args.student, "student")  # bad outputs, models and labels answer before torch is loaded
    model_of_kind(args.model, "detector")
    for labels in args.labels or []:
        read_labels(labels)
    student, entry = load_model(args.student, "student")
    detector, teacher = load_model(args.model, "detector")
    from .bench import run_bench, summary_table
    from .distill import check_rankable, load_samples, pool_labellings
    device = _device(args.device)
    student.to(device)
    detector.to(device)
    config = _teacher_config(args)
    shape = tuple(args.volume_shape)
    held_out = pool_labellings([load_samples(p) for p in args.labels]) if args.labels else None
    if held_out is not None:  # before the bench's minutes of work
        check_rankable(held_out, "the --labels", "label more held-out slices")
    figures = run_bench(student, str(entry.weights), detector, config, shape, tuple(args.kinds),
                        teacher_runs=args.teacher_runs, volume_runs=args.volume_runs, device=device,
                        held_out=held_out, dose_draws=args.dose_draws, progress=_progress(args))
    figures["model"] = entry.record()
    figures["teacher_model"] = teacher.record()  # the detector timed
    write_bench(figures, args.out)
    if args.progress == "jsonl":  # every stdout line one JSON object: the figures, not the table
        _print_result(args, figures)
    else:
        print(summary_table(figures))


def cmd_select_detector(args: argparse.Namespace) -> None:
    from .io import check_outputs, write_bytes, write_text

    run = Path(args.run)
    if not run.is_dir():
        raise InputError(f"run folder not found: {run}")
    check_outputs([run / "best.safetensors", run / "selection.json"], [])  # before the snapshots are evaluated
    snapshots = sorted((run / "snapshots").glob("step*.safetensors"))
    if not snapshots:
        raise InputError(f"no snapshots in {run / 'snapshots'}")
    run_info, _ = _read_run(run, run)
    from .teacher import TeacherConfig  # torch: a run that is none answers without it
    from .validation import default_validation_series, select_checkpoint, validity_metric
    config, device = TeacherConfig(realizations=args.realizations, repeats=1), _device(args.device)
    rows = select_checkpoint(snapshots, lambda: validity_metric(default_validation_series(), config, device),
                             run_info.get("args", {}).get("preset", "lite"), progress=_progress(args))
    best = max((r for r in rows if r["validity"] is not None), key=lambda r: r["validity"])
    write_bytes((run / "snapshots" / best["snapshot"]).read_bytes(), run / "best.safetensors")
    write_text(json.dumps({"realizations": args.realizations, "snapshots": rows, "best": best}, indent=2),
               run / "selection.json")
    print(json.dumps(best))


def cmd_publish_detector(args: argparse.Namespace) -> None:
    from .io import read_json

    run = Path(args.run)
    weights = run / "best.safetensors"
    if not weights.exists():
        raise InputError(f"no best.safetensors in {run}; train with validation first")
    run_info, log = _read_run(run, run)
    settings = run_info.get("args", {})
    _check_finished(run, run_info, "step", log[-1].get("step", 0) if log else 0, "train-detector")
    selection = read_json(run / "selection.json", "selection record") if (run / "selection.json").exists() else None
    if selection is not None:
        _check_selected(run, weights, selection)
    from .detector import ARCHITECTURES, build_detector  # torch: a run that is none answers without it
    from .models import fit_weights, package_model, read_weights
    preset = settings.get("preset", "lite")
    fit_weights(build_detector(preset), read_weights(weights), f"{weights} (preset {preset!r})")
    records = _card_records(args.validity, args.notes, "validity report")
    _check_measured(records, weights, f"--validity {args.validity}")
    init = run_info.get("init")
    start = f"fine-tuned from {init['name']} (sha256 {init['sha256'][:12]}…, its training under training.init)" \
        if init else "trained from scratch"
    card = {
        "description": f"Teacher detector (mD2IQA, {preset} preset): {ARCHITECTURES[preset]}, {start} on lesions "
                       "inserted into simulated CT.",
        "training": {**run_info, "snapshots": log,
                     "data": f"{_bank_text(settings)} across dose (3-100 %), views (60-720), FBP filters, pre-blur "
                             "(0-3 px) and correlated (isotropic or streaky) image noise; objects inserted with "
                             "contrasts 0.03-0.10"},
        "selection": "checkpoint with the highest validity (Spearman rho + relative score drop) on held-out "
                     "phantom series (seeds 500-503)",
    }
    if selection is not None:
        card["selection_figures"] = selection
    dest = package_model(weights, args.name, "detector", preset, {**card, **records}, Path(args.models_dir),
                         [weights, *filter(None, (args.validity, args.notes))])
    print(json.dumps({"weights": str(dest), "card": str(dest.with_suffix(".json"))}))


def _bank_text(settings: dict) -> str:
    """What a detector run's bank was simulated from, with the counts its settings record (a record
    without them: the kinds alone)."""
    counts = [settings.get(k) for k in ("phantoms", "back_phantoms", "bank_projections")]
    if not all(isinstance(n, int) for n in counts):
        return ("seeded body, head and back phantoms (seeds 1000+) and pydicom's 693_J2KI.dcm head CT slice, "
                "simulated")
    return (f"{counts[0]} seeded body and head phantoms and {counts[1]} back phantoms (seeds 1000+) and pydicom's "
            f"693_J2KI.dcm head CT slice, in {counts[2]} simulated acquisitions (3 nested doses each)")


def _check_selected(run: Path, weights: Path, selection: object) -> None:
    """A run's ``selection.json`` describes its ``best.safetensors`` only while that is still the snapshot
    ``select-detector`` chose: training on after it writes a new best over it."""
    from filecmp import cmp

    best = selection.get("best") if isinstance(selection, dict) else None
    chosen = best.get("snapshot") if isinstance(best, dict) else None
    if not isinstance(chosen, str) or Path(chosen).name != chosen:
        raise InputError(f"selection record {run / 'selection.json'} names no snapshot file it chose (best.snapshot)")
    snapshot = run / "snapshots" / chosen
    if not snapshot.is_file() or not cmp(snapshot, weights, shallow=False):  # sizes first, then the bytes
        raise InputError(f"{weights} is no longer {chosen}, which {run / 'selection.json'} chose; run "
                         "`ediqa select-detector` again, or remove selection.json to publish the best of training")


def _check_finished(run: Path, run_info: dict, unit: str, done: object, command: str) -> None:
    """A run is published once it has run the steps or epochs (``unit``) that its ``run.json`` (``run_info``,
    of ``ediqa {command}``) planned; ``done`` is from its log. A run without that record cannot be checked."""
    planned = run_info.get("args", {}).get("iterations" if unit == "step" else "epochs")
    if run_info.get("command") != f"ediqa {command}" or not isinstance(planned, int) or isinstance(planned, bool):
        raise InputError(f"{run} has no run.json of `ediqa {command}` that gives its length: it cannot be checked "
                         "as finished")
    if not isinstance(done, int):
        raise InputError(f"{run}: its training log's last {unit} {done!r} is not a count")
    if done < planned:
        raise InputError(f"{run} stopped after {unit} {done} of {planned}; finish it first (the same "
                         f"`ediqa {command}` command resumes it)")


def _whose_scores(training: dict) -> str:
    """Whose scores and maps a ``train`` run (its ``run.json``) learnt, as its labels files' labeller records
    say: the teacher's (a record with the teacher's settings, or none: a run of an earlier release), or a
    student's, by its name (`ediqa label --model` of a student, to distil it into one network)."""
    labellers = training.get("labellers") or [None]
    students = sorted({r["model"].get("name", "?") for r in labellers
                       if isinstance(r, dict) and "realizations" not in r and isinstance(r.get("model"), dict)})
    teacher = any(not isinstance(r, dict) or "realizations" in r for r in labellers)
    return " and ".join((["the teacher's"] if teacher else []) + [f"{name}'s" for name in students])


def _how_trained(training: dict) -> str:
    """How a ``train`` run (its ``run.json``) made its student, as its card says it."""
    settings, init, whose = training.get("args", {}), training.get("init"), _whose_scores(training)
    if init:
        member = settings.get("init_member")
        return (f"stage-2 regression of {whose} scores and maps, fine-tuned from {init['name']}"
                f"{'' if member is None else f' (its member {member})'} (sha256 {init['sha256'][:12]}…)")
    if settings.get("stage1_iterations") or settings.get("stage1_from"):
        source = f", that of the run {settings['stage1_from']}" if settings.get("stage1_from") else ""
        return (f"two-stage distillation (stage-1 insertion detector on the student's backbone{source}, stage-2 "
                f"regression of {whose} scores and maps)")
    return f"stage-2 regression of {whose} scores and maps from random weights (no stage 1)"


def _check_measured(records: dict, weights: Path, report: str) -> None:
    """A card's metrics (``records``' report, the file ``report``) must be of the weights it is published
    with: the report names the sha256 of the model it measured."""
    from .models import sha256_of

    if "metrics" not in records:
        return
    model = records["metrics"].get("model")
    measured = model.get("sha256") if isinstance(model, dict) else None
    digest = sha256_of(weights)
    if measured != digest:
        what = f"a model of sha256 {measured[:12]}…" if isinstance(measured, str) else "no model it names"
        raise InputError(f"{report} measured {what}, not the weights published ({digest[:12]}…): publish them "
                         "without it, measure the published model, then publish again with its report")


def _card_records(metrics: str | None, notes: str | None, metrics_what: str) -> dict:
    """The JSON files a model card records, read before anything is published: ``metrics`` (a bench or
    validity report, ``metrics_what``) and ``notes``, each where given."""
    from .io import read_json

    records = {"metrics": read_json(metrics, metrics_what)} if metrics else {}
    if metrics and not isinstance(records["metrics"], dict):
        raise InputError(f"{metrics_what} {metrics} is not a JSON object (what `ediqa bench` or `validate` writes)")
    if notes:
        records["notes"] = read_json(notes, "notes file")
    return records


# what a training run writes besides its run.json (stage1-N, stage2: the folders of `train`'s stages)
_RUN_FILES = ("state.pt", "log.jsonl", "bank.npz", "snapshots", "stage1-*", "stage2")
# where and how a run is carried on, not what it trains (micro-batches: the same steps on fewer or more ranks)
_RESUME_FREE = ("out", "device", "workers", "accumulate")


def _check_resume(out: Path, info: dict, command: str, args: argparse.Namespace, inputs: dict) -> None:
    """A run folder that holds a run (``info``, its :func:`_read_run_record`) is resumed only by the same
    command with every setting its ``run.json`` records (but those of :data:`_RESUME_FREE`): another start,
    data, seed, learning rate or length would leave weights that no recorded setting describes, and a
    schedule planned for another length; else one line, before anything is written. The files a run reads
    (``inputs``: the sha256 of its labels, bank and start, by option) are compared by their contents, by
    whatever path they are given, where the record has their sha256 (a run of an earlier release: by the
    paths it recorded); a setting the record lacks is not compared. A folder that holds a run's files but
    no ``run.json`` (a copy without it, or a stage of another run) is refused: what made them is unknown."""
    if not info:
        found = next((p for pattern in _RUN_FILES for p in sorted(out.glob(pattern))), None)
        if found is not None:
            raise InputError(f"{out} holds {found.name} without the run.json of its run (what it was trained with "
                             "is unknown); give another --out")
        return
    if info.get("command") != command:
        raise InputError(f"{out} holds a run of {info.get('command')!r}, not of {command!r}; give another --out")
    by_content = info.get("inputs_sha256", {})
    given = json.loads(json.dumps(_run_settings(args)))  # as its record holds them: lists, not tuples
    changed = [(k, v) for k, v in info.get("args", {}).items()
               if k not in _RESUME_FREE and k not in by_content and k in given and given[k] != v]
    if changed:
        was = ", ".join(f"{_option(k, v)} (given {_option(k, given[k])})" for k, v in changed)
        raise InputError(f"{out} holds a run with {was}; resume it with the same settings, or give another --out "
                         "(to train on from its weights: --init)")
    other = [k for k, digest in by_content.items() if inputs.get(k) != digest]
    if other:
        raise InputError(f"{out} holds a run whose {', '.join('--' + k for k in other)} held other data than "
                         "given now (their sha256 differ, or their order); resume it with the same files, or give "
                         "another --out")
    _check_run_state(out)


def _write_run_record(out: Path, command: str, args: argparse.Namespace, inputs: dict, ranks: int,
                      provenance: dict | None, **extra: object) -> None:
    """A run's ``run.json`` (written atomically: a run killed while writing it still resumes): its command,
    settings (:func:`_run_settings`), inputs' sha256, ranks, its start where it has one and ``extra``
    (counts, the labellers of its data)."""
    from .io import write_text

    record = {"command": command, "args": _run_settings(args), "inputs_sha256": inputs, "ranks": ranks, **extra}
    if provenance is not None:
        record["init"] = provenance
    write_text(json.dumps(record, indent=2), out / "run.json")


def _run_settings(args: argparse.Namespace) -> dict:
    """The settings a run's ``run.json`` records: every argument but how progress is shown."""
    return {k: v for k, v in vars(args).items() if k not in ("func", "progress")}


def _option(key: str, value: object) -> str:
    """A recorded setting as the user gave it: ``--lr 0.001``, ``--labels a.csv b.csv``, ``no --init``;
    a switch (the runs' one, ``--no-validate``, stores False in ``validate``) as given or not."""
    name = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--no-{name}" if not value else f"no --no-{name}"
    if value is None:
        return f"no --{name}"
    return f"--{name} {' '.join(map(str, value)) if isinstance(value, list) else value}"


def _run_lock(out: Path, rank: int):
    """A run folder is written by one run at a time (its rank 0: the others write nothing of it);
    :func:`~EDIQALib.io.exclusive` on ``out/.lock``, which makes the folder."""
    from contextlib import nullcontext

    from .io import exclusive

    return exclusive(out / ".lock", str(out)) if rank == 0 else nullcontext()


def _check_run_state(out: Path) -> None:
    """Before a run is resumed (and its ``run.json`` written again): every resume state and training log in
    it can be read; else one line."""
    from . import training_log
    from .models import load_resume_state

    def kept(name: str) -> list[Path]:  # not the files of a write that was cut off (a hidden staging folder)
        return sorted(p for p in out.glob(f"**/{name}") if not any(part.startswith(".") for part in p.relative_to(out).parts))

    for state in kept("state.pt"):
        load_resume_state(state, "cpu")
    for log in kept(training_log.LOG_NAME):
        training_log.read(log)


def _read_run_record(folder: Path) -> dict:
    """A run folder's ``run.json`` (command and arguments); empty where absent, an input error where it is
    not what a run writes (a JSON object whose settings are an object, with a known preset and whole
    epoch and iteration counts, and whose start, if any, has a name and sha256)."""
    from .choices import PRESETS
    from .io import read_json

    path = folder / "run.json"
    info = read_json(path, "run record") if path.exists() else {}
    if not isinstance(info, dict):
        raise InputError(f"run record {path} is not a JSON object")
    settings, init = info.get("args", {}), info.get("init")
    if not isinstance(settings, dict):
        problem = "its args are not a JSON object"
    elif settings.get("preset", "lite") not in PRESETS:
        problem = f"unknown preset {settings['preset']!r}"
    elif any(not isinstance(settings.get(k, 0), int) or settings.get(k, 0) < 0 for k in ("epochs", "iterations")):
        problem = "its epochs or iterations are not a count"
    elif init is not None and not (isinstance(init, dict) and all(isinstance(init.get(k), str) for k in ("name", "sha256"))):
        problem = "its start (init) lacks a name or sha256"
    elif not (isinstance(inputs := info.get("inputs_sha256", {}), dict) and all(
            v is None or isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
            for v in inputs.values())):
        problem = "its inputs_sha256 is not an object of sha256 texts"
    else:
        return info
    raise InputError(f"run record {path}: {problem}")


def _read_run(settings_dir: Path, log_dir: Path) -> tuple[dict, list[dict]]:
    """A training run's ``run.json`` (:func:`_read_run_record`) and ``log.jsonl`` lines; empty where absent,
    an input error where unreadable."""
    from . import training_log

    log_path = log_dir / training_log.LOG_NAME
    return _read_run_record(settings_dir), training_log.read(log_path) if log_path.exists() else []


def _run_start(run: Path, run_info: dict, preset: str) -> dict:
    """The weights a fine-tuning run started from (its ``--init``, ``--init-member``), checked to be the
    ones it recorded."""
    from .models import find_model

    settings, recorded = run_info.get("args", {}), run_info.get("init")
    if not settings.get("init") or recorded is None:
        raise InputError(f"--blend-init: run {run} did not start from a trained student (--init)")
    member = settings.get("init_member")
    if not (isinstance(settings["init"], str) and isinstance(recorded, dict) and isinstance(recorded.get("sha256"), str)
            and (member is None or (isinstance(member, int) and not isinstance(member, bool)))):
        raise InputError(f"--blend-init: {run / 'run.json'} does not record its start as `ediqa train` does (args.init "
                         "a name or path, args.init_member a number or null, init.sha256 a text)")
    try:
        start = find_model(settings["init"])
    except InputError:
        raise InputError(f"--blend-init: run {run} started from {settings['init']}, not found from here (a path "
                         "is read from where publish-student runs, as train recorded it)") from None
    if start.sha256 != recorded["sha256"]:
        raise InputError(f"--blend-init: run {run} started from {settings['init']} with sha256 "
                         f"{recorded['sha256'][:12]}…, which has since changed")
    return _initial_student(settings["init"], settings.get("init_member"), preset)[0].state_dict()


def _refuse_twice(paths: list[Path], what: str, file_of: Callable[[Path], Path] | None = None) -> None:
    """One file or folder named twice (as itself, or by another path, a hard link or the other file of a NIfTI
    pair; with ``file_of``, two paths it maps to one file) would count twice: an ensemble of a student with
    itself, a training set with every slice doubled, an image compared with itself."""
    from .io import image_file, resolved, same_file

    files = [(file_of or image_file)(p) for p in paths]
    for i, (p, f) in enumerate(zip(paths, files)):
        earlier = next((q for q, g in zip(paths[:i], files) if resolved(g) == resolved(f) or same_file(g, f)), None)
        if earlier is not None:
            raise InputError(f"the {what} {p} is given twice (also as {earlier})")


def cmd_publish_student(args: argparse.Namespace) -> None:
    runs = [Path(r) for r in args.runs]
    _refuse_twice(runs, "run")
    bests = [run / "stage2" / "best.safetensors" for run in runs]
    trainings, presets = [], set()
    for run, best in zip(runs, bests):
        if not best.exists():
            raise InputError(f"no stage2/best.safetensors in {run}; run `ediqa train` first")
        run_info, log = _read_run(run, run / "stage2")
        _check_finished(run, run_info, "epoch", len(log), "train")
        presets.add(run_info.get("args", {}).get("preset", "lite"))
        trainings.append({**run_info, "epochs": log})
    if len(presets) > 1:
        raise InputError(f"the runs of one ensemble must share their preset; got {', '.join(sorted(presets))}")
    preset = presets.pop()
    from safetensors.torch import save_file  # torch: runs that are none answer without it

    from .models import fit_weights, package_model, read_weights
    from .student import StudentEnsemble, blend_states, ensemble_state, student_for
    records = _card_records(args.bench, args.notes, "bench report")
    states = [read_weights(best) for best in bests]
    for best, state in zip(bests, states):  # each the weights of a student (or ensemble) of the runs' preset
        network = fit_weights(student_for(state, preset), state, f"{best} (preset {preset!r})")
        if len(states) > 1 and isinstance(network, StudentEnsemble):
            raise InputError(f"{best} holds an ensemble (a run fine-tuned from one without --init-member): "
                             "publish it alone, or fine-tune one member per run to publish them together")
    if args.blend_init:
        starts = [_run_start(run, info, preset) for run, info in zip(runs, trainings)]
        try:
            states = [blend_states(start, state, args.blend_init) for start, state in zip(starts, states)]
        except ValueError as exc:  # weights that do not fit the start recorded in their run.json
            raise InputError(f"--blend-init: {exc}") from None
    card = {
        "description": f"EDIQA student ({preset} preset): one forward pass → teacher score and local-quality "
                       f"heatmap; {'; '.join(sorted({_how_trained(t) for t in trainings}))}"
                       + (f"; an ensemble of {len(runs)} students, their probabilities averaged"
                          if len(runs) > 1 else "") + ".",
        "training": trainings[0] if len(runs) == 1 else {"members": trainings},
        "selection": "; ".join(sorted({"epoch with the highest PLCC + SROCC against the teacher on held-out series"
                                       if t.get("held_out_slices", 1) else "epoch of the lowest training loss "
                                       "(no series held out)" for t in trainings})),
    }
    if args.blend_init:
        card["blend_init"] = (f"each run's best weights blended with the weights it started from (--init), "
                              f"{args.blend_init:g} of the start's (weight-space ensembling)")
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "student.safetensors"
        save_file(states[0] if len(states) == 1 else ensemble_state(states), str(weights))
        _check_measured(records, weights, f"--bench {args.bench}")
        dest = package_model(weights, args.name, "student", preset, {**card, **records}, Path(args.models_dir),
                             [*bests, *filter(None, (args.bench, args.notes))])
    print(json.dumps({"weights": str(dest), "card": str(dest.with_suffix(".json"))}))


def cmd_make_dataset(args: argparse.Namespace) -> None:
    import numpy as np
    import SimpleITK as sitk

    from .backgrounds import training_bases
    from .io import CANONICAL_SPACING_MM, check_outputs, staged_in, write_image
    from .series import LEVELS, make_series, series_name
    from .simulate import NO_GRAIN, estimate_noise_grain, phantom, with_acquired_noise

    out = Path(args.out)
    progress = _progress(args)
    first_back = args.first_seed + args.phantoms
    first_noisy_back = first_back + args.back_phantoms
    bases = [(f"phantom-{seed}", seed, "phantom", False) for seed in range(args.first_seed, first_back)]
    bases += [(f"back-{seed}", seed, "back", False) for seed in range(first_back, first_noisy_back)]
    bases += [(f"noisy-back-{seed}", seed, "back", True)
              for seed in range(first_noisy_back, first_noisy_back + args.noisy_back_phantoms)]
    real = next(iter(training_bases(0, 0).values())) if args.real_variants or args.noisy_variants else None
    bases += [(f"ct693-v{v}", v, "real", False) for v in range(args.real_variants)]
    bases += [(f"ct693-n{v}", NOISY_FIRST_SEED + v, "real", True) for v in range(args.noisy_variants)]
    jobs = [(*base, kind) for base in bases for kind in KINDS]
    if not jobs:
        raise InputError("nothing to make: give --phantoms, --back-phantoms, --noisy-back-phantoms, "
                         "--real-variants or --noisy-variants")
    files = {(name, kind): [out / series_name(name, kind) / f"{i}-{kind}-{level:g}.nrrd"
                            for i, level in enumerate(LEVELS[kind])] for name, *_, kind in jobs}
    check_outputs([path for paths in files.values() for path in paths], [])  # before any series is made
    # a series is moved into place whole: one there was made by an earlier run (interrupted), the same
    missing = [job for job in jobs if not all(p.is_file() for p in files[(job[0], job[-1])])]
    for j, (name, seed, source, noisy, kind) in enumerate(missing):
        if source == "phantom":
            hu = phantom(seed)
        elif source == "back":
            hu = phantom(seed, kind="back")
        else:  # the real training slice, turned and mirrored: eight distinct orientations, own noise seeds
            hu = np.rot90(real, seed % 4)
            hu = np.ascontiguousarray(hu[:, ::-1] if (seed // 4) % 2 else hu)
        if noisy:  # a noise of its own, as an acquired slice carries
            hu = with_acquired_noise(hu, np.random.default_rng([seed, 1]))
        # what an acquired slice carries is measured, and its dose and views series grow it; phantoms carry none
        grain = estimate_noise_grain(hu) if source == "real" or noisy else NO_GRAIN
        series = make_series(kind, name, hu, seed=seed, grain=grain)
        paths = files[(name, kind)]
        with staged_in(paths[0].parent) as staging:  # the series whole, or none of it: label reads what is there
            for path, image_hu in zip(paths, series.images_hu):
                image = sitk.GetImageFromArray(image_hu)
                image.SetSpacing((CANONICAL_SPACING_MM, CANONICAL_SPACING_MM))
                write_image(image, staging / path.name, "CT")  # a field inside the body has no air to tell HU by
        progress("make-dataset", j + 1, len(missing))
    print(json.dumps({"series": len(jobs), "made": len(missing), "out": str(out)}))


def cmd_label(args: argparse.Namespace) -> None:
    from .assessment import mr_caveat, student_scorer
    from .io import check_outputs
    from .labels import check_new_or_resumed, discover_series, label_series, maps_folder, read_series
    from .models import find_model, load_model

    inputs = discover_series(args.data)
    _refuse_twice([Path(d) for d in args.data], "input")  # its slices would be labelled twice
    for _, files in inputs:  # likewise in one series (an image a series shares with another is fine)
        _refuse_twice(files, "image")
    check_outputs([Path(args.out), *(maps_folder(args.out) / name / "map.npy" for name, _ in inputs)], args.data)
    check_new_or_resumed(args.out, args.resume)
    find_model(args.model)  # an unknown model answers before the images are read
    series = read_series(inputs, args.modality)
    _warn_lines([mr_caveat(s.name) for s in series if s.volumes[0].modality == "mr"])  # before hours of work
    model, entry = load_model(args.model, None)  # a detector (the teacher) or a student, as its card says
    # torch: bad inputs, outputs and models answered without it
    from .distributed import distributed_context, sum_over_ranks
    from .teacher import teacher_scorer
    device = _device(args.device)
    model.to(device)
    config = _teacher_config(args)
    kind = entry.card["kind"]
    scorer = teacher_scorer(model, config, device) if kind == "detector" else student_scorer(model, config.insertion, device)
    with distributed_context(device) as (rank, world):
        progress = _progress(args) if rank == 0 else None
        labeller = {"model": entry.record()}
        if args.modality:  # how the images were read (a file labelled without it: as their tags or values say)
            labeller["modality"] = args.modality
        if kind == "detector":  # the teacher's settings; a student's verdict has none
            labeller.update(config.settings())
        written = label_series(series, scorer, config.insertion, args.out, labeller, args.resume, progress, rank,
                               world, with_psf=kind == "detector")
        written = round(sum_over_ranks(written, world))
    if rank == 0:
        print(json.dumps({"rows_written": written, "labels": args.out, "model": entry.name, "ranks": world}))


def _initial_model(name_or_path: str, kind: str, preset: str) -> tuple[nn.Module, dict]:
    """A trained ``kind`` model (bundled name or ``.safetensors`` with its card) to fine-tune, and its
    provenance for the new model's card: name, sha256 and training record."""
    from .models import load_model

    model, entry = load_model(name_or_path, kind)
    if entry.card["preset"] != preset:
        raise InputError(f"--init {entry.name} is a {entry.card['preset']!r} {kind}; this run trains {preset!r}")
    return model, {**entry.record(),
                   "training": {k: v for k, v in entry.card.get("training", {}).items() if k != "snapshots"}}


def _initial_student(name_or_path: str, member: int | None, preset: str) -> tuple[nn.Module, dict]:
    """The trained student to fine-tune, ``name_or_path`` whole or its ensemble's ``member``-th student, and
    its provenance (as :func:`_initial_model`)."""
    from .student import StudentEnsemble

    model, provenance = _initial_model(name_or_path, "student", preset)
    if member is None:
        return model, provenance
    if not isinstance(model, StudentEnsemble):
        raise InputError(f"--init-member {member}: --init {name_or_path} is one student, not an ensemble")
    if not 0 <= member < len(model.members):
        raise InputError(f"--init-member {member}: --init {name_or_path} has members 0-{len(model.members) - 1}")
    return model.members[member], provenance


def cmd_train(args: argparse.Namespace) -> None:
    from .io import check_outputs
    from .labels import labeller_record, maps_folder, read_labels
    from .models import model_of_kind, sha256_of

    out = Path(args.out)
    if args.init_member is not None and not args.init:
        raise InputError("--init-member picks a member of the --init ensemble; pass --init with it")
    if args.init and (args.stage1_iterations or args.bank):
        raise InputError("--init starts stage 2 from a trained student: it trains no stage 1; give it without --bank "
                         "(and with no --stage1-iterations, or 0)")
    if args.stage1_from and (args.init or args.bank or args.stage1_iterations):
        raise InputError("--stage1-from takes stage 1 from another run: give it without --init, --bank or "
                         "--stage1-iterations")
    stage1 = _finished_stage1(Path(args.stage1_from), args.preset) if args.stage1_from else []
    if args.stage1_iterations is None:  # stage 1 trained here: by default, unless another start is given
        args.stage1_iterations = 0 if args.init or args.stage1_from else STAGE1_ITERATIONS
    if args.stage1_iterations and not args.bank:
        raise InputError("stage 1 needs --bank (a train-detector run's bank.npz), or --stage1-iterations 0")
    _refuse_twice([Path(p) for p in args.labels], "labels file")
    for labels in args.labels:  # bad labels, a run folder that cannot be written, an unknown --init: before torch
        read_labels(labels)
    if args.stage1_iterations and not Path(args.bank).is_file():
        raise InputError(f"--bank {args.bank}: no such file")
    inputs = {"labels": [sha256_of(p) for p in args.labels],
              "bank": sha256_of(args.bank) if args.stage1_iterations else None,
              "init": model_of_kind(args.init, "student").sha256 if args.init else None,
              "stage1_from": [sha256_of(p) for p in stage1] if stage1 else None}
    recorded = _read_run_record(out)
    if args.batch_size is None:  # a resumed run keeps the batch it recorded; a new one's fits its data (below)
        args.batch_size = recorded.get("args", {}).get("batch_size")
    _check_resume(out, recorded, "ediqa train", args, inputs)
    check_outputs([out / "run.json"], [*args.labels, *map(maps_folder, args.labels)])  # nor into the labels' maps
    import torch

    from .backgrounds import load_bank
    from .detector import DetectorTraining, train_detector
    from .detector import check_batch as check_detector_batch  # stage 1's; stage 2's is distill's
    from .distill import (StudentTraining, check_batch, check_rankable, check_series_apart, fitting_batch,
                          load_samples, split_by_series, stage1_detectors, train_student, transfer_backbones)
    from .distributed import distributed_context, world_from_environment
    from .models import read_weights
    from .student import Student

    device = _device(args.device)
    check_series_apart(args.labels)
    train, val = split_by_series([s for labels in args.labels for s in load_samples(labels)], args.held_out)
    if not train:
        slices = f"{len(val)} slice{'s' * (len(val) != 1)}"
        raise InputError(f"--held-out {args.held_out:g} holds out every series of the labels ({slices}): nothing "
                         "is left to train on; hold out less, or label more series")
    if val:  # none: the lowest training loss is kept (a warning says so)
        check_rankable(val, f"the series held out by --held-out {args.held_out:g}",
                       "hold out more (or, with --held-out 0, keep the epoch of the lowest training loss)")
    ranks = world_from_environment()[1]
    if args.stage1_iterations:  # stage 1 trains detectors at their own batch: it cuts as the stage 2 batch must
        try:
            check_detector_batch(DetectorTraining.batch_size, args.accumulate, ranks)
        except InputError as exc:
            raise InputError(f"stage 1 (its detectors' batch: {DetectorTraining.batch_size}): {exc}") from None
    args.batch_size = args.batch_size or fitting_batch(len(train), args.accumulate, ranks)  # run.json records it
    cfg = StudentTraining(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, rank_weight=args.rank_weight,
                          map_weight=args.map_weight, mix=args.mix, accumulate=args.accumulate, seed=args.seed)
    check_batch(cfg, len(train), ranks)  # before any output or stage 1
    initial, provenance = (_initial_student(args.init, args.init_member, args.preset) if args.init
                           else (None, None))  # before any output
    bank = load_bank(args.bank) if args.stage1_iterations else None  # likewise
    with distributed_context(device) as (rank, world), _run_lock(out, rank):
        progress = _progress(args) if rank == 0 else None
        if rank == 0:
            _write_run_record(out, "ediqa train", args, inputs, world, provenance,
                              train_slices=len(train), held_out_slices=len(val),
                              labellers=[labeller_record(p) for p in args.labels])  # whose scores it learns
        torch.manual_seed(args.seed)
        student = initial if initial is not None else Student(args.preset)
        if bank is not None or stage1:  # stage 1 trained here, or taken from another run (--stage1-from)
            detectors = stage1_detectors(args.preset)
            for i, det in enumerate(detectors):
                if stage1:
                    det.load_state_dict(read_weights(stage1[i]))
                else:
                    train_detector(det, bank, out / f"stage1-{i}",
                                   DetectorTraining(iterations=args.stage1_iterations, accumulate=args.accumulate,
                                                    seed=args.seed), progress=progress, device=device,
                                   rank=rank, world=world)
            transfer_backbones(student, detectors)
        best = train_student(student.to(device), train, val, out / "stage2", cfg, progress, rank, world)
    if rank == 0:
        if not val:
            _say("warning", f"--held-out {args.held_out:g} held out no series of these labels; the best epoch "
                            "kept is the one of the lowest training loss, not the closest to the teacher")
        print(json.dumps({"best": str(best), "train_slices": len(train), "held_out_slices": len(val),
                          "ranks": world}))


def _finished_stage1(run: Path, preset: str) -> list[Path]:
    """The stage-1 detectors' final weights of the `train` run ``run``, one per backbone of ``preset``
    (``stage1-N/snapshots``, at its last step), for ``train --stage1-from``: students of other seeds on the
    stage 1 of one.

    Raises:
        InputError: ``run`` is no `train` run of that preset that trained a stage 1, or its stage 1 is unfinished.
    """
    from .student import STUDENT_SPECS
    from .training_log import snapshot_path

    info = _read_run_record(run)
    settings = info.get("args", {})
    iterations = settings.get("stage1_iterations")
    if info.get("command") != "ediqa train" or settings.get("preset", "lite") != preset:
        raise InputError(f"--stage1-from {run}: no run.json of `ediqa train` of the {preset} preset")
    if not isinstance(iterations, int) or iterations <= 0:
        raise InputError(f"--stage1-from {run}: that run trained no stage 1 of its own; give the run that did")
    weights = [snapshot_path(run / f"stage1-{i}", iterations) for i in range(len(STUDENT_SPECS[preset]["backbones"]))]
    missing = next((w for w in weights if not w.is_file()), None)
    if missing is not None:
        raise InputError(f"--stage1-from {run}: its stage 1 is unfinished ({missing.relative_to(run)} missing); "
                         "finish that run first (its command resumes it)")
    return weights


def cmd_demo(args: argparse.Namespace) -> None:
    """A dose series simulated from the bundled sample, the student on the sample (scores, heatmap, overlay),
    then on the series (side-by-side comparison)."""
    from .io import check_outputs
    from .report import COMPARISON_FILES, RESULT_FILES
    from .simulate import Acquisition

    out = Path(args.out)
    parse = build_parser().parse_args
    simulation = parse(["simulate", str(DEMO_SAMPLE), "--out", str(out / "dose-series"), "--progress", args.progress])
    planned = [_simulated_path(out / "dose-series", DEMO_SAMPLE.stem, Acquisition(d, simulation.views, simulation.filter))
               for d in simulation.doses]
    compared = folder_names([p.stem for p in planned], COMPARISON_FILES)
    check_outputs([*(out / "assess" / name for name in RESULT_FILES), *planned,
                   *(out / "compare" / folder / name for folder in compared for name in RESULT_FILES),
                   *(out / "compare" / name for name in COMPARISON_FILES)], [])  # every step's outputs, before the first
    series = _simulate(simulation)  # first: it refuses a folder of another simulation, before anything is written
    cmd_assess(parse(["assess", str(DEMO_SAMPLE), "--out", str(out / "assess"), "--progress", args.progress]))
    cmd_compare(parse(["compare", *series, "--out", str(out / "compare"), "--progress", args.progress]))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``ediqa`` subcommand (built without torch: see ``choices``)."""
    from . import __version__

    parser = _Parser(prog="ediqa", description="Task-based, no-reference image quality for CT and MR.")
    parser.add_argument("--version", action="version", version=f"ediqa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def device_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", type=_device_name, default="auto", metavar=DEVICES,
                       help="auto (default): a CUDA GPU when there is one, else the CPU; cuda:N: the GPU of index N")

    def teacher_options(p: argparse.ArgumentParser, realizations: int, repeats: int,
                        model_help: str = "bundled detector name or .safetensors path") -> None:
        p.add_argument("--model", type=_path, default=DEFAULT_DETECTOR, help=model_help)
        p.add_argument("--realizations", type=_realizations, default=realizations,
                       help="insertion maps per repeat, each scored by the detector")
        p.add_argument("--repeats", type=_repeats, default=repeats,
                       help="repeats of the realisations, each on new maps; the score is their mean")
        p.add_argument("--seed", type=_seed, default=0, help="seed of the insertion maps (the same seed: the same score)")
        p.add_argument("--readout", choices=READOUTS, default="agnostic",
                       help="class-agnostic mAP (default) or the paper's 4-class mAP")
        p.add_argument("--no-psf", action="store_true", help="blur inserted objects by 1 px only (the paper)")
        p.add_argument("--contrasts", type=_contrasts,
                       help="object contrasts, window-normalised (default 0.03,0.04,0.05; the paper: 0.08,0.09,0.1)")
        device_option(p)

    def accumulate_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--accumulate", type=_positive_int, default=1,
                       help="micro-batches per rank and step, gradients averaged (one process with N "
                            "takes the gradient steps of N torchrun ranks)")

    def modality_option(p: argparse.ArgumentParser, modalities: tuple[str, ...] = ("ct", "mr")) -> None:
        p.add_argument("--modality", choices=modalities,
                       help="the input's modality (default: its DICOM tag, or CT when its values are in HU)")

    image_help = "an image file (NRRD, NIfTI, MHA/MHD, DICOM) or a folder of one DICOM series"
    preset_help = "lite (for CPUs) or paper (GPUs)"

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--progress", choices=("bar", "jsonl", "none"), default="bar",
                       help="bar: a terminal bar on stderr; jsonl: one JSON object per line on stdout; none: "
                            "no progress output")

    p = sub.add_parser("simulate", help="simulate a CT dose / sparse-view / filter series of an image")
    p.add_argument("input", type=_path, metavar="INPUT", help=image_help)
    p.add_argument("--doses", type=_float_list, default=[1.0, 0.5, 0.25, 0.1, 0.05],
                   help="fractions of full dose")
    p.add_argument("--views", type=_views, default=360, help="projections over 180°")
    p.add_argument("--filter", choices=FILTERS, default="ramp", help="FBP reconstruction filter")
    p.add_argument("--i0", type=_photons, default=2.0e5, help="photons per ray at dose 1 (default: 2e5)")
    p.add_argument("--noiseless", action="store_true",
                   help="the input carries no noise of its own (a digital phantom); by default an acquired "
                        "image's own noise is measured per slice and grows as the dose falls")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the photon-count noise")
    modality_option(p, ("ct",))  # a CT simulator: an image without a DICOM tag may be declared CT, never MR
    p.add_argument("--out", type=_path, default="simulated",
                   help="folder for the simulated images, one per dose (NAME_doseD_viewsV_FILTER.nrrd)")
    common(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("teacher", help="score images with the task-based teacher (mD2IQA)")
    p.add_argument("inputs", type=_path, nargs="+", metavar="INPUT",
                   help=f"{image_help}; several: versions of one image, scored on the same insertion maps")
    teacher_options(p, realizations=100, repeats=5)
    modality_option(p)
    p.add_argument("--out", type=_path, default="out",
                   help="folder for result.json, heatmap.nrrd and overlay.png; with several inputs, a folder of "
                        "these per input and the series' series.json, series.csv and series.png")
    common(p)
    p.set_defaults(func=cmd_teacher)

    for name, helptext in (("assess", "assess image quality with the student (fast)"),
                           ("compare", "assess several volumes side by side (JSON, CSV, PNG)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("inputs", type=_path, nargs=1 if name == "assess" else "+", metavar="INPUT", help=image_help)
        p.add_argument("--model", type=_path, default=DEFAULT_STUDENT, help="bundled student name or .safetensors path")
        modality_option(p)
        device_option(p)
        p.add_argument("--out", type=_path, default="out",
                       help="folder for result.json, heatmap.nrrd and overlay.png" if name == "assess" else
                       "folder for compare.json, compare.csv, compare.png and a folder of results per input")
        common(p)
        p.set_defaults(func=cmd_assess if name == "assess" else cmd_compare)

    p = sub.add_parser("bench", help="student vs teacher speed, volume time, memory, validity → bench.json, bench.png")
    p.add_argument("--student", type=_path, default=DEFAULT_STUDENT, help="student to benchmark")
    teacher_options(p, realizations=100, repeats=5)
    p.add_argument("--teacher-runs", type=_positive_int, default=1, help="teacher timings to take the median of")
    p.add_argument("--volume-shape", default=[300, 512, 512], type=_volume_shape,
                   help="slices,rows,cols of the synthetic volume timed end to end")
    p.add_argument("--volume-runs", type=_positive_int, default=3, help="volume timings to take the median of")
    p.add_argument("--kinds", type=_kind_list, default=list(KINDS),
                   help="evaluation series for the validity figures")
    p.add_argument("--dose-draws", type=_positive_int, default=8,
                   help="noise draws of each evaluation slice's dose series for the dose-order figure")
    p.add_argument("--labels", type=_path, nargs="+",
                   help="held-out teacher labels (`ediqa label` CSV) for the fidelity "
                   "figures; several labellings of the same slices (other --seed) are pooled")
    p.add_argument("--out", type=_path, default="out/bench", help="folder for bench.json and bench.png")
    common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("train-detector", help="train the teacher's detector on inserted lesions")
    p.add_argument("--out", type=_path, required=True,
                   help="run folder (resumes the run it holds, given the same settings)")
    p.add_argument("--preset", choices=PRESETS, default="lite", help=preset_help)
    p.add_argument("--iterations", type=_positive_int, default=4000, help="training steps")
    p.add_argument("--batch-size", type=_batch, default=8, help="crops per step")
    p.add_argument("--crop", default=160, help=f"training crop side in pixels, {MIN_SIZE} to 1,024",
                   type=_up_to(1_024, lowest=MIN_SIZE))
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="peak learning rate")
    p.add_argument("--snapshot-every", type=_positive_int, default=250,
                   help="steps between snapshots, each a candidate for the most valid")
    p.add_argument("--phantoms", type=_up_to(10_000), default=40, help="training body and head phantoms in the bank")
    p.add_argument("--back-phantoms", type=_bases, default=20,
                   help="training back phantoms (small field of view, thick fat) in the bank")
    p.add_argument("--init", type=_path,
                   help="fine-tune this trained detector (bundled name or .safetensors) instead of "
                                  "training from random weights")
    p.add_argument("--bank-projections", type=_up_to(10_000), default=200,
                   help="simulated acquisitions in the bank (3 doses each)")
    p.add_argument("--workers", type=_up_to(256), default=2, help="processes simulating the bank")
    p.add_argument("--no-validate", dest="validate", action="store_false",
                   help="keep the last checkpoint instead of the most valid one")
    p.add_argument("--val-realizations", type=_realizations, default=10,
                   help="teacher realisations per validation image when a snapshot is judged")
    accumulate_option(p)
    p.add_argument("--seed", type=_seed, default=0, help="seed of the bank and of the training draws")
    device_option(p)
    common(p)
    p.set_defaults(func=cmd_train_detector)

    p = sub.add_parser("validate", help="teacher validity on dose / views / texture / blur series")
    teacher_options(p, realizations=20, repeats=2)
    p.add_argument("--kinds", type=_kind_list, default=list(KINDS),
                   help="evaluation series, comma-separated")
    p.add_argument("--out", type=_path, default="out/validity", help="folder for validity.json, validity.csv and validity.png")
    common(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("make-dataset", help="write simulated series (dose, views, texture, blur) as NRRD")
    p.add_argument("--out", type=_path, required=True,
                   help="folder to write into: one folder <base>-<kind> per series, its images as NRRD")
    p.add_argument("--phantoms", type=_bases, default=30, help="body and head phantoms")
    p.add_argument("--back-phantoms", type=_bases, default=0,
                   help="back phantoms (small field, thick fat), seeded after the other phantoms")
    p.add_argument("--first-seed", type=_count, default=2000, help="seed of the first phantom")
    p.add_argument("--real-variants", type=_bases, default=8,
                   help="orientations of the real training CT slice (pydicom 693_J2KI), each with its own noise")
    p.add_argument("--noisy-back-phantoms", type=_bases, default=0,
                   help="back phantoms first given a noise of their own as an acquired slice carries (see "
                        "--noisy-variants), seeded after the plain back phantoms")
    p.add_argument("--noisy-variants", type=_bases, default=0,
                   help="more series of that slice, each first given a noise of its own as an acquired slice "
                        "carries (5-40 HU, grain 0.5-2 px per axis), which its dose and views series grow")
    common(p)
    p.set_defaults(func=cmd_make_dataset)

    p = sub.add_parser("label", help="teacher labels (score + local map per slice) for student training")
    p.add_argument("data", type=_path, nargs="+", metavar="DATA", help="series folders or image files")
    p.add_argument("--out", type=_path, required=True, help="labels CSV; maps go to <name>_maps/")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run into the same --out, with the same model and settings: the "
                        "series it finished are kept, the others labelled")
    teacher_options(p, realizations=100, repeats=5,
                    model_help="the labeller: a detector (the teacher; default detector-lite) or a student, "
                               "e.g. an ensemble whose verdicts one network is to learn (teacher options then "
                               "do not apply); bundled name or .safetensors path")
    modality_option(p)
    common(p)
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("select-detector", help="pick a run's most valid snapshot (validation series)")
    p.add_argument("run", type=_path, help="train-detector run folder")
    p.add_argument("--realizations", type=_realizations, default=20,
                   help="teacher realisations per validation image")
    device_option(p)
    common(p)
    p.set_defaults(func=cmd_select_detector)

    p = sub.add_parser("train", help="two-stage distillation of the teacher into the student")
    p.add_argument("--labels", type=_path, required=True, nargs="+", help="labels CSVs from `ediqa label`")
    p.add_argument("--out", type=_path, required=True,
                   help="run folder (resumes the run it holds, given the same settings)")
    p.add_argument("--preset", choices=PRESETS, default="lite", help=preset_help)
    p.add_argument("--bank", type=_path, help="bank.npz of a train-detector run, for stage 1")
    p.add_argument("--stage1-iterations", type=_count,
                   help=f"stage-1 detector steps (default: {STAGE1_ITERATIONS}; none with --init or --stage1-from); "
                        "0 skips stage 1")
    p.add_argument("--stage1-from", type=_path, metavar="RUN",
                   help="take stage 1 from the finished `train` run RUN instead of training it (students of several "
                        "seeds on one stage 1); RUN is recorded in run.json")
    p.add_argument("--init", type=_path, help="start stage 2 from this trained student (bundled name or .safetensors): "
                                  "fine-tuning on new labels, without stage 1")
    p.add_argument("--init-member", type=_count, metavar="I",
                   help="fine-tune member I (from 0) of the --init ensemble alone, e.g. to distil the ensemble "
                        "into one network on its own labels (`ediqa label --model`)")
    p.add_argument("--epochs", type=_positive_int, default=30, help="stage-2 epochs")
    p.add_argument("--batch-size", type=_batch,
                   help="slices per step (default: 8, or on fewer training slices the most they fill, a multiple "
                        "of 2 × ranks × accumulate)")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="stage-2 learning rate")
    p.add_argument("--rank-weight", type=_weight, default=0.0,
                   help="weight of a pairwise ranking term between two versions of one slice (0: measured best)")
    p.add_argument("--map-weight", type=_weight, default=1.0,
                   help="weight of the heatmap loss against the score loss")
    p.add_argument("--mix", type=_fraction, default=0.0,
                   help="chance per slice and epoch of training on a mixed-quality composite of two versions "
                        "of the slice (map label only), so that the map follows quality within a slice")
    p.add_argument("--held-out", type=_fraction, default=0.2,
                   help="fraction of base slices whose series (all kinds) are held out for validation")
    accumulate_option(p)
    p.add_argument("--seed", type=_seed, default=0, help="seed of the initial weights and the training draws")
    device_option(p)
    common(p)
    p.set_defaults(func=cmd_train)

    def publish_options(p: argparse.ArgumentParser, name: str) -> None:
        p.add_argument("--name", type=_model_name, default=name, help="the model's name in the registry")
        p.add_argument("--models-dir", type=_path, default=str(MODELS_DIR),
                       help="registry folder to publish into (default: the bundled models)")
        common(p)

    p = sub.add_parser("publish-student", help="publish a train run's best student (several runs: their ensemble) "
                                                "into the model registry (default Resources/Models) with its card")
    p.add_argument("runs", type=_path, nargs="+", metavar="run", help="`ediqa train` run folder(s)")
    publish_options(p, DEFAULT_STUDENT)
    p.add_argument("--blend-init", type=_fraction, default=0.0, metavar="W",
                   help="publish each run's best weights blended with the trained student it started from "
                        "(its --init): W of the start's, 1 - W of the best's (0: the best alone)")
    p.add_argument("--bench", type=_path, help="bench.json from `ediqa bench` to record as the card's metrics")
    p.add_argument("--notes", type=_path,
                   help="JSON file of notes (training data, how it was made) to record in the card")
    p.set_defaults(func=cmd_publish_student)

    p = sub.add_parser("publish-detector", help="publish a run's best detector into the model registry (default "
                                                 "Resources/Models) with its card")
    p.add_argument("run", type=_path, help="train-detector run folder")
    publish_options(p, DEFAULT_DETECTOR)
    p.add_argument("--validity", type=_path, help="validity.json from `ediqa validate` to record as the card's metrics")
    p.add_argument("--notes", type=_path, help="JSON file of calibration evidence to record in the card")
    p.set_defaults(func=cmd_publish_detector)

    p = sub.add_parser("demo", help="the student on the bundled sample and on a dose series simulated from it")
    p.add_argument("--out", type=_path, default="out/demo",
                   help="folder for assess/ (the sample's results), dose-series/ and compare/")
    common(p)
    p.set_defaults(func=cmd_demo)
    return parser


# matplotlib's remarks on a figure's looks (a name's letters its font lacks, an image too long for the margins
# around it): the figure is drawn all the same, and stderr keeps to the lines a user must read
_LAYOUT_WARNINGS = (r"Glyph \d+ .* missing from", r"Tight layout not applied")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():
            for layout in _LAYOUT_WARNINGS:
                warnings.filterwarnings("ignore", message=layout, category=UserWarning)
            args.func(args)
    except InputError as exc:
        _say("error", str(exc))
        return 2
    except OSError as exc:  # what no check foresaw: a full disk, a folder that vanished
        where = f" ({exc.filename})" if exc.filename else ""
        _say("error", f"{exc.strerror or exc}{where}")
        return 2
    except KeyboardInterrupt:
        return _interrupted()
    return 0


def _interrupted() -> int:
    """Say that the command was interrupted, in one line after any progress bar; the exit code."""
    io = sys.modules.get("EDIQALib.io")  # not imported: no read has sent stderr elsewhere
    if io is not None:
        io.restore_native_stderr()
    end_line()
    sys.stderr.write("ediqa: interrupted\n")
    return 130


def _keep_freed_memory() -> None:
    """Ask glibc's allocator to keep freed memory for reuse instead of handing it back to the system.
    Each forward pass allocates and frees the same few tensors of several MB; by default glibc maps such
    blocks fresh or trims them from the heap, so every pass pays page faults to touch them again (a
    third of one student's time per 512² slice). The peak memory is unchanged. Elsewhere, a no-op."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB free at the heap's top
    libc.mallopt(-3, 1 << 25)  # M_MMAP_THRESHOLD: blocks up to 32 MiB come from the heap, not fresh maps


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def _end_with_parent() -> None:
    """Started by :class:`~EDIQALib.runner.Runner` (the Slicer panel), end as its Cancel ends it once the
    process that started it is gone: killed or crashed, that process can cancel nothing, and the work (hours
    of labelling or training) would go on unseen until its next progress line failed. A daemon thread checks
    each second that the process named in ``PARENT_ENV`` still exists (not this process's parent: Slicer
    starts Python through a launcher, which outlives it); then it signals this process's group, which the
    runner made for the job, as Cancel does. Elsewhere, or when not started by a runner, a no-op."""
    from .runner import PARENT_ENV

    parent = os.environ.pop(PARENT_ENV, "")  # not for this process's own children: their parent is this one
    if os.name != "posix" or not parent.isdigit():
        return

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a process of another user's: it exists
            pass
        return True

    def watch() -> None:
        while alive(int(parent)):
            time.sleep(1.0)
        os.killpg(os.getpgrp(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def _can_write_folder(folder: Path) -> bool:
    """Whether ``folder`` is, or could be made, a folder this process can write in (nothing is made)."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    return existing.is_dir() and os.access(existing, os.W_OK)


@contextmanager
def _matplotlib_folder() -> Iterator[None]:
    """Where matplotlib cannot write its configuration and cache folders (a home folder that is not writable
    or does not exist, as in a container run under another user ID), a temporary one of its own, removed at
    the end: matplotlib would make one, print two lines about it on stderr on every run, and leave it behind
    (:func:`run` exits without the interpreter's clean-up). Elsewhere, where ``MPLCONFIGDIR`` is set, or where
    no temporary folder can be made either (matplotlib then says why), a no-op. The folders are matplotlib's:
    under ``XDG_CONFIG_HOME`` and ``XDG_CACHE_HOME`` on Linux and FreeBSD, ``~/.matplotlib`` elsewhere."""
    try:
        if sys.platform.startswith(("linux", "freebsd")):
            folders = [Path(os.environ.get(xdg) or Path.home() / default) / "matplotlib"
                       for xdg, default in (("XDG_CONFIG_HOME", ".config"), ("XDG_CACHE_HOME", ".cache"))]
        else:
            folders = [Path.home() / ".matplotlib"]
        writable = all(_can_write_folder(f) for f in folders)
    except RuntimeError:  # no home folder to be found
        writable = False
    if os.environ.get("MPLCONFIGDIR") or writable:
        yield
        return
    try:
        temporary = tempfile.TemporaryDirectory(prefix="ediqa-matplotlib-")
    except OSError:
        yield
        return
    with temporary as folder:
        os.environ["MPLCONFIGDIR"] = folder
        # its font cache is built on every run: matplotlib's note, after 5 s, that it is being built is no news
        logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
        yield


def run() -> None:
    """The console entry (``ediqa``, ``python -m EDIQALib``): :func:`main`, then exit at once. With torch
    loaded the interpreter's teardown takes about two seconds and does nothing useful: by the time
    :func:`main` returns, every output has been written, closed and moved into place. SIGTERM (``kill``,
    the Slicer panel's Cancel) interrupts as Ctrl-C does, so that a write under way is discarded whole;
    started with SIGTERM ignored, it leaves it so, as Python leaves an ignored SIGINT, unless started by
    :class:`~EDIQALib.runner.Runner`, whose Cancel is that signal (a job inherits Slicer's dispositions).
    An interrupt before :func:`main` takes over is the same one line. Without a writable home folder,
    matplotlib is given a temporary one (:func:`_matplotlib_folder`)."""
    from .runner import PARENT_ENV

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN or os.environ.get(PARENT_ENV):
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        _keep_freed_memory()
        _end_with_parent()
        with _matplotlib_folder():
            code = main()
    except KeyboardInterrupt:  # before main's own handling began, or as it ended
        code = _interrupted()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
