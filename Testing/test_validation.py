"""Validity read-outs: rank agreement of scores with a series' quality order."""
from __future__ import annotations

import pytest

from EDIQALib.validation import rank_agreement


def test_rank_agreement_is_positive_when_scores_fall_along_the_series():
    """Series run best → worst: scores falling along them agree (ρ = 1), rising ones disagree (ρ = -1),
    scores that do not vary rank nothing (0)."""
    assert rank_agreement([0.9, 0.5, 0.1]) == pytest.approx(1.0)
    assert rank_agreement([0.1, 0.5, 0.9]) == pytest.approx(-1.0)
    assert rank_agreement([0.9, 0.1, 0.5]) == pytest.approx(0.5)
    assert rank_agreement([0.4, 0.4, 0.4]) == 0.0
