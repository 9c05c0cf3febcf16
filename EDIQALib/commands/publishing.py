"""The commands that publish a training run as a model of the registry, with its card:
``publish-detector`` and ``publish-student``."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ..errors import InputError
from .common import refuse_twice
from .runs import check_finished, initial_student, read_run


def cmd_publish_detector(args: argparse.Namespace) -> None:
    from ..io import read_json

    run = Path(args.run)
    weights = run / "best.safetensors"
    if not weights.exists():
        raise InputError(f"no best.safetensors in {run}; train with validation first")
    run_info, log = read_run(run, run)
    settings = run_info.get("args", {})
    check_finished(run, run_info, "step", log[-1].get("step", 0) if log else 0, "train-detector")
    selection = read_json(run / "selection.json", "selection record") if (run / "selection.json").exists() else None
    if selection is not None:
        _check_selected(run, weights, selection)
    from ..detector import ARCHITECTURES, build_detector  # torch: a run that is none answers without it
    from ..models import fit_weights, package_model, read_weights
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
    from ..models import sha256_of

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
    from ..io import read_json

    records = {"metrics": read_json(metrics, metrics_what)} if metrics else {}
    if metrics and not isinstance(records["metrics"], dict):
        raise InputError(f"{metrics_what} {metrics} is not a JSON object (what `ediqa bench` or `validate` writes)")
    if notes:
        records["notes"] = read_json(notes, "notes file")
    return records


def _run_start(run: Path, run_info: dict, preset: str) -> dict:
    """The weights a fine-tuning run started from (its ``--init``, ``--init-member``), checked to be the
    ones it recorded."""
    from ..models import find_model

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
    return initial_student(settings["init"], settings.get("init_member"), preset)[0].state_dict()


def cmd_publish_student(args: argparse.Namespace) -> None:
    runs = [Path(r) for r in args.runs]
    refuse_twice(runs, "run")
    bests = [run / "stage2" / "best.safetensors" for run in runs]
    trainings, presets = [], set()
    for run, best in zip(runs, bests):
        if not best.exists():
            raise InputError(f"no stage2/best.safetensors in {run}; run `ediqa train` first")
        run_info, log = read_run(run, run / "stage2")
        check_finished(run, run_info, "epoch", len(log), "train")
        presets.add(run_info.get("args", {}).get("preset", "lite"))
        trainings.append({**run_info, "epochs": log})
    if len(presets) > 1:
        raise InputError(f"the runs of one ensemble must share their preset; got {', '.join(sorted(presets))}")
    preset = presets.pop()
    from safetensors.torch import save_file  # torch: runs that are none answer without it

    from ..models import fit_weights, package_model, read_weights
    from ..student import StudentEnsemble, blend_states, ensemble_state, student_for
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
