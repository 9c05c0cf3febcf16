"""DICOM, read as the scanner wrote it or refused: series folders and single (or multi-frame) files.

SimpleITK's GDCM reader stacks what it can read at one spacing, and falls back to 1 mm pixels, axial
orientations or its first slice's pixel type where a file is at odds with itself or with the others; the
checks here refuse such input in one line (:class:`~EDIQALib.errors.InputError`) instead of assessing an
image at the wrong size or place. :mod:`EDIQALib.io` reads the files with them.
"""
from __future__ import annotations

import errno
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .choices import IMAGE_SUFFIXES
from .errors import InputError

MODALITY_TAG = "0008|0060"  # DICOM's Modality, read from DICOM files and from NRRD/MHA metadata alike
_SERIES_NUMBER, _SERIES_DESCRIPTION = "0020|0011", "0008|103e"
_SERIES_NAMED = 5  # the most series that the message about a folder of several lists
# Photometric Interpretation, Pixel Padding Value and Range Limit, Rescale Slope and Intercept
_PHOTOMETRIC, _PADDING, _PADDING_LIMIT, _SLOPE, _INTERCEPT = "0028|0004", "0028|0120", "0028|0121", "0028|1053", "0028|1052"


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM file: by its suffix, or by the DICOM Part 10 preamble."""
    return path.suffix.lower() in (".dcm", ".dicom", ".ima") or _has_dicom_preamble(path)


def _has_dicom_preamble(path: Path) -> bool:
    """Whether the file carries the DICOM Part 10 preamble (``DICM`` after 128 bytes); a pipe or a device,
    which would wait for a writer, carries none."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


@dataclass(frozen=True)
class SeriesListing:
    """One DICOM series of a folder: its Series Instance UID, Series Number and Description and Modality (as
    its first file gives them; empty where absent), and its files in GDCM's order (by position)."""

    uid: str
    number: str
    description: str
    modality: str
    files: tuple[str, ...]

    def label(self) -> str:
        """How a message names it: ``#3 'ABD 5mm' (CT, 120 files)``."""
        named = " ".join(filter(None, (f"#{self.number}" if self.number else "", repr(self.description)
                                       if self.description else ""))) or self.uid
        return f"{named} ({', '.join(filter(None, (self.modality, f'{len(self.files)} files')))})"


def series_in(folder: Path) -> list[SeriesListing]:
    """Every DICOM series that GDCM finds in ``folder`` (not in its sub-folders), by Series Instance UID,
    each whole.

    Raises:
        InputError: the folder holds a pipe or a device, or an image slice of a series that GDCM left out
            (damaged or cut short): the series would miss it.
    """
    name = Path(os.path.abspath(folder)).name  # "." is its folder's
    for entry in sorted(folder.iterdir()):
        try:
            mode = entry.stat().st_mode
        except OSError as exc:  # a link to no file, which GDCM passes over, or round in a loop, on which it gives
            if exc.errno == errno.ELOOP:  # up: "no DICOM series found" in the whole folder
                raise InputError(f"{name}: {entry.name} is a link that leads round in a loop; remove it from the "
                                 "series folder") from None
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # GDCM's scan then leaves a slice of the series out,
            raise InputError(f"{name}: {entry.name} is not a file (a pipe or a device); move "  # or waits for a pipe
                             "it out of the series folder")
    reader = sitk.ImageSeriesReader()
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK warns on stderr of a folder with no series
    try:
        ids = reader.GetGDCMSeriesIDs(str(folder))
        listed = []
        for uid in ids:
            files = tuple(reader.GetGDCMSeriesFileNames(str(folder), uid))
            listed.append(SeriesListing(uid, *_header_tags(files[0], (_SERIES_NUMBER, _SERIES_DESCRIPTION,
                                                                       MODALITY_TAG)), files))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    left_out = _slices_left_out(folder, listed) if listed else []  # none: the caller says no series is there
    if left_out:
        whose = "the series" if len(listed) == 1 else "one of its series"
        raise InputError(f"{name}: {left_out[0]} is a slice of {whose} that cannot be read (damaged or cut "
                         "short?); the volume would miss it")
    return listed


def _header_tags(path: str, keys: tuple[str, ...]) -> list[str]:
    """The values of ``keys`` in the header of the DICOM file ``path``, stripped; empty where absent, or where
    the header cannot be read or its name is no UTF-8 text, on which ITK aborts the process (the file is then
    named where it is read as a slice)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return [""] * len(keys)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return [""] * len(keys)
    return [reader.GetMetaData(k).strip() if reader.HasMetaDataKey(k) else "" for k in keys]


def no_series_error(folder: Path) -> InputError:
    """The error for a folder in which GDCM finds no DICOM series, saying where one may be instead: in its
    sub-folders, or not at all where it holds image files of other formats."""
    inside = _folders_with_dicom(folder)
    where = (f"; its sub-folder {inside[0]} holds DICOM files" if len(inside) == 1 else
             f"; {len(inside)} of its sub-folders, such as {inside[0]}, hold DICOM files" if inside else "")
    images = sorted(f.name for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES))
    if images and not inside:
        where = (f"; it holds {len(images)} image file{'s' * (len(images) > 1)} ({images[0]}"
                 f"{', …' * (len(images) > 1)}): give an image file itself (compare takes several)")
    return InputError(f"no DICOM series found in folder {folder}{where}" + (": point to a series folder" if inside else ""))


def series_files(folder: Path) -> list[str]:
    """The files of the one DICOM series in ``folder``, in GDCM's order (by position).

    Raises:
        InputError: the folder holds no series or several, or is refused by :func:`series_in`.
    """
    listed = series_in(folder)
    if not listed:
        raise no_series_error(folder)
    if len(listed) > 1:
        labels = [s.label() for s in listed]
        labels = [f"{t} [UID {s.uid}]" if labels.count(t) > 1 else t for t, s in zip(labels, listed)]  # alike: by UID
        shown = "; ".join(labels[:_SERIES_NAMED]) + (
            f"; and {len(listed) - _SERIES_NAMED} more" if len(listed) > _SERIES_NAMED else "")
        raise InputError(f"folder {folder} holds {len(listed)} DICOM series: {shown}. Point to one series folder "
                         f"(`ediqa split-series {folder} --out DIR` copies each series into a folder of its own)")
    return list(listed[0].files)


def read_series(files: list[str], name: str) -> tuple[sitk.Image, str | None]:
    """The image of a series of two or more single-frame DICOM files (:func:`series_files`), called ``name``
    in messages, and its DICOM modality.

    Raises:
        InputError: its slices cannot stack as one volume (:func:`_check_series_slices`), or are multi-frame
            files, of several sizes or of several modalities.
    """
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = _execute_series(reader, name)
    if image.GetDimension() != 3 or image.GetDepth() != len(files):
        raise InputError(f"{name}: its {len(files)} files hold several frames each (multi-frame files), which do not "
                         "stack as the slices of one series; give each file on its own")
    rescales = [_rescale(*(reader.GetMetaData(k, t) if reader.HasMetaDataKey(k, t) else None
                           for t in (_SLOPE, _INTERCEPT)), f"{name}: slice {Path(file).name}")
                for k, file in enumerate(files)]  # each slice's, checked
    if len(set(rescales)) > 1 and image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        # ITK takes the pixel type from the first slice's rescale (an integer type for integer rescales): with
        # slices rescaled otherwise, a negative value of theirs wrapped round to +64 500 in an unsigned type
        reader.SetOutputPixelType(sitk.sitkFloat32)
        image = _execute_series(reader, name)
    tags = [reader.GetMetaData(k, MODALITY_TAG).strip() if reader.HasMetaDataKey(k, MODALITY_TAG) else None
            for k in range(len(files))]
    if len(set(tags)) > 1:
        raise InputError(f"{name}: its slices are of several modalities ({', '.join(sorted(map(str, set(tags))))})")
    _check_series_slices(reader, image, name)
    _check_photometric(reader.GetMetaData(0, _PHOTOMETRIC) if reader.HasMetaDataKey(0, _PHOTOMETRIC) else None, name)
    ranges = [_padding_range(_slice_values(reader, k, _PADDING, 1), _slice_values(reader, k, _PADDING_LIMIT, 1),
                             *rescales[k]) for k in range(len(files))]
    return unpad(image, ranges), tags[0]


def _execute_series(reader: sitk.ImageSeriesReader, name: str) -> sitk.Image:
    try:
        return reader.Execute()
    except RuntimeError as exc:
        if any(words in str(exc) for words in ("does not fully contain the requested region", "Size mismatch")):
            raise InputError(f"{name}: its slices differ in size (rows and columns): the folder mixes series, or a "
                             "slice was cropped") from None
        raise


_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage


def _folders_with_dicom(folder: Path) -> list[str]:
    """The sub-folders of ``folder`` (a disc or an export tree) that hold DICOM files, relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if Path(root) != folder and any(_has_dicom_preamble(Path(root) / f) for f in sorted(files)[:3]):
            found.append(os.path.relpath(root, folder))
    return found


def _is_directory(header) -> bool:
    """Whether a DICOM header (pydicom's) is a DICOMDIR's: a disc's index of its files, with no image."""
    return header.get("file_meta", {}).get("MediaStorageSOPClassUID") == _DICOMDIR_CLASS


def is_dicomdir(path: Path) -> bool:
    """Whether the DICOM file ``path`` is a DICOMDIR (:func:`_is_directory`)."""
    import pydicom

    try:
        return _is_directory(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]))
    except Exception:  # pydicom fails in many ways on damaged files: ITK's reader then judges them
        return False


def _slices_left_out(folder: Path, listed: list[SeriesListing]) -> list[str]:
    """The files of ``folder`` that GDCM left out of the series ``listed`` although they are image slices of
    one (a file cut short in its pixel data), or DICOM files whose header cannot be read at all or ends
    before it names its series (cut short in the header). Files without the DICOM
    preamble, hidden files (a copy's ``._`` resource forks) and DICOM objects that are no image of these
    series (a DICOMDIR, a dose report, a presentation state) are not slices."""
    import pydicom

    taken = {os.path.realpath(f) for series in listed for f in series.files}
    uids = {series.uid for series in listed}
    left_out = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file() or os.path.realpath(f) in taken or not _has_dicom_preamble(f):
            continue
        try:
            header = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # pydicom fails in many ways on a damaged header
            left_out.append(f.name)
            continue
        if (header.get("SeriesInstanceUID") in uids and "Rows" in header) or not (
                "SeriesInstanceUID" in header or _is_directory(header)):  # every object but a DICOMDIR names its series
            left_out.append(f.name)
    return left_out


def _slice_values(reader: sitk.ImageSeriesReader, k: int, tag: str, count: int) -> list[float] | None:
    """Slice ``k``'s ``count`` numbers of a multi-valued DICOM tag (``a\\b\\c``); ``None`` without them."""
    return _numbers(reader.GetMetaData(k, tag).split("\\"), count) if reader.HasMetaDataKey(k, tag) else None


def _check_series_slices(reader: sitk.ImageSeriesReader, image: sitk.Image, name: str) -> None:
    """A series' slices must share their pixel spacing and orientation, and their positions (Image Position
    Patient) must lie on one line along the slice normal (to half a pixel, or 0.2 mm, from the first slice's
    in its plane: not the sheared stack of a tilted gantry) and be distinct and evenly spaced along it (to
    10 %, or 0.15 mm: positions are often rounded to 0.1 mm): ITK stacks the slices at the first one's spacing and orientation, and at one
    step whatever their positions, so a slice present twice, one missing, or one without a position (put
    last) sets every later slice at a wrong place. A series without positions at all (a secondary
    capture) keeps ITK's slice spacing; one without a pixel spacing is refused (GDCM reads it at 1 mm)."""
    files = [Path(f).name for f in reader.GetFileNames()]
    for tag, count, what, tolerance in (("0028|0030", 2, "pixel spacing", 1e-3), ("0020|0037", 6, "orientation", 1e-3)):
        values = [_slice_values(reader, k, tag, count) for k in range(image.GetDepth())]
        odd = next((k for k, v in enumerate(values) if v is not None and values[0] is not None
                    and np.abs(np.subtract(v, values[0])).max() > tolerance * max(1.0, np.abs(values[0]).max())), None)
        if odd is not None:
            raise InputError(f"{name}: its slices differ in {what} ({files[0]} and {files[odd]}): the folder mixes "
                             "series, or a slice was reformatted")
        if tag == "0028|0030" and not all(any(_positive(_slice_values(reader, k, t, 2)) for t in _SPACING_TAGS)
                                          for k in range(image.GetDepth())):
            raise InputError(_NO_PIXEL_SPACING.format(name=name))
        if tag == "0020|0037" and values[0] is not None:
            _check_orientation(values[0], name)
    positions = [_slice_values(reader, k, "0020|0032", 3) for k in range(image.GetDepth())]
    _check_positions(positions, [f"slice {f}" for f in files], image, name, "slice")


def perpendicular_directions(u: list[float], v: list[float]) -> bool:
    """Whether ``u`` and ``v`` are two perpendicular unit directions, loosely (to 0.05: headers often write
    them with few digits)."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return bool(abs(np.linalg.norm(u) - 1) < 0.05 and abs(np.linalg.norm(v) - 1) < 0.05 and abs(u @ v) < 0.05)


def _check_orientation(orientation: list[float], name: str) -> None:
    """A DICOM Image Orientation Patient must be two perpendicular unit directions (GDCM reads zeros, or two
    directions along one line, as axial, without a word).

    Raises:
        InputError: it is not.
    """
    if not perpendicular_directions(orientation[:3], orientation[3:]):
        raise InputError(f"{name}: its orientation ({', '.join(f'{v:g}' for v in orientation)}, DICOM Image "
                         "Orientation Patient) is not two perpendicular directions; the volume cannot be placed")


# where GDCM finds the pixel spacing (by the kind of image): Pixel Spacing, Imager Pixel Spacing (projection
# images), Nominal Scanned Pixel Spacing (secondary captures); without any, it reads 1 mm
_SPACING_TAGS = ("0028|0030", "0018|1164", "0018|2010")
_NO_PIXEL_SPACING = ("{name}: no pixel spacing (DICOM Pixel Spacing missing, not above zero, or not a number), so the "
                     "size of a lesion in mm is unknown; give the image with its spacing (e.g. as NRRD or NIfTI)")


def _positive(values: list[float] | None) -> bool:
    """Whether a spacing was read and is positive (it is finite once read: :func:`_numbers`)."""
    return values is not None and min(values) > 0


def _check_positions(positions: list[list[float] | None], labels: list[str], image: sitk.Image, name: str,
                     kind: str) -> None:
    """The positions (Image Position Patient) of the ``kind`` (``"slice"`` of a series, or ``"frame"`` of a
    multi-frame file) of ``image``, called ``labels``, must lie on one line along the slice normal and be
    distinct and evenly spaced along it (see :func:`_check_series_slices`). Frames must also be stored in
    order along it: ITK stacks them as stored (a series' slices it sorts). Without any positions, they pass."""
    if all(p is None for p in positions) or len(positions) < 2:
        return
    if None in positions:
        raise InputError(f"{name}: {labels[positions.index(None)]} has no position (Image Position Patient): "
                         "the volume cannot place it")
    xyz, direction = np.array(positions), np.array(image.GetDirection()).reshape(3, 3)
    along = xyz @ direction[:, 2]  # on the slice normal
    across = xyz @ direction[:, :2]  # in the slices' plane, where they should all lie at one place
    shift = np.linalg.norm(across - across[0], axis=1).max()
    if shift > max(0.5 * min(image.GetSpacing()[:2]), 0.2):  # positions rounded to 0.1 mm differ by up to 0.17
        raise InputError(f"{name}: its {kind}s shift in their own plane from one to the next ({shift:.3g} mm from "
                         "the first to the farthest: a tilted gantry?), which one volume grid cannot hold; resample "
                         "the series to a regular grid first")
    steps = np.diff(np.sort(along))
    whole = "series" if kind == "slice" else "file"
    if steps.min() < 1e-3 * max(steps.max(), 1e-3):
        raise InputError(f"{name}: two {kind}s of the {whole} lie at one position"
                         + (" (a file present twice?)" if kind == "slice" else
                            " (several phases, echoes or times in one file?)"))
    if kind == "frame" and not (np.all(np.diff(along) > 0) or np.all(np.diff(along) < 0)):
        raise InputError(f"{name}: its frames are not stored in the order of their positions, and would be stacked "
                         "as stored; reorder them, or export the series as single slices")
    if np.abs(steps - np.median(steps)).max() > max(0.1 * np.median(steps), 0.15):
        raise InputError(f"{name}: its {kind}s are unevenly spaced ({steps.min():.3g} to {steps.max():.3g} mm "
                         f"apart): a {kind} is missing, or the {whole} mixes spacings")


def checked_file(path: Path, image: sitk.Image) -> sitk.Image:
    """The image GDCM read of DICOM file ``path``, checked and its padding set aside (:func:`unpad`). The file
    must give its pixel spacing (GDCM reads a file without one at 1 mm), its pixels must not be MONOCHROME1
    (:func:`_check_photometric`), and a multi-frame file's frames must share their pixel spacing, orientation
    and rescale (GDCM reads all with the first frame's) and be placed as :func:`_check_positions` asks (GDCM
    reads frames that are not evenly spaced at 1 mm on every axis, in-plane too, and stacks them as stored).

    Raises:
        InputError: any of these is not so.
    """
    import pydicom

    try:
        header = pydicom.dcmread(path, defer_size=1024)  # large values (the pixels) are not read
    except Exception:  # pydicom fails in many ways on a damaged header, which ITK has read: its reading stands
        return image
    _check_photometric(header.get("PhotometricInterpretation"), path.name)
    frames = list(header.get("PerFrameFunctionalGroupsSequence") or [])
    shared = list(header.get("SharedFunctionalGroupsSequence") or [])
    _check_frames_agree(frames, path.name)
    groups = [*shared, *frames]
    measured = [g.PixelMeasuresSequence[0] for g in groups if g.get("PixelMeasuresSequence")]
    keywords = ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")  # _SPACING_TAGS
    if not any(_positive(_numbers(m.get(key), 2)) for m in (header, *measured) for key in keywords):
        raise InputError(_NO_PIXEL_SPACING.format(name=path.name))
    _check_pixel_data_length(path, header)
    oriented = [g.PlaneOrientationSequence[0] for g in groups if g.get("PlaneOrientationSequence")]
    orientation = next((o for o in (_numbers(m.get("ImageOrientationPatient"), 6) for m in (header, *oriented))
                        if o is not None), None)
    if orientation is not None:
        _check_orientation(orientation, path.name)
    if image.GetDimension() == 3 and image.GetDepth() > 1 and len(frames) == image.GetDepth():
        placed = [f.PlanePositionSequence[0] if f.get("PlanePositionSequence") else None for f in frames]
        positions = [_numbers(p.get("ImagePositionPatient"), 3) if p is not None else None for p in placed]
        _check_positions(positions, [f"frame {k + 1}" for k in range(len(frames))], image, path.name, "frame")
    transformed = [g.PixelValueTransformationSequence[0] for g in groups if g.get("PixelValueTransformationSequence")]
    # every frame's checked, though GDCM applies the first's (its frames must agree)
    checked = {id(r): _rescale(_text(r.get("RescaleSlope")), _text(r.get("RescaleIntercept")), path.name)
               for r in (header, *transformed)}
    rescaled = [g.PixelValueTransformationSequence[0] for g in (*shared, *frames[:1])
                if g.get("PixelValueTransformationSequence")]
    slope, intercept = next((checked[id(r)] for r in (header, *rescaled) if r.get("RescaleSlope") is not None),
                            (1.0, 0.0))
    padding = _padding_range(_numbers([header.get("PixelPaddingValue")], 1),
                             _numbers([header.get("PixelPaddingRangeLimit")], 1), slope, intercept)
    return unpad(image, [padding] * (image.GetDepth() or 1))



def _check_photometric(interpretation: str | None, name: str) -> None:
    """Pixels must not be MONOCHROME1 (the lowest value shown white): GDCM inverts them, and a CT so stored
    read at +61 600 to +64 500 HU.

    Raises:
        InputError: they are.
    """
    if interpretation is not None and str(interpretation).strip().upper() == "MONOCHROME1":
        raise InputError(f"{name}: MONOCHROME1 pixels (the lowest value shown white), which the image library "
                         "reads inverted, off their units; give the image as MONOCHROME2, as CT and MR are stored")


def _check_frames_agree(frames: list, name: str) -> None:
    """A multi-frame file's frames must share their pixel spacing, orientation and rescale: GDCM reads every
    frame with the first one's (a frame of 0.8 mm pixels among 0.43 mm ones at 0.43 mm; a frame rescaled
    otherwise 1 000 HU off).

    Raises:
        InputError: two frames differ.
    """
    for sequence, keywords, what in (("PixelMeasuresSequence", ("PixelSpacing",), "pixel spacing"),
                                     ("PlaneOrientationSequence", ("ImageOrientationPatient",), "orientation"),
                                     ("PixelValueTransformationSequence", ("RescaleSlope", "RescaleIntercept"),
                                      "rescale (slope and intercept)")):
        values = {}
        for k, frame in enumerate(frames):
            if not frame.get(sequence):
                continue
            found = [_listed(frame[sequence][0].get(key)) for key in keywords]
            numbers = [_numbers(v, len(v)) for v in found]
            if all(numbers):  # each given, and numbers
                values[k] = np.concatenate(numbers)
        first = next(iter(values), None)
        odd = next((k for k, v in values.items() if v.shape != values[first].shape
                    or not np.allclose(v, values[first], rtol=1e-3, atol=1e-6)), None)
        if odd is not None:
            raise InputError(f"{name}: its frames differ in {what} (frame {first + 1} and frame {odd + 1}), and "
                             "would all be read with the first frame's; export the frames as single slices")


def _listed(value) -> list:
    """A DICOM value as a list: none, one value, or several."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:  # one number
        return [value]


_DECIMAL_STRING = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # DICOM's DS: one number


def _rescale(slope: str | None, intercept: str | None, name: str) -> tuple[float, float]:
    """The rescale slope and intercept that a header gives (as text, several values parted by ``\\``), 1 and
    0 where it gives none (a blank value): each must be one decimal number (DICOM's DS), the slope not 0.
    GDCM reads any other as slope 1 or intercept 0, so that the values read are not in their units (a CT's
    intercept of -1024 lost raises every value by 1024 HU).

    Raises:
        InputError: naming the tag and its value.
    """
    numbers = []
    for tag, text, default in (("rescale slope (0028,1053)", slope, 1.0),
                               ("rescale intercept (0028,1052)", intercept, 0.0)):
        text = (text or "").strip(" \0")
        number = float(text) if _DECIMAL_STRING.fullmatch(text) else math.nan
        not_zero = tag.startswith("rescale slope")
        if text and not (math.isfinite(number) and (number != 0 or not not_zero)):
            shown = text.encode("ascii", "backslashreplace").decode("ascii")  # a damaged value may be no text
            raise InputError(f"{name}: its {tag} is '{shown}', not a number{' other than 0' * not_zero}: its pixel "
                             "values cannot be turned into their units (HU for a CT): the header is damaged")
        numbers.append(number if text else default)
    return numbers[0], numbers[1]


def _text(value) -> str | None:
    """A pydicom value as the header's text gives it (several values parted by ``\\``)."""
    return None if value is None else "\\".join(map(str, _listed(value)))


def _padding_range(padding: list[float] | None, limit: list[float] | None, slope: float,
                   intercept: float) -> tuple[float, float] | None:
    """The values, as read (rescaled), of a slice's padding: its Pixel Padding Value to its Pixel Padding Range
    Limit where it has one, widened by half a stored step; ``None`` without padding."""
    if padding is None:
        return None
    ends = [slope * v + intercept for v in (padding[0], (limit or padding)[0])]
    return min(ends) - 0.5 * abs(slope), max(ends) + 0.5 * abs(slope)


def unpad(image: sitk.Image, padded: list[tuple[float, float] | None]) -> sitk.Image:
    """``image`` with the voxels of each slice whose value lies in that slice's padding range (``padded``:
    :func:`_padding_range`; what a scanner stores outside its field of view) set to the lowest of its other
    values, where it lies above all of them. GDCM reads padding as values: in unsigned pixels, a padding of
    63 536 (−2000 written unsigned) read as +62 512 HU, and the field's outside as dense body. Padding below
    (−2000 in signed pixels: −3024 HU) or among the image's values (air's) reads as what it looks like, and is
    left as it is."""
    if not any(padded):
        return image
    array = sitk.GetArrayViewFromImage(image).reshape((-1,) + tuple(reversed(image.GetSize()[:2])))
    masks = [None if band is None else (array[k] >= band[0]) & (array[k] <= band[1]) for k, band in enumerate(padded)]
    # slice by slice, so that a volume whose padding lies below its values (most) is not copied: the padding's
    # lowest value, and the range of the others
    padding, others = [], []
    for k, mask in enumerate(masks):
        kept = array[k] if mask is None else array[k][~mask]
        if mask is not None and mask.any():
            padding.append(array[k][mask].min())
        if kept.size:
            others.append((kept.min(), kept.max()))
    if not padding or not others or min(padding) <= max(high for _, high in others):
        return image
    lowest = min(low for low, _ in others)
    out = np.array(array)
    for k, mask in enumerate(masks):
        if mask is not None:
            out[k][mask] = lowest
    result = sitk.GetImageFromArray(out.reshape(sitk.GetArrayViewFromImage(image).shape))
    result.CopyInformation(image)
    return result


def _numbers(values, count: int) -> list[float] | None:
    """``count`` finite numbers from a DICOM value (a multi-valued decimal string); ``None`` otherwise."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):  # none, one number, or not numbers
        return None
    return numbers if len(numbers) == count and all(map(math.isfinite, numbers)) else None


def _check_pixel_data_length(path: Path, header) -> None:
    """The uncompressed pixel data of a DICOM file must hold every frame its header announces (GDCM reads
    the missing ones as the lowest value: frames of air).

    Raises:
        InputError: they hold fewer bytes.
    """
    syntax = header.file_meta.get("TransferSyntaxUID")
    if syntax is not None and (syntax.is_compressed or syntax.is_deflated):
        return  # GDCM's decoder judges it (and a deflated file's offsets are not the file's)
    raw = header.get_item("PixelData", keep_deferred=True)  # its length, its value left unread
    if raw is None or raw.length == 0xFFFFFFFF:
        return
    try:
        rows, columns = int(header.Rows), int(header.Columns)
        frames, samples = int(header.get("NumberOfFrames") or 1), int(header.get("SamplesPerPixel") or 1)
        bits = int(header.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return
    if bits < 8:
        return
    expected = rows * columns * frames * samples * bits // 8
    held = min(raw.length, max(0, path.stat().st_size - raw.value_tell)) if raw.value_tell else raw.length
    if held < expected:
        raise InputError(f"{path.name}: the file is cut short, or its header damaged: its pixel data hold {held} of "
                         f"the {expected} bytes that {frames} frame{'s' if frames > 1 else ''} of {rows} × {columns} "
                         "take")
