"""Windowing, MR normalisation, body mask, canonical resampling round trip, PSF estimation."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from EDIQALib.errors import InputError
from EDIQALib.io import read_volume, volume_from_image
from EDIQALib.preprocess import (body_mask, canonical_shape, display_turn, estimate_psf_sigma, from_canonical,
                                 normalise_mr, outside_field, to_canonical, window_ct)
from EDIQALib.simulate import phantom
from conftest import OBLIQUE, ct_image


def test_ct_window_maps_minus1000_400_to_unit_range():
    np.testing.assert_allclose(window_ct(np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0])),
                               [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_mr_normalisation_is_percentile_based():
    values = np.random.default_rng(0).gamma(4.0, 100.0, size=(100, 100))
    out = normalise_mr(values)
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.2 < np.median(out) < 0.8
    spiked = values.copy()
    spiked[0, 0] = 100 * values.max()  # one bright artefact voxel: min-max scaling would crush the rest
    with_spike = normalise_mr(spiked)
    assert with_spike[0, 0] == 1.0 and abs(np.median(with_spike) - np.median(out)) < 0.01
    extreme = np.array([-3e38, 0.0, 3e38], np.float32)  # a difference beyond float32: a warning on stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(normalise_mr(extreme, (-3e38, 3e38)), [0.0, 0.5, 1.0])


def test_body_mask_covers_the_body_and_not_the_air():
    hu = phantom(12, kind="body")  # a chest: lungs and gas inside the outline belong to the body
    mask = body_mask(window_ct(hu))
    assert mask[160, 160] and not mask[2, 2]
    inside = ndi.binary_fill_holes(hu > -500)
    assert (mask & inside).sum() / inside.sum() > 0.97
    assert (mask & ~inside).sum() / inside.sum() < 0.03
    assert body_mask(np.zeros((100, 100), np.float32)).sum() == 0


def test_body_mask_of_a_field_inside_the_body_keeps_fat_and_muscle():
    # no air at all: Otsu alone would split fat from muscle and keep only the muscle
    yy = np.mgrid[:160, :160][0]
    hu = np.where(yy < 100, 50.0, -100.0).astype(np.float32)
    hu[20:50, 60:100] = 700.0  # a bone
    assert body_mask(window_ct(hu)).all()
    hu[:, :30] = -1000.0  # air beside the field: the usual split, air left out
    mask = body_mask(window_ct(hu))
    assert not mask[:, :25].any() and mask[:, 40:].all()


def test_body_mask_hole_filling_equals_scipys():
    from EDIQALib.preprocess import _fill_holes

    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = ndi.gaussian_filter(rng.random((60, 70)), rng.uniform(0.5, 3.0)) > rng.uniform(0.3, 0.7)
        assert np.array_equal(_fill_holes(mask), ndi.binary_fill_holes(mask))
    ring = np.zeros((20, 20), bool)
    ring[5:15, 5:15] = True
    ring[8:12, 8:12] = False
    assert _fill_holes(ring)[10, 10] and not _fill_holes(ring)[0, 0]
    for flat in (np.zeros((9, 9), bool), np.ones((9, 9), bool)):
        assert np.array_equal(_fill_holes(flat), ndi.binary_fill_holes(flat))


def test_canonical_resampling_round_trip(tmp_path):
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(size=128, spacing=(0.45, 0.45, 3.0)), str(path))
    vol = read_volume(path)
    canon = to_canonical(vol)
    assert canon.shape == (2, round(128 * 0.45 / 0.7), round(128 * 0.45 / 0.7))
    back = from_canonical(canon, vol)
    assert back.shape == vol.array.shape
    interior = np.isfinite(back)
    assert interior.mean() > 0.9
    smooth = ndi.gaussian_filter(vol.array, (0, 2, 2))
    err = np.abs(ndi.gaussian_filter(np.where(interior, back, 0), (0, 2, 2)) - smooth)[:, 10:-10, 10:-10]
    assert np.median(err) < 15.0  # HU, after the down/up-sampling of a textured phantom


@pytest.mark.parametrize("spacing", [(0.5, 0.9), (0.9, 0.5)], ids=["x0.5-y0.9", "x0.9-y0.5"])
def test_canonical_resampling_keeps_positions(spacing):
    """Ramps of the physical position (one slice along x, one along y, 1 per mm) at a spacing other than
    0.7 mm: every canonical pixel holds the ramp at its own centre, and the round trip gives the volume
    back wherever the canonical grid reaches (a shift of a fraction of a pixel would break both)."""
    sx, sy = spacing
    origin = (-40.0, 12.5, 7.0)
    rows, columns = 96, 110
    yy, xx = np.mgrid[:rows, :columns]
    ramps = np.stack([origin[0] + xx * sx, origin[1] + yy * sy]).astype(np.float32)
    image = sitk.GetImageFromArray(ramps)
    image.SetSpacing((sx, sy, 2.0))
    image.SetOrigin(origin)
    vol = volume_from_image(image, "ramps", modality="ct")
    canon = to_canonical(vol)
    assert canon.shape == (2, round(rows * sy / 0.7), round(columns * sx / 0.7))
    ci, cj = np.mgrid[:canon.shape[1], :canon.shape[2]]
    reached = (cj * 0.7 <= (columns - 1) * sx) & (ci * 0.7 <= (rows - 1) * sy)  # within the samples
    np.testing.assert_allclose(canon[0][reached], (origin[0] + cj * 0.7)[reached], atol=1e-3)
    np.testing.assert_allclose(canon[1][reached], (origin[1] + ci * 0.7)[reached], atol=1e-3)
    back = from_canonical(canon, vol)
    last_x, last_y = (cj[reached].max() * 0.7, ci[reached].max() * 0.7)  # the last canonical sample in the grid
    covered = (xx * sx <= last_x) & (yy * sy <= last_y)
    assert covered.mean() > 0.9
    np.testing.assert_allclose(back[:, covered], ramps[:, covered], atol=1e-3)


@pytest.mark.parametrize("direction, turn", [
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), (False, False, False)),  # axial as DICOM stores it: as displayed
    ((1, 0, 0, 0, -1, 0, 0, 0, -1), (False, True, False)),  # rows stored posterior to anterior (NIfTI's habit)
    ((-1, 0, 0, 0, -1, 0, 0, 0, 1), (False, True, True)),  # RAS storage
    ((0, 1, 0, 1, 0, 0, 0, 0, -1), (True, False, False)),  # columns along y: transposed
    ((1, 0, 0, 0, 0, 1, 0, -1, 0), (False, False, False)),  # coronal as DICOM stores it (superior at the top)
    ((0, 0, -1, 1, 0, 0, 0, -1, 0), (False, False, False)),  # sagittal as DICOM stores it (anterior on the left)
    ((0, 0, 1, 1, 0, 0, 0, 1, 0), (False, True, False)),  # sagittal with rows stored inferior to superior
    ((1, 0, 0, 0, 0.927, 0.375, 0, -0.375, 0.927), (False, False, False)),  # the gantry-tilted head slice
])
def test_display_turn_of_slices_stored_every_way(direction, turn):
    # SimpleITK's direction: row-major, its columns the image's x, y and slice axes in LPS
    assert display_turn(direction) == turn


def test_a_slice_is_one_canonical_array_however_its_file_stores_it():
    """The same physical voxels stored in each of the eight in-plane orders (as files from different
    converters store them) make one canonical array, and a map on it goes back to each file's order."""
    lps = ct_image(slices=2, size=96, spacing=(0.6, 0.9, 2.5), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    canon = to_canonical(volume_from_image(lps, "ct", modality="ct"))
    marked = canon.copy()
    marked[:, :20, :10] = 5000.0  # a map that tells the corners apart
    back_lps = sitk.GetArrayFromImage(_image_like(from_canonical(marked, volume_from_image(lps, "ct")), lps))
    for code in ("LPS", "LAS", "RPS", "RAS", "PLS", "ALS", "PRS", "ARS"):
        stored = sitk.DICOMOrient(lps, code)  # the same voxels in physical space, stored in another order
        vol = volume_from_image(stored, "ct", modality="ct")
        assert code == "LPS" or not np.array_equal(vol.array, volume_from_image(lps, "ct").array)
        other = to_canonical(vol)
        assert np.array_equal(other, canon), code
        back = _image_like(from_canonical(marked, vol), stored)
        np.testing.assert_allclose(sitk.GetArrayFromImage(sitk.DICOMOrient(back, "LPS")), back_lps, err_msg=code)


def _image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


@pytest.mark.parametrize("size, spacing, says", [
    ("128 128", "1e30", r"1\.829e\+32 × 1\.829e\+32 pixels \(at most 2896 a side, 2\.03 m\)"),
    ("128 128", "1e6", r"1\.829e\+08 × 1\.829e\+08 pixels \(at most 2896 a side, 2\.03 m\)"),
    ("128 128", "20", r"3657 × 3657 pixels \(at most 2896 a side, 2\.03 m\)"),
    ("128 128", "1e-6", r"1 × 1 pixels \(at least 64 a side\)"),
    ("128 4200", "0.7", r"128 × 4200 pixels \(at most 2896 a side, 2\.03 m\)")],
    ids=["1e30", "1e6", "2.6 m field", "1e-6", "2.9 m strip"])
def test_an_absurd_spacing_or_size_is_refused_before_resampling(tmp_path, size, spacing, says):
    # resampled to 0.7 mm, the slice would be too large to allocate or to be a body's, or too small to assess
    columns, rows = map(int, size.split())
    hu = np.resize(phantom(3, size=128), (rows, columns)).astype("<f4")
    path = tmp_path / "ct.nrrd"
    path.write_bytes(f"NRRD0004\ntype: float\ndimension: 2\nsizes: {size}\nspacings: {spacing} {spacing}\n"
                     "encoding: raw\nendian: little\n\n".encode() + hu.tobytes())
    with pytest.raises(InputError, match=rf"ct: {size.replace(' ', ' × ')} pixels of .* mm: resampled to 0\.7 mm the "
                                         rf"slice would be {says}"):
        read_volume(path)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 1, 0, 1, 0, 0, 0, 0, -1), OBLIQUE],
                         ids=["axial", "transposed", "oblique"])
def test_a_few_slices_resample_as_they_do_within_the_whole_volume(direction):
    """A volume resampled a few slices at a time, to the canonical spacing and back, gives exactly what it
    gives resampled whole: slice for slice, whatever its slice spacing and storage order."""
    image = ct_image(slices=7, size=128, spacing=(0.45, 0.6, 0.1), direction=direction)
    vol = volume_from_image(image, "ct", modality="ct")
    whole = to_canonical(vol)
    assert whole.shape[1:] == canonical_shape(vol)
    for block in (slice(0, 3), slice(3, 4), slice(4, 7)):
        part = to_canonical(vol, slices=block)
        assert np.array_equal(part, whole[block])
        assert np.array_equal(from_canonical(part, vol), from_canonical(whole, vol)[block], equal_nan=True)


def test_a_slice_resamples_alike_alone_and_beside_others():
    """Past a slice's edge (a 0.9 mm grid ends before the 0.7 mm one), the canonical pixels took the volume's
    minimum: a slice without air scored 0.088 alone and 0.048 beside a slice with air. They take the edge's."""
    tissue = np.full((1, 100, 100), 40.0, np.float32)
    tissue[0, :, 50:] = -500.0  # no air: its minimum is -500 HU
    with_air = np.concatenate([tissue, np.full_like(tissue, -1024.0)])
    canonical = []
    for array in (tissue, with_air):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.9, 0.9, 2.0))
        canonical.append(to_canonical(volume_from_image(image, "ct", modality="ct"))[0])
    alone, beside = canonical
    assert (alone.shape[1] - 1) * 0.7 > 99 * 0.9 + 0.45  # its last column lies over half a pixel past the slice
    assert np.array_equal(alone, beside)
    assert alone.min() == -500.0 and alone[:, -1].max() == -500.0 and alone[-1, 0] == 40.0


def test_a_spacing_that_is_not_a_number_is_refused():
    image = ct_image()
    image.SetSpacing((float("nan"), float("nan"), 2.5))
    with pytest.raises(InputError, match="spacing nan × nan mm is not a number"):
        volume_from_image(image, "ct")


def test_a_map_goes_back_whole_next_to_slices_without_one_and_to_the_edges():
    """Back on an oblique volume's grid, a slice's map keeps every pixel though its neighbours have no map
    (NaN), and the map reaches the last row and column whatever the spacing."""
    for spacing, thickness in ((0.35, 1.37), (0.45, 0.1), (0.65, 0.3), (0.9, 3.0)):
        image = ct_image(slices=5, size=128, spacing=(spacing, spacing, thickness))  # oblique direction
        vol = volume_from_image(image, "ct", modality="ct")
        canon = to_canonical(vol)
        ones = np.ones_like(canon)
        ones[[0, 4]] = np.nan  # the end slices are not assessable
        back = from_canonical(ones, vol)
        assert np.isnan(back[[0, 4]]).all()
        assert np.isfinite(back[1:4]).all(), spacing
        np.testing.assert_allclose(back[1:4], 1.0, atol=1e-5)


def test_psf_estimate_follows_blur():
    hu = phantom(12, kind="body")
    estimates = []
    for blur in (0.0, 1.0, 2.0, 3.0):
        img = ndi.gaussian_filter(hu, blur) if blur else hu
        img = img + np.random.default_rng(0).normal(0, 20, img.shape)
        estimates.append(estimate_psf_sigma(img, body_mask(window_ct(img))))
    assert np.all(np.diff(estimates) > 0.3), estimates
    # the phantom's own edges carry a 0.6 px blur, which adds in quadrature
    np.testing.assert_allclose(estimates, np.hypot([0.0, 1.0, 2.0, 3.0], 0.6), atol=0.3)


def test_psf_estimate_ignores_where_the_field_of_view_cuts_the_body():
    """A reconstruction circle that cuts the body makes a sharp outline the scanner never blurred; it used to
    pull the estimate down (2.0 px to 1.7, 1.8, 0.98 or none here), whatever the padding outside the field."""
    hu = ndi.gaussian_filter(phantom(12, kind="body"), 2.0) + np.random.default_rng(0).normal(0, 20, (320, 320))
    assert not outside_field(hu).any()  # acquired air is noisy: never taken for padding
    uncut = estimate_psf_sigma(hu, body_mask(window_ct(hu)))
    yy, xx = np.mgrid[:320, :320]
    for radius in (128, 112):  # the body spans columns 15-305
        beyond = np.hypot(yy - 160, xx - 160) > radius
        for padding in (-1000.0, -2000.0):
            cut = np.where(beyond, padding, hu)
            np.testing.assert_array_equal(outside_field(cut), beyond)
            assert abs(estimate_psf_sigma(cut, body_mask(window_ct(cut))) - uncut) < 0.15, (radius, padding)
