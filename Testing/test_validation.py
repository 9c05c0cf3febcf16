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


def test_a_report_with_a_best_image_scored_zero_is_standard_json():
    """An untrained detector finds nothing: every score 0, no ratio of worst to best. The summary's
    ``max_ratio`` is null, not the ``Infinity`` that JSON readers other than Python's refuse."""
    import json

    import torch

    from EDIQALib.detector import build_detector
    from EDIQALib.simulate import phantom
    from EDIQALib.teacher import TeacherConfig
    from EDIQALib.validation import validity_report

    torch.manual_seed(0)
    report = validity_report(build_detector("lite"), TeacherConfig(realizations=1, repeats=1), ("dose",),
                             {"body": phantom(5, 256, "body")})
    assert report["series"][0]["scores"] == [0.0] * 5 and report["series"][0]["ratio"] is None
    assert report["summary"]["dose"]["max_ratio"] is None
    json.dumps(report, allow_nan=False)  # raises on NaN or infinity
