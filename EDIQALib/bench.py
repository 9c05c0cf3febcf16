"""Speed and validity benchmark of the student against the teacher, measured in one run.

Speed: student milliseconds per 512² slice (batched, median), teacher seconds per 512² slice at the
paper's 100 realisations × 5 repeats, their ratio, and a whole volume assessed end to end by the CLI in
a child process (wall time and peak resident memory). Validity: the student's Spearman ρ on the
evaluation series, beside the noise-SD baseline; how reliably it orders their dose series over several
noise draws; its heatmap on half-degraded slices; its fidelity to the teacher on held-out labels.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from .assessment import student_scorer, usable_cpus
from .backgrounds import make_background, slice_background
from .choices import ENGINE_ROOT, KINDS, MIN_FIELD_PX
from .detector import detect
from .distill import Sample, scores_of
from .errors import InputError
from .io import CANONICAL_SPACING_MM
from .progress import Progress
from .scoring import SliceScorer, agreement
from .series import Series
from .signals import InsertionConfig
from .simulate import phantom
from .student import Student
from .teacher import TeacherConfig, score_series
from .validation import acceptance_bases, acceptance_series, rank_agreement, rho_summary, scored_series



def _cpu_model() -> str:
    """The processor's model name (from ``/proc/cpuinfo`` where there is one, else what Python knows):
    absolute times vary with it, so that every bench says which CPU it ran on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else (platform.processor() or platform.machine())


def host(device: str) -> dict:
    """What the times are of: the CPU's model and the widest vector instructions PyTorch uses on it (a
    network's time halves from AVX2 to AVX-512 and one model name covers both), the logical CPUs this
    process may use, torch's threads, the GPU's name when the bench runs on one, and the versions of the
    libraries the figures depend on: PyTorch's kernels set the times, and NumPy's random draws are what a
    seed names (NumPy 2.5.2 draws the simulator's lower-dose photon counts of one seed otherwise than 2.4.6,
    so that the validity series' images differ)."""
    import skimage
    import torchvision

    cpus = usable_cpus()
    gpu = {"gpu": torch.cuda.get_device_name(device)} if device.startswith("cuda") else {}
    versions = {"python": platform.python_version(), "numpy": np.__version__, "scikit-image": skimage.__version__,
                "torch": torch.__version__, "torchvision": torchvision.__version__}
    return {"cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpus": cpus,
            "threads": torch.get_num_threads(), **gpu, "versions": versions}


def student_ms_per_slice(student: Student, size: int = 512, batch: int = 8, runs: int = 20,
                         device: str = "cpu") -> float:
    """Median over ``runs`` of the time per slice of a batched forward pass on ``size``² slices."""
    x = torch.rand(batch, 1, size, size, device=device)
    times = []
    student = student.for_inference()
    with torch.inference_mode():
        for _ in range(3):  # warm-up
            student(x)
        for _ in range(runs):
            start = time.perf_counter()
            student(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            times.append((time.perf_counter() - start) / batch)
    return 1000.0 * statistics.median(times)


def teacher_s_per_slice(detector: torch.nn.Module, hu: np.ndarray, config: TeacherConfig, runs: int = 1,
                        device: str = "cpu") -> float:
    """Median over ``runs`` of the teacher's time for one slice (``config``'s realisations × repeats)."""
    bg = make_background(hu)
    detect(detector, [bg.image01], device=device)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        score_series(detector, [bg], config, device=device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def volume_seconds(model: str, shape: tuple[int, int, int], workdir: Path, device: str = "cpu",
                   runs: int = 3) -> tuple[float, float | None]:
    """Assess a synthetic ``(slices, rows, cols)`` CT volume with ``ediqa assess`` in a child process,
    ``runs`` times: (median wall seconds, the children's peak resident memory in GB, :func:`_measured_run`;
    ``None`` where the system does not report it).
    The child runs in the engine's own
    folder (``python -m`` puts its working folder first on the module path: a user's ``random.py`` there
    stopped it).

    Raises:
        InputError: the child failed, or found no slice of the volume assessable (its time would be of no
            assessment).
    """
    slices, rows, cols = shape
    side = max(rows, cols)
    top, left = (side - rows) // 2, (side - cols) // 2  # the middle of the body, not its corner
    base = phantom(7, size=side, kind="body")[top:top + rows, left:left + cols]
    volume = np.repeat(base[None], slices, axis=0)
    volume += np.random.default_rng(0).normal(0, 20, volume.shape).astype(np.float32)
    image = sitk.GetImageFromArray(volume.astype(np.int16))
    pitch = CANONICAL_SPACING_MM * MIN_FIELD_PX / side  # the student's field along the longer side
    image.SetSpacing((pitch, pitch, 1.0))
    workdir = workdir.resolve()  # the child runs elsewhere
    src = workdir / "volume.nrrd"
    sitk.WriteImage(image, str(src), True)
    if Path(model).is_file():
        model = str(Path(model).resolve())
    seconds, peaks = [], []
    for _ in range(runs):
        code, stderr, wall, peak = _measured_run([sys.executable, "-m", "EDIQALib", "assess", str(src), "--model",
                                                  model, "--device", device, "--out", str(workdir / "out"),
                                                  "--progress", "none"])
        seconds.append(wall)
        peaks.append(peak)
        if code != 0:  # the child's own one line, or its last
            why = stderr.splitlines()[-1] if stderr else f"exit {code}"
            raise InputError(f"assessing the bench's volume failed: {why.removeprefix('ediqa: error: ')}")
    if json.loads((workdir / "out" / "result.json").read_text(encoding="utf-8"))["score"] is None:
        raise InputError(f"no slice of the bench's volume of {rows} × {cols} pixels is assessable: its time would be "
                         "of no assessment; choose a --volume-shape nearer square")
    return statistics.median(seconds), None if None in peaks else max(peaks)


def _measured_run(command: list[str]) -> tuple[int, str, float, float | None]:
    """Run ``command`` in the engine's folder: its exit code, stderr, wall seconds, and peak resident memory
    in GB, its own. On Linux that is its VmHWM, read every 20 ms while it runs: a child's ``ru_maxrss``
    starts from the parent it was forked from (the bench's, PyTorch and the teacher loaded); on macOS,
    ``ru_maxrss``; on Windows, which reports neither, ``None``. Interrupted, the child is ended too."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, cwd=ENGINE_ROOT)
        high_kb, usage = 0, None
        try:
            if hasattr(os, "wait4"):
                while not (ended := os.wait4(child.pid, os.WNOHANG))[0]:
                    high_kb = max(high_kb, _high_water_kb(child.pid))
                    time.sleep(0.02)
                child.returncode, usage = os.waitstatus_to_exitcode(ended[1]), ended[2]
            else:
                child.wait()
        except BaseException:
            child.kill()
            child.wait()
            raise
        seconds = time.perf_counter() - start
        err.seek(0)
        stderr = err.read().decode("utf-8", errors="replace").strip()
    if high_kb:  # Linux, read at least once
        return child.returncode, stderr, seconds, high_kb / 1024 ** 2
    if usage is None:
        return child.returncode, stderr, seconds, None
    return child.returncode, stderr, seconds, usage.ru_maxrss / 1024 ** (3 if sys.platform == "darwin" else 2)


def _high_water_kb(pid: int) -> int:
    """A Linux process's peak resident memory so far (VmHWM, kB); 0 where it cannot be read (ended, or no
    Linux)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except (OSError, ValueError):
        return 0


def student_validity(student: Student, kinds: tuple[str, ...] = KINDS,
                     device: str = "cpu") -> dict:
    """The student's Spearman ρ per evaluation series, beside the noise-SD baseline's."""
    scorer = student_scorer(student, InsertionConfig(), device)
    rows = scored_series(lambda s: {"scores": _student_scores(scorer, s)}, kinds)
    return {"series": rows, "summary": rho_summary(rows, kinds)}


def _student_scores(scorer: SliceScorer, series: Series) -> list[float]:
    """The student's score of each image of an evaluation series."""
    positions = [[slice_background(im, "ct", InsertionConfig(), with_psf=False)] for im in series.images_hu]
    verdicts = [versions[0] for versions in scorer(positions, list(range(len(positions))))]
    if not all(v.assessable for v in verdicts):  # the student gives such an image no score
        raise RuntimeError(f"an image of the {series.kind} series {series.name} is not assessable")
    return [v.score for v in verdicts]


def dose_order(student: Student, draws: int = 8, device: str = "cpu") -> dict:
    """How reliably the student orders dose: the dose series of every evaluation slice, simulated with
    ``draws`` noise seeds (100, 101, ...; the validity figures use seed 7), each ranked by Spearman ρ.
    One draw per series is a noisy measurement; a student that swaps two close doses on some draws
    shows it here. Returns the share of series in exact order, the lowest ρ, and each base's ρs."""
    scorer = student_scorer(student, InsertionConfig(), device)
    bases = acceptance_bases()
    rhos = {name: [] for name in bases}
    for name in bases:
        for seed in range(100, 100 + draws):
            rhos[name].append(rank_agreement(_student_scores(scorer, acceptance_series("dose", name, bases[name], seed))))
    every = [r for values in rhos.values() for r in values]
    return {"draws": draws, "series": len(every), "in_order": float(np.mean(np.isclose(every, 1.0))),
            "min_rho": float(np.min(every)), "rho": rhos}


def heatmap_half_noise(student: Student, cases: int = 20, extra_sd_hu: float = 60.0, device: str = "cpu") -> dict:
    """How often the student's map is lower where the image is worse: on ``cases`` unseen phantoms (seeds
    3000+, never used in training) and the two real acceptance slices, white noise of ``extra_sd_hu`` is
    added to one half of the slice (left, then right), and the mean map over the body is compared
    between the halves. Returns the number of cases and the fraction lower in the degraded half."""
    scorer = student_scorer(student, InsertionConfig(), device)
    real = acceptance_bases()
    bases = [phantom(3000 + i) for i in range(cases)] + [real["ct-head"], real["ct-spine"]]
    lower = []
    for i, hu in enumerate(bases):
        rng = np.random.default_rng(i)
        for side in (0, 1):
            noisy = hu + rng.normal(0, 10.0, hu.shape).astype(np.float32)
            half = np.zeros(hu.shape, bool)
            half[:, : hu.shape[1] // 2] = True
            degraded = half if side == 0 else ~half
            noisy[degraded] += rng.normal(0, extra_sd_hu, int(degraded.sum())).astype(np.float32)
            bg = slice_background(noisy, "ct", InsertionConfig(), with_psf=False)
            hmap = scorer([[bg]], [0])[0][0][1]  # NaN outside the body
            lower.append(hmap[degraded & bg.body].mean() < hmap[~degraded & bg.body].mean())
    return {"cases": len(lower), "extra_sd_hu": extra_sd_hu, "lower_in_degraded": float(np.mean(lower))}


def held_out_agreement(student: Student, held_out: list[Sample]) -> dict:
    """The student's fidelity to the teacher on held-out labelled slices: PLCC, SROCC, and both scores of
    every slice (for the bench's scatter plot)."""
    pred, truth = scores_of(student, held_out)
    return {**agreement(pred, truth), "slices": len(held_out),
            "student_scores": [round(float(v), 6) for v in pred], "teacher_scores": [round(float(v), 6) for v in truth]}


def run_bench(student: torch.nn.Module, student_name: str, detector: torch.nn.Module, config: TeacherConfig,
              volume_shape: tuple[int, int, int], kinds: tuple[str, ...] = KINDS,
              teacher_runs: int = 1, volume_runs: int = 3, device: str = "cpu",
              held_out: list[Sample] | None = None, dose_draws: int = 8, progress: Progress | None = None) -> dict:
    """All figures, measured in this one run (see the module doc); with ``held_out`` teacher labels,
    also the student's fidelity to the teacher on them (PLCC, SROCC)."""
    hu = phantom(7, size=512, kind="body")  # a 512² slice at 0.7 mm
    done = 0

    def measured(figure):  # one part done (stage ``bench``, of 7): what it measured
        nonlocal done
        done += 1
        if progress:
            progress("bench", done, 7)
        return figure

    student_ms = measured(student_ms_per_slice(student, device=device))
    teacher_s = measured(teacher_s_per_slice(detector, hu, config, teacher_runs, device))
    with tempfile.TemporaryDirectory() as tmp:
        volume_s, peak_gb = measured(volume_seconds(student_name, volume_shape, Path(tmp), device, volume_runs))
    validity = measured(student_validity(student, kinds, device=device))
    order = measured(dose_order(student, dose_draws, device=device))
    half_noise = measured(heatmap_half_noise(student, device=device))
    agreed = measured(held_out_agreement(student, held_out) if held_out else None)
    return {"student_ms_per_slice": round(student_ms, 2), "teacher_s_per_slice": round(teacher_s, 2),
            "teacher_realizations": config.realizations, "teacher_repeats": config.repeats,
            "teacher_settings": config.settings(),  # all of them: seed, read-out, contrasts, PSF-aware
            "speedup": round(teacher_s / (student_ms / 1000.0), 1), "volume_shape": list(volume_shape),
            "volume_runs": volume_runs, "volume_s": round(volume_s, 2), "peak_mem_gb": None if peak_gb is None else round(peak_gb, 3),
            "device": device, **host(device),
            "validity": validity, "dose_order": order, "heatmap_half_noise": half_noise, "fidelity": agreed}


def summary_table(figures: dict) -> str:
    """The bench's figures (as in ``bench.json``) as a short table for a reader."""
    keys = ("student_ms_per_slice", "teacher_s_per_slice", "speedup", "volume_s", "peak_mem_gb")
    table = "\n".join(f"{k:>22}  {'not reported' if figures[k] is None else figures[k]}" for k in keys)
    rhos = "\n".join(f"{k:>22}  student rho {v['mean_rho']:.2f}   noise-SD rho {v['mean_rho_noise_sd']:.2f}"
                      for k, v in figures["validity"]["summary"].items())
    half = figures["heatmap_half_noise"]
    processor = figures.get("gpu") or f"{figures['cpu']} ({figures.get('cpu_capability', '?')})"
    host = (f"{'host':>22}  {processor}, {figures['cpus']} CPUs, "
            f"{figures['threads']} threads, {figures['device']}")
    versions = figures.get("versions")  # a bench.json of an earlier release has none
    if versions:
        host += "\n" + f"{'versions':>22}  " + ", ".join(f"{k} {v}" for k, v in versions.items())
    order = figures["dose_order"]
    lines = [host, table, rhos,
             f"{'dose order':>22}  exact in {100 * order['in_order']:.0f} % of {order['series']} dose series "
             f"({order['draws']} noise draws per slice), lowest rho {order['min_rho']:.2f}",
             f"{'heatmap half-noise':>22}  lower in the degraded half in "
             f"{100 * half['lower_in_degraded']:.0f} % of {half['cases']} cases"]
    if figures["fidelity"]:
        lines.append(f"{'fidelity':>22}  PLCC {figures['fidelity']['plcc']:.3f}   SROCC {figures['fidelity']['srocc']:.3f}"
                     f"   ({figures['fidelity']['slices']} held-out slices)")
    return "\n".join(lines)
