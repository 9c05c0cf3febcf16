"""Intensity normalisation, body mask, in-plane resampling and in-plane PSF estimation."""
from __future__ import annotations

import warnings

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.special import erf
from skimage.filters import threshold_otsu

from .errors import InputError
from .io import Volume, image_like

CT_WINDOW = (-1000.0, 400.0)
CANONICAL_SPACING_MM = 0.7
MR_PERCENTILES = (1.0, 99.0)
BODY_MIN_LEVEL = 0.35  # about -500 HU in the CT window: above air and lung, below every soft tissue


def window_ct(hu: np.ndarray, window: tuple[float, float] = CT_WINDOW) -> np.ndarray:
    """Map HU linearly to [0, 1] over ``window`` (default -1000..400 HU), clipped."""
    lo, hi = window
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def normalise_mr(values: np.ndarray, percentiles: tuple[float, float] = MR_PERCENTILES) -> np.ndarray:
    """Map MR intensities to [0, 1] between two percentiles of the non-background, clipped."""
    fg = values[values > np.percentile(values, 5)]
    lo, hi = np.percentile(fg if fg.size else values, percentiles)
    if hi <= lo:
        raise InputError("MR image has no intensity range to normalise")
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def normalise(array: np.ndarray, modality: str) -> np.ndarray:
    """Window CT or percentile-normalise MR to [0, 1]."""
    return window_ct(array) if modality == "ct" else normalise_mr(array)


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


def _volume_image(volume: Volume) -> sitk.Image:
    image = image_like(volume.array, volume.reference)
    return image if image.GetDimension() == 3 else sitk.JoinSeries(image)


def to_canonical(volume: Volume, spacing_mm: float = CANONICAL_SPACING_MM) -> tuple[np.ndarray, sitk.Image]:
    """Resample a volume in-plane to ``spacing_mm`` (slices untouched), linear interpolation.

    Returns the resampled array ``(slices, rows, cols)`` and its 3-D grid (for :func:`from_canonical`).
    """
    image = _volume_image(volume)
    size, sp = image.GetSize(), image.GetSpacing()
    new_size = [max(1, int(round(size[i] * sp[i] / spacing_mm))) for i in range(2)] + [size[2]]
    new_spacing = (spacing_mm, spacing_mm, sp[2])
    fill = float(volume.array.min())
    out = sitk.Resample(image, new_size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                        new_spacing, image.GetDirection(), fill, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out), out


def from_canonical(array: np.ndarray, grid: sitk.Image, volume: Volume) -> np.ndarray:
    """Resample an array on the canonical ``grid`` back onto ``volume``'s grid; outside → NaN."""
    moving = sitk.GetImageFromArray(np.asarray(array, np.float32))
    moving.CopyInformation(grid)
    target = volume.reference if volume.reference.GetDimension() == 3 else sitk.JoinSeries(volume.reference)
    out = sitk.Resample(moving, target, sitk.Transform(), sitk.sitkLinear, float("nan"), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def _esf(d: np.ndarray, low: float, step: float, centre: float, sigma: float) -> np.ndarray:
    return low + step * 0.5 * (1.0 + erf((d - centre) / (np.sqrt(2.0) * sigma)))


def estimate_psf_sigma(image: np.ndarray, mask: np.ndarray, outside: float = 6.0, inside: float = 3.0) -> float:
    """Estimate the in-plane Gaussian PSF sigma (pixels) from the edge spread across the body outline.

    Pixels near the outline are binned by their signed distance to it; the median profile (robust to
    noise) is fitted with a blurred step. Unclipped intensities are expected (HU for CT).
    Returns NaN when there is no usable edge.
    """
    if mask.sum() < 100 or mask.all():
        return float("nan")
    signed = np.where(mask, ndi.distance_transform_edt(mask) - 0.5, -(ndi.distance_transform_edt(~mask) - 0.5))
    edges = np.arange(-outside, inside + 1e-6, 0.5)
    centres, values = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (signed >= a) & (signed < b)
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
