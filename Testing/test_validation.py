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
    # one repeat: no standard errors, no count of significant swaps
    assert report["series"][0]["score_se"] == [None] * 5 and report["series"][0]["step_se"] == [None] * 4
    assert report["summary"]["dose"]["significant_swaps"] is None
    json.dumps(report, allow_nan=False)  # raises on NaN or infinity


def test_the_checkpoint_metric_reports_its_progress_over_its_series():
    """`train-detector` showed nothing while it validated a snapshot, minutes at the default settings."""
    import torch

    from EDIQALib.detector import build_detector
    from EDIQALib.series import make_series
    from EDIQALib.simulate import phantom
    from EDIQALib.teacher import TeacherConfig
    from EDIQALib.validation import validity_metric

    torch.manual_seed(0)
    events = []
    metric = validity_metric([make_series(kind, "p", phantom(5, 192, "body"), seed=5) for kind in ("dose", "blur")],
                             TeacherConfig(realizations=1, repeats=1), progress=lambda *event: events.append(event))
    assert metric(build_detector("lite").eval()) == 0.0  # an untrained detector finds nothing: ρ 0, no drop
    assert events == [("validate", 1, 2), ("validate", 2, 2)]


def test_a_step_up_a_series_is_a_significant_swap_only_beyond_two_paired_standard_errors():
    """Repeats share their insertion maps across a series' images, so a step's error is that of the paired
    differences: a small rise the repeats all agree on is significant, a larger one they scatter about is not."""
    import numpy as np

    from EDIQALib.scoring import ScoredSlice
    from EDIQALib.validation import step_uncertainty

    def verdict(*repeats: float) -> ScoredSlice:
        return ScoredSlice(float(np.mean(repeats)), np.zeros((2, 2), np.float32), True, repeats)

    a, b, c, d = (verdict(0.20, 0.22, 0.24), verdict(0.22, 0.23, 0.27),  # b: +0.02 ± 0.006, all three up
                  verdict(0.17, 0.29, 0.23), verdict(0.20, 0.27, 0.25))  # c falls; d: +0.01 ± 0.015
    got = step_uncertainty([a, b, c, d])

    def se(values) -> float:
        return pytest.approx(np.std(values, ddof=1) / np.sqrt(len(values)), abs=1e-6)

    assert got["score_se"] == [se(v.repeat_scores) for v in (a, b, c, d)]
    assert got["step_se"] == [se([0.02, 0.01, 0.03]), se([-0.05, 0.06, -0.04]), se([0.03, -0.02, 0.02])]
    assert got["significant_swaps"] == 1
    assert step_uncertainty([verdict(0.2), verdict(0.3)]) == {"score_se": [None, None], "step_se": [None],
                                                             "significant_swaps": None}


def test_a_series_validity_lies_within_rho_plus_minus_one():
    """The checkpoint-selection metric divided by max(best score, 1e-6): a series whose best image scored 0
    and its worst 0.01 counted -10 000, and outweighed every other series."""
    from EDIQALib.validation import series_validity

    assert series_validity([0.2, 0.15, 0.1]) == pytest.approx(1.0 + 0.5)
    assert series_validity([0.0, 0.005, 0.01]) == pytest.approx(-1.0)  # ρ -1, and no drop from 0
    assert series_validity([0.001, 0.005, 0.01]) == pytest.approx(-2.0)  # a ninefold rise counts as -1
    assert series_validity([0.0, 0.0, 0.0]) == 0.0


def test_every_snapshot_is_read_before_the_selection_s_metric_is_made(tmp_path):
    """The metric's validation series take a while to simulate: a snapshot that cannot be used is refused
    before they are made, and the metric is made once for all snapshots."""
    from EDIQALib.detector import build_detector
    from EDIQALib.models import save_weights
    from EDIQALib.errors import InputError
    from EDIQALib.validation import select_checkpoint

    good, cut = tmp_path / "step000010.safetensors", tmp_path / "step000020.safetensors"
    save_weights(build_detector("lite"), good)
    cut.write_bytes(b"\0" * 32)
    made = []

    def make_metric():
        made.append(True)
        return lambda model: 0.5

    with pytest.raises(InputError, match="step000020.safetensors: not readable"):
        select_checkpoint([good, cut], make_metric)
    assert not made
    assert select_checkpoint([good, good], make_metric) == [{"snapshot": good.name, "validity": 0.5}] * 2
    assert made == [True]
