"""What the engine's slice scorers (the teacher, the student) give, shared by the modules that score and
those that read the scores: one verdict per slice, the scorer's signature, a volume's score and its worst
slice, a score as printed, the standard error of a verdict over the teacher's repeats, and the agreement of
one set of scores with another. It loads NumPy alone (SciPy where agreement is measured)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

import numpy as np

if TYPE_CHECKING:  # the Slicer panel reads a saved scene's scores with this module, where SciPy may be missing
    from .backgrounds import Background


class ScoredSlice(NamedTuple):
    """A scorer's verdict on one slice: score, heatmap on the canonical grid, whether it is assessable, and
    for the teacher its score in each repeat (the student has none). A plain ``(score, heatmap, assessable)``
    tuple is one without repeats."""

    score: float
    heatmap: np.ndarray
    assessable: bool
    repeat_scores: tuple[float, ...] = ()


# scorer(positions, slice ranks): for each slice position, the versions of that slice (one per input), and
# the position's rank in physical order (Geometry.slice_ranks), which seeds the teacher's insertion maps
SliceScorer: TypeAlias = "Callable[[list[list[Background]], list[int]], list[list[ScoredSlice]]]"


def standard_error(values: np.ndarray) -> float | None:
    """The standard error of the mean of ``values``' finite entries, to 6 decimals; ``None`` for fewer than two."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return round(float(np.std(values, ddof=1) / np.sqrt(values.size)), 6) if values.size > 1 else None


def volume_score(slice_scores: Sequence[float | None]) -> float:
    """A volume's score: the mean of its assessable slices' scores (``None``: not assessable); NaN without one."""
    scored = [s for s in slice_scores if s is not None]
    return float(np.mean(scored)) if scored else float("nan")


def worst_slice(slice_scores: Sequence[float | None]) -> int:
    """Index of the lowest-scoring assessable slice of a result's ``slice_scores`` (``None``: not assessable;
    the middle slice when none is)."""
    scored = [(s, k) for k, s in enumerate(slice_scores) if s is not None]
    return min(scored)[1] if scored else len(slice_scores) // 2


def score_text(score: float | None) -> str:
    """A score as the figures and the Slicer panel print it: three decimals, or "not assessable" (``None``
    or NaN)."""
    return "not assessable" if score is None or not np.isfinite(score) else f"{score:.3f}"


def paired_standard_error(a: Sequence[float] | None, b: Sequence[float] | None) -> float | None:
    """The standard error of ``a - b`` where the two are scores of the same repeats (paired: the insertion
    maps' share of the scatter cancels); ``None`` without repeat scores on both sides, or unequal counts."""
    return standard_error(np.subtract(a, b)) if a and b and len(a) == len(b) else None


def agreement(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """PLCC and SROCC between predicted and true scores; 0 for predictions that do not vary (a collapsed
    student, or a flat series, ranks nothing)."""
    from scipy.stats import pearsonr, spearmanr  # here: the modules that score need no SciPy stats to start

    if np.ptp(pred) == 0:
        return {"plcc": 0.0, "srocc": 0.0}
    return {"plcc": float(pearsonr(pred, truth).statistic), "srocc": float(spearmanr(pred, truth).statistic)}
