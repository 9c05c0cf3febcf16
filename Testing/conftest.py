"""Shared fixtures: small real-looking CT volumes with non-trivial geometry."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from EDIQALib.simulate import phantom

OBLIQUE = (0.9800666, -0.1986693, 0.0, 0.1986693, 0.9800666, 0.0, 0.0, 0.0, 1.0)  # 11.5° about z


def water_cylinder(size: int = 128) -> np.ndarray:
    """A water cylinder (0 HU) in air, its radius 0.4 of the slice: the simulator's test object."""
    yy, xx = np.mgrid[:size, :size]
    hu = np.full((size, size), -1000.0, np.float32)
    hu[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2] = 0.0
    return hu


def ct_image(slices: int = 2, size: int = 96, spacing=(0.8, 0.8, 2.5), origin=(-40.0, 12.5, 7.0),
             direction=OBLIQUE, seed: int = 3) -> sitk.Image:
    """A small CT volume in HU (a phantom per slice) with anisotropic spacing and an oblique direction."""
    arr = np.stack([phantom(seed + k, size=size) for k in range(slices)]).astype(np.float32)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


@pytest.fixture
def ct_volume_file(tmp_path):
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(), str(path))
    return path
