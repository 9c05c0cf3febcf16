"""How valid the teacher is: does its score fall as quality falls along evaluation series?"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import spearmanr
from skimage.restoration import estimate_sigma
from torch import nn

from .backgrounds import make_background
from .series import Series
from .teacher import TeacherConfig, score_series


def series_scores(model: nn.Module, series: Series, config: TeacherConfig, device: str = "cpu") -> list[float]:
    """Teacher scores of every image of a series, on shared insertion maps."""
    backgrounds = [make_background(im) for im in series.images_hu]
    return [v.score for v in score_series(model, backgrounds, config, device=device)]


def rank_agreement(scores: list[float]) -> float:
    """Spearman ρ between scores and quality order (series are ordered best → worst); 1 = perfect,
    0 when the scores do not vary."""
    if np.ptp(scores) == 0:
        return 0.0
    return float(spearmanr(scores, -np.arange(len(scores))).statistic)


def noise_sd_baseline(series: Series) -> list[float]:
    """The noise-SD estimate (scikit-image ``estimate_sigma``) of every image, in HU: what a
    noise-based metric would rank by (lower = "better")."""
    return [float(estimate_sigma(im)) for im in series.images_hu]


def validity_metric(series_list: list[Series], config: TeacherConfig, device: str = "cpu"
                    ) -> Callable[[nn.Module], float]:
    """A checkpoint-selection metric: mean over series of Spearman ρ plus the relative score drop
    from best to worst image (rewards a teacher that ranks correctly and does not saturate)."""

    def metric(model: nn.Module) -> float:
        values = []
        for s in series_list:
            scores = series_scores(model, s, config, device)
            drop = (scores[0] - scores[-1]) / max(scores[0], 1e-6)
            values.append(rank_agreement(scores) + drop)
        return float(np.mean(values))

    return metric


def default_validation_series() -> list[Series]:
    """Held-out series for checkpoint selection: phantom seeds used neither in training nor in the
    acceptance figures (dose on two phantoms, texture on a third)."""
    from .series import make_series
    from .simulate import phantom

    dose = [make_series("dose", f"phantom-{s}", phantom(s, kind="body"), seed=s) for s in (500, 501)]
    for s in dose:
        keep = [0, 2, 4]  # 100 %, 25 %, 5 %
        s.levels = tuple(s.levels[i] for i in keep)
        s.images_hu = [s.images_hu[i] for i in keep]
    return dose + [make_series("texture", "phantom-502", phantom(502, kind="body"), seed=502)]
