"""The commands that measure a model: ``validate`` (the teacher's validity) and ``bench`` (the student's
accuracy and speed)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .common import chosen_device, print_result, progress_for, teacher_config


def cmd_validate(args: argparse.Namespace) -> None:
    from ..io import check_outputs
    from ..models import load_model
    from ..report import VALIDITY_FILES, write_validity

    check_outputs([Path(args.out) / name for name in VALIDITY_FILES], [])
    model, entry = load_model(args.model, "detector")  # an unknown model answers before the device is asked for
    from ..validation import validity_report  # torch: bad outputs and models answer without it
    device = chosen_device(args.device)
    model.to(device)
    config = teacher_config(args)
    start = time.perf_counter()
    report = validity_report(model, config, tuple(args.kinds), device=device, progress=progress_for(args))
    settings = {"model": entry.record(), **config.settings(),
                "seconds": round(time.perf_counter() - start, 1)}
    write_validity(report, args.out, settings)
    print_result(args, report["summary"])


def cmd_bench(args: argparse.Namespace) -> None:
    from ..io import check_outputs
    from ..labels import read_labels
    from ..models import load_model, model_of_kind
    from ..report import BENCH_FILES, write_bench

    check_outputs([Path(args.out) / name for name in BENCH_FILES], args.labels or [])
    model_of_kind(args.student, "student")  # bad outputs, models and labels answer before torch is loaded
    model_of_kind(args.model, "detector")
    for labels in args.labels or []:
        read_labels(labels)
    student, entry = load_model(args.student, "student")
    detector, teacher = load_model(args.model, "detector")
    from ..bench import run_bench, summary_table
    from ..distill import check_rankable, load_samples, pool_labellings
    device = chosen_device(args.device)
    student.to(device)
    detector.to(device)
    config = teacher_config(args)
    shape = tuple(args.volume_shape)
    held_out = pool_labellings([load_samples(p) for p in args.labels]) if args.labels else None
    if held_out is not None:  # before the bench's minutes of work
        check_rankable(held_out, "the --labels", "label more held-out slices")
    figures = run_bench(student, str(entry.weights), detector, config, shape, tuple(args.kinds),
                        teacher_runs=args.teacher_runs, volume_runs=args.volume_runs, device=device,
                        held_out=held_out, dose_draws=args.dose_draws, progress=progress_for(args))
    figures["model"] = entry.record()
    figures["teacher_model"] = teacher.record()  # the detector timed
    write_bench(figures, args.out)
    if args.progress == "jsonl":  # every stdout line one JSON object: the figures, not the table
        print_result(args, figures)
    else:
        print(summary_table(figures))
