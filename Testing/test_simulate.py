"""CT simulator: noise ∝ 1/sqrt(dose) (within 15 %), nested doses, sparse-view streaks, phantoms, and an
acquired slice's own noise grain: measured, then grown with falling exposure."""
from __future__ import annotations

import numpy as np
import pytest

from EDIQALib.simulate import (ACQUIRED_NOISE_SD_HU, MAX_VIEWS, NO_GRAIN, Acquisition, NoiseGrain, correlated_noise,
                               estimate_noise_grain, phantom, simulate_series, with_acquired_noise)
from conftest import water_cylinder


def test_noise_follows_inverse_sqrt_dose():
    hu = water_cylinder()
    doses = (1.0, 0.5, 0.25, 0.1, 0.05)
    images = simulate_series(hu, 0.7, [Acquisition(dose=d, views=180) for d in doses], i0=5e4, seed=1)
    roi = (slice(44, 84), slice(44, 84))
    sd = np.array([im[roi].std() for im in images])
    expected = sd[0] * np.sqrt(doses[0] / np.array(doses))
    np.testing.assert_allclose(sd, expected, rtol=0.15)
    assert all(abs(float(np.mean(im[roi]))) < 0.2 * sd[-1] + 5 for im in images)  # unbiased around 0 HU at every dose


def test_the_pixel_spacing_sets_the_attenuation_and_the_noise():
    """One HU image at 0.35 and at 0.7 mm pixels: water stays at 0 HU at both, and the finer pixels are
    noisier (the same photons per ray measure half the attenuation per pixel: about 1.5 times the SD for
    this cylinder)."""
    hu = water_cylinder(96)
    roi = (slice(33, 63), slice(33, 63))
    fine, coarse = (simulate_series(hu, spacing, [Acquisition(views=90)], i0=5e4, seed=1)[0][roi]
                    for spacing in (0.35, 0.7))
    for im in (fine, coarse):
        assert abs(float(np.mean(im))) < 5.0
    assert 1.3 < fine.std() / coarse.std() < 1.8


def test_lower_doses_are_nested_and_seeded():
    hu = water_cylinder(96)
    acquisitions = [Acquisition(1.0, 90), Acquisition(0.5, 90)]
    a, b, other = (simulate_series(hu, 0.7, acquisitions, seed=seed) for seed in (3, 3, 4))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], other[1])  # the noise is the seed's
    # nested: the half-dose image is correlated with the full-dose one (shared photons)
    roi = (slice(30, 66), slice(30, 66))
    r = np.corrcoef(a[0][roi].ravel(), a[1][roi].ravel())[0, 1]
    assert r > 0.5


def test_fewer_views_give_more_streaks():
    hu = phantom(4, size=160, kind="body")
    images = simulate_series(hu, 0.7, [Acquisition(views=v) for v in (360, 90, 30)], i0=1e7, seed=0)
    err = [np.abs(im - hu)[hu > -900].mean() for im in images]
    assert err[0] < err[1] < err[2]


def test_bad_acquisitions_are_rejected():
    with pytest.raises(ValueError, match="filter"):
        simulate_series(water_cylinder(), 0.7, [Acquisition(filter="bogus")])
    with pytest.raises(ValueError, match="dose"):
        simulate_series(water_cylinder(), 0.7, [Acquisition(dose=0.0)])
    for views, says in ((7, "too few"), (MAX_VIEWS + 1, "too many"), (90.5, "not a whole number")):
        with pytest.raises(ValueError, match=says):
            Acquisition(views=views)
    # a slice and settings no scan has: refused, not NaN images (spacing or photons 0) or NumPy's errors
    hu = water_cylinder()
    with_nan = hu.copy()
    with_nan[5, 5] = np.nan
    for bad, says in (({"spacing_mm": 0.0}, "spacing_mm 0.0 is not a positive number"),
                      ({"spacing_mm": -0.7}, "spacing_mm -0.7 is not"), ({"i0": 0.0}, "i0 0.0 is not"),
                      ({"hu": np.stack([hu, hu])}, "got 3-D"), ({"hu": with_nan}, "NaN")):
        with pytest.raises(ValueError, match=says):
            simulate_series(**{"hu": hu, "spacing_mm": 0.7, "acquisitions": [Acquisition(views=90)], **bad})


def test_phantoms_are_seeded_and_varied():
    np.testing.assert_array_equal(phantom(3), phantom(3))
    assert not np.array_equal(phantom(3), phantom(4))
    head, body = phantom(5, kind="head"), phantom(5, kind="body")
    assert head.max() > 700 and body.max() > 400  # skull / spine
    assert (body > -950).mean() > 0.3


def test_back_phantom_is_a_small_field_full_of_muscle_and_thick_fat():
    back = phantom(7, kind="back")
    np.testing.assert_array_equal(back, phantom(7, kind="back"))
    assert back.shape[0] == back.shape[1] and 110 <= back.shape[0] <= 200
    fat = (back > -150) & (back < -50)
    assert fat.mean() > 0.1
    # the body reaches the edges of the field: at least three sides touch tissue
    edges = [back[0], back[-1], back[:, 0], back[:, -1]]
    assert sum((e > -500).mean() > 0.5 for e in edges) >= 3
    with pytest.raises(ValueError, match="phantom kind"):
        phantom(7, kind="leg")


def test_correlated_noise_can_be_streaky():
    noise = correlated_noise((256, 256), 30.0, (0.5, 3.0), np.random.default_rng(0))
    assert noise.std() == pytest.approx(30.0, rel=1e-3)

    def lag1(a, axis):
        return float(np.mean(a * np.roll(a, 1, axis)) / np.mean(a * a))

    assert lag1(noise, 1) > 0.9 and lag1(noise, 0) < 0.5  # long along rows, short across them


@pytest.mark.parametrize("sd, lengths", [(30.0, (1.0, 2.5)), (40.0, (0.0, 0.0)), (20.0, (2.0, 2.0))])
def test_noise_grain_is_measured_on_anatomy(sd, lengths):
    """Noise of known SD and (rows, columns) correlation lengths added to a noiseless phantom: the
    estimate comes back within 15 % and half a pixel, streaks in the right direction."""
    hu = phantom(1, kind="body")
    grain = estimate_noise_grain(hu + correlated_noise(hu.shape, sd, lengths, np.random.default_rng(5)))
    assert grain.sd_hu == pytest.approx(sd, rel=0.15)
    np.testing.assert_allclose(grain.lengths_px, lengths, atol=0.5)


def test_acquired_noise_is_drawn_in_range_and_measured_back():
    """A training slice given a noise of its own: a different draw per seed, its SD inside the range, and
    the grain estimate (what the series then grow) reads it back within 20 % (it runs high on anatomy)."""
    hu = phantom(1, kind="body")
    sds = []
    for seed in range(3):
        added = with_acquired_noise(hu, np.random.default_rng(seed)) - hu
        low, high = ACQUIRED_NOISE_SD_HU
        assert low * 0.99 <= added.std() <= high * 1.01
        assert estimate_noise_grain(hu + added).sd_hu == pytest.approx(added.std(), rel=0.2)
        sds.append(added.std())
    assert np.ptp(sds) > 1.0


def test_an_image_without_tissue_has_no_grain():
    assert estimate_noise_grain(np.full((96, 96), -1000.0)) == NO_GRAIN


def test_own_noise_grows_with_falling_exposure_and_is_nested():
    """A slice's own noise (grain SD 20 HU, lengths 1 × 2 px) grows to variance SD² / e at exposure
    e = dose × views / finest views in the reconstruction, in nested increments that pass through the
    projection and reconstruction as the slice's own noise does (photon noise made negligible here)."""
    cylinder, grain = water_cylinder(), NoiseGrain(20.0, (1.0, 2.0))
    own = correlated_noise(cylinder.shape, grain.sd_hu, grain.lengths_px, np.random.default_rng(3))
    hu = cylinder + np.where(cylinder > -500.0, own, 0.0)
    doses = (1.0, 0.5, 0.25, 0.1, 0.05)
    images = simulate_series(hu, 0.7, [Acquisition(d, 180) for d in doses], i0=1e9, seed=2, grain=grain)
    roi = (slice(44, 84), slice(44, 84))
    sd = np.array([im[roi].std() for im in images])
    np.testing.assert_allclose(sd / sd[0], 1.0 / np.sqrt(doses), rtol=0.1)
    plain = simulate_series(hu, 0.7, [Acquisition(d, 180) for d in doses], i0=1e9, seed=2)
    added = [(g - p)[roi].ravel() for g, p in zip(images, plain)]
    np.testing.assert_array_equal(added[0], 0.0)  # the full exposure is the slice as acquired
    assert abs(np.corrcoef(added[1], added[2] - added[1])[0, 1]) < 0.05  # independent increments: nested
    fewer_views = simulate_series(hu, 0.7, [Acquisition(1.0, 180), Acquisition(1.0, 90)], i0=1e9, seed=2, grain=grain)
    assert fewer_views[1][roi].std() > 1.3 * fewer_views[0][roi].std()  # half the views: half the exposure
    grown = images[1] - plain[1]
    along_rows = np.corrcoef(grown[roi][:, :-1].ravel(), grown[roi][:, 1:].ravel())[0, 1]
    down_columns = np.corrcoef(grown[roi][:-1].ravel(), grown[roi][1:].ravel())[0, 1]
    assert along_rows > down_columns + 0.1  # the grain's streaks (lengths 1 down, 2 along) are kept


def test_a_constant_slice_has_no_grain_and_raises_no_warning():
    """Padding slices are common in volumes (of air, or of a scanner's fill value): the noise estimate of a
    constant slice of tissue or bone divided zero by zero."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grains = [estimate_noise_grain(np.full((96, 96), hu, np.float32)) for hu in (-1000.0, 40.0, 3000.0)]
    assert [g.sd_hu for g in grains] == [0.0] * 3
