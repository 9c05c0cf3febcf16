"""torchrun: `label` gives the rows and scores of one process and resumes after a killed rank; `train`
on 2 ranks gives the weights of one process that accumulates the same two micro-batches."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file

from EDIQALib.backgrounds import build_bank
from EDIQALib.simulate import phantom
from conftest import ediqa

LABEL = ["label", "--realizations", "3", "--repeats", "1", "--device", "cpu", "--progress", "none"]  # torchrun: one GPU is not two


def _dataset(tmp_path: Path) -> list[Path]:
    inputs = []
    for seed in (51, 52, 53):
        folder = tmp_path / f"series-{seed}"
        folder.mkdir()
        hu = phantom(seed, size=192, kind="body")
        for i, sd in enumerate((5.0, 60.0)):
            vol = np.stack([hu, hu]) + np.random.default_rng(seed + i).normal(0, sd, (2, 192, 192))
            img = sitk.GetImageFromArray(vol.astype(np.float32))
            img.SetSpacing((0.7, 0.7, 2.0))
            sitk.WriteImage(img, str(folder / f"{i}.nrrd"))
        inputs.append(folder)
    return inputs


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[list[Path], Path]:
    """The tiny dataset and its labels from one process."""
    tmp_path = tmp_path_factory.mktemp("labelled")
    data = _dataset(tmp_path)
    proc = ediqa(*LABEL, *data, "--out", tmp_path / "single.csv")
    assert proc.returncode == 0, proc.stderr
    return data, tmp_path / "single.csv"


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "EDIQALib"]


def _torchrun_cmd(data, out, *extra):
    return [*TORCHRUN, *LABEL, *map(str, data), "--out", str(out), *extra]


def _rows(path):
    with open(path, newline="") as f:
        return [(r["series"], r["file"], r["slice"], r["score"], r["assessable"], r["map"]) for r in csv.DictReader(f)]


def _rank_pids(root: int) -> dict[int, int]:
    """rank → pid among the descendants of ``root`` (read from their environment)."""
    found, todo = {}, [root]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text(encoding="utf-8").split()]
        except OSError:
            continue
        for k in kids:
            try:
                env = Path(f"/proc/{k}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                found[int(rank[0][5:])] = k
            todo.append(k)
    return found


def test_two_ranks_give_the_single_process_rows_and_resume_after_a_killed_rank(tmp_path, labelled):
    data, single = labelled
    expected = _rows(single)
    assert len(expected) == 12

    two = subprocess.run(_torchrun_cmd(data, tmp_path / "two.csv"), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    assert '"rows_written": 12' in two.stdout
    assert [r[:5] for r in _rows(tmp_path / "two.csv")] == [r[:5] for r in expected]
    assert not list(tmp_path.glob("two.part*.csv"))

    # kill rank 1 once it has written a row; the run dies; --resume completes it
    out = tmp_path / "killed.csv"
    proc = subprocess.Popen(_torchrun_cmd(data, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part1 = tmp_path / "killed.part1.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (part1.exists() and len(part1.read_text(encoding="utf-8").splitlines()) >= 3):
        time.sleep(0.2)
    ranks = _rank_pids(proc.pid)
    assert 1 in ranks, "rank 1 not found"
    os.kill(ranks[1], signal.SIGKILL)
    assert proc.wait(timeout=120) != 0
    assert not out.exists()
    kept = sum(sum(line.endswith("\n") for line in part.read_text(encoding="utf-8").splitlines(keepends=True)[1:])
               for part in tmp_path.glob("killed.part*.csv"))  # whole rows the ranks wrote before the kill
    assert kept >= 2
    resumed = subprocess.run(_torchrun_cmd(data, out, "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f'"rows_written": {12 - kept}' in resumed.stdout  # only what was missing
    rows = _rows(out)
    assert len(rows) == len(set(rows)) == 12
    assert [r[:5] for r in rows] == [r[:5] for r in expected]


def _trained(folder: Path, part: str) -> dict[str, torch.Tensor]:
    """What training changes (BatchNorm running statistics follow rank 0 under DistributedDataParallel)."""
    weights = load_file(folder / part / "last.safetensors")
    return {k: v for k, v in weights.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def _share_apart(a: Path, b: Path, part: str, atol: float) -> float:
    """The share of the weights that training runs ``a`` and ``b`` left more than ``atol`` apart."""
    wa, wb = _trained(a, part), _trained(b, part)
    assert wa.keys() == wb.keys()
    return float(torch.cat([(wb[k] - wa[k]).abs().flatten() > atol for k in wa]).float().mean())


def _losses(folder: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "stage2" / "log.jsonl").read_text(encoding="utf-8").splitlines()]


def test_two_rank_training_equals_one_process_accumulating_two_micro_batches(tmp_path, labelled):
    _, labels = labelled
    bank = tmp_path / "bank.npz"
    np.savez(bank, **build_bank({"p": phantom(61, size=192, kind="body")}, 1, workers=1))
    train = ["train", "--labels", str(labels), "--bank", str(bank), "--stage1-iterations", "2", "--epochs", "2",
             "--batch-size", "4", "--held-out", "0", "--lr", "1e-4", "--device", "cpu", "--progress", "none"]
    runs = {"one": [sys.executable, "-m", "EDIQALib", *train, "--accumulate", "2"], "two": [*TORCHRUN, *train],
            "whole-batch": [sys.executable, "-m", "EDIQALib", *train]}
    for name, cmd in runs.items():
        proc = subprocess.run([*cmd, "--out", str(tmp_path / name)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f'"ranks": {2 if name == "two" else 1}' in proc.stdout

    one, two = tmp_path / "one", tmp_path / "two"
    # the same steps: gradients that differ only by rounding (summed in another order) move a weight by
    # rounding too, and a near-zero gradient whose sign flips with it moves a weight the other way (up to
    # 2 lr per Adam step), which a few weights in a hundred thousand meet. So at most 0.1 % of the weights
    # may differ by more than about one step: 1e-5 in stage 1 (lr 1e-3, 2 steps into a 200-step warm-up),
    # 3e-4 in stage 2 (lr 1e-4). A different cut of the batch (one micro-batch of 4) moves 14 % and 20 %
    # of them that far, and must fail the same check. The losses agree to a few 1e-6 by the second epoch.
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-5)
    for part, step in (("stage1-0", 1e-5), ("stage2", 3e-4)):
        assert _share_apart(one, two, part, step) < 1e-3, part
        assert _share_apart(one, tmp_path / "whole-batch", part, step) > 0.05, part
    # and the losses of a different cut of the batch differ by more than that loss check allows
    assert abs(_losses(tmp_path / "whole-batch")[-1] - _losses(one)[-1]) > 1e-4
    # stage 2 started from the transferred stage-1 backbone and moved it
    stage1, stage2 = _trained(one, "stage1-0"), _trained(one, "stage2")
    assert not torch.allclose(stage2["backbones.0.stem.0.weight"], stage1["backbone.stages.stem.0.weight"])

    # students of other seeds on that stage 1 (the documented recipe copied its folder, which the run then
    # refused as a run's files without their run.json): the run records where its stage 1 came from
    again = ["train", "--labels", str(labels), "--epochs", "1", "--batch-size", "4", "--held-out", "0",
             "--lr", "1e-9", "--device", "cpu", "--progress", "none"]  # stage 2 all but still: stage 1's backbone stays
    proc = subprocess.run([sys.executable, "-m", "EDIQALib", *again, "--stage1-from", str(one), "--seed", "1",
                           "--accumulate", "2", "--out", str(tmp_path / "seed1")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seeded = tmp_path / "seed1"
    assert not list(seeded.glob("stage1-*"))
    assert torch.allclose(_trained(seeded, "stage2")["backbones.0.stem.0.weight"], stage1["backbone.stages.stem.0.weight"],
                          atol=1e-6)
    record = json.loads((seeded / "run.json").read_text(encoding="utf-8"))
    assert record["args"]["stage1_from"] == str(one) and len(record["inputs_sha256"]["stage1_from"]) == 1
    (one / "stage1-0" / "snapshots" / "step000002.safetensors").unlink()  # as if stopped before its end
    for extra, message in ((["--stage1-from", str(one)], "its stage 1 is unfinished (stage1-0/snapshots/step000002"),
                           (["--stage1-from", str(seeded)], "that run trained no stage 1 of its own"),
                           (["--stage1-from", str(one), "--stage1-iterations", "2"], "without --init, --bank or")):
        proc = subprocess.run([sys.executable, "-m", "EDIQALib", *again, *extra, "--out", str(tmp_path / "bad")],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 2 and message in proc.stderr and not (tmp_path / "bad").exists(), proc.stderr
