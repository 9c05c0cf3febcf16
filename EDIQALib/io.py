"""Read and write medical volumes with SimpleITK, keeping geometry exactly.

Every reader returns a :class:`Volume`: a float32 array indexed ``[slice, row, column]`` (always 3-D; a
2-D image is one slice), its :class:`Geometry` (where its voxels lie), and the modality (``"ct"`` in
Hounsfield units or ``"mr"``).
"""
from __future__ import annotations

import errno
import gzip
import itertools
import json
import math
import os
import re
import shutil
import signal
import struct
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import SimpleITK as sitk

from . import dicom
from .choices import IMAGE_SUFFIXES, MIN_SIZE
from .dicom import MODALITY_TAG, perpendicular_directions
from .errors import InputError, UnknownModality

MODALITIES = ("ct", "mr")
MODALITY_OPTIONS = "--modality, or modality= in Python"  # how a caller gives the modality (the panel says its own)
CANONICAL_SPACING_MM = 0.7  # the in-plane spacing every slice is assessed at
MAX_ABS_HU = 1e5  # CT values beyond it are no Hounsfield units (extended CT scales reach some 30 000)
MAX_CANONICAL_SIDE = 2896  # pixels a side of a slice at CANONICAL_SPACING_MM: 2.03 m, beyond any body
MAX_CANONICAL_PIXELS = 32 * 512 * 512  # the most that one batch of the student holds (the pixels of 32 slices of
# 512²), and at least a slice of MAX_CANONICAL_SIDE², the largest there is
_DICOM_MODALITY = {"CT": "ct", "MR": "mr"}
# Windows renames no file over one that another program holds open (a CSV in a spreadsheet)
_OPEN_FILES_BLOCK_REPLACE = os.name == "nt"
# the suffixes of the image files read: a volume is named after its file without it
FILE_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm", ".dicom", ".ima")


@dataclass(frozen=True)
class Geometry:
    """Where an image's voxels lie, as SimpleITK gives it: size (x, y[, z]), spacing in mm, origin and
    direction (LPS). Only this of the image as read is kept: its pixels would be a second copy of the
    volume's, which for a long float64 volume is gigabytes."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image | sitk.ImageFileReader) -> Geometry:
        """The geometry of ``image``, or of the image whose header a reader has read (``ReadImageInformation``)."""
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    @property
    def dimension(self) -> int:
        return len(self.size)

    def slice_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """The direction of the slice axis (LPS, a unit vector) and each slice's position along it in mm (a
        2-D image: one slice, in the plane z = 0)."""
        if self.dimension == 2:
            return np.array([0.0, 0.0, 1.0]), np.zeros(1)
        normal = np.reshape(self.direction, (3, 3))[:, 2]
        return normal, float(np.dot(self.origin, normal)) + self.spacing[2] * np.arange(self.size[2])

    def slice_ranks(self) -> list[int]:
        """Each stored slice's rank in physical order, along the world axis (LPS) nearest to the slice
        normal, from its low end: the same for a volume stored in either order along that axis."""
        normal, positions = self.slice_positions()
        axis = int(np.flatnonzero(np.abs(normal) >= np.abs(normal).max() - 1e-6)[0])  # a tie at 45°: the first
        ascending = positions * np.sign(normal[axis])
        return np.argsort(np.argsort(ascending, kind="stable"), kind="stable").tolist()

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        """Give ``image``, of this size, this spacing, origin and direction exactly; returns it."""
        if image.GetSize() != self.size:
            raise ValueError(f"image size {image.GetSize()} does not match the geometry's {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@dataclass
class Volume:
    """An image volume with its geometry.

    Attributes:
        array: float32 ``(slices, rows, columns)``; CT in HU.
        geometry: the image's as read: size, spacing, origin and direction, for writers.
        modality: ``"ct"`` or ``"mr"``.
        name: a short name for reports (file stem).
        tagged: the modality the image's Modality tag (0008,0060; DICOM's, or kept in NRRD or MHA metadata)
            names, ``"ct"``, ``"mr"`` or the tag's text for another, when it names one: what ``modality`` was
            chosen over where they differ.
    """

    array: np.ndarray
    geometry: Geometry
    modality: str
    name: str
    tagged: str | None = None

    def __post_init__(self) -> None:
        """Raises InputError for a modality other than ``"ct"``/``"mr"``, an array off its image's grid, or a
        spacing that is not a positive number."""
        if self.modality not in MODALITIES:
            raise InputError(f"{self.name}: modality {self.modality!r}; use one of {', '.join(MODALITIES)}")
        grid = tuple(reversed(self.geometry.size))
        if self.array.shape != (grid if len(grid) == 3 else (1, *grid)):
            expected = grid if len(grid) == 3 else f"{(1, *grid)} (a 2-D image is one slice)"
            raise InputError(f"{self.name}: array of shape {self.array.shape} is not on its image's grid "
                             f"(slices, rows, columns) {expected}")
        if not all(np.isfinite(s) and s > 0 for s in self.geometry.spacing):
            raise InputError(f"{self.name}: spacing {self.geometry.spacing} is not positive millimetres")

    @property
    def spacing_xy(self) -> tuple[float, float]:
        """In-plane spacing (column, row) in mm."""
        return self.geometry.spacing[0], self.geometry.spacing[1]

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.geometry.spacing

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape as the image has it (x, y[, z])."""
        return self.geometry.size


def _read_dicom_series(folder: Path) -> tuple[sitk.Image, str | None]:
    files = dicom.series_files(folder)
    for file in files:  # the folder's name was checked; its files' are handed to ITK by name too
        check_utf8(Path(file))
    if len(files) == 1:  # one file holds the series: a slice, or a multi-frame (enhanced) volume
        return _read_file(Path(files[0]))
    return dicom.read_series(files, Path(os.path.abspath(folder)).name)  # "." is its folder's


_PATTERN = re.compile(rb"[^%]*%[-+ 0#]*[0-9]*[diouxX][^%]*")  # a file name with one C integer conversion
_MOST_DATA_FILES = 100_000  # of a LIST or a pattern, looked at: more than any scan's slices


def _listed_or_patterned(folder: Path, name: bytes, following: list[bytes], slices: int) -> list[Path]:
    """The data files a header's data-file field ``name`` names (MetaImage's ``ElementDataFile``, NRRD's
    ``data file``), as ITK reads them, ``following`` being the header's lines after that field and ``slices``
    the size of the image's last axis: one file; ``LIST`` (with or without its dimension): the names on
    those lines, ``slices`` of them; a pattern ``FORMAT [MIN [MAX [STEP]]]`` of one integer conversion
    (``%03d``): the names it formats, MIN 1, MAX ``slices`` and STEP 1 where not given, as MetaIO takes them,
    ``slices`` at most. ``LOCAL`` and a field that cannot be made out name none (ITK then judges the header)."""
    words = name.split()
    most = min(slices, _MOST_DATA_FILES)
    if not words or words[0] == b"LOCAL":
        return []
    if words[0].upper() == b"LIST":
        return [folder / os.fsdecode(line.strip()) for line in following if line.strip()][:most]
    if b"%" not in name:
        return [folder / os.fsdecode(name.strip())]
    try:
        first, last, step = ([int(w) for w in words[1:4]] + [1, slices, 1][len(words) - 1:])[:3]
    except ValueError:
        return []
    if not _PATTERN.fullmatch(words[0]) or step == 0:
        return []
    numbers = itertools.islice(range(first, last + (1 if step > 0 else -1), step), most)
    return [folder / os.fsdecode(words[0].decode("latin-1") % k) for k in numbers]


def _last_size(sizes: str) -> int:
    """The size of an image's last axis, as a header's list of sizes gives it; 0 where it gives none."""
    try:
        return max(0, int(sizes.split()[-1]))
    except (IndexError, ValueError):
        return 0


def _meta_data_files(header: Path) -> list[Path]:
    """The data files a MetaImage header (``.mhd``) names (:func:`_listed_or_patterned`), the names bytes as
    the header holds them, as MetaIO takes them; none for an unreadable header."""
    try:
        lines = header.read_bytes().splitlines()
    except OSError:
        return []
    fields = [[part.strip() for part in ln.split(b"=", 1)] for ln in lines]
    at = next((i for i, f in enumerate(fields) if len(f) == 2 and f[0] == b"ElementDataFile"), None)  # the last field
    if at is None:
        return []
    sizes = next((f[1] for f in fields[:at] if len(f) == 2 and f[0] == b"DimSize"), b"")
    return _listed_or_patterned(header.parent, fields[at][1], lines[at + 1:], _last_size(sizes.decode("latin-1")))


_NRRD_HEADER_MOST = 1 << 24  # bytes of a NRRD header read, at most (a detached one's LIST may be long)


def _nrrd_header_lines(path: Path) -> list[bytes]:
    """A NRRD file's header lines (to its blank line, or the end of a detached header); none for an
    unreadable file."""
    head = b""
    try:
        with open(path, "rb") as f:
            while b"\n\n" not in head and len(head) < _NRRD_HEADER_MOST and (block := f.read(1 << 16)):
                head += block
    except OSError:
        return []
    return head.split(b"\n\n", 1)[0].splitlines()


def _nrrd_fields(lines: list[bytes]) -> dict[str, str]:
    """A NRRD header's fields (keys in lower case), as its lines (:func:`_nrrd_header_lines`) give them."""
    parts = (ln.decode("latin-1").partition(":") for ln in lines[1:])
    return {key.strip().lower(): value.strip() for key, sep, value in parts if sep and not key.startswith("#")}


def _nrrd_data_files(path: Path) -> list[Path]:
    """The data files a detached NRRD header names (:func:`_listed_or_patterned`)."""
    lines = _nrrd_header_lines(path)
    fields = _nrrd_fields(lines)
    for i, line in enumerate(lines):
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() in (b"data file", b"datafile"):
            return _listed_or_patterned(path.parent, value.strip(), lines[i + 1:], _last_size(fields.get("sizes", "")))
    return []


def header_data_files(path: Path) -> list[Path]:
    """The separate files that hold the voxels of a header file (MetaImage ``.mhd``, detached NRRD), if it
    names any: inputs too, that outputs must not replace."""
    lower = path.name.lower()
    if lower.endswith(".mhd"):
        return _meta_data_files(path)
    if lower.endswith((".nhdr", ".nrrd")):
        return _nrrd_data_files(path)
    return []


def _check_data_file(header: Path, data: Path) -> None:
    """The data file that the header file ``header`` names must be a file (ITK would wait for a pipe's
    writer forever).

    Raises:
        InputError: it is missing, or it is no file (a pipe, a device or a folder).
    """
    named = os.path.relpath(data, header.parent)  # as the header names it, with its sub-folders
    if not data.exists():
        raise InputError(f"cannot read {header.name}: its data file {named} is missing")
    if not data.is_file():
        raise InputError(f"cannot read {header.name}: its data file {named} is not a file (a pipe or a device)")


_NOT_A_NUMBER = re.compile(r"(?<![a-z])[-+]?(nan|inf)", re.I)


def _check_nrrd_header(path: Path) -> None:
    """A NRRD header's spacing fields must hold numbers (ITK reads a NaN spacing as 1 mm).

    Raises:
        InputError: they do not.
    """
    fields = _nrrd_fields(_nrrd_header_lines(path))  # none for an unreadable file: ITK's reader says what's wrong
    sizes, kinds = fields.get("sizes", "").split(), fields.get("kinds", "").lower().split()
    # the axes an image's voxels are spaced along (a NaN spacing is what NRRD writes for the others)
    spatial = [sizes[k] != "1" and (k >= len(kinds) or kinds[k] in ("domain", "space")) for k in range(len(sizes))]
    for key, values in (("space directions", re.findall(r"\(([^)]*)\)", fields.get("space directions", ""))),
                        ("spacings", [v for v, keep in zip(fields.get("spacings", "").split(), spatial) if keep])):
        if any(_NOT_A_NUMBER.search(v) for v in values):
            raise InputError(f"{path.name}: its {key} ({fields[key]}) are not all numbers")


_NIFTI_FIELDS = {  # header size: offset and format of dim, datatype, bitpix, vox_offset and pixdim (NIfTI-1, -2)
    348: ((40, "8h"), (70, "h"), (72, "h"), (108, "f"), (76, "8f")),
    540: ((16, "8q"), (12, "h"), (14, "h"), (168, "q"), (104, "8d")),
}
_NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 and float64 voxels


@dataclass(frozen=True)
class _NiftiData:
    """Where a NIfTI file's voxel data start (as its header says: it may be damaged), how many bytes they
    take, their dtype if they are floats, and the voxel sizes (``pixdim``) in-plane and between slices (where
    there are several)."""

    start: float
    size: int
    floats: np.dtype | None
    pixdim: tuple[float, ...]


def _nifti_data(head: bytes) -> _NiftiData | None:
    """The voxel data a NIfTI header announces; ``None`` when ``head`` is not a NIfTI-1 or NIfTI-2 header
    (ITK then judges the file itself)."""
    for order in "<>":  # sizeof_hdr, read in the right byte order, is 348 or 540
        if len(head) >= 4 and (fields := _NIFTI_FIELDS.get(struct.unpack(order + "i", head[:4])[0])):
            break
    else:
        return None
    if len(head) < max(offset + struct.calcsize(fmt) for offset, fmt in fields):
        return None
    dim, datatype, bitpix, vox_offset, pixdim = (struct.unpack_from(order + fmt, head, offset) for offset, fmt in fields)
    if not 1 <= dim[0] <= 7:
        return None
    floats = _NIFTI_FLOATS.get(datatype[0])
    if floats and np.dtype(floats).itemsize * 8 != bitpix[0]:  # a header at odds with itself: ITK judges it
        floats = None
    return _NiftiData(float(vox_offset[0]), math.prod(dim[1:dim[0] + 1]) * bitpix[0] // 8,
                      np.dtype(order + floats) if floats else None,
                      pixdim[1:1 + min(dim[0], 2)] + (pixdim[3:4] if dim[0] >= 3 and dim[3] > 1 else ()))


_NIFTI_PAIR_SUFFIXES = (".hdr", ".hdr.gz", ".img", ".img.gz")


def _nifti_pair_base(path: Path) -> str | None:
    """The name of a ``.hdr``/``.img`` pair's file without its suffix (either may be gzipped); ``None`` for
    another file."""
    lower = path.name.lower()
    return next((path.name[:-len(s)] for s in _NIFTI_PAIR_SUFFIXES if lower.endswith(s)), None)


def _nifti_pair_file(path: Path, suffixes: tuple[str, ...]) -> Path | None:
    """The file of ``path``'s pair with the first of ``suffixes`` (in lower or upper case) that exists, as
    ITK looks for it."""
    base = _nifti_pair_base(path)
    candidates = (path.with_name(base + c) for s in suffixes for c in (s, s.upper()))
    return next((c for c in candidates if c.exists()), None)


def _check_nifti_data(path: Path) -> None:
    """A NIfTI file (``.nii``, ``.nii.gz``, or the data file of a ``.hdr``/``.img`` pair, ``path`` being its
    header) must hold all the
    voxel data its header announces, and float voxels must be finite: ITK reads the missing part of a file
    cut short as zeros, a gzip stream cut short without complaint, and NaN as 0.

    A plain file's length is its size. A gzip file whose trailer states the length that header and data
    take (ISIZE, modulo 2^32) is whole: the trailer is the stream's last 4 bytes, which a file cut short
    lacks. Only where it states another length (more than one gzip member, or bytes after the data) is the
    stream decompressed and counted. Float voxels are read once more, a block at a time.

    Raises:
        InputError: the file (or its decompressed stream) ends before the voxel data do, or holds NaN or
            infinite floats.
    """
    data = _nifti_pair_file(path, (".img", ".img.gz")) if _nifti_pair_base(path) else path
    if data is None:
        return  # no data file: ITK's reader says so
    if data != path:
        _check_data_file(path, data)
    try:
        with open(path, "rb") as f:
            head = f.read(540)
        if head[:2] == b"\x1f\x8b":  # ITK reads either, whatever the name
            with gzip.open(path, "rb") as f:
                head = f.read(540)
        layout = _nifti_data(head)
        if layout is None:
            return
        if not 0 <= layout.start < math.inf:
            raise InputError(f"{path.name}: its NIfTI header is damaged (the image data start at byte {layout.start:g})")
        if not all(math.isfinite(d) and d > 0 for d in layout.pixdim):  # ITK reads 0 or NaN as 1 mm, and a
            # negative size (the standard has none) mirrored, where it drops the sform for the qform
            raise InputError(f"{path.name}: its voxel size ({' × '.join(f'{d:g}' for d in layout.pixdim)} mm, the "
                             "header's pixdim) is zero, negative or not a number")
        start = int(layout.start) if data == path else 0  # a pair's data start its own file
        with open(data, "rb") as f:
            zipped = f.read(2) == b"\x1f\x8b"
        length = _gzip_length(data, start + layout.size) if zipped else data.stat().st_size
        if length < start + layout.size:
            raise InputError(f"{data.name}: the file is cut short ({max(0, min(length - start, layout.size))} of "
                             f"{layout.size} bytes of image data)")
        if layout.floats is not None and not _all_finite(data, zipped, start, layout.size, layout.floats):
            raise InputError(f"{data.name}: image contains NaN or infinite values")
    except (OSError, EOFError, zlib.error):
        return  # unreadable, or a corrupt gzip stream: ITK's reader refuses it


def _all_finite(path: Path, zipped: bool, start: int, size: int, dtype: np.dtype) -> bool:
    """Whether the ``size`` bytes of ``dtype`` values from ``start`` of a (gzip) file are all finite."""
    block = dtype.itemsize << 20
    with (gzip.open(path, "rb") if zipped else open(path, "rb")) as f:
        f.seek(start)
        while size > 0 and (chunk := f.read(min(block, size))):
            size -= len(chunk)
            if not np.isfinite(np.frombuffer(chunk, dtype)).all():
                return False
    return True


def _gzip_length(path: Path, expected: int) -> int:
    """The decompressed length of a gzip file: ``expected`` where its trailer states it, else counted."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        if int.from_bytes(f.read(4), "little") == expected % (1 << 32):
            return expected
    length = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read1(1 << 16):  # one read at a time: all of a stream cut short is counted
                length += len(chunk)
    except EOFError:
        pass  # a gzip stream cut short: the bytes counted so far are what it holds
    return length


# formats of pictures, which ITK reads (by their contents, whatever a file's name) as of 1 mm pixels
_PICTURE_READERS = ("PNGImageIO", "JPEGImageIO", "JPEG2000ImageIO", "BMPImageIO", "TIFFImageIO", "LSMImageIO")


def _read_file(path: Path) -> tuple[sitk.Image, str | None]:
    is_dicom = dicom.is_dicom_file(path)
    if not is_dicom and sitk.ImageFileReader.GetImageIOFromFileName(str(path)) in _PICTURE_READERS:
        raise InputError(f"{path.name}: a picture file, with no pixel spacing in mm or patient geometry; give the "
                         "image as NRRD, NIfTI, MHA/MHD or DICOM")
    if path.suffix.lower() in (".nrrd", ".nhdr"):
        _check_nrrd_header(path)
    for data in header_data_files(path):  # MetaIO would print its own complaint on stderr before SimpleITK's error
        _check_data_file(path, data)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_data(path)
    elif _nifti_pair_base(path) is not None and (header := _nifti_pair_file(path, (".hdr", ".hdr.gz"))):
        _check_nifti_data(header)  # either file of a pair names it: its header says what its data hold
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    if is_dicom:
        if dicom.is_dicomdir(path):
            raise InputError(f"{path.name} is a DICOMDIR, the index of a DICOM disc, with no image: point to a "
                             "series folder")
        reader.SetImageIO("GDCMImageIO")
    reader.ReadImageInformation()
    _check_allocatable(Geometry.of(reader), reader.GetNumberOfComponents(), image_stem(path.name))
    image = reader.Execute()
    if is_dicom and image.GetNumberOfComponentsPerPixel() == 1:
        image = dicom.checked_file(path, image)
    modality = None
    if reader.HasMetaDataKey(MODALITY_TAG):
        modality = reader.GetMetaData(MODALITY_TAG).strip()
    return image, modality


def shows_air_in_hu(array: np.ndarray) -> bool:
    """Whether ``array``'s values look like a CT's Hounsfield units: air at about −1000 (1 % of a million
    voxels sampled at or below −900), where MR units are not negative."""
    sample = array.ravel()[:: max(1, array.size // 1_000_000)]
    return float(np.percentile(sample, 1)) <= -900.0


def _resolve_modality(raw: str | None, requested: str | None, array: np.ndarray, name: str) -> str:
    if requested is not None:
        if requested not in MODALITIES:
            raise InputError(f"unknown modality {requested!r}; use one of {', '.join(MODALITIES)}")
        return requested
    if raw:  # a blank tag says nothing
        if raw.upper() not in _DICOM_MODALITY:
            raise InputError(f"{name}: modality {raw!r} is not supported (CT or MR only)")
        return _DICOM_MODALITY[raw.upper()]
    if shows_air_in_hu(array):
        return "ct"
    raise UnknownModality(f"{name}: cannot tell the modality; give it as ct or mr ({MODALITY_OPTIONS})")


_STDERR_LOCK = threading.Lock()  # file descriptor 2 is the process's: one redirection at a time
_SAVED_STDERR: list[int] = []  # the process's own file descriptor 2 while a read sends it to its log


def restore_native_stderr() -> None:
    """Give file descriptor 2 back to the process's stderr where a read still sends it to its log: an
    interrupt that ends a read can leave the redirection's own clean-up (:func:`_native_stderr_to`) to the
    moment its frames are freed, after the line that says "interrupted" was written into the log."""
    while True:
        try:
            saved = _SAVED_STDERR.pop()
        except IndexError:  # none left (another thread may have taken the last)
            return
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def _native_stderr_to(log: IO[bytes]) -> Iterator[None]:
    """Send file descriptor 2 to ``log`` while the block runs: ITK's C++ readers (MetaIO above all) print
    their complaints there themselves, around the exception SimpleITK raises, which Python's own stderr
    redirection does not catch. Without a file descriptor 2 (a process started without stderr), the block
    runs as it is."""
    with _STDERR_LOCK:
        if sys.stderr is not None:
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        _SAVED_STDERR.append(saved)
        try:
            os.dup2(log.fileno(), 2)
            yield
        finally:
            restore_native_stderr()


def _read_error_detail(exc: RuntimeError, printed: str) -> str:
    """What went wrong in a failed read, in a few words, without object addresses: the first line ITK printed
    itself that is no warning's header (MetaIO's "data not read completely"), else the error line of
    SimpleITK's exception, else its first line after the one that names where it was thrown (a source
    file of ITK's build)."""
    own = [ln for ln in printed.strip().splitlines() if ln.strip() and not ln.lstrip().startswith("WARNING")]
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    raised = [ln for ln in lines if not ln.startswith("Exception thrown in SimpleITK")] or lines
    detail = own[0] if own else next((ln for ln in raised if "error" in ln.lower()), raised[0] if raised else "")
    return re.sub(r"\(0x[0-9a-fA-F]+\)", "", detail).strip().rstrip(":").strip()[:120]


def input_not_found(path: Path) -> InputError:
    """The error for an input that does not exist, or is a link that leads to no file or round in a loop
    (which "not found" would hide: the link itself is there)."""
    if not path.is_symlink():
        return InputError(f"input not found: {path}")
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return InputError(f"input {path} is a link that leads round in a loop")
    return InputError(f"input {path} is a link to {os.readlink(path)}, which does not exist")


def read_volume(path: str | os.PathLike, modality: str | None = None) -> Volume:
    """Read NRRD, NIfTI, MHA/MHD, one DICOM file or a DICOM series folder.

    Args:
        path: file or DICOM series folder.
        modality: ``"ct"`` or ``"mr"``; by default taken from the DICOM tag or, for CT, inferred
            from Hounsfield units.

    Raises:
        InputError: missing, not a file or folder (a pipe), unreadable, 4-D of more than one time point,
            multi-component, too small, empty/constant or non-finite; an empty path (which would name the
            current folder).
    """
    if not os.fspath(path).strip():
        raise InputError("an empty path names no input file or folder")
    p = Path(path)
    if not p.exists():
        raise input_not_found(p)
    if not (p.is_file() or p.is_dir()):  # the image library would wait for a pipe's writer forever
        raise InputError(f"cannot read {p}: neither a file nor a folder (a pipe or a device)")
    check_utf8(p)
    if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):  # else ITK says "does not exist"
        raise InputError(f"cannot read {p}: permission denied")
    with tempfile.TemporaryFile() as log:
        try:
            with _native_stderr_to(log):
                image, raw_modality = _read_dicom_series(p) if p.is_dir() else _read_file(p)
        except RuntimeError as exc:
            log.seek(0)
            detail = _read_error_detail(exc, log.read().decode("utf-8", errors="replace"))
            raise InputError(f"cannot read {p.name}: not an image EDIQA reads (NRRD, NIfTI, MHA/MHD, DICOM), or "
                             f"damaged or cut short (the image library says: {detail})") from None
    name = image_stem(Path(os.path.abspath(p)).name)  # "." and ".." are their folders'
    return volume_from_image(image, name, raw_modality, modality)


def image_stem(file_name: str) -> str:
    """A file's name without its image suffix (``a_dose0.5.nii.gz`` → ``a_dose0.5``): the volume's name."""
    lower = file_name.lower()
    suffix = next((s for s in FILE_SUFFIXES if lower.endswith(s)), "")
    return file_name[: len(file_name) - len(suffix)]


def volume_from_image(image: sitk.Image, name: str, raw_modality: str | None = None,
                      modality: str | None = None) -> Volume:
    """Check an image the engine is to assess and wrap it as a :class:`Volume` (see :func:`read_volume`).

    ``raw_modality`` is a DICOM Modality value when known; ``modality`` an explicit ``"ct"``/``"mr"``.
    """
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:  # a volume of one time point (ITK's NIfTI reader drops the axis itself)
        image, dim = image[:, :, :, 0], 3
    if dim not in (2, 3):
        times = f" of {image.GetSize()[3]} time points" if dim == 4 else ""
        raise InputError(f"{name}: {dim}-D image{times}; expected a 2-D slice or a 3-D volume")
    if 0 in image.GetSize():
        raise InputError(f"{name}: image of size {' × '.join(map(str, image.GetSize()))} holds no voxels")
    if "label" in image.GetPixelIDTypeAsString():  # SimpleITK aborts the process on its array view
        raise InputError(f"{name}: label-map pixels (a segmentation); expected a greyscale image")
    if "complex" in image.GetPixelIDTypeAsString():
        raise InputError(f"{name}: complex pixels; expected a greyscale image of real values")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name}: {image.GetNumberOfComponentsPerPixel()}-component pixels; expected a greyscale image")
    if dim == 3 and 1 in image.GetSize()[:2] and min(max(image.GetSize()[:2]), image.GetSize()[2]) >= MIN_SIZE:
        raise InputError(f"{name}: {' × '.join(map(str, image.GetSize()))} voxels, a single slice lying along "
                         "the third axis; slices are scored across the third axis: reorient it to N × M × 1")
    if min(image.GetSize()[:2]) < MIN_SIZE:
        across = dim == 3 and looks_stored_across(image.GetSpacing(), image.GetDepth())
        raise InputError(f"{name}: in-plane size {image.GetSize()[:2]} is under {MIN_SIZE} pixels" + (
            f"; its pixels of {' × '.join(f'{s:g}' for s in image.GetSpacing()[:2])} mm, {image.GetSpacing()[2]:g} mm "
            "apart, look like a volume stored across its acquired slices: reorient it (the acquired slices along "
            "its third axis)" if across else ""))
    geometry = Geometry.of(image)
    _check_canonical_size(geometry, name)
    if not np.all(np.isfinite([*geometry.spacing, *geometry.origin, *geometry.direction])):  # past the slice's
        raise InputError(f"{name}: its spacing, origin or direction holds NaN or infinite values")
    _check_grid(geometry, name)
    with np.errstate(over="ignore"):  # float64 beyond float32's range: refused below, in one line
        array = sitk.GetArrayViewFromImage(image).astype(np.float32)  # one copy, in float32
    if array.ndim == 2:
        array = array[None]
    if not np.all(np.isfinite(array)):
        finite_before = np.all(np.isfinite(sitk.GetArrayViewFromImage(image)))  # float64 beyond float32's range
        raise InputError(f"{name}: image contains {'values beyond the float32 range' if finite_before else 'NaN or infinite values'}")
    low, high = float(array.min()), float(array.max())
    if high == low:
        raise InputError(f"{name}: image is constant (empty); nothing to assess")
    modality = _resolve_modality(raw_modality, modality, array, name)
    if modality == "ct" and max(-low, high) > MAX_ABS_HU:
        raise InputError(f"{name}: values from {low:.4g} to {high:.4g} are not Hounsfield units (CT lies within "
                         f"±{MAX_ABS_HU:g})")
    tagged = _DICOM_MODALITY.get(raw_modality.strip().upper(), raw_modality.strip()) if raw_modality else None
    return Volume(array=array, geometry=geometry, modality=modality, name=name, tagged=tagged or None)


SLICE_SPACING_RANGE_MM = (1e-6, 1e6)  # beyond it, a broken header's (and NRRD cannot keep it)


def _check_grid(geometry: Geometry, name: str) -> None:
    """The voxel grid must be one an image can have: its rows and columns two perpendicular unit directions
    (a sheared grid would be assessed as a square one), its slices a unit direction apart by a spacing of
    1e-6 to 1e6 mm (``heatmap.nrrd`` would read back at another spacing, or not at all).

    Raises:
        InputError: it is not.
    """
    dim = len(geometry.size)
    axes = np.reshape(geometry.direction, (dim, dim)).T  # the directions of the image's axes
    if not perpendicular_directions(axes[0], axes[1]):
        raise InputError(f"{name}: its rows and columns are not two perpendicular directions (direction "
                         f"{', '.join(f'{v:g}' for v in geometry.direction)}); a sheared grid cannot be assessed")
    if dim == 3 and not (abs(np.linalg.norm(axes[2]) - 1) < 0.05
                         and SLICE_SPACING_RANGE_MM[0] <= geometry.spacing[2] <= SLICE_SPACING_RANGE_MM[1]):
        raise InputError(f"{name}: its slice spacing ({geometry.spacing[2]:g} mm, direction "
                         f"{', '.join(f'{v:g}' for v in axes[2])}) is no image's")


def looks_stored_across(spacing: tuple[float, ...], slices: int) -> bool:
    """Whether the slices of a volume of ``spacing`` (x, y, z in mm) and ``slices`` slices (along its third axis,
    as stored) look like reformats across its acquired ones: pixels at least twice as long one way as the other
    (acquired pixels are square, or nearly), the long way longer than the distance between slices (it is the
    acquisition's slice spacing)."""
    if slices == 1:  # one slice: nothing to reorient
        return False
    (sx, sy), sz = spacing[:2], spacing[2]
    return max(sx, sy) >= 2 * min(sx, sy) and max(sx, sy) > sz


def canonical_size(geometry: Geometry, spacing_mm: float = CANONICAL_SPACING_MM) -> tuple[int, int]:
    """The in-plane size (columns, rows) of an image of ``geometry`` resampled to ``spacing_mm``, its extent kept."""
    columns, rows = (max(1, round(n * s / spacing_mm)) for n, s in zip(geometry.size[:2], geometry.spacing[:2]))
    return columns, rows


def _memory_bytes() -> int | None:
    """This machine's memory in bytes, where the system tells it (not on Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_allocatable(geometry: Geometry, components: int, name: str) -> None:
    """Before an image's voxels are read: a header that promises a slice larger than any EDIQA assesses (a few
    gzip bytes that claim 40000² pixels) is refused as :func:`_check_canonical_size` refuses it once read, and
    one whose voxels (``components`` values each) would not fit in this machine's memory as the float32 copy
    EDIQA assesses, not allocated first. Other sizes and spacings are judged once the image is read, with the
    checks of its format (a DICOM file's pixel spacing among them).

    Raises:
        InputError: the slice, resampled, would be over ``MAX_CANONICAL_SIDE`` pixels a side, or the voxels
            would take more than the machine's memory.
    """
    spacing = geometry.spacing[:2]
    if (min(geometry.size[:2]) >= MIN_SIZE and all(math.isfinite(s) and s > 0 for s in spacing)
            and max(canonical_size(geometry)) > MAX_CANONICAL_SIDE):
        _check_canonical_size(geometry, name)
    needed, memory = 4 * components * math.prod(geometry.size), _memory_bytes()
    if memory is not None and needed > memory:
        raise InputError(f"{name}: {' × '.join(map(str, geometry.size))} voxels would take {needed / 1e9:.3g} GB as "
                         f"float32, more than this machine's {memory / 1e9:.3g} GB of memory (a damaged header?)")


def _check_canonical_size(geometry: Geometry, name: str) -> None:
    """An absurd in-plane spacing (a header's 1e6 or 1e-6 mm) or size (a strip metres long) would make the
    resampled slice too large to allocate, too small to assess, or no slice of a body.

    Raises:
        InputError: the spacing is not finite, or the slice at ``CANONICAL_SPACING_MM`` would be under
            ``MIN_SIZE`` or over ``MAX_CANONICAL_SIDE`` pixels a side.
    """
    spacing = " × ".join(f"{s:g}" for s in geometry.spacing[:2])
    if not all(math.isfinite(s) for s in geometry.spacing[:2]):
        raise InputError(f"{name}: in-plane spacing {spacing} mm is not a number")
    size = canonical_size(geometry)
    if min(size) < MIN_SIZE or max(size) > MAX_CANONICAL_SIDE:
        limit = (f"at least {MIN_SIZE} a side" if min(size) < MIN_SIZE else
                 f"at most {MAX_CANONICAL_SIDE} a side, {MAX_CANONICAL_SIDE * CANONICAL_SPACING_MM / 1000:.2f} m")
        columns, rows = geometry.size[:2]
        resampled = " × ".join(str(n) if n < 10**6 else f"{n:.4g}" for n in size)
        raise InputError(f"{name}: {columns} × {rows} pixels of {spacing} mm: resampled to {CANONICAL_SPACING_MM} mm "
                         f"the slice would be {resampled} pixels ({limit})")


def check_same_geometry(volumes: list[Volume], what: str) -> None:
    """Versions of one acquisition (a series scored on shared insertion maps) must be of one modality (CT or
    MR: normalised alike) and lie on one grid: the same size, spacing, origin and direction. ``what`` names
    them in the error.

    Raises:
        InputError: naming the modalities, or the first property of the grid in which they differ.
    """
    first = volumes[0].geometry
    tolerance = 1e-3 * min(first.spacing)  # of the float rounding that copies of one grid carry
    for v in volumes[1:]:
        if v.modality != volumes[0].modality:
            raise InputError(f"{what} must be of one modality, but {volumes[0].name} is "
                             f"{volumes[0].modality.upper()} and {v.name} is {v.modality.upper()}")
        other = v.geometry
        for name, a, b, tol in (("size", first.size, other.size, 0),
                                ("spacing", first.spacing, other.spacing, tolerance),
                                ("origin", first.origin, other.origin, tolerance),
                                ("direction", first.direction, other.direction, 1e-4)):
            if len(a) != len(b) or any(abs(x - y) > tol for x, y in zip(a, b)):
                raise InputError(f"{what} must share one grid, but {volumes[0].name} and {v.name} differ in {name}: "
                                 f"{_shown(a)} vs {_shown(b)}" + (" (put images of other grids in series of their "
                                                                    "own)" if name == "size" else ""))


def _shown(values: tuple) -> str:
    """A size, spacing, origin or direction as a message gives it, to the 4 decimals that tell values apart at
    the tolerances compared: ``512 × 512``, ``-250.1234 × 10.0 × 0.0``."""
    return " × ".join(str(x) if isinstance(x, int) else str(round(float(x), 4)) for x in values)


def image_like(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A float32 SimpleITK image of ``geometry`` exactly; ``array`` is ``(slices, rows, cols)``."""
    arr = np.asarray(array, dtype=np.float32)
    if geometry.dimension == 2:
        arr = arr.reshape(arr.shape[-2:])
    return geometry.apply_to(sitk.GetImageFromArray(arr))


def check_utf8(path: Path) -> None:
    """Raises InputError unless ``path`` (and the folders it is in) is named in UTF-8 text: the image
    library (ITK) aborts the whole process on a name that is not, without a word of why."""
    try:
        str(path.absolute()).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{ascii(str(path))[1:-1]}: a name in this path is not UTF-8 text, which the image "
                         "library cannot take; rename it") from None


def input_files(inputs: list[str | os.PathLike]) -> list[Path]:
    """The files (and folders) that ``inputs`` read, resolved: each input, and a header input's data file."""
    return [*(resolved(i) for i in inputs),
            *(resolved(d) for i in inputs for d in header_data_files(Path(i)))]


def is_input(path: Path, sources: list[Path]) -> bool:
    """Whether ``path`` is one of ``sources`` (:func:`input_files`), by its name or another (a link)."""
    target = resolved(path)
    return target in sources or (target.is_file() and any(same_file(target, s) for s in sources))


def check_outputs(outputs: list[Path], inputs: list[str | os.PathLike]) -> None:
    """Before any work: every output path can be written, and none of them is an input.

    Raises:
        InputError: an output path is not named in UTF-8 (:func:`check_utf8`), its folder lies under a
            file, cannot be created or written to, a name in
            it is longer than its file system allows, or its path too long to be staged, an output is an
            existing folder, a link among its
            folders leads nowhere (or round in a loop), or an output would replace an input file (by its name or
            another: a link) or go into an input folder.
    """
    sources = input_files(inputs)
    for out in outputs:
        _check_linked_folders(Path(out))
        target = resolved(out)
        check_utf8(target)
        if is_input(target, sources):
            raise InputError(f"{out} would overwrite the input {target.name}; choose another --out")
        inside = next((s for s in sources if s in target.parents), None)
        if inside is not None:
            where = "the input folder" if inside.is_dir() else "a folder named as the input file"
            raise InputError(f"{out} would go into {where} {inside}; choose another --out")
        if target.is_dir():
            raise InputError(f"cannot write {out}: a folder of that name is in the way")
        folder = target.parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise InputError(f"cannot write {out}: {folder} is a file, not a folder")
        longest = _name_max(folder)
        too_long = next((n for n in target.relative_to(folder).parts if len(os.fsencode(n)) > longest), None)
        if too_long is not None:
            raise InputError(f"cannot write into {folder}: the name {too_long[:40]}… is longer than the {longest} "
                             "bytes its file system allows")
        path_max = _path_max(folder)
        if path_max is not None and len(os.fsencode(str(target))) + _STAGING_BYTES >= path_max:
            raise InputError(f"cannot write {str(out)[:60]}…: its path of {len(os.fsencode(str(target)))} bytes "
                             f"leaves too few of the {path_max} its file system allows for the temporary folders "
                             "outputs are written in first; choose a shorter --out")
        try:  # the writers stage every output in a temporary folder there
            tempfile.TemporaryDirectory(prefix=".tmp-", dir=folder).cleanup()
        except OSError as exc:
            raise InputError(f"cannot write {out}: {exc.strerror or exc} in {folder}") from None


def _check_linked_folders(out: Path) -> None:
    """Raises InputError where a folder of ``out`` is a link that leads nowhere or round in a loop: the
    writers would make the folder where the link stands, which fails once the work is done. (A link at
    ``out`` itself is replaced by the file written.)"""
    for folder in out.parents:
        if folder.is_symlink():
            try:
                os.stat(folder)
            except OSError as exc:
                why = ("a loop of links" if exc.errno == errno.ELOOP else
                       f"a link to {os.readlink(folder)}, which does not exist")
                raise InputError(f"cannot write {out}: {folder} is {why}") from None


def image_file(path: Path) -> Path:
    """The file that names ``path``'s image: a NIfTI pair's header for its data file (``.img``, ``.img.gz``),
    ``path`` itself for any other (a header among them)."""
    data = path.name.lower().endswith((".img", ".img.gz"))
    return (_nifti_pair_file(path, (".hdr", ".hdr.gz")) if data else None) or path


def input_file(path: Path) -> Path:
    """The file an input image is read from: :func:`image_file`'s, or the one file of a folder of one
    visible file (a DICOM series of one slice, which is read as that file)."""
    if not path.is_dir():
        return image_file(path)
    try:
        visible = list(itertools.islice((f for f in path.iterdir() if not f.name.startswith(".") and f.is_file()), 2))
    except OSError:  # not listable: it is refused when read
        return path
    return visible[0] if len(visible) == 1 else path


def resolved(path: str | os.PathLike) -> Path:
    """``path`` made absolute, its links followed as far as they lead (a loop of links left as it is)."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):  # a loop, in the Python versions that raise on one
        return Path(os.path.abspath(path))


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one existing file or folder, by whatever names (hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing or cannot be looked at
        return False


_STAGING_BYTES = 64  # what staging adds to an output's path: up to three .tmp-* folders, or one and .previous-*


def _path_max(folder: Path) -> int | None:
    """The longest path, in bytes, that ``folder``'s file system takes (``None`` where it does not say)."""
    try:
        return os.pathconf(folder, "PC_PATH_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no answer
        return None


def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder``'s file system takes (255 where it does not say)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no answer
        return 255


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM that arrive inside are delivered at its end, to the handlers in place before it:
    for steps that must not be cut in two. Outside the main thread, where handlers cannot be set, or where a
    handler was set outside Python (which could not be put back), a no-op."""
    signals = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or any(signal.getsignal(s) is None for s in signals):
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


@contextmanager
def staged_in(folder: Path) -> Iterator[Path]:
    """A temporary folder in ``folder`` to write files into; when the block ends without error, each file
    written there is renamed into ``folder`` (atomically, one by one, in name order), else all are
    discarded, with the folders made for them. Ctrl-C and SIGTERM wait for the renames and the clean-up to
    end (:func:`interrupts_held`): an interrupt there left a set of files half old, half new, or a
    temporary folder behind. Files get the permissions the user's umask gives a new file (a ``mkstemp``
    file, or safetensors' own, is the owner's alone: no one else could read a shared run's results).
    A set of one folder (:func:`staged_together`)."""
    with staged_together() as stage_in:
        yield stage_in(folder)


@contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """:func:`staged_in`'s temporary folder in ``folder``, removed as the block ends (its files renamed into
    ``folder`` by then, or not), with the folders made for it where they are left empty."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # the leaf first
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    try:
        yield tmp
    finally:  # an error or an interrupt too: the files and the folders made for them go
        with interrupts_held():
            shutil.rmtree(tmp, ignore_errors=True)
            for p in made:
                try:
                    p.rmdir()  # only while empty
                except OSError:
                    break


def _move_all(tmp: Path, folder: Path) -> Callable[[], None]:
    """Rename every file of ``tmp`` into ``folder``, in name order; returns what puts them back. Should one
    rename fail (a file made immutable, one of another user's in a shared folder), those renamed before it
    are put back as they were, and the error raised: the set is all new or all as before (a new model card
    beside the old weights was a broken model). What they replace (a file, or a link as it is) is kept as a
    hard link in ``tmp`` until ``tmp`` goes; on a file system without hard links, it is lost."""
    files = sorted(tmp.iterdir())
    kept_in = Path(tempfile.mkdtemp(prefix=".previous-", dir=tmp))
    moved: list[tuple[Path, Path | None, bool]] = []  # (file renamed into place, what it replaced, anything there)

    def put_back() -> None:
        for target, kept, replaced in reversed(moved):
            if kept is not None:
                os.replace(kept, target)
            elif not replaced:
                target.unlink(missing_ok=True)

    try:
        for written in files:
            target = folder / written.name
            replaced = os.path.lexists(target)
            kept: Path | None = kept_in / written.name if replaced else None
            if kept is not None:
                try:
                    os.link(target, kept, follow_symlinks=False)
                except OSError:
                    kept = None
            os.replace(written, target)
            moved.append((target, kept, replaced))
    except OSError:
        put_back()
        raise
    return put_back


def _check_replaceable(staged: Path, folder: Path) -> None:
    """Where open files cannot be replaced (Windows), each file of ``folder`` that a file ``staged`` would
    replace can be opened for writing, before the first is renamed: else one line naming it, nothing moved."""
    if not _OPEN_FILES_BLOCK_REPLACE:
        return
    for written in staged.iterdir():
        if (folder / written.name).is_file():
            try:
                with open(folder / written.name, "r+b"):
                    pass
            except PermissionError:
                raise InputError(f"{folder / written.name} cannot be replaced: it is open in another program, or "
                                 "read-only; close it (or make it writable), then run again (nothing was replaced)"
                                 ) from None


@contextmanager
def staged_together() -> Iterator[Callable[[Path], Path]]:
    """Folders staged as one set: ``stage_in(folder)`` gives a :func:`staged_in` folder in ``folder``. When the
    block ends without error, every one is renamed into place, the one staged first last, with Ctrl-C and
    SIGTERM held until the last is (an interrupt between two left a set half old, half new), and where a
    rename fails, all are put back as they were (:func:`_move_all`); else all are discarded. Files another program holds open, where they cannot be replaced, are found in every folder
    before the first is renamed (:func:`_check_replaceable`)."""
    staged: list[tuple[Path, Path]] = []

    def stage_in(folder: Path) -> Path:
        staged.append((stack.enter_context(_staging(folder)), folder))
        return staged[-1][0]

    with ExitStack() as stack:
        yield stage_in
        for tmp, folder in staged:
            _check_replaceable(tmp, folder)
        with interrupts_held():
            put_back: list[Callable[[], None]] = []
            try:
                for tmp, folder in reversed(staged):
                    put_back.append(_move_all(tmp, folder))
            except OSError:  # the folders renamed into place before it are put back too
                for undo in reversed(put_back):
                    undo()
                raise
            stack.close()


@contextmanager
def exclusive(lock: Path, what: str) -> Iterator[None]:
    """Hold the lock file ``lock`` (made if need be) for the block, alone: a second process that asks for
    it meanwhile is refused in one line instead of writing into ``what`` too. The system releases the lock
    with the process, however that ends.

    Raises:
        InputError: another process holds the lock.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as f:
        try:
            if os.name == "posix":
                import fcntl

                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                import msvcrt

                msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):  # a file system without locks (some network ones)
                sys.stderr.write(f"ediqa: warning: cannot lock {lock} ({exc.strerror}); nothing keeps a second run "
                                 f"from writing into {what} at the same time\n")
            else:
                raise InputError(f"{what} is being written by another run; wait for it to end, or choose another "
                                 "--out") from None
        yield


def write_image(image: sitk.Image, path: str | os.PathLike, modality: str | None = None) -> None:
    """Write ``image`` atomically (:func:`staged_in`); formats with a separate data file (``.mhd`` +
    ``.raw``) move both. ``modality`` (``"CT"``), where given, tags ``image`` itself with it as its DICOM
    Modality (:data:`MODALITY_TAG`), which :func:`read_volume` reads back whatever the image's values."""
    dest = Path(path)
    if modality is not None:
        image.SetMetaData(MODALITY_TAG, modality)
    with staged_in(dest.parent) as tmp:
        try:
            sitk.WriteImage(image, str(tmp / dest.name), True, 1)  # fast gzip: volumes run to hundreds of MB
        except RuntimeError as exc:  # ITK's own error, which names the temporary file
            why = ("no space left on the device" if shutil.disk_usage(tmp).free < _FULL_BYTES
                   else _read_error_detail(exc, "").split(str(tmp))[0].rstrip(" :"))
            raise OSError(f"cannot write {shown_path(dest)}: {why}") from None


_FULL_BYTES = 1 << 20  # free space under this after a failed write: the device was full


def shown_path(path: str | os.PathLike) -> Path:
    """``path`` as the user knows it: the staging folders (``.tmp-*``) that outputs are written in first
    left out of it."""
    return Path(*(part for part in Path(path).parts if not part.startswith(".tmp-")))


def write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write a file atomically (:func:`staged_in`)."""
    dest = Path(path)
    with staged_in(dest.parent) as tmp:
        (tmp / dest.name).write_bytes(data)


def write_text(text: str, path: str | os.PathLike) -> None:
    """Write a text file atomically (:func:`write_bytes`)."""
    write_bytes(text.encode("utf-8"), path)


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file's content; a missing, unreadable or malformed file, or one that is no regular file (a
    folder, or a pipe that would be waited on for ever), is an input error naming ``what`` it is."""
    if Path(path).exists() and not Path(path).is_file():
        raise InputError(f"{what} {path} is not a file")
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {path} is not valid JSON ({getattr(exc, 'msg', 'not text')})") from None
