"""CT acquisition simulator (dose, sparse views, FBP filter) and seeded anatomical phantoms.

Dose: HU → attenuation per pixel, one forward projection (scikit-image ``radon``), Poisson counts at
``i0`` photons per ray for the highest dose, lower doses by binomial thinning of those counts (so the
realisations are nested), -log, filtered back-projection (``iradon``). Noise SD follows 1/sqrt(dose).

An acquired slice already carries its scanner's noise, whose grain (the reconstruction kernel's) this
simulator's FBP cannot reproduce. At a lower exposure e (dose, or fewer views at the same photons per
view) that noise's variance grows by the factor 1/e, as quantum noise does: ``estimate_noise_grain``
measures its SD and correlation lengths, and ``simulate_series`` adds nested increments of noise of that
grain, variance SD² (1/e - 1). Phantoms carry no noise: no grain.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import iradon, radon

from .choices import FILTERS, MAX_VIEWS, MIN_VIEWS

MU_WATER_PER_MM = 0.0192
DEFAULT_I0 = 2.0e5
AIR_HU = -1000.0


@dataclass
class Acquisition:
    """One simulated protocol: relative dose, number of views over 180°, FBP filter."""

    dose: float = 1.0
    views: int = 360
    filter: str = "ramp"

    def __post_init__(self) -> None:
        if not isinstance(self.views, int) or isinstance(self.views, bool):
            raise ValueError(f"views {self.views!r} is not a whole number")
        if self.filter not in FILTERS:
            raise ValueError(f"unknown FBP filter {self.filter!r}; choose from {', '.join(FILTERS)}")
        if not 0.0 < self.dose <= 1.0:
            raise ValueError(f"dose {self.dose!r} must lie in (0, 1]")  # not rounded into the range
        if self.views < MIN_VIEWS:
            raise ValueError(f"{self.views} views are too few (at least {MIN_VIEWS})")
        if self.views > MAX_VIEWS:
            raise ValueError(f"{self.views} views are too many (at most {MAX_VIEWS})")


@dataclass(frozen=True)
class NoiseGrain:
    """The noise an acquired slice carries at its own dose: SD in HU and the Gaussian correlation lengths
    (rows, columns) in pixels of the filter that shapes white noise into it."""

    sd_hu: float
    lengths_px: tuple[float, float]


NO_GRAIN = NoiseGrain(0.0, (0.0, 0.0))
_ANATOMY_SCALE_PX = 3.0  # the residual of this smoothing holds the noise and little anatomy
_GRAIN_LENGTHS_PX = np.arange(0.0, 4.01, 0.25)
_GRAIN_MIN_PIXELS = 400
_WINDOW_PX = 9
_FLAT_FACTOR = 2.0  # windows of noise alone stay within twice the quietest tenth's SD; anatomy does not


@functools.lru_cache(maxsize=1)
def _highpass_grain_table(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """For every candidate (rows, columns) length pair: the variance of unit grain noise after the
    anatomy high-pass, and its correlation at lags 1 and 2 along rows and along columns (exact, by FFT)."""
    f = np.fft.fftfreq(size)
    def gauss(s: float) -> np.ndarray:
        return np.exp(-2.0 * (np.pi * s * f) ** 2)
    highpass = 1.0 - np.outer(gauss(_ANATOMY_SCALE_PX), gauss(_ANATOMY_SCALE_PX))
    n = len(_GRAIN_LENGTHS_PX)
    variance, lags = np.zeros((n, n)), np.zeros((n, n, 4))
    for i, sr in enumerate(_GRAIN_LENGTHS_PX):
        for j, sc in enumerate(_GRAIN_LENGTHS_PX):
            shaped = np.outer(gauss(sr), gauss(sc))
            unit = (shaped ** 2).mean()  # variance of the shaped noise before the high-pass: normalise to 1
            cov = np.fft.ifft2((highpass * shaped) ** 2).real / unit
            variance[i, j] = cov[0, 0]
            lags[i, j] = (cov[1, 0], cov[2, 0], cov[0, 1], cov[0, 2]) / cov[0, 0]
    return variance, lags


def _lag_correlation(residual: np.ndarray, flat: np.ndarray, axis: int, lag: int) -> float:
    """Correlation of the residual with itself shifted by ``lag`` along ``axis``, over flat pixel pairs."""
    n = residual.shape[axis]
    pair = flat.take(range(n - lag), axis) & flat.take(range(lag, n), axis)
    a, b = residual.take(range(n - lag), axis)[pair], residual.take(range(lag, n), axis)[pair]
    norm = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / norm) if norm > 0 else 0.0  # no residual at all (a constant slice): no grain


def estimate_noise_grain(hu: np.ndarray) -> NoiseGrain:
    """Estimate an acquired CT slice's own noise (SD and correlation lengths) from its flat tissue.

    The residual of a 3 px Gaussian smoothing is taken inside soft tissue, away from its outline, in
    windows whose residual SD stays within twice that of the quietest tenth (noise alone; anatomy adds
    more). It is compared with the same high-pass of Gaussian-shaped noise, exactly, by FFT: its
    correlations at lags 1 and 2 along each axis give the lengths, its variance the SD. ``NO_GRAIN``
    when too little flat tissue is left.
    """
    hu = np.asarray(hu, np.float64)
    tissue = ndi.binary_erosion(hu > -500.0, iterations=int(2 * _ANATOMY_SCALE_PX))
    if tissue.sum() < _GRAIN_MIN_PIXELS:
        return NO_GRAIN
    residual = hu - ndi.gaussian_filter(hu, _ANATOMY_SCALE_PX)
    local_sd = np.sqrt(np.maximum(ndi.uniform_filter(residual ** 2, _WINDOW_PX)
                                  - ndi.uniform_filter(residual, _WINDOW_PX) ** 2, 0.0))
    flat = tissue & (local_sd <= _FLAT_FACTOR * np.percentile(local_sd[tissue], 10))
    if flat.sum() < _GRAIN_MIN_PIXELS:
        return NO_GRAIN
    residual -= residual[flat].mean()
    stats = [_lag_correlation(residual, flat, axis, lag) for axis in (0, 1) for lag in (1, 2)]
    variance, lags = _highpass_grain_table()
    i, j = np.unravel_index(np.argmin(((lags - np.array(stats)) ** 2).sum(axis=2)), variance.shape)
    sd = float(np.sqrt(residual[flat].var() / variance[i, j]))
    return NoiseGrain(sd, (float(_GRAIN_LENGTHS_PX[i]), float(_GRAIN_LENGTHS_PX[j])))


def _pad_to_circle(hu: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Embed the image in air so that it lies inside the scan circle that ``radon`` assumes."""
    h, w = hu.shape
    n = int(np.ceil(np.hypot(h, w))) + 2
    canvas = np.full((n, n), AIR_HU, np.float64)
    top, left = (n - h) // 2, (n - w) // 2
    canvas[top:top + h, left:left + w] = hu
    return canvas, (slice(top, top + h), slice(left, left + w))


def slice_seed(seed: int, k: int) -> int | tuple[int, int]:
    """The noise stream of slice ``k`` of a volume simulated with ``seed``: independent of every other
    slice's and of every other seed's (``seed + k`` gave slice k + 1 of one seed slice k's noise of the
    next). The first slice keeps the seed's own stream, as a single slice always had it."""
    return seed if k == 0 else (seed, k)


def simulate_series(hu: np.ndarray, spacing_mm: float, acquisitions: list[Acquisition],
                    i0: float = DEFAULT_I0, seed: int | tuple[int, ...] = 0,
                    grain: NoiseGrain = NO_GRAIN) -> list[np.ndarray]:
    """Simulate CT acquisitions of one HU slice; returns one HU image per acquisition (same shape).

    Doses sharing a view count share one set of counts, thinned from the highest dose (nested). ``grain``
    is the slice's own noise (``estimate_noise_grain`` of an acquired slice), taken as that of dose 1 at
    the finest view count asked for. Every view carries the same photons per ray at one dose, so an
    acquisition's exposure relative to that is e = dose × views / finest views, and its own noise grows
    by nested increments to variance SD² / e, as quantum noise does: the increments are projected and
    reconstructed with the slice, so that they pass through what its own noise passes through. ``seed``: an integer, or integers
    (the seed and a slice's index: :func:`slice_seed`) that name a stream of their own.

    Raises:
        ValueError: ``hu`` is not one finite 2-D slice, or ``spacing_mm`` or ``i0`` is not a positive number.
    """
    if np.ndim(hu) != 2 or not np.isfinite(hu).all():
        raise ValueError(f"hu must be one 2-D slice of finite values; got {np.ndim(hu)}-D"
                         + ("" if np.ndim(hu) != 2 else " with NaN or infinite values"))
    for name, value in (("spacing_mm", spacing_mm), ("i0", i0)):
        if not 0.0 < value < np.inf:
            raise ValueError(f"{name} {value!r} is not a positive number")
    rng = np.random.default_rng(seed)
    canvas, crop = _pad_to_circle(np.maximum(hu.astype(np.float64), AIR_HU))
    mu_water = MU_WATER_PER_MM * spacing_mm  # attenuation per pixel
    mu = np.maximum(mu_water * (1.0 + canvas / 1000.0), 0.0)
    thetas = {v: np.linspace(0.0, 180.0, v, endpoint=False) for v in {a.views for a in acquisitions}}
    lines: list[np.ndarray | None] = [None] * len(acquisitions)
    for views in sorted(thetas, reverse=True):
        counts = rng.poisson(i0 * np.exp(-radon(mu, theta=thetas[views], circle=True)))
        level = 1.0
        for idx in sorted((i for i, a in enumerate(acquisitions) if a.views == views),
                          key=lambda i: -acquisitions[i].dose):
            counts = rng.binomial(counts, acquisitions[idx].dose / level)
            level = acquisitions[idx].dose
            lines[idx] = -np.log(np.maximum(counts, 0.5) / (i0 * level))
    for idx, noise in _grain_increments(hu.shape, acquisitions, grain, rng):
        padded = np.zeros(canvas.shape)
        padded[crop] = noise * (mu_water / 1000.0)
        lines[idx] = lines[idx] + radon(padded, theta=thetas[acquisitions[idx].views], circle=True)
    return [((iradon(line, theta=thetas[a.views], filter_name=a.filter, circle=True, output_size=canvas.shape[0])
              / mu_water - 1.0) * 1000.0)[crop].astype(np.float32)
            for line, a in zip(lines, acquisitions)]


def _grain_increments(shape: tuple[int, int], acquisitions: list[Acquisition], grain: NoiseGrain,
                      rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """(acquisition index, its own noise added in HU) for each acquisition of exposure e < 1: nested
    increments of the grain, variance SD² (1/e - 1) in all, as an image-domain field that the caller
    projects and reconstructs with the acquisition, as the slice's own noise is."""
    if grain.sd_hu <= 0:
        return []
    finest = max(a.views for a in acquisitions)
    exposure = [a.dose * a.views / finest for a in acquisitions]
    added, variance, out = np.zeros(shape, np.float32), 0.0, []
    for level in sorted({e for e in exposure if e < 1.0}, reverse=True):
        target = grain.sd_hu ** 2 * (1.0 / level - 1.0)
        added = added + correlated_noise(shape, np.sqrt(target - variance), grain.lengths_px, rng)
        variance = target
        out += [(i, added) for i, e in enumerate(exposure) if e == level]
    return out


def correlated_noise(shape: tuple[int, int], sd: float, length_px: float | tuple[float, float],
                     rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of standard deviation ``sd`` with Gaussian correlation length ``length_px``: one
    length, or (rows, columns) for streaky, anisotropic noise."""
    white = rng.standard_normal(shape)
    field = ndi.gaussian_filter(white, length_px) if np.any(np.asarray(length_px) > 0) else white
    return (field / field.std() * sd).astype(np.float32)


ACQUIRED_NOISE_SD_HU = (5.0, 40.0)
ACQUIRED_NOISE_LENGTHS_PX = (0.5, 2.0)


def with_acquired_noise(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``hu`` plus a noise such as an acquired slice carries at its own dose, for a training slice that
    came without one: SD uniform in ``ACQUIRED_NOISE_SD_HU``, Gaussian correlation length drawn per axis
    in ``ACQUIRED_NOISE_LENGTHS_PX`` (streaky where the two differ)."""
    sd = rng.uniform(*ACQUIRED_NOISE_SD_HU)
    lengths = (rng.uniform(*ACQUIRED_NOISE_LENGTHS_PX), rng.uniform(*ACQUIRED_NOISE_LENGTHS_PX))
    return (hu + correlated_noise(hu.shape, sd, lengths, rng)).astype(np.float32)


def _ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    return u * u + v * v <= 1.0


PHANTOM_KINDS = ("body", "head", "back")


def phantom(seed: int, size: int = 320, kind: str | None = None) -> np.ndarray:
    """A seeded synthetic anatomical slice in HU at the canonical spacing (about 0.7 mm pixels).

    ``kind`` is ``"body"`` (abdomen/chest: outline, fat, organs, spine, ribs, vessels, optional lungs),
    ``"head"`` (skull, brain, ventricles) — by default drawn from the seed — or ``"back"``: a small field
    of view (a square of 110–200 px cut from a ``size``² canvas) filled by the back, as in a spine
    study: paraspinal muscle bundles split by fat planes, thick subcutaneous fat, a vertebra.
    """
    rng = np.random.default_rng(seed)
    kind = kind or ("head" if rng.random() < 0.3 else "body")
    draw = {"head": _head, "body": _body, "back": _back}.get(kind)
    if draw is None:
        raise ValueError(f"unknown phantom kind {kind!r}; choose from {', '.join(PHANTOM_KINDS)}")
    img, tissue, texture_sd, texture_len = draw(rng, size)
    img = ndi.gaussian_filter(img, 0.6)
    img[tissue] += correlated_noise(img.shape, texture_sd, texture_len, rng)[tissue]
    if kind == "back":
        return _field_of_view(img, rng)
    return img.astype(np.float32)


Drawn = tuple[np.ndarray, np.ndarray, float, float | tuple[float, float]]


def _head(rng: np.random.Generator, size: int) -> Drawn:
    shape, c = (size, size), size / 2.0
    img = np.full(shape, AIR_HU, np.float32)
    ry, rx = size * rng.uniform(0.36, 0.44), size * rng.uniform(0.30, 0.37)
    outer = _ellipse(shape, c, c, ry, rx, rng.uniform(-0.1, 0.1))
    img[outer] = 30.0
    skull = _ellipse(shape, c, c, ry - 4, rx - 4, 0.0)
    img[skull] = rng.uniform(800, 1200)
    brain = _ellipse(shape, c, c, ry - 4 - rng.uniform(7, 11), rx - 4 - rng.uniform(7, 11), 0.0)
    img[brain] = rng.uniform(30, 40)
    for side in (-1, 1):
        img[_ellipse(shape, c + rng.uniform(-8, 8), c + side * rng.uniform(8, 14), rng.uniform(15, 30),
                     rng.uniform(4, 8), side * rng.uniform(0.1, 0.4)) & brain] = 5.0
    return img, brain, rng.uniform(2, 6), rng.uniform(2, 6)


def _body(rng: np.random.Generator, size: int) -> Drawn:
    shape, c = (size, size), size / 2.0
    img = np.full(shape, AIR_HU, np.float32)
    ry, rx = size * rng.uniform(0.28, 0.36), size * rng.uniform(0.38, 0.46)
    outer = _ellipse(shape, c, c, ry, rx, rng.uniform(-0.05, 0.05))
    img[outer] = -100.0  # subcutaneous fat
    fat = rng.uniform(8, 18)
    inner = _ellipse(shape, c, c, ry - fat, rx - fat, 0.0)
    img[inner] = rng.uniform(35, 50)  # muscle / soft tissue
    if rng.random() < 0.4:  # chest: two lungs
        for side in (-1, 1):
            img[_ellipse(shape, c - ry * 0.1, c + side * rx * 0.42, ry * 0.6, rx * 0.32, 0.0) & inner] = -850.0
    else:  # abdomen: organs
        organs = [(c - ry * 0.2, c - rx * 0.35, ry * 0.45, rx * 0.35, rng.uniform(55, 70)),  # liver
                  (c - ry * 0.25, c + rx * 0.4, ry * 0.25, rx * 0.18, rng.uniform(45, 55)),  # spleen
                  (c + ry * 0.35, c - rx * 0.28, ry * 0.18, rx * 0.1, rng.uniform(25, 35)),  # kidneys
                  (c + ry * 0.35, c + rx * 0.28, ry * 0.18, rx * 0.1, rng.uniform(25, 35))]
        for cy, cx, oy, ox, hu in organs:
            img[_ellipse(shape, cy + rng.uniform(-6, 6), cx + rng.uniform(-6, 6), oy * rng.uniform(0.8, 1.2),
                         ox * rng.uniform(0.8, 1.2), rng.uniform(-0.5, 0.5)) & inner] = hu
        for _ in range(rng.integers(2, 6)):  # bowel gas / fat pockets
            img[_ellipse(shape, c + rng.uniform(-ry, ry) * 0.4, c + rng.uniform(-rx, rx) * 0.3,
                         rng.uniform(4, 10), rng.uniform(4, 10), 0.0) & inner] = rng.choice([-600.0, -90.0])
    spine_y = c + ry * 0.62
    img[_ellipse(shape, spine_y, c, ry * 0.16, rx * 0.11, 0.0)] = rng.uniform(600, 900)
    img[_ellipse(shape, spine_y, c, ry * 0.07, rx * 0.05, 0.0)] = 40.0
    for k in range(rng.integers(4, 9)):  # ribs
        a = rng.uniform(0, 2 * np.pi)
        img[_ellipse(shape, c + np.sin(a) * (ry - fat - 3), c + np.cos(a) * (rx - fat - 3), 4, 7, a)] = rng.uniform(500, 800)
    for _ in range(rng.integers(3, 8)):  # vessels
        img[_ellipse(shape, c + rng.uniform(-0.5, 0.5) * ry, c + rng.uniform(-0.5, 0.5) * rx,
                     *(rng.uniform(3, 9),) * 2, 0.0) & inner] = rng.uniform(120, 200)
    return img, inner, rng.uniform(3, 10), rng.uniform(1.5, 5)


def _back(rng: np.random.Generator, size: int) -> Drawn:
    shape, c = (size, size), size / 2.0
    yy, xx = np.mgrid[:size, :size]
    img = np.full(shape, rng.uniform(35, 60), np.float32)  # muscle fills the field
    n = int(rng.integers(12, 30))  # muscle bundles: cells of their own HU, fat planes between them
    cells = np.c_[rng.uniform(0, size, n), rng.uniform(0, size, n)]
    stretch = rng.uniform(0.6, 1.6)
    dist = np.stack([np.hypot(yy - cy, (xx - cx) * stretch) for cy, cx in cells])
    img += rng.normal(0, 10, n)[np.argmin(dist, axis=0)].astype(np.float32)
    first, second = np.partition(dist, 1, axis=0)[:2]
    img[second - first < rng.uniform(1.0, 3.0)] = rng.uniform(-120, -60)
    fat_top = size - rng.uniform(25, 70)  # subcutaneous fat on the skin side, below two muscle humps
    sy, sx = fat_top - rng.uniform(70, 130), c + rng.uniform(-30, 30)  # vertebra: body, canal, arch
    humps = rng.uniform(5, 25) * np.abs(np.sin(np.pi * (xx - sx) / rng.uniform(120, 220)))
    img[yy > fat_top + humps] = rng.uniform(-110, -80)
    ry, rx = rng.uniform(22, 35), rng.uniform(25, 40)
    img[_ellipse(shape, sy, sx, ry, rx, rng.uniform(-0.2, 0.2))] = rng.uniform(600, 900)
    img[_ellipse(shape, sy, sx, ry - 3, rx - 3, 0.0)] = rng.uniform(150, 300)
    canal_y = sy + ry + rng.uniform(8, 14)
    img[_ellipse(shape, canal_y, sx, rng.uniform(8, 12), rng.uniform(9, 13), 0.0)] = rng.uniform(10, 40)
    for side in (-1, 1):
        img[_ellipse(shape, canal_y + 4, sx + side * rng.uniform(14, 20), 6, 4, side * 0.6)] = rng.uniform(500, 800)
    img[_ellipse(shape, canal_y + rng.uniform(22, 30), sx, rng.uniform(10, 16), 4, 0.0)] = rng.uniform(500, 800)
    if rng.random() < 0.6:  # lungs beside the vertebra
        for side in (-1, 1):
            img[_ellipse(shape, sy - rng.uniform(10, 40), sx + side * rng.uniform(70, 110), rng.uniform(40, 80),
                         rng.uniform(30, 60), side * rng.uniform(0, 0.6))] = -850.0
    if rng.random() < 0.5:  # aorta
        img[_ellipse(shape, sy - ry - rng.uniform(10, 20), sx + rng.uniform(-25, 25),
                     *(rng.uniform(8, 14),) * 2, 0.0)] = rng.uniform(150, 250)
    fibres = (rng.uniform(0.5, 1.5), rng.uniform(1.5, 5.0))  # streaky muscle texture
    return img, img > -500, rng.uniform(3, 10), fibres if rng.random() < 0.5 else fibres[::-1]


def _field_of_view(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square cut of 110–200 px, mostly at the skin side, as a small reconstruction field would be."""
    size = img.shape[0]
    fov = int(rng.integers(110, 201))
    top = size - fov if rng.random() < 0.7 else int(rng.integers(0, size - fov + 1))
    left = int(rng.integers(0, size - fov + 1))
    return img[top:top + fov, left:left + fov].astype(np.float32)
