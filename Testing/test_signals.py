"""Insertion geometry: count, spacing, inside the body, contrast, shapes, boxes, seeding, series sharing."""
from __future__ import annotations

import numpy as np
import pytest

from EDIQALib.backgrounds import make_background
from EDIQALib.signals import InsertionConfig, is_assessable, object_blur, plan_insertion, render
from EDIQALib.simulate import phantom

CONFIG = InsertionConfig()


@pytest.fixture(scope="module")
def background():
    return make_background(phantom(7, kind="body"))


def plans(bg, n=40, config=CONFIG):
    return [plan_insertion(bg.body, bg.salient, config, np.random.default_rng([1, i])) for i in range(n)]


def test_count_spacing_and_placement(background):
    assert {len(plan) for plan in plans(background)} == {2, 3, 4, 5}  # every count of the paper's, no other
    for plan in plans(background):
        c = plan.centres
        d = np.hypot(*(c[:, None, :] - c[None, :, :]).transpose(2, 0, 1))
        assert np.all(d[np.triu_indices(len(plan), 1)] >= CONFIG.min_distance_px)
        for (row, col), r in zip(c.astype(int), plan.radii):
            assert background.salient[row, col]
            m = int(np.ceil(r + CONFIG.margin_px))
            for dr in (-m, m):
                for dc in (-m, m):
                    assert background.body[row + dr, col + dc]
        assert np.all((plan.radii >= 7) & (plan.radii <= 10))
        assert set(np.round(np.abs(plan.contrasts), 3)) <= set(CONFIG.contrasts)


def test_signs_and_shapes_vary(background):
    ps = plans(background)
    signs = np.concatenate([np.sign(p.contrasts) for p in ps])
    labels = np.concatenate([p.labels for p in ps])
    assert {-1.0, 1.0} <= set(signs)
    assert set(labels) == {0, 1, 2, 3}


def test_render_contrast_boxes_and_masks(background):
    plan = plans(background, 1)[0]
    signal, masks, boxes = render(plan, background.image01.shape, blur_sigma_px=1.0)
    for i in range(len(plan)):
        row, col = plan.centres[i].astype(int)
        peak = signal[row - 2:row + 3, col - 2:col + 3]
        # the blurred object reaches its full contrast at its centre (circle/square) or close to it (star)
        assert np.sign(peak.mean()) == np.sign(plan.contrasts[i])
        assert np.abs(peak).max() <= abs(plan.contrasts[i]) + 1e-6
        assert np.abs(peak).max() >= 0.5 * abs(plan.contrasts[i])
        x0, y0, x1, y1 = boxes[i]
        assert x0 <= col < x1 and y0 <= row < y1
        assert max(x1 - x0, y1 - y0) <= 2 * plan.radii[i] + 2
        assert masks[i].sum() > 0.25 * np.pi * plan.radii[i] ** 2 * 0.5
    assert np.count_nonzero(signal) > 0
    outside = ~np.any(masks, axis=0)
    far = outside & (np.abs(signal) > 0)
    assert np.abs(signal[far]).max() < max(np.abs(plan.contrasts))  # only the blur's tails outside the objects
    for i in range(len(plan)):
        row, col = plan.centres[i]
        shape, r, c = plan.shapes[plan.labels[i]], plan.radii[i], plan.contrasts[i]
        # full contrast at the centre (every shape is at least 2 sigma wide there)
        assert signal[int(row), int(col)] == pytest.approx(c, rel=0.05)
        # the blur moves no signal: the object's integral is its contrast times its area
        near = _near(signal.shape, plan.centres[i])
        assert signal[near].sum() == pytest.approx(c * _AREA[shape] * r ** 2, rel=0.03), shape
        # the mask sits on the centre (every shape is symmetric about it) and its box bounds it tightly
        rows, cols = np.nonzero(masks[i])
        assert abs(rows.mean() - row) < 0.25 and abs(cols.mean() - col) < 0.25, shape
        x0, y0, x1, y1 = boxes[i].astype(int)
        assert masks[i][y0:y1, x0:x1].sum() == masks[i].sum()  # exclusive upper edge: nothing cut off
        assert masks[i][y0].any() and masks[i][y1 - 1].any() and masks[i][:, x0].any() and masks[i][:, x1 - 1].any()


# area over radius² of each shape: circle, equilateral triangle and square in the circumcircle, and the
# five-point star of inner radius 0.382 r (ten triangles of sides r and 0.382 r at 36°)
_AREA = {"circle": np.pi, "triangle": 3 * np.sqrt(3) / 4, "square": 2.0, "star": 5 * 0.382 * np.sin(np.pi / 5)}


def _near(shape, centre, reach=24.0):
    """The pixels within ``reach`` of ``centre`` (objects are 50 px apart: one object's surroundings)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.hypot(yy - centre[0], xx - centre[1]) < reach


def test_render_blurs_each_object_by_its_sigma(background):
    """A Gaussian blur of sigma adds sigma² to an object's spatial variance along each axis and keeps its
    integral: measured on each object's own signal, against the same object rendered unblurred."""
    plan = plans(background, 1)[0]
    shape = background.image01.shape
    sharp = render(plan, shape, blur_sigma_px=0.0)[0]
    yy, xx = np.mgrid[:shape[0], :shape[1]]

    def moments(signal, i):
        w = np.where(_near(shape, plan.centres[i]), signal / plan.contrasts[i], 0.0)
        total = w.sum()
        my, mx = (w * yy).sum() / total, (w * xx).sum() / total
        return total, (w * (yy - my) ** 2).sum() / total, (w * (xx - mx) ** 2).sum() / total

    for sigma in (1.0, 2.0, 4.0):  # a blurry image's PSF widens the objects' blur past the paper's 1 px
        blurred = render(plan, shape, blur_sigma_px=sigma)[0]
        for i in range(len(plan)):
            (t0, vy0, vx0), (t, vy, vx) = moments(sharp, i), moments(blurred, i)
            assert t == pytest.approx(t0, rel=0.01)
            assert vy - vy0 == pytest.approx(sigma ** 2, rel=0.05) and vx - vx0 == pytest.approx(sigma ** 2, rel=0.05)


def test_paper_contrasts_and_blur_are_configurable(background):
    config = InsertionConfig(contrasts=(0.08, 0.09, 0.10), count=(3, 3), blur_sigma_px=2.0)
    for plan in plans(background, 10, config):
        assert len(plan) == 3
        assert set(np.round(np.abs(plan.contrasts), 3)) <= {0.08, 0.09, 0.10}
    assert object_blur(config, 1.5) == pytest.approx(2.5)  # the object's edge seen through the PSF
    assert object_blur(config, 0.0) == 2.0
    assert object_blur(config, float("nan")) == 2.0


def test_plans_are_seeded(background):
    """A plan is the seed's alone: the same seed gives the same objects, another seed others. (That every
    image of a series is scored on one plan is the teacher's: see test_cli's series test.)"""
    plans = [plan_insertion(background.body, background.salient, CONFIG, np.random.default_rng(seed)) for seed in (5, 5, 6)]
    for key in ("centres", "radii", "labels", "angles", "contrasts"):
        np.testing.assert_array_equal(getattr(plans[0], key), getattr(plans[1], key))
    assert len(plans[0]) != len(plans[2]) or not np.array_equal(plans[0].centres, plans[2].centres)


def test_no_room_means_no_objects():
    body = np.zeros((128, 128), bool)
    body[40:80, 40:80] = True  # too small for the diagonal points at r + 25
    plan = plan_insertion(body, body, CONFIG, np.random.default_rng(0))
    assert len(plan) == 0


@pytest.mark.parametrize("side, assessable", [(71, True), (69, False)])
def test_a_slice_is_assessable_only_with_room_for_the_largest_object(side, assessable):
    """Room for one object of the largest radius (10 px): a square body whose centre has the four diagonal
    points at ±ceil(10 + 25) px inside it, i.e. a side of 71 px; one of 69 px has room for smaller objects
    (7 px) only, and is not assessable."""
    body = np.zeros((160, 160), bool)
    lo = 80 - side // 2
    body[lo:lo + side, lo:lo + side] = True
    assert is_assessable(body, body, CONFIG) is assessable
    small = InsertionConfig(radius_px=(7.0, 7.0))
    assert is_assessable(body, body, small)  # room for the smallest objects in both
