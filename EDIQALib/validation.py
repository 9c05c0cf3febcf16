"""How valid the teacher is: does its score fall as quality falls along evaluation series?"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage.restoration import estimate_sigma
from torch import nn

from .backgrounds import make_background
from .choices import KINDS
from .detector import build_detector
from .errors import InputError
from .io import read_volume
from .models import NonFiniteWeights, fit_weights, read_weights
from .preprocess import to_canonical
from .progress import Progress
from .scoring import ScoredSlice, agreement, paired_standard_error, standard_error
from .series import Series, make_series
from .simulate import NO_GRAIN, estimate_noise_grain, phantom
from .teacher import TeacherConfig, score_series


def series_verdicts(model: nn.Module, series: Series, config: TeacherConfig, device: str = "cpu") -> list[ScoredSlice]:
    """The teacher's verdicts on every image of a series, on shared insertion maps."""
    return score_series(model, [make_background(im) for im in series.images_hu], config, device=device)


def series_scores(model: nn.Module, series: Series, config: TeacherConfig, device: str = "cpu") -> list[float]:
    """Teacher scores of every image of a series, on shared insertion maps."""
    return [v.score for v in series_verdicts(model, series, config, device)]


def step_uncertainty(verdicts: list[ScoredSlice]) -> dict:
    """How sure each step along a series is: each image's ``score_se`` over the teacher's repeats, each
    step's ``step_se`` (the paired standard error of the score's change to the next image: the images
    share their insertion maps in each repeat, so the maps' scatter cancels), and ``significant_swaps``, the
    steps where the score rises by more than two of those errors (a misordering that is not noise).
    Errors are ``None`` with one repeat or on an image not assessable, and the count ``None`` where a step's
    error is, or where there is no step."""
    steps = list(zip(verdicts, verdicts[1:]))
    step_se = [paired_standard_error(b.repeat_scores, a.repeat_scores) for a, b in steps]
    return {"score_se": [standard_error(v.repeat_scores) for v in verdicts], "step_se": step_se,
            "significant_swaps": None if not steps or None in step_se else
            sum(b.score - a.score > 2 * se for (a, b), se in zip(steps, step_se))}


def rank_agreement(scores: list[float]) -> float:
    """Spearman ρ between scores and quality order (series are ordered best → worst); 1 = perfect,
    0 when the scores do not vary."""
    return agreement(np.asarray(scores, np.float64), -np.arange(len(scores)))["srocc"]


def noise_sd_baseline(series: Series) -> list[float]:
    """The noise-SD estimate (scikit-image ``estimate_sigma``) of every image, in HU: what a
    noise-based metric would rank by (lower = "better")."""
    return [float(estimate_sigma(im)) for im in series.images_hu]


def validity_metric(series_list: list[Series], config: TeacherConfig, device: str = "cpu",
                    progress: Progress | None = None) -> Callable[[nn.Module], float]:
    """A checkpoint-selection metric: mean over series of Spearman ρ plus the relative score drop
    from best to worst image (rewards a teacher that ranks correctly and does not saturate), of a model
    moved to ``device`` (a snapshot is read onto the CPU); ``progress`` is called as
    ``progress("validate", done, total)`` over the series of each evaluation."""

    def metric(model: nn.Module) -> float:
        model.to(device)  # select-detector on a GPU fed a snapshot read onto the CPU with images on the GPU
        shares = []
        for s in series_list:
            shares.append(series_validity(series_scores(model, s, config, device)))
            if progress:
                progress("validate", len(shares), len(series_list))
        return float(np.mean(shares))

    return metric


def series_validity(scores: list[float]) -> float:
    """One series' share of :func:`validity_metric`: Spearman ρ plus the score's relative drop from the best
    image to the worst, within ±1 (a rise from a best image that scores almost 0 is as bad as a drop to 0
    is good, not thousands of times worse)."""
    drop = (scores[0] - scores[-1]) / scores[0] if scores[0] > 0 else 0.0
    return rank_agreement(scores) + float(np.clip(drop, -1.0, 1.0))


def default_validation_series() -> list[Series]:
    """Held-out series for checkpoint selection, on phantom seeds used neither in training nor in the
    acceptance figures: dose on two body phantoms, texture and blur on a third, dose and texture on a
    back phantom."""
    back = phantom(503, kind="back")
    return [make_series("dose", f"phantom-{s}", phantom(s, kind="body"), seed=s) for s in (500, 501)] + [
        make_series(kind, "phantom-502", phantom(502, kind="body"), seed=502) for kind in ("texture", "blur")] + [
        make_series(kind, "back-503", back, seed=503) for kind in ("dose", "texture")]


def select_checkpoint(snapshots: list[Path], make_metric: Callable[[], Callable[[nn.Module], float]],
                      preset: str = "lite", progress: Progress | None = None) -> list[dict]:
    """Evaluate every snapshot with the metric ``make_metric()`` returns, made once every snapshot has been
    read (its validation series take a while to simulate: an unusable snapshot is refused first); returns
    ``[{"snapshot", "validity"}]`` in input order, the validity ``None`` for a snapshot whose weights hold
    NaN (the run diverged there: no candidate).

    Raises:
        InputError: a snapshot is unreadable or of another network (all are read before any is evaluated),
            or every snapshot holds NaN.
    """
    models = []
    for path in snapshots:
        try:
            models.append(fit_weights(build_detector(preset), read_weights(path), str(path)))
        except NonFiniteWeights:
            models.append(None)
    if all(model is None for model in models):
        raise InputError("every snapshot holds NaN or infinite weights: the run diverged")
    metric = make_metric()
    rows = []
    for i, (path, model) in enumerate(zip(snapshots, models)):
        rows.append({"snapshot": path.name, "validity": None if model is None else metric(model.eval())})
        if progress:
            progress("select", i + 1, len(snapshots))
    return rows


ACQUIRED_BASES = ("ct-head", "ct-spine")


def acceptance_bases() -> dict[str, np.ndarray]:
    """The slices of the validity figures: the two real CT slices of the pydicom wheel
    (``J2K_pixelrep_mismatch.dcm`` head, ``CT_small.dcm`` spine) and three phantoms (seeds 1–3),
    none used to train the shipped detector; canonical spacing, HU."""
    from pydicom.data import get_testdata_file

    bases = {}
    for label, fname in (("ct-head", "J2K_pixelrep_mismatch.dcm"), ("ct-spine", "CT_small.dcm")):
        canon = to_canonical(read_volume(get_testdata_file(fname)))
        bases[label] = np.maximum(canon[0], -1000.0)
    bases.update({"phantom-1-body": phantom(1, kind="body"), "phantom-2-body": phantom(2, kind="body"),
                  "phantom-3-head": phantom(3, kind="head")})
    return bases


def acceptance_series(kind: str, name: str, hu: np.ndarray, seed: int = 7) -> Series:
    """One series of the validity figures (noise seed 7; other seeds give other draws of the same
    series). The real scans carry their own noise, and their dose and views series grow it with falling
    exposure (``estimate_noise_grain``); phantoms carry none."""
    grain = estimate_noise_grain(hu) if name in ACQUIRED_BASES else NO_GRAIN
    return make_series(kind, name, hu, seed=seed, grain=grain)


def validity_report(model: nn.Module, config: TeacherConfig, kinds: tuple[str, ...] = KINDS,
                    bases: dict[str, np.ndarray] | None = None, device: str = "cpu",
                    progress: Progress | None = None) -> dict:
    """Teacher scores, Spearman ρ and the noise-SD baseline for every (base slice, series kind).

    Returns ``{"series": [...], "summary": {kind: {...}}}``. Each series entry has the levels, scores,
    ``rho`` (score vs quality order), ``ratio`` (worst / best score; None where the best scores 0), the
    errors of :func:`step_uncertainty`, and the noise-SD estimates with their ``rho_noise_sd`` (how a
    noise-SD metric, lower = better, ranks the same images). A kind's summary has the mean and least ρ, the
    greatest ratio (None where a series has none) and the sum of its series' ``significant_swaps``.
    """
    def teacher_on(s: Series) -> dict:
        verdicts = series_verdicts(model, s, config, device)
        scores = [v.score for v in verdicts]
        return {"scores": scores, "ratio": scores[-1] / scores[0] if scores[0] > 0 else None,
                **step_uncertainty(verdicts)}

    entries = scored_series(teacher_on, kinds, bases, progress)
    summary = rho_summary(entries, kinds)
    for kind, row in summary.items():
        ratios = [e["ratio"] for e in entries if e["kind"] == kind]
        swaps = [e["significant_swaps"] for e in entries if e["kind"] == kind]
        row["max_ratio"] = None if None in ratios else float(max(ratios))  # None: a best image scored 0
        row["significant_swaps"] = None if None in swaps else sum(swaps)
    return {"series": entries, "summary": summary}


def scored_series(score: Callable[[Series], dict], kinds: tuple[str, ...],
                  bases: dict[str, np.ndarray] | None = None, progress: Progress | None = None) -> list[dict]:
    """Each evaluation series (:func:`acceptance_series` of every kind of ``kinds`` on every base slice)
    with what ``score`` says of it (its ``scores`` and more), their Spearman ρ (``rho``), and the noise-SD
    estimates with how a noise-SD metric (lower = better) ranks the same images (``rho_noise_sd``);
    ``progress`` counts the series (stage ``validate``)."""
    bases = acceptance_bases() if bases is None else bases
    entries = []
    jobs = [(name, kind) for kind in kinds for name in bases]
    for j, (name, kind) in enumerate(jobs):
        s = acceptance_series(kind, name, bases[name])
        found = score(s)
        noise = noise_sd_baseline(s)
        entries.append({"base": name, "kind": kind, "levels": list(s.levels), **found,
                        "rho": rank_agreement(found["scores"]), "noise_sd_hu": noise,
                        "rho_noise_sd": rank_agreement([-x for x in noise])})
        if progress:
            progress("validate", j + 1, len(jobs))
    return entries


def rho_summary(entries: list[dict], kinds: tuple[str, ...]) -> dict[str, dict]:
    """Per kind of :func:`scored_series`' entries: the mean and least ρ, and the noise-SD metric's mean ρ."""
    summary = {}
    for kind in kinds:
        rows = [e for e in entries if e["kind"] == kind]
        summary[kind] = {"mean_rho": round(float(np.mean([e["rho"] for e in rows])), 6),  # not 0.9799999999999999
                         "min_rho": float(np.min([e["rho"] for e in rows])),
                         "mean_rho_noise_sd": round(float(np.mean([e["rho_noise_sd"] for e in rows])), 6)}
    return summary
