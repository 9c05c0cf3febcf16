"""Training run folders (``train``, ``train-detector``): their ``run.json`` record, the checks before a
run is resumed or published, the lock that keeps one run in a folder, and the weights a run starts from."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from torch import nn


# what a training run writes besides its run.json (stage1-N, stage2: the folders of `train`'s stages)
_RUN_FILES = ("state.pt", "log.jsonl", "bank.npz", "snapshots", "stage1-*", "stage2")


# where and how a run is carried on, not what it trains (micro-batches: the same steps on fewer or more ranks)
_RESUME_FREE = ("out", "device", "workers", "accumulate")


def check_resume(out: Path, info: dict, command: str, args: argparse.Namespace, inputs: dict) -> None:
    """A run folder that holds a run (``info``, its :func:`read_run_record`) is resumed only by the same
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
    check_run_state(out)


def write_run_record(out: Path, command: str, args: argparse.Namespace, inputs: dict, ranks: int,
                     provenance: dict | None, **extra: object) -> None:
    """A run's ``run.json`` (written atomically: a run killed while writing it still resumes): its command,
    settings (:func:`_run_settings`), inputs' sha256, ranks, its start where it has one and ``extra``
    (counts, the labellers of its data)."""
    from ..io import write_text

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


def run_lock(out: Path, rank: int) -> AbstractContextManager[None]:
    """A run folder is written by one run at a time (its rank 0: the others write nothing of it);
    :func:`~EDIQALib.io.exclusive` on ``out/.lock``, which makes the folder."""
    from contextlib import nullcontext

    from ..io import exclusive

    return exclusive(out / ".lock", str(out)) if rank == 0 else nullcontext()


def check_run_state(out: Path) -> None:
    """Before a run is resumed (and its ``run.json`` written again): every resume state and training log in
    it can be read; else one line."""
    from .. import training_log
    from ..models import load_resume_state

    def kept(name: str) -> list[Path]:  # not the files of a write that was cut off (a hidden staging folder)
        return sorted(p for p in out.glob(f"**/{name}") if not any(part.startswith(".") for part in p.relative_to(out).parts))

    for state in kept("state.pt"):
        load_resume_state(state, "cpu")
    for log in kept(training_log.LOG_NAME):
        training_log.read(log)


def read_run_record(folder: Path) -> dict:
    """A run folder's ``run.json`` (command and arguments); empty where absent, an input error where it is
    not what a run writes (a JSON object whose settings are an object, with a known preset and whole
    epoch and iteration counts, and whose start, if any, has a name and sha256)."""
    from ..choices import PRESETS
    from ..io import read_json

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


def read_run(settings_dir: Path, log_dir: Path) -> tuple[dict, list[dict]]:
    """A training run's ``run.json`` (:func:`read_run_record`) and ``log.jsonl`` lines; empty where absent,
    an input error where unreadable."""
    from .. import training_log

    log_path = log_dir / training_log.LOG_NAME
    return read_run_record(settings_dir), training_log.read(log_path) if log_path.exists() else []


def check_finished(run: Path, run_info: dict, unit: str, done: object, command: str) -> None:
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


def initial_model(name_or_path: str, kind: str, preset: str) -> tuple[nn.Module, dict]:
    """A trained ``kind`` model (bundled name or ``.safetensors`` with its card) to fine-tune, and its
    provenance for the new model's card: name, sha256 and training record."""
    from ..models import load_model

    model, entry = load_model(name_or_path, kind)
    if entry.card["preset"] != preset:
        raise InputError(f"--init {entry.name} is a {entry.card['preset']!r} {kind}; this run trains {preset!r}")
    return model, {**entry.record(),
                   "training": {k: v for k, v in entry.card.get("training", {}).items() if k != "snapshots"}}


def initial_student(name_or_path: str, member: int | None, preset: str) -> tuple[nn.Module, dict]:
    """The trained student to fine-tune, ``name_or_path`` whole or its ensemble's ``member``-th student, and
    its provenance (as :func:`initial_model`)."""
    from ..student import StudentEnsemble

    model, provenance = initial_model(name_or_path, "student", preset)
    if member is None:
        return model, provenance
    if not isinstance(model, StudentEnsemble):
        raise InputError(f"--init-member {member}: --init {name_or_path} is one student, not an ensemble")
    if not 0 <= member < len(model.members):
        raise InputError(f"--init-member {member}: --init {name_or_path} has members 0-{len(model.members) - 1}")
    return model.members[member], provenance


def finished_stage1(run: Path, preset: str) -> list[Path]:
    """The stage-1 detectors' final weights of the `train` run ``run``, one per backbone of ``preset``
    (``stage1-N/snapshots``, at its last step), for ``train --stage1-from``: students of other seeds on the
    stage 1 of one.

    Raises:
        InputError: ``run`` is no `train` run of that preset that trained a stage 1, or its stage 1 is unfinished.
    """
    from ..student import STUDENT_SPECS
    from ..training_log import snapshot_path

    info = read_run_record(run)
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
