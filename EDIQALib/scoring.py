"""What the engine's slice scorers (the teacher, the student) give, shared by the modules that score and
those that read the scores: one verdict per slice, the scorer's signature, and the standard error of a
verdict over the teacher's repeats."""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .backgrounds import Background


class ScoredSlice(NamedTuple):
    """A scorer's verdict on one slice: score, heatmap on the canonical grid, whether it is assessable, and
    for the teacher its score in each repeat (the student has none). A plain ``(score, heatmap, assessable)``
    tuple is one without repeats."""

    score: float
    heatmap: np.ndarray
    assessable: bool
    repeat_scores: tuple[float, ...] = ()


# scorer(positions, slice indices): for each slice position, the versions of that slice (one per input)
SliceScorer = Callable[[list[list[Background]], list[int]], list[list[ScoredSlice]]]


def standard_error(values: np.ndarray) -> float | None:
    """The standard error of the mean of ``values``' finite entries, to 6 decimals; ``None`` for fewer than two."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return round(float(np.std(values, ddof=1) / np.sqrt(values.size)), 6) if values.size > 1 else None
