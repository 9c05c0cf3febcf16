"""ediqa label under torchrun: same rows and scores as one process; a killed rank resumes cleanly."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from EDIQALib.simulate import phantom

LABEL = ["label", "--realizations", "3", "--repeats", "1", "--progress", "none"]


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


def _single(data, out):
    return subprocess.run([sys.executable, "-m", "EDIQALib", *LABEL, *map(str, data), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)


def _torchrun_cmd(data, out, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "EDIQALib", *LABEL, *map(str, data), "--out", str(out), *extra]


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


def test_two_ranks_give_the_single_process_rows_and_resume_after_a_killed_rank(tmp_path):
    data = _dataset(tmp_path)
    single = _single(data, tmp_path / "single.csv")
    assert single.returncode == 0, single.stderr
    expected = _rows(tmp_path / "single.csv")
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
    resumed = subprocess.run(_torchrun_cmd(data, out, "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = _rows(out)
    assert len(rows) == len(set(rows)) == 12
    assert [r[:5] for r in rows] == [r[:5] for r in expected]
