"""Evaluation series of one HU slice, each ordered from best to worst image quality.

- dose: simulated acquisitions at falling dose (nested counts);
- views: sparse-view acquisitions at falling view counts;
- texture: equal noise SD, growing noise correlation length;
- blur: growing blur before the (equal, white) noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .choices import KINDS
from .io import CANONICAL_SPACING_MM
from .simulate import NO_GRAIN, Acquisition, NoiseGrain, correlated_noise, simulate_series

DOSES = (1.0, 0.5, 0.25, 0.1, 0.05)
VIEWS = (720, 360, 180, 90, 45)
NOISE_LENGTHS_PX = (0.0, 1.0, 2.0, 3.0)
BLURS_PX = (0.0, 1.0, 2.0, 3.0)
EQUAL_NOISE_SD_HU = 40.0
LEVELS = {"dose": DOSES, "views": VIEWS, "texture": NOISE_LENGTHS_PX, "blur": BLURS_PX}


def series_name(base: str, kind: str) -> str:
    """The name of ``base``'s series of ``kind`` (``make-dataset``'s folders): ``<base>-<kind>``."""
    return f"{base}-{kind}"


def base_of(series: str) -> str:
    """The base slice a series was made from: the inverse of :func:`series_name` (a name without a kind
    suffix is its own base)."""
    base, _, kind = series.rpartition("-")
    return base if base and kind in KINDS else series


@dataclass
class Series:
    """Images of one slice in decreasing quality; ``levels`` are the varied parameter's values."""

    name: str
    kind: str
    levels: tuple[float, ...]
    images_hu: list[np.ndarray]


def make_series(kind: str, name: str, hu: np.ndarray, spacing_mm: float = CANONICAL_SPACING_MM, seed: int = 0,
                grain: NoiseGrain = NO_GRAIN) -> Series:
    """Build one series of ``kind`` (see module doc) from a canonical-spacing HU slice; ``grain`` is an
    acquired slice's own noise, which the dose and views series grow with falling exposure (see
    ``simulate_series``)."""
    if kind not in LEVELS:
        raise ValueError(f"unknown series kind {kind!r}; choose from {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    levels = LEVELS[kind]
    if kind == "dose":
        images = simulate_series(hu, spacing_mm, [Acquisition(dose=d) for d in levels], seed=seed,
                                 grain=grain)
    elif kind == "views":
        images = simulate_series(hu, spacing_mm, [Acquisition(views=v) for v in levels], seed=seed,
                                 grain=grain)
    elif kind == "texture":
        white = rng.standard_normal(hu.shape)
        images = [hu + _scaled(ndi.gaussian_filter(white, ln) if ln else white) for ln in levels]
    else:  # blur
        noise = correlated_noise(hu.shape, EQUAL_NOISE_SD_HU, 0.0, rng)
        images = [(ndi.gaussian_filter(hu, b) if b else hu) + noise for b in levels]
    return Series(name=name, kind=kind, levels=tuple(float(x) for x in levels),
                  images_hu=[np.asarray(im, np.float32) for im in images])


def _scaled(field: np.ndarray) -> np.ndarray:
    return (field / field.std() * EQUAL_NOISE_SD_HU).astype(np.float32)
