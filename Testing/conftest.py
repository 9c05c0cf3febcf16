"""Shared fixtures: small real-looking CT volumes with non-trivial geometry, and the command line run in
this process."""
from __future__ import annotations

import contextlib
import locale
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
import pytest
import SimpleITK as sitk

from EDIQALib.cli import main
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


@contextlib.contextmanager
def _working_folder(path: Path | str) -> Iterator[None]:
    """The current folder ``path`` for the block (``contextlib.chdir`` is Python 3.11's; EDIQA runs on 3.10)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _output_to(out: TextIO, err: TextIO) -> Iterator[None]:
    """Send this process's stdout and stderr to ``out`` and ``err``: Python's streams and the file
    descriptors beneath them, which C libraries (ITK, torch) write to."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    try:
        with open(1, "w", buffering=1, closefd=False) as stdout, \
                open(2, "w", buffering=1, closefd=False) as stderr, \
                contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def ediqa(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``ediqa ARGS`` in this process and return its exit code, stdout and stderr as a child process's
    would be. A child would spend seconds importing torch on each call; what only a process of its own
    shows (SIGTERM and Ctrl-C, the console entry) is tested with one (``test_runner``)."""
    argv = [str(a) for a in args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, _working_folder(cwd or os.getcwd()):
        with _output_to(out, err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: --help, a usage error
                code = int(exc.code or 0)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(["ediqa", *argv], code, out.read(), err.read())


@pytest.fixture
def ctrl_c_interrupts():
    """Python's own Ctrl-C handler for the test, as in a terminal: a shell's background job (a CI runner's,
    at times) starts with Ctrl-C ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def write_dicom_series(folder, image: sitk.Image, **series: str) -> None:
    """``image`` as a DICOM series in the new ``folder``; ``series``: its UID, number and description."""
    ctype = locale.setlocale(locale.LC_CTYPE)
    try:
        _write_slices(folder, image, **series)
    finally:  # GDCM's writer sets the C locale for the whole process: later tests would decode text as ASCII
        locale.setlocale(locale.LC_CTYPE, ctype)


def _write_slices(folder, image: sitk.Image, uid: str = "1.2.826.0.1.3680043.2.1125.1.42", number: str = "",
                  description: str = "") -> None:
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    arr = np.round(sitk.GetArrayFromImage(image)).astype(np.int16)
    for k in range(image.GetDepth()):
        sl = sitk.GetImageFromArray(arr[k:k + 1])
        sl.SetSpacing(image.GetSpacing())
        sl.SetDirection(direction)
        sl.SetOrigin(image.TransformIndexToPhysicalPoint((0, 0, k)))
        tags = {"0008|0060": "CT", "0020|000e": uid, "0020|0013": str(k + 1), "0020|0011": number,
                "0008|103e": description, "0008|0018": f"{uid}.{k + 1}",
                "0020|0032": "\\".join(f"{x:.6f}" for x in sl.GetOrigin()),
                "0020|0037": "\\".join(f"{x:.7f}" for x in direction[0:9:3] + direction[1:9:3]),
                "0018|0050": str(image.GetSpacing()[2]), "0028|1052": "0", "0028|1053": "1"}
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
