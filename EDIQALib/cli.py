"""The ``ediqa`` command line (also ``python -m EDIQALib``). See README for the contract.

Exit codes: 0 success; 2 bad input or usage, with one line on stderr and no traceback.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from .choices import (DEFAULT_DETECTOR, DEFAULT_STUDENT, DEVICES, ENGINE_ROOT, FILTERS, KINDS, MAX_PHOTONS, MAX_VIEWS,
                      MIN_FIELD_PX, MIN_SIZE, MIN_VIEWS, MODELS_DIR, PRESETS, READOUTS, is_device_name)
from .commands.images import (cmd_assess, cmd_compare, cmd_simulate, cmd_split_series, cmd_teacher, folder_names,
                              simulated_path, write_simulation)
from .commands.measuring import cmd_bench, cmd_validate
from .commands.process import end_with_parent, interrupt_on_signal, interrupted, keep_freed_memory, matplotlib_folder
from .commands.publishing import cmd_publish_detector, cmd_publish_student
from .commands.training import (STAGE1_ITERATIONS, cmd_label, cmd_make_dataset, cmd_select_detector, cmd_train,
                                cmd_train_detector)
from .errors import InputError
from .progress import say

DEMO_SAMPLE = ENGINE_ROOT / "Resources" / "SampleData" / "head-ct-slice.nrrd"


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
        say("error", message)
        raise SystemExit(2)


def _model_name(text: str) -> str:
    """A registry name: letters, digits, '.', '_' and '-', not starting with '.' (no paths), nor ending in
    '.safetensors' or '.json' (``--model x.safetensors`` is read as a file's path, not as the name ``x.safetensors``)."""
    if not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a model name (letters, digits, '.', '_', '-')")
    if text.endswith((".safetensors", ".json")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a model name: give it without its "
                                         f"{text[text.rindex('.'):]!r}")
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


_doses = _option_type(_float_list, lambda v: all(0 < d <= 1 for d in v),
                      "{}: each dose is a fraction of the full dose, above 0 and at most 1 (0.5 for 50 %)")
_contrasts = _option_type(_float_list, lambda v: all(0 < c < 1 for c in v),
                          "contrasts {} do not all lie in (0, 1) (window-normalised units)")


def cmd_demo(args: argparse.Namespace) -> None:
    """A dose series simulated from the bundled sample, the student on the sample (scores, heatmap, overlay),
    then on the series (side-by-side comparison)."""
    from .io import check_outputs
    from .report import COMPARISON_FILES, RESULT_FILES, SLICE_COLUMN
    from .simulate import Acquisition

    out = Path(args.out)
    parse = build_parser().parse_args
    simulation = parse(["simulate", str(DEMO_SAMPLE), "--out", str(out / "dose-series"), "--progress", args.progress])
    planned = [simulated_path(out / "dose-series", DEMO_SAMPLE.stem, Acquisition(d, simulation.views, simulation.filter))
               for d in simulation.doses]
    compared = folder_names([p.stem for p in planned], (*COMPARISON_FILES, SLICE_COLUMN))
    check_outputs([*(out / "assess" / name for name in RESULT_FILES), *planned,
                   *(out / "compare" / folder / name for folder in compared for name in RESULT_FILES),
                   *(out / "compare" / name for name in COMPARISON_FILES)], [])  # every step's outputs, before the first
    series = write_simulation(simulation)  # first: it refuses a folder of another simulation, before anything is written
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
        p.add_argument("--modality", choices=modalities, type=str.lower,
                       help="the input's modality (default: its DICOM tag, or CT when its values are in HU)")

    image_help = "an image file (NRRD, NIfTI, MHA/MHD, DICOM) or a folder of one DICOM series"
    preset_help = "lite (for CPUs) or paper (GPUs)"

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--progress", choices=("bar", "jsonl", "none"), default="bar",
                       help="bar: a terminal bar on stderr; jsonl: one JSON object per line on stdout; none: "
                            "no progress output")

    p = sub.add_parser("simulate", help="simulate a CT dose / sparse-view / filter series of an image")
    p.add_argument("input", type=_path, metavar="INPUT", help=image_help)
    p.add_argument("--doses", type=_doses, default=[1.0, 0.5, 0.25, 0.1, 0.05],
                   help="fractions of dose 1, which is --i0 photons per ray (not the input's own dose, whose "
                        "noise the simulation adds to); in one run, so that they are nested")
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

    p = sub.add_parser("split-series", help="copy each DICOM series of a folder into a folder of its own")
    p.add_argument("folder", type=_path, metavar="FOLDER", help="a folder holding the files of several DICOM series")
    p.add_argument("--out", type=_path, default="series",
                   help="folder for one new folder per series, named NUMBER-DESCRIPTION (either alone where the other is "
                        "missing, its UID where both are; -1, -2 after a name that repeats)")
    common(p)
    p.set_defaults(func=cmd_split_series)

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

    p = sub.add_parser("bench", help="student vs teacher speed, volume time, memory, validity: bench.json, bench.png")
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
        os.getcwd()
    except FileNotFoundError:  # torch would fail to load its libraries, relative paths would not resolve
        say("error", "the current folder no longer exists (it was removed or moved): change to one that does")
        return 2
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # argparse's own words, and what assess given several inputs is for
            parser.error(f"unrecognized arguments: {' '.join(extra)}"
                         + (" (assess takes one input; ediqa compare takes several)"
                            if args.command == "assess" and not any(x.startswith("-") for x in extra) else ""))
        with warnings.catch_warnings():
            for layout in _LAYOUT_WARNINGS:
                warnings.filterwarnings("ignore", message=layout, category=UserWarning)
            args.func(args)
    except InputError as exc:
        say("error", str(exc))
        return 2
    except BrokenPipeError:  # stdout's reader has gone (`ediqa ... | head -1`)
        say("error", "standard output was closed by the program reading it (a broken pipe)")
        return 2
    except OSError as exc:  # what no check foresaw: a full disk, a folder that vanished
        from .io import shown_path

        path = exc.filename2 or exc.filename  # a rename's destination: the user's path, not a temporary one
        where = f" ({shown_path(path)})" if path else ""
        say("error", f"{exc.strerror or exc}{where}")
        return 2
    except KeyboardInterrupt:
        return interrupted()
    return 0


def run() -> None:
    """The console entry (``ediqa``, ``python -m EDIQALib``): :func:`main`, then exit at once. With torch
    loaded the interpreter's teardown takes about two seconds and does nothing useful: by the time
    :func:`main` returns, every output has been written, closed and moved into place. SIGTERM (``kill``,
    the Slicer panel's Cancel) interrupts as Ctrl-C does, so that a write under way is discarded whole;
    started with SIGTERM ignored, it leaves it so, as Python leaves an ignored SIGINT, unless started by
    :class:`~EDIQALib.runner.Runner`, whose Cancel is that signal (a job inherits Slicer's dispositions).
    An interrupt before :func:`main` takes over is the same one line. Without a writable home folder,
    matplotlib is given a temporary one (:func:`matplotlib_folder`). Started with stdout or stderr closed
    (Python's ``None``), each is the null device instead, on its own descriptor: no file the run opens
    becomes the stderr that native libraries write to."""
    from .runner import PARENT_ENV

    for fd, name in ((1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is None:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, "w", closefd=False))

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN or os.environ.get(PARENT_ENV):
        signal.signal(signal.SIGTERM, interrupt_on_signal)
    try:
        keep_freed_memory()
        end_with_parent()
        with matplotlib_folder():
            code = main()
    except KeyboardInterrupt:  # before main's own handling began, or as it ended
        code = interrupted()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a full device, a reader gone: what could be said was said
            code = code or 2
    os._exit(code)
