"""Two-stage distillation of the teacher into the student.

Stage 1 (feature transfer): a detector built on each of the student's backbones is trained on the
insertion task (:func:`EDIQALib.detector.train_detector`); its stage weights seed the student.
Stage 2 (response distillation): the student regresses the teacher's score (MSE of square roots, plus
an optional pairwise ranking term within a series) and its local map (MSE inside the body), from
``ediqa label`` output. Checkpoints every epoch, resumable; the best epoch on held-out series is kept.
"""
from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from .detector import build_stage1_detector
from .distributed import barrier, data_parallel, mean_over_ranks, split_parts, step_gradients
from . import training_log
from .errors import InputError
from .io import read_volume
from .labels import labelled_modality, maps_folder, read_labels
from .models import restore_resume_state, save_resume_state, save_weights
from .progress import Progress
from .preprocess import normalise, to_canonical
from .scoring import agreement
from .series import base_of
from .student import MAP_STRIDE, STUDENT_SPECS, Student, field_batch


def stage1_detectors(preset: str) -> list[nn.Module]:
    """One insertion-task detector per backbone of the student preset (fresh weights)."""
    spec = STUDENT_SPECS[preset]
    return [build_stage1_detector(cls(), spec["fpn"]) for cls in spec["backbones"]]


def transfer_backbones(student: Student, detectors: list[nn.Module]) -> None:
    """Load each stage-1 detector's backbone stages into the student's matching backbone."""
    if len(detectors) != len(student.backbones):
        raise ValueError(f"{len(detectors)} detectors for {len(student.backbones)} student backbones")
    for backbone, det in zip(student.backbones, detectors):
        backbone.load_state_dict(det.backbone.stages.state_dict())


@dataclass
class Sample:
    """One labelled slice: normalised canonical image, teacher score, pooled map, series key (the
    versions of one slice position share it) and the slice's own key (series/file/slice)."""

    image01: np.ndarray
    score: float
    heatmap: np.ndarray
    group: str
    key: str = ""


def load_samples(labels_csv: str | Path) -> list[Sample]:
    """Assessable rows of a labels file, with their images (read as labelled: :func:`labelled_modality`)
    and maps."""
    labels_csv = Path(labels_csv)
    maps_dir = maps_folder(labels_csv)
    modality = labelled_modality(labels_csv)
    cache: dict[Path, np.ndarray] = {}
    samples = []
    rows = [(line, row) for line, row in enumerate(read_labels(labels_csv), start=2) if row["assessable"] == "1"]
    if rows and not maps_dir.is_dir():
        raise InputError(f"{labels_csv}: its maps folder {maps_dir.name} is missing (`ediqa label` writes it "
                         "beside the labels file: move the two together)")
    for line, row in rows:
        try:
            path = labels_csv.parent / row["path"]  # relative to the labels file, or absolute
            if path not in cache:
                vol = read_volume(path, modality)
                cache[path] = normalise(to_canonical(vol), vol.modality)  # one scale for the volume
            samples.append(_labelled_slice(row, cache[path], np.load(maps_dir / row["map"])))
        except InputError:
            raise  # the image's own one line (an InputError is a ValueError)
        except (ValueError, OSError, EOFError) as exc:  # a slice it lacks, a map of another size, no map
            raise InputError(f"{labels_csv}, line {line}: not a labels row of `ediqa label` "
                             f"({exc.__class__.__name__}: {str(exc)[:80]})") from None
    if not samples:
        raise InputError(f"{labels_csv}: no assessable labelled slices")
    return samples


def check_series_apart(labels_csvs: list[str | Path]) -> None:
    """Training takes the slices of one series name for versions of one slice (paired, joined by ``--mix``,
    ranked together): two labels files may share a series (two labellings of its images), not a name for
    other images (two patients' ``dose`` folders).

    Raises:
        InputError: a series name of two labels files whose images lie in other folders.
    """
    seen: dict[str, tuple[Path, set[Path]]] = {}
    for labels_csv in map(Path, labels_csvs):
        folders: dict[str, set[Path]] = {}
        for row in read_labels(labels_csv):
            folders.setdefault(row["series"], set()).add((labels_csv.parent / row["path"]).resolve().parent)
        for series, where in folders.items():
            first, first_where = seen.setdefault(series, (labels_csv, where))
            if first_where != where:
                raise InputError(f"the series {series} of {labels_csv} holds other images than the series "
                                 f"{series} of {first}: train would take them for versions of one slice; "
                                 "label them under distinct series (folder) names")


def _labelled_slice(row: dict, volume01: np.ndarray, heatmap: np.ndarray) -> Sample:
    """One labels row as a :class:`Sample`: its slice of the (normalised, canonical) volume, its score and
    its map. Raises ValueError where the row does not fit them: a slice the volume does not have, a map of
    another size than the slice's at the map stride (another image's)."""
    k, score = int(row["slice"]), float(row["score"])
    if k >= len(volume01):
        raise ValueError(f"slice {k} of a volume of {len(volume01)}")
    expected = (volume01.shape[1] // MAP_STRIDE, volume01.shape[2] // MAP_STRIDE)
    if heatmap.shape != expected:
        raise ValueError(f"a map of {heatmap.shape} for a slice whose map is {expected}")
    return Sample(volume01[k], score, heatmap.astype(np.float32), f"{row['series']}/{row['slice']}",
                  f"{row['series']}/{row['file']}/{row['slice']}")


def pool_labellings(labellings: list[list[Sample]]) -> list[Sample]:
    """One label set from several labellings of the same slices (e.g. ``ediqa label --seed`` 0 and 1):
    scores averaged, as if the teacher had used all their realisations; maps averaged where each is defined
    (a cell that one labelling's lesions reached and another's did not keeps the value it has).

    Raises:
        InputError: when the labellings do not cover the same slices (in any order).
    """
    keys = sorted(s.key for s in labellings[0])
    if any(sorted(s.key for s in other) != keys for other in labellings[1:]):
        raise InputError("labels files to pool must label the same slices (the same data, another --seed)")
    by_key = [{s.key: s for s in labelling} for labelling in labellings]
    return [Sample(s.image01, float(np.mean([b[s.key].score for b in by_key])),
                   _defined_mean([b[s.key].heatmap for b in by_key]), s.group, s.key) for s in labellings[0]]


def _defined_mean(maps: list[np.ndarray]) -> np.ndarray:
    """The mean of ``maps`` over those defined at each cell; NaN where none is."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": a cell no map defines is NaN
        return np.nanmean(np.stack(maps), axis=0).astype(np.float32)


def split_by_series(samples: list[Sample], held_out_fraction: float = 0.2) -> tuple[list[Sample], list[Sample]]:
    """Deterministic split by base slice (a hash of :func:`~EDIQALib.series.base_of` the series name): all
    series of one slice (its dose, views, texture and blur) are held out together, so that no held-out
    image is also a training image (a texture and a blur series share their first level)."""
    def held(s: Sample) -> bool:
        return (zlib.crc32(base_of(s.group.split("/")[0]).encode()) % 1000) < held_out_fraction * 1000
    return [s for s in samples if not held(s)], [s for s in samples if held(s)]


@dataclass(frozen=True)
class StudentTraining:
    """Stage-2 schedule (the authors: Adam, lr 1e-5, batch 8, 100 epochs, cosine, flips).

    ``batch_size`` is the whole step's, over all ranks, in slices; slices come in pairs of two versions
    of one slice (:func:`version_pairs`), so that the ranking term has a pair in every micro-batch. Each
    rank cuts its share of pairs into ``accumulate`` micro-batches (see
    :func:`EDIQALib.distributed.split_parts`). ``mix`` is the chance that a training slice is replaced,
    for one epoch, by a :func:`mixed_quality` composite with another version of itself.
    """

    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    rank_weight: float = 0.0
    map_weight: float = 1.0
    mix: float = 0.0
    accumulate: int = 1
    seed: int = 0


def versions_of(samples: list[Sample]) -> dict[str, list[int]]:
    """The indices of the samples of each group (the versions of one slice)."""
    versions: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        versions.setdefault(s.group, []).append(i)
    return versions


def version_pairs(versions: dict[str, list[int]], rng: np.random.Generator) -> list[tuple[int, int]]:
    """One epoch's training slices, paired with another version of the same slice: each group's versions
    are shuffled and taken two by two; an odd one out is paired with another version of its group drawn at
    random (with itself if it has none). Every slice is in a pair.

    Drawn at random from the whole set, two versions of one slice would share a batch of 8 out of ~800
    slices in about one step in eight, and the ranking term would almost never act.
    """
    pairs = []
    for members in versions.values():
        order = [int(i) for i in rng.permutation(members)]
        if len(order) % 2:
            order.append(int(rng.choice(order[:-1])) if len(order) > 1 else order[0])
        pairs += [(order[k], order[k + 1]) for k in range(0, len(order), 2)]
    return pairs


def mixed_quality(a: Sample, b: Sample, rng: np.random.Generator) -> Sample:
    """A slice whose quality changes across a straight cut: ``a`` on one side, ``b`` (another version of
    the same slice, e.g. another dose) on the other. Its map label is the two teacher maps side by side
    (the teacher's map is local: each inserted lesion is scored where it lies); it has no score label
    (NaN). Teaches the map head that quality can change within one slice, which uniformly degraded
    training slices never show."""
    axis = int(rng.integers(2))
    cut = int(round(rng.uniform(0.3, 0.7) * a.heatmap.shape[axis]))  # in map cells
    image, heatmap = a.image01.copy(), a.heatmap.copy()
    pixels = [slice(None), slice(None)]
    cells = [slice(None), slice(None)]
    pixels[axis], cells[axis] = slice(cut * MAP_STRIDE, None), slice(cut, None)
    image[tuple(pixels)] = b.image01[tuple(pixels)]
    heatmap[tuple(cells)] = b.heatmap[tuple(cells)]
    return Sample(image, float("nan"), heatmap, a.group, a.key)


def _mirrored(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """The sample's image and map mirrored left to right, cell on cell: the map covers the image's first
    ``MAP_STRIDE`` × its width in columns, so those are mirrored and the few beyond (a width not a
    multiple of the stride) stay at the right edge; mirroring the whole width would shift the map against
    the image by the remainder."""
    covered = sample.heatmap.shape[1] * MAP_STRIDE
    image = np.concatenate([sample.image01[:, :covered][:, ::-1], sample.image01[:, covered:]], axis=1)
    return image, sample.heatmap[:, ::-1]


def _batch(samples: list[Sample], flips: list[bool] | None = None) -> tuple[torch.Tensor, ...]:
    """Images, scores and maps of samples as tensors, as a ``field_batch``: a smaller image is mirrored
    out (a small field inside the body stays body); its map is NaN there."""
    pairs = [_mirrored(s) if flips is not None and flips[i] else (s.image01, s.heatmap) for i, s in enumerate(samples)]
    images = field_batch([image for image, _ in pairs])
    h, w = images.shape[-2:]
    maps = np.full((len(samples), 1, -(-h // MAP_STRIDE), -(-w // MAP_STRIDE)), np.nan, np.float32)
    for i, (_, hm) in enumerate(pairs):
        maps[i, 0, :hm.shape[0], :hm.shape[1]] = hm
    return (torch.from_numpy(images), torch.tensor([s.score for s in samples], dtype=torch.float32),
            torch.from_numpy(maps))


def distillation_loss(score_logit: torch.Tensor, map_logit: torch.Tensor, score: torch.Tensor, heatmap: torch.Tensor,
                      groups: list[str], cfg: StudentTraining) -> torch.Tensor:
    """MSE between the square roots of the scores where there is one + ranking within a series slice +
    MSE on the map where the teacher defined it.

    The square root weighs an error at a low score up (by 1 / (2 √score)): the teacher scores many
    slices within 0.002–0.08, where errors that plain MSE hardly sees reorder them.
    """
    pred = torch.sigmoid(score_logit)
    scored = torch.isfinite(score)  # mixed-quality composites have no score label
    root = torch.exp(0.5 * F.logsigmoid(score_logit))  # √pred, with a finite gradient for any logit
    loss = F.mse_loss(root[scored], score[scored].sqrt()) if scored.any() else score_logit.sum() * 0.0
    if cfg.rank_weight > 0:
        same = torch.tensor([[a == b for b in groups] for a in groups], device=score.device)
        order = torch.sign(score[:, None] - score[None, :])
        pairs = same & (order != 0) & scored[:, None] & scored[None, :]
        if pairs.any():
            margin = (pred[:, None] - pred[None, :]) * order
            loss = loss + cfg.rank_weight * F.softplus(-20 * margin[pairs]).mean() / 20
    valid = torch.isfinite(heatmap)
    if cfg.map_weight > 0 and valid.any():
        m = torch.sigmoid(map_logit[..., : heatmap.shape[-2], : heatmap.shape[-1]])
        loss = loss + cfg.map_weight * F.mse_loss(m[valid], heatmap[valid])
    return loss


@torch.inference_mode()
def predict(student: Student, samples: list[Sample], batch_size: int = 8) -> np.ndarray:
    """Student scores (sigmoid) of labelled samples."""
    student.eval()
    device = next(student.parameters()).device
    out = []
    for i in range(0, len(samples), batch_size):
        images, _, _ = _batch(samples[i:i + batch_size])
        out.append(torch.sigmoid(student(images.to(device))[0].float()).cpu().numpy())
    return np.concatenate(out)


def check_rankable(samples: list[Sample], what: str, remedy: str) -> None:
    """Raises InputError (``what`` and ``remedy`` in its line) unless the teacher's scores of ``samples``
    can measure a student's agreement with it (:func:`~EDIQALib.scoring.agreement`): two slices or more, whose scores differ."""
    if len(samples) < 2 or np.ptp([s.score for s in samples]) == 0:
        raise InputError(f"{what} hold {len(samples)} slice{'s' * (len(samples) != 1)}"
                         f"{' whose teacher scores are all equal' if len(samples) > 1 else ''}: too few to "
                         f"measure a student's agreement with the teacher; {remedy}")


def fidelity(student: Student, samples: list[Sample]) -> dict[str, float]:
    """PLCC and SROCC between student and teacher scores."""
    return agreement(*scores_of(student, samples))


def scores_of(student: Student, samples: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """The student's and the teacher's scores of labelled samples."""
    return predict(student, samples), np.array([s.score for s in samples])


def fitting_batch(train_slices: int, accumulate: int, world: int) -> int:
    """The default batch: :class:`StudentTraining`'s, or on a training set of fewer slices (a folder
    relabelled in Slicer) the most it fills in whole pairs of versions on every rank and micro-batch.

    Raises:
        InputError: the training set does not fill one pair on every rank and micro-batch.
    """
    step = 2 * world * accumulate
    if train_slices < step:
        remedies = ["label more slices"] + ["lower --accumulate"] * (accumulate > 1) + ["use fewer ranks"] * (world > 1)
        raise InputError(f"the {train_slices} training slices do not fill a batch of one pair of versions on each of "
                         f"{world} rank(s) × {accumulate} micro-batches (--accumulate): {', or '.join(remedies)}")
    return min(StudentTraining.batch_size, train_slices) // step * step


def check_batch(cfg: StudentTraining, train_slices: int, world: int) -> None:
    """Raises InputError unless the batch cuts into whole pairs of versions on every rank and micro-batch
    and the training set fills it."""
    parts_per_step = world * cfg.accumulate
    if cfg.batch_size % (2 * parts_per_step) or train_slices < cfg.batch_size:
        raise InputError(f"batch size {cfg.batch_size} must be a multiple of 2 × ranks × accumulate "
                         f"({2 * parts_per_step}: slices come in pairs of versions) "
                         f"and at most the {train_slices} training slices")


def train_student(student: Student, train: list[Sample], val: list[Sample], out_dir: str | Path,
                  cfg: StudentTraining = StudentTraining(),
                  progress: Progress | None = None, rank: int = 0, world: int = 1) -> Path:
    """Stage 2; resumable from ``out_dir/state.pt``; keeps ``best.safetensors`` (highest validation SROCC
    + PLCC) and one ``log.jsonl`` line per epoch (curves in ``training.png``). Returns the best weights' path.

    The student trains on the device it is on (bfloat16 autocast on a GPU). Under ``torchrun``
    (``world`` > 1) it is trained data-parallel: a DistributedSampler deals
    each rank its share of every epoch, gradients are averaged across ranks, and rank 0 validates and
    writes the checkpoints. Flips are drawn per (seed, epoch, sample), so the run does not depend on how
    the batch is spread: ``world`` ranks take the gradient steps of one process with ``accumulate = world``
    (BatchNorm's running statistics follow rank 0's share).
    """
    check_batch(cfg, len(train), world)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = data_parallel(student, world)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    device = next(student.parameters()).device
    epoch, best = 0, -math.inf
    if (out / "state.pt").exists():
        state = restore_resume_state(out / "state.pt", device, student, opt, sched)
        epoch, best = int(state["epoch"]), float(state["best"])
        if rank == 0:
            training_log.keep_until(out, "epoch", epoch)
    versions = versions_of(train)
    n_pairs = len(version_pairs(versions, np.random.default_rng(0)))  # the same count every epoch
    sampler = DistributedSampler(range(n_pairs), num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    share = cfg.batch_size // 2 // world  # pairs per rank and step
    steps = n_pairs // (cfg.batch_size // 2)

    def draw(i: int) -> tuple[Sample, bool]:
        """Sample ``i`` this epoch, maybe mixed with another version of its slice, and its flip."""
        rng = np.random.default_rng([cfg.seed, epoch, i])
        flip = bool(rng.random() < 0.5)
        others = [j for j in versions[train[i].group] if j != i]
        if cfg.mix > 0 and others and rng.random() < cfg.mix:
            return mixed_quality(train[i], train[int(rng.choice(others))], rng), flip
        return train[i], flip

    def loss_of(part: list[tuple[int, int]]) -> torch.Tensor:
        drawn = [draw(i) for pair in part for i in pair]
        chunk, flips = [d[0] for d in drawn], [d[1] for d in drawn]
        images, score, heatmap = (t.to(device) for t in _batch(chunk, flips))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            score_logit, map_logit = model(images)
        return distillation_loss(score_logit.float(), map_logit.float(), score, heatmap, [s.group for s in chunk], cfg)

    while epoch < cfg.epochs:
        sampler.set_epoch(epoch)
        pairs = version_pairs(versions, np.random.default_rng([cfg.seed, epoch]))
        mine = [pairs[k] for k in sampler]
        student.train()
        total = 0.0
        for b in range(steps):
            opt.zero_grad(set_to_none=True)
            total += step_gradients(model, split_parts(mine[b * share:(b + 1) * share], cfg.accumulate), loss_of)
            opt.step()
            if progress:
                progress("train", epoch * steps + b + 1, cfg.epochs * steps)
        sched.step()
        epoch += 1
        entry = {"epoch": epoch, "loss": mean_over_ranks(total / steps, world)}
        if rank == 0:
            if val:
                entry.update(fidelity(student, val))
                quality = entry["plcc"] + entry["srocc"]
            else:
                quality = -entry["loss"]
            if quality > best:
                best = quality
                save_weights(student, out / "best.safetensors")
            save_weights(student, out / "last.safetensors")
            training_log.append(out, entry)  # before the state (training_log.keep_until)
            save_resume_state({"model": student.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "epoch": epoch, "best": best}, out / "state.pt")
        barrier(world)
    if rank == 0 and not (out / "best.safetensors").exists():  # no epoch's figures were numbers
        raise InputError(f"training diverged: no epoch of {out} gave a finite loss and validation; start again "
                         "with a lower --lr and another --out")
    return out / "best.safetensors"
