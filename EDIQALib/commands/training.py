"""The commands that make training data and train: ``make-dataset``, ``label``, ``train-detector``,
``select-detector`` and ``train``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..choices import KINDS
from ..errors import InputError
from ..progress import say
from .common import chosen_device, progress_for, refuse_twice, teacher_config, warn_lines
from .runs import (check_resume, finished_stage1, initial_model, initial_student, read_run, read_run_record, run_lock,
                   write_run_record)


STAGE1_ITERATIONS = 1000  # stage 1's detector steps, where a `train` run trains its own


NOISY_FIRST_SEED = 100  # series seeds of the noisy real variants, apart from the plain ones (0, 1, ...)


def cmd_make_dataset(args: argparse.Namespace) -> None:
    import numpy as np
    import SimpleITK as sitk

    from ..backgrounds import training_bases
    from ..io import CANONICAL_SPACING_MM, check_outputs, staged_in, write_image
    from ..series import LEVELS, make_series, series_name
    from ..simulate import NO_GRAIN, estimate_noise_grain, phantom, with_acquired_noise

    out = Path(args.out)
    progress = progress_for(args)
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
    from ..assessment import mr_caveat, student_scorer
    from ..io import check_outputs
    from ..labels import check_new_or_resumed, discover_series, label_series, maps_folder, read_series
    from ..models import find_model, load_model

    if Path(args.out).is_dir():
        raise InputError(f"--out {args.out} is a folder: label writes one CSV file (and its maps beside it), e.g. "
                         f"--out {Path(args.out) / 'labels.csv'}")
    inputs = discover_series(args.data)
    refuse_twice([Path(d) for d in args.data], "input")  # its slices would be labelled twice
    for _, files in inputs:  # likewise in one series (an image a series shares with another is fine)
        refuse_twice(files, "image")
    check_outputs([Path(args.out), *(maps_folder(args.out) / name / "map.npy" for name, _ in inputs)], args.data)
    check_new_or_resumed(args.out, args.resume)
    find_model(args.model)  # an unknown model answers before the images are read
    series = read_series(inputs, args.modality)
    warn_lines([mr_caveat(s.name) for s in series if s.volumes[0].modality == "mr"])  # before hours of work
    model, entry = load_model(args.model, None)  # a detector (the teacher) or a student, as its card says
    # torch: bad inputs, outputs and models answered without it
    from ..distributed import distributed_context, sum_over_ranks
    from ..teacher import teacher_scorer
    device = chosen_device(args.device)
    model.to(device)
    config = teacher_config(args)
    kind = entry.card["kind"]
    scorer = teacher_scorer(model, config, device) if kind == "detector" else student_scorer(model, config.insertion, device)
    with distributed_context(device) as (rank, world):
        progress = progress_for(args) if rank == 0 else None
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


def cmd_train_detector(args: argparse.Namespace) -> None:
    from ..io import check_outputs
    from ..models import model_of_kind

    out = Path(args.out)  # a run folder that cannot be written or resumed, an unknown --init: before torch
    check_outputs([out / "run.json"], [])
    inputs = {"init": model_of_kind(args.init, "detector").sha256 if args.init else None}
    check_resume(out, read_run_record(out), "ediqa train-detector", args, inputs)
    from io import BytesIO

    import numpy as np
    import torch

    from .. import training_log
    from ..backgrounds import build_bank, load_bank, training_bases
    from ..detector import DetectorTraining, build_detector, check_batch, train_detector
    from ..distributed import barrier, distributed_context, world_from_environment
    from ..io import write_bytes
    from ..teacher import TeacherConfig
    from ..validation import default_validation_series, validity_metric

    check_batch(args.batch_size, args.accumulate, world_from_environment()[1])  # before the bank is built
    device = chosen_device(args.device)
    initial, provenance = initial_model(args.init, "detector", args.preset) if args.init else (None, None)  # before any output
    with distributed_context(device) as (rank, world), run_lock(out, rank):
        progress = progress_for(args) if rank == 0 else None
        bank_path = out / "bank.npz"
        new_run = not (out / "run.json").exists()
        if rank == 0:
            if new_run:  # its settings before its bank: a run stopped while building it resumes only with them
                write_run_record(out, "ediqa train-detector", args, inputs, world, provenance)
            if not bank_path.exists():
                bank = build_bank(training_bases(args.phantoms, args.back_phantoms), args.bank_projections, seed=args.seed,
                                  workers=args.workers, progress=progress)
                packed = BytesIO()
                np.savez_compressed(packed, **bank)
                write_bytes(packed.getvalue(), bank_path)
        barrier(world)
        bank = load_bank(bank_path)  # a damaged bank of an earlier run: refused before its run.json is rewritten
        if rank == 0 and not new_run:  # a resume records its ranks and free settings (device, workers) anew
            write_run_record(out, "ediqa train-detector", args, inputs, world, provenance)
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


def cmd_select_detector(args: argparse.Namespace) -> None:
    from ..io import check_outputs, write_bytes, write_text

    run = Path(args.run)
    if not run.is_dir():
        raise InputError(f"{run} is a file, not a run folder" if run.exists() else f"run folder not found: {run}")
    check_outputs([run / "best.safetensors", run / "selection.json"], [])  # before the snapshots are evaluated
    snapshots = sorted((run / "snapshots").glob("step*.safetensors"))
    if not snapshots:
        raise InputError(f"no snapshots in {run / 'snapshots'}")
    run_info, _ = read_run(run, run)
    from ..teacher import TeacherConfig  # torch: a run that is none answers without it
    from ..validation import default_validation_series, select_checkpoint, validity_metric
    config, device = TeacherConfig(realizations=args.realizations, repeats=1), chosen_device(args.device)
    rows = select_checkpoint(snapshots, lambda: validity_metric(default_validation_series(), config, device),
                             run_info.get("args", {}).get("preset", "lite"), progress=progress_for(args))
    best = max((r for r in rows if r["validity"] is not None), key=lambda r: r["validity"])
    write_bytes((run / "snapshots" / best["snapshot"]).read_bytes(), run / "best.safetensors")
    write_text(json.dumps({"realizations": args.realizations, "snapshots": rows, "best": best}, indent=2),
               run / "selection.json")
    print(json.dumps(best))


def cmd_train(args: argparse.Namespace) -> None:
    from ..io import check_outputs
    from ..labels import labeller_record, maps_folder, read_labels
    from ..models import model_of_kind, sha256_of

    out = Path(args.out)
    refuse_twice([Path(p) for p in args.labels], "labels file")
    for labels in args.labels:  # the data first: a missing or foreign labels file, before what trains on it
        read_labels(labels)
    if args.init_member is not None and not args.init:
        raise InputError("--init-member picks a member of the --init ensemble; pass --init with it")
    if args.init and (args.stage1_iterations or args.bank):
        raise InputError("--init starts stage 2 from a trained student: it trains no stage 1; give it without --bank "
                         "(and with no --stage1-iterations, or 0)")
    if args.stage1_from and (args.init or args.bank or args.stage1_iterations):
        raise InputError("--stage1-from takes stage 1 from another run: give it without --init, --bank or "
                         "--stage1-iterations")
    stage1 = finished_stage1(Path(args.stage1_from), args.preset) if args.stage1_from else []
    if args.stage1_iterations is None:  # stage 1 trained here: by default, unless another start is given
        args.stage1_iterations = 0 if args.init or args.stage1_from else STAGE1_ITERATIONS
    if args.stage1_iterations and not args.bank:
        raise InputError("stage 1 needs --bank (a train-detector run's bank.npz), or --stage1-iterations 0")
    if args.stage1_iterations and not Path(args.bank).is_file():
        raise InputError(f"--bank {args.bank}: no such file")
    inputs = {"labels": [sha256_of(p) for p in args.labels],
              "bank": sha256_of(args.bank) if args.stage1_iterations else None,
              "init": model_of_kind(args.init, "student").sha256 if args.init else None,
              "stage1_from": [sha256_of(p) for p in stage1] if stage1 else None}
    recorded = read_run_record(out)
    if args.batch_size is None:  # a resumed run keeps the batch it recorded; a new one's fits its data (below)
        args.batch_size = recorded.get("args", {}).get("batch_size")
    check_resume(out, recorded, "ediqa train", args, inputs)
    check_outputs([out / "run.json"], [*args.labels, *map(maps_folder, args.labels)])  # nor into the labels' maps
    import torch

    from ..backgrounds import load_bank
    from ..detector import DetectorTraining, train_detector
    from ..detector import check_batch as check_detector_batch  # stage 1's; stage 2's is distill's
    from ..distill import (StudentTraining, check_batch, check_rankable, check_series_apart, fitting_batch,
                           load_samples, split_by_series, stage1_detectors, train_student, transfer_backbones)
    from ..distributed import distributed_context, world_from_environment
    from ..models import read_weights
    from ..student import Student

    device = chosen_device(args.device)
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
    initial, provenance = (initial_student(args.init, args.init_member, args.preset) if args.init
                           else (None, None))  # before any output
    bank = load_bank(args.bank) if args.stage1_iterations else None  # likewise
    with distributed_context(device) as (rank, world), run_lock(out, rank):
        progress = progress_for(args) if rank == 0 else None
        if rank == 0:
            write_run_record(out, "ediqa train", args, inputs, world, provenance,
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
            say("warning", f"--held-out {args.held_out:g} held out no series of these labels; the best epoch "
                           "kept is the one of the lowest training loss, not the closest to the teacher")
        print(json.dumps({"best": str(best), "train_slices": len(train), "held_out_slices": len(val),
                          "ranks": world}))
