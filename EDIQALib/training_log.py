"""A training run's log: one JSON line per epoch (student) or snapshot (detector) in ``log.jsonl``, and its
curves in ``training.png``, drawn again with every line so that a long run can be watched as it goes."""
from __future__ import annotations

import json
import math
from io import BytesIO
from pathlib import Path

from matplotlib.figure import Figure

from .errors import InputError
from .io import write_bytes

LOG_NAME = "log.jsonl"
CURVES_NAME = "training.png"
VALIDATION_KEYS = ("plcc", "srocc", "validity")  # higher is better; every other number but the x axis is a loss
X_KEYS = ("epoch", "step")


def snapshot_path(out: Path, step: int) -> Path:
    """Where a detector's training run ``out`` keeps its weights of ``step`` (one snapshot per log line)."""
    return out / "snapshots" / f"step{step:06d}.safetensors"


def append(out: Path, entry: dict) -> None:
    """Add ``entry`` to ``out/log.jsonl`` and draw ``out/training.png`` again from the whole log."""
    with open(out / LOG_NAME, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    entries = read(out / LOG_NAME)
    png = BytesIO()
    curves_figure(entries).savefig(png, format="png", dpi=90)
    write_bytes(png.getvalue(), out / CURVES_NAME)


def keep_until(out: Path, key: str, last: int) -> None:
    """Drop the lines of ``out/log.jsonl`` past ``last`` (by ``key``: ``epoch`` or ``step``), which a run
    resumed from its resume state does again: each line is written before the state that follows it, so
    that an interrupt between the two leaves a line too many, never one too few."""
    path = out / LOG_NAME
    if not path.exists():
        return
    entries = read(path)
    kept = [entry for entry in entries if entry.get(key, 0) <= last]
    if len(kept) < len(entries):
        write_bytes("".join(json.dumps(entry) + "\n" for entry in kept).encode(), path)


def read(path: Path) -> list[dict]:
    """A training log's entries; an input error where it is not one JSON object per line."""
    try:
        log = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError):
        log = None
    if log is None or not all(isinstance(entry, dict) for entry in log):
        raise InputError(f"training log {path} is not one JSON object per line")
    return log


def curves_figure(entries: list[dict]) -> Figure:
    """The losses (log scale) and, where the run validates, the validation figures against epoch or step,
    the best validation marked."""
    x_key = next(k for k in X_KEYS if k in entries[0])
    x = [e[x_key] for e in entries]
    losses = [k for k in entries[0] if k != x_key and k not in VALIDATION_KEYS]
    checks = [k for k in VALIDATION_KEYS if any(k in e for e in entries)]
    fig = Figure(figsize=(9 if checks else 4.8, 3.4))
    axes = fig.subplots(1, 2 if checks else 1, squeeze=False)[0]
    for key in losses:
        axes[0].plot(x, [e[key] for e in entries], label=key)
    axes[0].set_yscale("log")
    axes[0].set_xlabel(x_key)
    axes[0].set_title("training loss", fontsize=10)
    axes[0].legend(fontsize=7)
    if checks:
        for key in checks:
            axes[1].plot(x, [e.get(key, float("nan")) for e in entries], marker=".", label=key)
        total = [sum(e.get(k, 0.0) for k in checks) for e in entries]
        kept = [i for i in range(len(entries)) if math.isfinite(total[i])]  # a run keeps no NaN checkpoint
        if kept:
            best = max(kept, key=total.__getitem__)
            axes[1].axvline(x[best], color="grey", linestyle="--", linewidth=0.8, label=f"kept: {x_key} {x[best]}")
        axes[1].set_xlabel(x_key)
        axes[1].set_title("validation (higher is better)", fontsize=10)
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig
