"""What the ``ediqa`` commands share: the device, progress and printed result of a command, the teacher's
settings from its options, warning lines, inputs given twice."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..progress import say

if TYPE_CHECKING:
    from ..progress import Progress
    from ..teacher import TeacherConfig


def chosen_device(name: str) -> str:
    """The torch device a ``--device`` option names (``auto``: a CUDA GPU when there is one, else the CPU)."""
    from ..models import resolve_device

    return resolve_device(name)


def progress_for(args: argparse.Namespace) -> Progress:
    """The progress reporter of a command's ``--progress`` option: a bar, JSON lines or nothing."""
    from ..progress import ProgressReporter

    return ProgressReporter(args.progress)


def print_result(args: argparse.Namespace, result) -> None:
    """The command's result as JSON on stdout: indented for a reader, on one line after ``--progress
    jsonl`` events, so that the whole output stays one JSON object per line."""
    print(json.dumps(result, indent=None if args.progress == "jsonl" else 2))


def teacher_config(args: argparse.Namespace) -> TeacherConfig:
    """The teacher's settings from a command's options (realisations, repeats, seed, read-out, contrasts)."""
    from ..signals import InsertionConfig
    from ..teacher import TeacherConfig

    insertion = InsertionConfig(contrasts=tuple(args.contrasts)) if args.contrasts else InsertionConfig()
    return TeacherConfig(realizations=args.realizations, repeats=args.repeats, seed=args.seed,
                         readout=args.readout, psf_aware=not args.no_psf, insertion=insertion)


def refuse_twice(paths: list[Path], what: str, file_of: Callable[[Path], Path] | None = None) -> None:
    """One file or folder named twice (as itself, or by another path, a hard link or the other file of a NIfTI
    pair; with ``file_of``, two paths it maps to one file) would count twice: an ensemble of a student with
    itself, a training set with every slice doubled, an image compared with itself."""
    from ..io import image_file, resolved, same_file

    files = [(file_of or image_file)(p) for p in paths]
    for i, (p, f) in enumerate(zip(paths, files)):
        earlier = next((q for q, g in zip(paths[:i], files) if resolved(g) == resolved(f) or same_file(g, f)), None)
        if earlier is not None:
            raise InputError(f"the {what} {p} is given twice (also as {earlier})")


def warn_lines(lines: list[str]) -> None:
    """Each line as a warning on stderr (:func:`~EDIQALib.progress.say`)."""
    for line in lines:
        say("warning", line)
