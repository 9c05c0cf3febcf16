"""Lesion insertion (mD2IQA): shapes, contrast, placement, rendering — seeded and configurable.

An :class:`Insertion` is one realisation: where each object goes, its shape, size, rotation and signed
contrast. It depends only on the placement mask, so one insertion can be rendered into every image of a
series of the same geometry (doses, reconstructions), which keeps their scores comparable.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import polygon as draw_polygon

SHAPES = ("circle", "triangle", "square", "star")
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class InsertionConfig:
    """Parameters of lesion insertion (defaults: the paper's, contrasts calibrated — see the model card).

    Attributes:
        count: inclusive range of objects per slice.
        radius_px: circumradius range in pixels at the canonical spacing.
        contrasts: contrast magnitudes in window-normalised units; the sign is random.
        blur_sigma_px: Gaussian blur of the object mask (the paper's 1 px); with a PSF estimate the
            object is seen through the image's PSF as well, and the two Gaussians compose.
        margin_px: the four points at (±(r+margin), ±(r+margin)) around a centre must lie in the body.
        min_distance_px: minimum distance between centres.
        intensity_range: the centre must lie where the smoothed normalised image is inside this range
            (soft tissue: the saliency mask), so that the object is not lost to windowing.
        shapes: object classes.
    """

    count: tuple[int, int] = (2, 5)
    radius_px: tuple[float, float] = (7.0, 10.0)
    contrasts: tuple[float, ...] = (0.03, 0.04, 0.05)
    blur_sigma_px: float = 1.0
    margin_px: float = 25.0
    min_distance_px: float = 50.0
    intensity_range: tuple[float, float] = (0.3, 0.9)
    shapes: tuple[str, ...] = SHAPES


@dataclass
class Insertion:
    """One realisation of objects: centres ``(n, 2)`` as (row, col), radii, shape labels, angles, signed contrasts."""

    centres: np.ndarray
    radii: np.ndarray
    labels: np.ndarray
    angles: np.ndarray
    contrasts: np.ndarray
    shapes: tuple[str, ...] = field(default=SHAPES)

    def __len__(self) -> int:
        return int(len(self.radii))

    def subset(self, keep: np.ndarray) -> "Insertion":
        """The objects selected by an index or boolean array."""
        return replace(self, centres=self.centres[keep], radii=self.radii[keep], labels=self.labels[keep],
                       angles=self.angles[keep], contrasts=self.contrasts[keep])

    def shifted(self, drow: float, dcol: float) -> "Insertion":
        """The same objects in a frame whose origin moved by (drow, dcol) (e.g. a crop)."""
        return replace(self, centres=self.centres - np.array([drow, dcol]))


def saliency_mask(image01: np.ndarray, body: np.ndarray, config: InsertionConfig) -> np.ndarray:
    """Body pixels whose smoothed intensity lies in ``config.intensity_range``."""
    lo, hi = config.intensity_range
    smooth = ndi.gaussian_filter(image01, 2.0)
    return body & (smooth > lo) & (smooth < hi)


def placement_mask(body: np.ndarray, salient: np.ndarray, radius: float, margin: float) -> np.ndarray:
    """Centres allowed for an object of ``radius``: salient, the object inside the image, and the four
    diagonal points at ±(radius + margin) in the body. A body cut by the field of view is taken to go on
    beyond the image edge (edge replication), so truncated small-FOV images keep their room."""
    d = int(np.ceil(radius + margin))
    padded = np.pad(body, d, mode="edge")
    h, w = body.shape
    allowed = salient.copy()
    for sr in (-d, d):
        for sc in (-d, d):
            allowed &= padded[d + sr:d + sr + h, d + sc:d + sc + w]
    edge = int(np.ceil(radius)) + 2
    allowed[:edge] = allowed[-edge:] = False
    allowed[:, :edge] = allowed[:, -edge:] = False
    return allowed


def is_assessable(body: np.ndarray, salient: np.ndarray, config: InsertionConfig) -> bool:
    """True when the slice has room for at least one object of the largest size."""
    return bool(placement_mask(body, salient, config.radius_px[1], config.margin_px).any())


def plan_insertion(body: np.ndarray, salient: np.ndarray, config: InsertionConfig,
                   rng: np.random.Generator, max_tries: int = 200) -> Insertion:
    """Draw one realisation: 2–5 objects (config) at allowed, mutually distant centres.

    Fewer objects are returned when the body has no room for more; none when it has no room at all.
    """
    n_target = int(rng.integers(config.count[0], config.count[1] + 1))
    lo_r, hi_r = config.radius_px
    allowed = {}
    centres, radii, labels, angles, contrasts = [], [], [], [], []
    for _ in range(max_tries):
        if len(centres) == n_target:
            break
        r = float(rng.uniform(lo_r, hi_r))
        key = int(np.ceil(r))
        if key not in allowed:
            allowed[key] = np.argwhere(placement_mask(body, salient, key, config.margin_px))
        candidates = allowed[key]
        if len(candidates) == 0:
            continue
        c = candidates[rng.integers(len(candidates))].astype(float)
        if centres and np.min(np.hypot(*(np.array(centres) - c).T)) < config.min_distance_px:
            continue
        centres.append(c)
        radii.append(r)
        labels.append(int(rng.integers(len(config.shapes))))
        angles.append(float(rng.uniform(0, 2 * np.pi)))
        contrasts.append(float(rng.choice(config.contrasts)) * float(rng.choice((-1.0, 1.0))))
    return Insertion(centres=np.array(centres, float).reshape(-1, 2), radii=np.array(radii, float),
                     labels=np.array(labels, int), angles=np.array(angles, float),
                     contrasts=np.array(contrasts, float), shapes=config.shapes)


def _vertices(shape: str, radius: float, angle: float) -> np.ndarray:
    """Polygon vertices (row, col) around the origin."""
    if shape == "triangle":
        a, rr = angle + np.arange(3) * 2 * np.pi / 3, np.full(3, radius)
    elif shape == "square":
        a, rr = angle + np.arange(4) * np.pi / 2, np.full(4, radius)
    elif shape == "star":
        a, rr = angle + np.arange(10) * np.pi / 5, np.where(np.arange(10) % 2 == 0, radius, 0.382 * radius)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.stack([rr * np.sin(a), rr * np.cos(a)], axis=1)


def object_coverage(shape: str, radius: float, angle: float, centre: tuple[float, float],
                    out_shape: tuple[int, int]) -> np.ndarray:
    """Fractional pixel coverage (0..1) of one object, anti-aliased by supersampling."""
    s = _SUPERSAMPLE
    h, w = out_shape
    yy, xx = np.mgrid[:h * s, :w * s]
    cy, cx = (centre[0] + 0.5) * s - 0.5, (centre[1] + 0.5) * s - 0.5
    if shape == "circle":
        fine = (yy - cy) ** 2 + (xx - cx) ** 2 <= (radius * s) ** 2
    else:
        v = _vertices(shape, radius * s, angle) + [cy, cx]
        fine = np.zeros((h * s, w * s), bool)
        rr, cc = draw_polygon(v[:, 0], v[:, 1], fine.shape)
        fine[rr, cc] = True
    return fine.reshape(h, s, w, s).mean(axis=(1, 3))


def render(insertion: Insertion, out_shape: tuple[int, int], blur_sigma_px: float = 1.0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a realisation: the additive signal map, the binary object masks ``(n, H, W)`` and the
    boxes ``(n, 4)`` as (x0, y0, x1, y1) in pixels (exclusive upper edge)."""
    signal = np.zeros(out_shape, np.float32)
    masks = np.zeros((len(insertion),) + tuple(out_shape), bool)
    pad = 3
    for i in range(len(insertion)):
        r = insertion.radii[i]
        half = int(np.ceil(r + pad + 3 * blur_sigma_px))
        cy, cx = insertion.centres[i]
        r0, c0 = int(np.floor(cy)) - half, int(np.floor(cx)) - half
        size = 2 * half + 2
        cov = object_coverage(insertion.shapes[insertion.labels[i]], r, insertion.angles[i],
                              (cy - r0, cx - c0), (size, size))
        blob = ndi.gaussian_filter(cov, blur_sigma_px) if blur_sigma_px > 0 else cov
        # paste the patch, clipped to the image
        rs, cs = max(r0, 0), max(c0, 0)
        re, ce = min(r0 + size, out_shape[0]), min(c0 + size, out_shape[1])
        if rs >= re or cs >= ce:
            continue
        patch = (slice(rs - r0, re - r0), slice(cs - c0, ce - c0))
        signal[rs:re, cs:ce] += insertion.contrasts[i] * blob[patch]
        masks[i, rs:re, cs:ce] = cov[patch] >= 0.5
    return signal, masks, mask_boxes(masks)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Each binary mask's box ``(n, 4)`` as (x0, y0, x1, y1) in pixels (exclusive upper edge); (0, 0, 0, 0)
    for an empty mask (an object clipped away at the image's edge)."""
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    boxes = np.stack([cols.argmax(1), rows.argmax(1), cols.shape[1] - cols[:, ::-1].argmax(1),
                      rows.shape[1] - rows[:, ::-1].argmax(1)], axis=1).astype(np.float32)
    boxes[~rows.any(axis=1)] = 0
    return boxes.reshape(-1, 4)


def object_blur(config: InsertionConfig, psf_sigma_px: float | None) -> float:
    """The blur applied to inserted objects: the paper's sigma (the object's own soft edge), composed with
    the image's PSF when it is known: Gaussian blurs in sequence add their variances."""
    if psf_sigma_px is None or not np.isfinite(psf_sigma_px):
        return config.blur_sigma_px
    return float(np.hypot(config.blur_sigma_px, psf_sigma_px))
