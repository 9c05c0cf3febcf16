"""mD2IQA, the task-based teacher: image quality = how well the detector finds inserted lesions.

For one slice position, ``repeats`` × ``realizations`` insertion plans are drawn (seeded by the seed, the
slice index, the repeat and the realisation) and rendered into every image of the series, so versions of
one slice (doses, reconstructions) are scored on identical insertion maps. The score of an image is the
COCO bbox mAP@[.5:.95] (pycocotools) over the realisations of one repeat, averaged over repeats. The local
detectability map splats each object's detection quality (best IoU of a confident detection, 0 when
missed) with a Gaussian at its centre and averages over all realisations.
"""
from __future__ import annotations

import contextlib
import io as _io
from dataclasses import dataclass, field

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torchvision.ops import box_iou

from .backgrounds import Background
from .choices import READOUTS
from .detector import detect
from .progress import Progress
from .scoring import ScoredSlice, SliceScorer
from .signals import Insertion, InsertionConfig, is_assessable, object_blur, plan_insertion, render


@dataclass(frozen=True)
class TeacherConfig:
    """Teacher parameters.

    Attributes:
        realizations: insertion realisations per repeat (the paper: 100).
        repeats: independent repeats averaged (the paper: 5).
        seed: base seed of every insertion plan.
        readout: ``"agnostic"`` (class-agnostic mAP, the default, see the model card) or ``"paper"``
            (the paper's mAP over the four shape classes).
        psf_aware: blur inserted objects with the image's estimated PSF as well as the paper's 1 px
            (resolution-aware insertion).
        confidence: detection score above which a detection counts for the local map.
        splat_sigma_px: width of each object's footprint in the local map.
        insertion: the insertion parameters.
    """

    realizations: int = 100
    repeats: int = 5
    seed: int = 0
    readout: str = "agnostic"
    psf_aware: bool = True
    confidence: float = 0.5
    splat_sigma_px: float = 12.0
    insertion: InsertionConfig = field(default_factory=InsertionConfig)

    def __post_init__(self) -> None:
        """Settings that would score something else than asked are refused (ValueError): a misspelt read-out
        counted as the paper's, no realisation or repeat left every slice unassessable."""
        for name in ("realizations", "repeats", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "seed" else 1):
                raise ValueError(f"{name} {value!r} is not a whole number of {'0' if name == 'seed' else '1'} or more")
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; choose from {', '.join(READOUTS)}")

    def settings(self) -> dict:
        """The settings a user chooses, as ``result.json``, ``validity.json`` and a labels file's record give
        them."""
        return {"realizations": self.realizations, "repeats": self.repeats, "seed": self.seed,
                "readout": self.readout, "psf_aware": self.psf_aware, "contrasts": list(self.insertion.contrasts)}


def plans_for_slice(body: np.ndarray, salient: np.ndarray, config: TeacherConfig, slice_rank: int
                    ) -> list[list[Insertion]]:
    """``repeats`` lists of ``realizations`` insertion plans for one slice position (seeded)."""
    return [[plan_insertion(body, salient, config.insertion,
                            np.random.default_rng([config.seed, slice_rank, rep, real]))
             for real in range(config.realizations)] for rep in range(config.repeats)]


def coco_map(plans: list[Insertion], gt_boxes: list[np.ndarray], detections: list[dict[str, np.ndarray]],
             agnostic: bool) -> float:
    """COCO bbox mAP@[.5:.95] of detections against the inserted objects of a set of realisations."""
    images, annotations, results = [], [], []
    for i, (plan, boxes, det) in enumerate(zip(plans, gt_boxes, detections)):
        images.append({"id": i, "width": 1, "height": 1})
        for label, (x0, y0, x1, y1) in zip(plan.labels, boxes):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "iscrowd": 0,
                                "category_id": 1 if agnostic else int(label) + 1,
                                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                                "area": float((x1 - x0) * (y1 - y0))})
        for (x0, y0, x1, y1), s, label in zip(det["boxes"], det["scores"], det["labels"]):
            results.append({"image_id": i, "category_id": 1 if agnostic else int(label),
                            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "score": float(s)})
    if not annotations:
        return float("nan")
    if not results:
        return 0.0
    n_classes = 1 if agnostic else max(4, max(a["category_id"] for a in annotations))
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": c} for c in range(1, n_classes + 1)]}
    with contextlib.redirect_stdout(_io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(0.0, float(ev.stats[0]))


def _splat(num: np.ndarray, den: np.ndarray, centre: np.ndarray, value: float, sigma: float) -> None:
    h, w = num.shape
    r = int(3 * sigma)
    cy, cx = int(round(centre[0])), int(round(centre[1]))
    r0, r1, c0, c1 = max(cy - r, 0), min(cy + r + 1, h), max(cx - r, 0), min(cx + r + 1, w)
    yy, xx = np.mgrid[r0:r1, c0:c1]
    g = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma * sigma))
    num[r0:r1, c0:c1] += value * g
    den[r0:r1, c0:c1] += g


def _detection_quality(boxes: np.ndarray, det: dict[str, np.ndarray], confidence: float) -> np.ndarray:
    keep = det["scores"] >= confidence
    if len(boxes) == 0 or not keep.any():
        return np.zeros(len(boxes))
    iou = box_iou(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(det["boxes"][keep]))
    return iou.max(dim=1).values.numpy()


def series_masks(backgrounds: list[Background]) -> tuple[np.ndarray, np.ndarray]:
    """Body and saliency masks shared by a series: the intersection over its images."""
    body = np.logical_and.reduce([b.body for b in backgrounds])
    salient = np.logical_and.reduce([b.salient for b in backgrounds])
    return body, salient


def score_series(model: nn.Module, backgrounds: list[Background], config: TeacherConfig, slice_rank: int = 0,
                 device: torch.device | str = "cpu", progress: Progress | None = None) -> list[ScoredSlice]:
    """Score co-registered versions of one slice on shared insertion maps.

    Args:
        backgrounds: the versions (same shape), normalised, each with its PSF estimate.
        slice_rank: the slice's rank in physical order (:meth:`~EDIQALib.io.Geometry.slice_ranks`; part of the seed).
    """
    shape = backgrounds[0].image01.shape
    body, salient = series_masks(backgrounds)
    total = len(backgrounds) * config.repeats
    if not is_assessable(body, salient, config.insertion):
        if progress:  # nothing to repeat: its share of the count is done
            progress("teacher", total, total)
        nan_map = np.full(shape, np.nan, np.float32)
        return [ScoredSlice(float("nan"), nan_map.copy(), False) for _ in backgrounds]
    plans = plans_for_slice(body, salient, config, slice_rank)
    verdicts = []
    for v, bg in enumerate(backgrounds):
        blur = object_blur(config.insertion, bg.psf_sigma_px if config.psf_aware else None)
        num = np.zeros(shape, np.float64)
        den = np.zeros(shape, np.float64)
        repeat_scores = []
        for rep, rep_plans in enumerate(plans):
            boxes, dets = _inserted_and_detected(model, bg.image01, rep_plans, blur, device)
            repeat_scores.append(coco_map(rep_plans, boxes, dets, config.readout == "agnostic"))
            for plan, b, det in zip(rep_plans, boxes, dets):
                for centre, q in zip(plan.centres, _detection_quality(b, det, config.confidence)):
                    _splat(num, den, centre, float(q), config.splat_sigma_px)
            if progress:
                progress("teacher", v * config.repeats + rep + 1, total)
        heat = np.where((den > 0.05) & body, num / np.maximum(den, 1e-12), np.nan).astype(np.float32)
        valid = [s for s in repeat_scores if np.isfinite(s)]
        verdicts.append(ScoredSlice(float(np.mean(valid)) if valid else float("nan"), heat, bool(valid),
                                    tuple(repeat_scores)))
    return verdicts


RENDER_CHUNK = 64  # realisations rendered at a time, so that memory stays flat whatever --realizations: a
# multiple of detect's batches on a CPU (8) and a GPU (64), so that its batches are those of one pass


def _inserted_and_detected(model: nn.Module, image01: np.ndarray, plans: list[Insertion], blur: float,
                           device: torch.device | str) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    """Each realisation of ``plans`` inserted into ``image01`` and run through the detector: the inserted
    objects' boxes and the detections, per realisation."""
    boxes, dets = [], []
    for start in range(0, len(plans), RENDER_CHUNK):
        rendered = [render(p, image01.shape, blur) for p in plans[start:start + RENDER_CHUNK]]
        dets += detect(model, [image01 + signal for signal, _, _ in rendered], device=device)
        boxes += [b for _, _, b in rendered]
    return boxes, dets


def teacher_scorer(model: nn.Module, config: TeacherConfig, device: torch.device | str = "cpu",
                   progress: Progress | None = None, slices: int | None = None) -> SliceScorer:
    """The teacher as a slice scorer for :func:`EDIQALib.assessment.assess_series` (one slice position a call),
    its verdicts with their scores in each repeat. ``progress`` (stage ``teacher``) counts the repeats of
    every version at each of the volume's ``slices`` positions (required with it), once from 0 to its total,
    in the order the positions come."""
    if progress is not None and slices is None:
        raise ValueError("teacher_scorer: progress counts over the volume's slices; give slices")
    scored = 0  # positions scored so far: the progress count's

    def scorer(positions: list[list[Background]], ranks: list[int]) -> list[list[ScoredSlice]]:
        nonlocal scored
        verdicts = []
        for bgs, rank in zip(positions, ranks):
            verdicts.append(score_series(model, bgs, config, rank, device, _over_volume(progress, scored, slices)))
            scored += 1
        return verdicts

    return scorer


def _over_volume(progress: Progress | None, position: int, slices: int | None) -> Progress | None:
    """``progress`` of the slice at ``position`` (its done of its total) as a count over all ``slices``."""
    if progress is None:
        return None

    def report(stage: str, done: int, total: int) -> None:
        progress(stage, position * total + done, slices * total)

    return report
