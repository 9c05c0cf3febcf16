"""Intensity normalisation, body mask, in-plane resampling and in-plane PSF estimation."""
from __future__ import annotations

import warnings

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import erf
from skimage.filters import threshold_otsu

from .io import CANONICAL_SPACING_MM, Volume, canonical_size

CT_WINDOW = (-1000.0, 400.0)
MR_PERCENTILES = (1.0, 99.0)
BODY_MIN_LEVEL = 0.35  # about -500 HU in the CT window: above air and lung, below every soft tissue


def window_ct(hu: np.ndarray, window: tuple[float, float] = CT_WINDOW) -> np.ndarray:
    """Map HU linearly to [0, 1] over ``window`` (default -1000..400 HU), clipped."""
    lo, hi = window
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def mr_range(values: np.ndarray, percentiles: tuple[float, float] = MR_PERCENTILES) -> tuple[float, float]:
    """The MR intensities that :func:`normalise_mr` maps to 0 and 1: two percentiles of the non-background
    of ``values``, a slice or a whole volume (read on at most about four million of its voxels)."""
    sample = values.ravel()[:: max(1, values.size // 4_000_000)]
    fg = sample[sample > np.percentile(sample, 5)]
    lo, hi = np.percentile(fg if fg.size else sample, percentiles)
    return float(lo), float(hi)


def normalise_mr(values: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Map MR intensities to [0, 1] over ``value_range`` (by default :func:`mr_range` of ``values``), clipped.
    Without a range (an empty slice) the result is zeros: no body, so not assessable."""
    lo, hi = mr_range(values) if value_range is None else value_range
    if hi <= lo:
        return np.zeros(values.shape, np.float32)
    scaled = (values.astype(np.float64) - lo) / (hi - lo)  # in float64: values near float32's limits overflow it
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def volume_range(array: np.ndarray, modality: str) -> tuple[float, float] | None:
    """The scale that :func:`normalise` applies to every slice of a volume (``array``, at the canonical
    spacing): for MR the volume's own :func:`mr_range`, so that a slice of background noise stays dark (no
    body, not assessable) instead of being stretched to [0, 1] on its own; for CT ``None`` (the fixed HU
    window)."""
    return mr_range(array) if modality == "mr" else None


def canonical_range(volume: Volume) -> tuple[float, float] | None:
    """:func:`volume_range` of the volume at the canonical spacing (:func:`to_canonical`), without keeping
    that copy: for MR it is resampled whole once for the scale alone; CT needs none."""
    return volume_range(to_canonical(volume), "mr") if volume.modality == "mr" else None


def normalise(array: np.ndarray, modality: str, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Window CT, or map MR to [0, 1] over ``value_range`` (see :func:`volume_range`; by default the
    array's own)."""
    return window_ct(array) if modality == "ct" else normalise_mr(array, value_range)


def body_mask(image01: np.ndarray, min_fraction: float = 0.02) -> np.ndarray:
    """Body mask of one normalised slice: Otsu on a smoothed copy, closing, hole filling, largest component.

    When the darker Otsu class is itself brighter than ``BODY_MIN_LEVEL`` the field holds no background
    (a small field of view inside the body) and Otsu has split tissue from tissue, fat from muscle or
    soft tissue from bone: the body is then everything brighter than ``BODY_MIN_LEVEL``.
    Returns an all-False mask when the slice holds too little body (under ``min_fraction`` of its area).
    """
    smooth = ndi.gaussian_filter(image01, 1.5)
    if float(smooth.max() - smooth.min()) < 1e-6:
        return np.zeros(image01.shape, bool)
    threshold = threshold_otsu(smooth)
    if smooth[smooth <= threshold].mean() > BODY_MIN_LEVEL:
        threshold = BODY_MIN_LEVEL
    pad = 4  # morphology on an edge-replicated copy, so that a body cut by the field of view keeps its edge
    mask = np.pad(smooth > threshold, pad, mode="edge")
    mask = _fill_holes(ndi.binary_closing(mask, iterations=3))
    mask = ndi.binary_opening(mask, iterations=2)[pad:-pad, pad:-pad]
    labels, n = ndi.label(mask)
    if n == 0:
        return np.zeros(image01.shape, bool)
    sizes = ndi.sum(mask, labels, range(1, n + 1))
    mask = labels == (1 + int(np.argmax(sizes)))
    if mask.mean() < min_fraction:
        return np.zeros(image01.shape, bool)
    return mask


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background regions that do not reach the image border become foreground: what
    ``ndi.binary_fill_holes`` returns, about four times faster (one labelling instead of iterated
    propagation), which counts when every slice of a volume needs a body mask."""
    labels, _ = ndi.label(~mask)
    outside = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask | ~np.isin(labels, outside)


# display axes per slice plane, keyed by the axis (LPS) the slices are stacked along: (axis, sign) of the
# image's columns (left → right) and of its rows (top → bottom), as radiologists view such slices
_DISPLAY_AXES = {
    2: ((0, 1), (1, 1)),  # axial: the patient's right on the image's left, anterior at the top
    1: ((0, 1), (2, -1)),  # coronal: the patient's right on the left, superior at the top
    0: ((1, 1), (2, -1)),  # sagittal: anterior on the left, superior at the top
}


def display_turn(direction: tuple[float, ...]) -> tuple[bool, bool, bool]:
    """How a slice stored with ``direction`` (a 3-D image's direction cosines, as SimpleITK gives them)
    turns into the display orientation of its plane: ``(transpose, flip rows, flip columns)``, applied in
    that order to ``(rows, columns)`` arrays. Turned so, one physical slice is one array whatever order
    its file stores it in (a DICOM series and its NIfTI conversion, rows flipped), and the networks see it
    as they learnt."""
    d = np.asarray(direction, float).reshape(3, 3)
    (col_axis, col_sign), (row_axis, row_sign) = _DISPLAY_AXES[int(np.argmax(np.abs(d[:, 2])))]
    transpose = abs(d[row_axis, 0]) > abs(d[col_axis, 0])  # the stored columns run down the display
    columns, rows = _unflipped_axes(d, transpose)
    return bool(transpose), bool(rows[row_axis] * row_sign < 0), bool(columns[col_axis] * col_sign < 0)


def _unflipped_axes(d: np.ndarray, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
    """The directions (LPS, columns of the direction matrix ``d``) of the stored axes that run along a
    display's columns and rows, transposed or not, before any flip."""
    return (d[:, 1], d[:, 0]) if transpose else (d[:, 0], d[:, 1])


def to_display(array: np.ndarray, turn: tuple[bool, bool, bool]) -> np.ndarray:
    """``array`` (``(..., rows, columns)``) turned by :func:`display_turn`'s ``turn``."""
    transpose, flip_rows, flip_columns = turn
    out = np.swapaxes(array, -1, -2) if transpose else array
    return np.ascontiguousarray(out[..., ::-1 if flip_rows else 1, ::-1 if flip_columns else 1])


def from_display(array: np.ndarray, turn: tuple[bool, bool, bool]) -> np.ndarray:
    """The inverse of :func:`to_display`: ``array`` back in the order it was stored in."""
    transpose, flip_rows, flip_columns = turn
    out = array[..., ::-1 if flip_rows else 1, ::-1 if flip_columns else 1]
    return np.ascontiguousarray(np.swapaxes(out, -1, -2) if transpose else out)


def display_axes(volume: Volume) -> tuple[tuple[bool, bool, bool], np.ndarray, np.ndarray]:
    """The volume's :func:`display_turn`, and the directions (LPS) in which its slices, so turned, run
    from left to right and from top to bottom."""
    n = volume.geometry.dimension
    d = np.eye(3)
    d[:n, :n] = np.reshape(volume.geometry.direction, (n, n))  # a 2-D slice lies in the x-y plane
    turn = display_turn(tuple(d.ravel()))
    columns, rows = _unflipped_axes(d, turn[0])
    return turn, -columns if turn[2] else columns, -rows if turn[1] else rows


def display_grid(volume: Volume) -> tuple[tuple[bool, bool, bool], tuple[int, int, int], tuple[float, float, float]]:
    """The volume's :func:`display_turn`, and the size and spacing (x, y, z) of its voxels so turned."""
    turn = display_axes(volume)[0]
    (sx, sy), sz = volume.spacing_xy, (volume.spacing[2] if volume.geometry.dimension == 3 else 1.0)
    slices, rows, columns = volume.array.shape
    if turn[0]:
        return turn, (rows, columns, slices), (sy, sx, sz)
    return turn, (columns, rows, slices), (sx, sy, sz)


def canonical_shape(volume: Volume, spacing_mm: float = CANONICAL_SPACING_MM) -> tuple[int, int]:
    """The (rows, columns) of the volume's slices as :func:`to_canonical` gives them."""
    columns, rows = canonical_size(volume.geometry, spacing_mm)  # as stored
    return (columns, rows) if display_axes(volume)[0][0] else (rows, columns)


def to_canonical(volume: Volume, spacing_mm: float = CANONICAL_SPACING_MM, slices: slice = slice(None)
                 ) -> np.ndarray:
    """Turn a volume's slices (all, or ``slices`` of them) to display orientation (:func:`display_turn`) and
    resample them in-plane to ``spacing_mm``, linear interpolation: the array ``(slices, rows, cols)``.

    Canonical pixels beyond the volume's extent (up to half a canonical pixel past its last column or row)
    take the value of the slice's edge next to them: a slice resamples alike alone and in any volume (they
    took the volume's minimum, which another slice could set). As in :func:`from_canonical`, the resampling
    runs in index space with slices 1 apart, so that each slice comes from its own alone, and a few slices
    resample as they do within the whole."""
    turn, (in_columns, in_rows, _), (sx, sy, _) = display_grid(volume)
    rows, columns = canonical_shape(volume, spacing_mm)
    # input pixels to repeat past the edge: linear interpolation reaches half an input pixel past the last
    # one, the canonical grid up to half a canonical pixel (none to repeat, no copy, where it reaches less)
    beyond = [max(0, int(np.ceil((n - 1) * spacing_mm / s - (n_in - 0.5) + 1e-3)))
              for n, n_in, s in ((rows, in_rows, sy), (columns, in_columns, sx))]
    slab = to_display(volume.array[slices], turn)
    if any(beyond):
        slab = np.pad(slab, ((0, 0), (0, beyond[0]), (0, beyond[1])), mode="edge")
    image = sitk.GetImageFromArray(slab)  # origin 0, no direction
    del slab
    image.SetSpacing((sx, sy, 1.0))
    out = sitk.Resample(image, (columns, rows, image.GetSize()[2]), sitk.Transform(), sitk.sitkLinear,
                        image.GetOrigin(), (spacing_mm, spacing_mm, 1.0), image.GetDirection(), 0.0,
                        sitk.sitkFloat32)
    del image  # a volume's copies are freed as soon as they are done with
    return sitk.GetArrayFromImage(out)


def from_canonical(array: np.ndarray, volume: Volume, spacing_mm: float = CANONICAL_SPACING_MM) -> np.ndarray:
    """Resample an array that :func:`to_canonical` gave for ``volume`` (or for some of its slices) at the same
    ``spacing_mm``, or one on its grid, back onto the volume's grid, in-plane only, and turn it back to the
    volume's storage order; NaN stays NaN.

    The resampling runs in index space (origin 0, identity direction, slices 1 apart, so that every slice
    lands exactly on its own): in physical space an oblique direction or a slice spacing such as 0.1 mm
    puts each slice a rounding error off its own, which gives it a hair of its neighbours' weight, and a
    neighbour without a map (NaN) then blanks it. The array's last row and column are repeated once, so
    that the volume's edge pixels past the last canonical sample (up to one canonical pixel) get a value."""
    moving = sitk.GetImageFromArray(np.pad(np.asarray(array, np.float32), ((0, 0), (0, 1), (0, 1)), mode="edge"))
    moving.SetSpacing((spacing_mm, spacing_mm, 1.0))
    turn, (columns, rows, _), spacing = display_grid(volume)
    out = sitk.Resample(moving, (columns, rows, len(array)), sitk.Transform(), sitk.sitkLinear, (0.0, 0.0, 0.0),
                        (*spacing[:2], 1.0), np.eye(3).ravel().tolist(), float("nan"), sitk.sitkFloat32)
    del moving
    return from_display(sitk.GetArrayFromImage(out), turn)


def _esf(d: np.ndarray, low: float, step: float, centre: float, sigma: float) -> np.ndarray:
    return low + step * 0.5 * (1.0 + erf((d - centre) / (np.sqrt(2.0) * sigma)))


FIELD_CUT_PX = 2.0  # a body pixel this close to the region outside the reconstructed field is cut by it
FLAT_SHARE = 1e-6  # of a slice's value range: values this close count as one (padding resampled linearly
# stays within rounding of itself; any acquired noise, in any unit, is far larger)


def outside_field(image: np.ndarray) -> np.ndarray:
    """The region outside the reconstructed field of view: pixels of one exact value (a padding value, or the
    air value an FBP writes outside its circle) over their whole 3 × 3 neighbourhood, in regions that reach
    the slice's border. Acquired air always carries noise, so it never qualifies; air set to one value (a
    masked or clipped image) does, and its edge is no edge the scanner blurred either."""
    tolerance = FLAT_SHARE * float(np.ptp(image))
    flat = (ndi.maximum_filter(image, 3) - ndi.minimum_filter(image, 3)) <= tolerance
    labels, _ = ndi.label(flat)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    core = np.isin(labels, border[border > 0])
    if not core.any():
        return core
    # the region's own edge pixels, and single pixels of a jagged edge, have other values in their neighbourhood:
    # take those within 2 px of the core and equal to it
    _, (rows, cols) = ndi.distance_transform_edt(~core, return_indices=True)
    return core | (ndi.binary_dilation(core, iterations=2) & (np.abs(image - image[rows, cols]) <= tolerance))


def estimate_psf_sigma(image: np.ndarray, mask: np.ndarray, outside: float = 6.0, inside: float = 3.0) -> float:
    """Estimate the in-plane Gaussian PSF sigma (pixels) from the edge spread across the body outline.

    Pixels near the outline are binned by their signed distance to it; the median profile (robust to
    noise) is fitted with a blurred step. Unclipped intensities are expected (HU for CT).
    Where the reconstruction's field of view cuts the body, the outline is a cut, not an edge the scanner
    blurred: the profile leaves out every pixel within reach of such a cut, and the padding outside the
    field (:func:`outside_field`) itself.
    Returns NaN when there is no usable edge.
    """
    if mask.sum() < 100 or mask.all():
        return float("nan")
    signed = np.where(mask, ndi.distance_transform_edt(mask) - 0.5, -(ndi.distance_transform_edt(~mask) - 0.5))
    beyond = outside_field(image)
    usable = ~beyond
    if beyond.any():
        cut = mask & (ndi.distance_transform_edt(~beyond) <= FIELD_CUT_PX)
        if cut.any():
            usable &= ndi.distance_transform_edt(~cut) > outside + inside
    edges = np.arange(-outside, inside + 1e-6, 0.5)
    centres, values = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = usable & (signed >= a) & (signed < b)
        if sel.sum() >= 20:
            centres.append(0.5 * (a + b))
            values.append(float(np.median(image[sel])))
    if len(centres) < 8:
        return float("nan")
    d, v = np.array(centres), np.array(values)
    p0 = (v[0], v[-1] - v[0], 0.0, 1.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            (low, step, centre, sigma), _ = curve_fit(_esf, d, v, p0=p0, maxfev=4000)
    except (RuntimeError, ValueError):
        return float("nan")
    sigma = abs(float(sigma))
    return sigma if 0.1 < sigma < 10.0 and step > 0 else float("nan")
