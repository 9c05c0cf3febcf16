"""Degraded, normalised CT backgrounds: the detector's training bank and the evaluation series.

Each :class:`Background` is one canonical-spacing slice after a simulated acquisition, with what the
teacher and the detector need: normalised image, body and saliency masks, and the estimated PSF.
"""
from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import zipfile
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from scipy import ndimage as ndi

from .errors import InputError
from .io import CANONICAL_SPACING_MM, interrupts_held, read_volume
from .progress import Progress
from .preprocess import body_mask, estimate_psf_sigma, normalise, to_canonical
from .signals import InsertionConfig, saliency_mask
from .simulate import FILTERS, Acquisition, correlated_noise, phantom, simulate_series

Job = TypeVar("Job")
Outcome = TypeVar("Outcome")
WINDOWS_MAX_WORKERS = 61  # the most processes a pool takes on Windows (it waits on at most 63 handles)


@dataclass
class Background:
    """A normalised slice ready for insertion."""

    image01: np.ndarray
    body: np.ndarray
    salient: np.ndarray
    psf_sigma_px: float


def make_background(hu: np.ndarray, config: InsertionConfig = InsertionConfig()) -> Background:
    """Normalise a canonical-spacing HU slice and derive its masks and PSF estimate."""
    return slice_background(hu, "ct", config)


def slice_background(canonical_slice: np.ndarray, modality: str, config: InsertionConfig,
                     with_psf: bool = True, value_range: tuple[float, float] | None = None) -> Background:
    """A canonical slice of a volume as a :class:`Background` (normalised, masks, PSF estimate or NaN);
    ``value_range``: its volume's :func:`~EDIQALib.preprocess.volume_range`."""
    image01 = normalise(canonical_slice, modality, value_range)
    body = body_mask(image01)
    psf = estimate_psf_sigma(canonical_slice, body) if with_psf else float("nan")
    return Background(image01, body, saliency_mask(image01, body, config), psf)


@dataclass
class Degradation:
    """How one training background was made (recorded in the bank for the model card)."""

    base: str
    preblur_px: float
    views: int
    filter: str
    doses: tuple[float, ...]
    i0: float
    noise_sd_hu: float
    noise_length_px: tuple[float, float]


def _draw_degradation(base: str, rng: np.random.Generator) -> Degradation:
    doses = tuple(sorted(np.exp(rng.uniform(np.log(0.03), 0.0, size=3)).round(3), reverse=True))
    textured = rng.random() < 0.4
    length = float(rng.uniform(0.5, 4))
    lengths = (length, length * float(rng.uniform(0.2, 0.6))) if rng.random() < 0.5 else (length, length)
    return Degradation(
        base=base, preblur_px=float(rng.choice([0, 0, 0.5, 1, 1.5, 2, 3])),
        views=int(rng.choice([720, 360, 360, 180, 90, 60])), filter=str(rng.choice(FILTERS)), doses=doses,
        i0=float(np.exp(rng.uniform(np.log(5e4), np.log(4e5)))),
        noise_sd_hu=float(rng.uniform(5, 40)) if textured else 0.0,
        noise_length_px=(lengths if rng.random() < 0.5 else lengths[::-1]) if textured else (0.0, 0.0))


def _degrade(args: tuple[np.ndarray, Degradation, int]) -> list[tuple[np.ndarray, float]]:
    hu, deg, seed = args
    rng = np.random.default_rng(seed)
    src = ndi.gaussian_filter(hu, deg.preblur_px) if deg.preblur_px > 0 else hu
    recs = simulate_series(src, CANONICAL_SPACING_MM, [Acquisition(d, deg.views, deg.filter) for d in deg.doses],
                           i0=deg.i0, seed=seed)
    out = []
    for rec in recs:
        if deg.noise_sd_hu > 0:
            rec = rec + correlated_noise(rec.shape, deg.noise_sd_hu, deg.noise_length_px, rng)
        bg = make_background(rec)
        out.append((bg.image01, bg.psf_sigma_px))
    return out


def _start_worker(parent: int | None) -> None:
    """In a worker: Ctrl-C and SIGTERM, which reach the whole process group, are left to the parent, which
    cancels the work not yet started and waits for the projections under way (a worker that died of them
    printed a traceback, and the pool's own thread another). On Linux the worker ends with the process that
    started it: a second Ctrl-C while the parent waited ended it, and its workers, deaf to signals, ran on
    without it, holding the run's lock and the terminal's pipes. Forked by ``parent`` (the pool's process,
    under the fork start method), a worker whose parent ended before that was set ends at once; started by
    a fork server, it ends with the server, which ends with the pool's process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if parent is not None and os.getppid() != parent:  # it ended before that was set
            os._exit(1)


def _in_workers(fn: Callable[[Job], Outcome], jobs: list[Job], workers: int,
                done: Callable[[int], None] | None = None) -> list[Outcome]:
    """``[fn(job) for job in jobs]`` in ``workers`` processes, ``done(count)`` after each job finished.

    A job is handed out only when a worker is free: interrupted, or when a job fails, the jobs not handed
    out are dropped and only those under way are awaited (a pool's own queue holds more, which it would run
    to their end first)."""
    results: dict[int, Outcome] = {}
    waiting = list(enumerate(jobs))[::-1]
    running: dict[Future, int] = {}
    forked = multiprocessing.get_start_method() == "fork"  # the pool's start method, the default one
    workers = min(workers, WINDOWS_MAX_WORKERS) if os.name == "nt" else workers
    pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(os.getpid() if forked else None,))
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                index, job = waiting.pop()
                with interrupts_held():  # a worker forked here could die of one before it ignored it
                    running[pool.submit(fn, job)] = index
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                results[running.pop(future)] = future.result()
                if done:
                    done(len(jobs) - len(waiting) - len(running))
    finally:
        pool.shutdown(cancel_futures=True)
    return [results[index] for index in range(len(jobs))]


def build_bank(bases: dict[str, np.ndarray], n_projections: int, seed: int = 0, workers: int = 2,
               progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Simulate ``n_projections`` degradations (3 nested doses each) of the given canonical HU slices.

    Returns arrays ready for ``np.savez``: ``images`` (n, H, W) padded with air, ``shapes``, ``psf``,
    and ``meta`` (one JSON line per image).
    """
    rng = np.random.default_rng(seed)
    names = sorted(bases)
    jobs = []
    for j in range(n_projections):
        name = names[j % len(names)]
        jobs.append((bases[name], _draw_degradation(name, rng), seed * 100003 + j))
    degraded = _in_workers(_degrade, jobs, workers,
                           (lambda count: progress("bank", count, n_projections)) if progress else None)
    images, psf, meta = [], [], []
    for result, job in zip(degraded, jobs):
        for (image01, sigma), dose in zip(result, job[1].doses):
            images.append(image01)
            psf.append(sigma)
            meta.append(json.dumps({**asdict(job[1]), "dose": float(dose)}))
    size = max(max(im.shape) for im in images)
    stack = np.zeros((len(images), size, size), np.float32)
    for i, im in enumerate(images):
        stack[i, :im.shape[0], :im.shape[1]] = im
    return {"images": stack, "shapes": np.array([im.shape for im in images]), "psf": np.array(psf, np.float32),
            "meta": np.array(meta)}


def load_bank(path: str | Path, config: InsertionConfig = InsertionConfig()) -> list[Background]:
    """Backgrounds from a bank file written by :func:`build_bank` (masks recomputed).

    Raises:
        InputError: the file is missing or is not such a bank.
    """
    try:
        with np.load(path) as data:
            images, shapes, psf = data["images"], data["shapes"], data["psf"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        raise InputError(f"{path}: not a bank of `ediqa train-detector` (its RUN/bank.npz)") from None
    out = []
    for im, (h, w), sigma in zip(images, shapes, psf):
        image01 = im[:h, :w]
        body = body_mask(image01)
        out.append(Background(image01, body, saliency_mask(image01, body, config), float(sigma)))
    return out


TRAINING_FIRST_SEED = 1000  # the detector's phantoms' seeds start here, clear of the evaluation phantoms'


def training_bases(n_phantoms: int, n_backs: int) -> dict[str, np.ndarray]:
    """Canonical HU slices for detector training: seeded body and head phantoms, small-field back
    phantoms (seeds never used for evaluation) and the pydicom head CT slice ``693_J2KI.dcm`` (the two
    other real CT slices are held out)."""
    from pydicom.data import get_testdata_file

    first = TRAINING_FIRST_SEED
    bases = {f"phantom-{s}": phantom(s) for s in range(first, first + n_phantoms)}
    bases.update({f"back-{s}": phantom(s, kind="back") for s in range(first + n_phantoms, first + n_phantoms + n_backs)})
    real = read_volume(get_testdata_file("693_J2KI.dcm"))
    canon = to_canonical(real)
    bases["pydicom-693_J2KI"] = np.maximum(canon[0], -1000.0)
    return bases
