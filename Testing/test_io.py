"""IO round trips with geometry for every format, DICOM HU rescale, atomic writes, bad input."""
from __future__ import annotations

import gzip
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from EDIQALib.errors import InputError
from EDIQALib.io import (check_outputs, check_same_geometry, image_like, input_files, read_volume, resolved,
                          volume_from_image, write_image)
from conftest import OBLIQUE, ct_image, ediqa, write_dicom_series


def assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".nii", ".nii.gz", ".hdr", ".mha", ".mhd"])
def test_round_trip_keeps_values_and_geometry(tmp_path, suffix):
    original = ct_image()
    src = tmp_path / f"in{suffix}"
    sitk.WriteImage(original, str(src))
    vol = read_volume(src)
    assert vol.modality == "ct"  # inferred from HU
    assert vol.name == "in"  # results are named so: "in.nhdr" and "in.hdr" were
    if suffix == ".hdr":
        assert read_volume(tmp_path / "in.img").name == "in"
    np.testing.assert_allclose(vol.array, sitk.GetArrayFromImage(original), atol=1e-3)
    out = tmp_path / "out" / f"copy{suffix}"
    write_image(image_like(vol.array * 2, vol.geometry), out)
    back = sitk.ReadImage(str(out))
    assert_same_geometry(back, original)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), 2 * sitk.GetArrayFromImage(original), atol=2e-3)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp")]


def test_two_dimensional_image_round_trip(tmp_path):
    arr = ct_image(slices=1)[:, :, 0]
    src = tmp_path / "slice.nrrd"
    sitk.WriteImage(arr, str(src))
    vol = read_volume(src)
    assert vol.array.shape == (1, 96, 96)
    write_image(image_like(vol.array, vol.geometry), tmp_path / "back.nrrd")
    back = sitk.ReadImage(str(tmp_path / "back.nrrd"))
    assert back.GetDimension() == 2
    assert_same_geometry(back, arr)


def test_dicom_file_is_read_in_hounsfield_units():
    vol = read_volume(get_testdata_file("CT_small.dcm"))
    assert vol.modality == "ct"
    assert vol.array.shape == (1, 128, 128)
    # CT_small stores raw values with RescaleIntercept -1024: air must come out near -1000 HU
    assert vol.array.min() < -800
    np.testing.assert_allclose(vol.spacing_xy, (0.661468, 0.661468), rtol=1e-5)


def test_an_input_that_is_a_link_to_nothing_says_so(tmp_path):
    """A link leading round in a loop, or to a file since removed, was "input not found", though it is there."""
    (tmp_path / "a.nrrd").symlink_to("b.nrrd")
    (tmp_path / "b.nrrd").symlink_to("a.nrrd")
    (tmp_path / "gone.nrrd").symlink_to("removed.nrrd")
    with pytest.raises(InputError, match="^input .*a.nrrd is a link that leads round in a loop$"):
        read_volume(tmp_path / "a.nrrd")
    with pytest.raises(InputError, match="^input .*gone.nrrd is a link to removed.nrrd, which does not exist$"):
        read_volume(tmp_path / "gone.nrrd")
    proc = ediqa("split-series", tmp_path / "a.nrrd", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "a.nrrd is a link that leads round in a loop" in proc.stderr
    with pytest.raises(InputError, match="^input not found: .*missing.nrrd$"):
        read_volume(tmp_path / "missing.nrrd")


def test_series_alike_in_the_listing_are_told_apart_by_uid_and_a_link_loop_is_named(tmp_path):
    """Two series of one number and no description were listed as "#1 (CT, 2 files); #1 (CT, 2 files)"; a
    link leading round in a loop beside a series made GDCM find no series at all in the folder."""
    study = tmp_path / "study"
    study.mkdir()
    for uid in ("1.2.3.4.7", "1.2.3.4.8"):
        write_dicom_series(tmp_path / uid, ct_image(slices=2, size=96, seed=1), uid=uid, number="1")
        for f in (tmp_path / uid).iterdir():
            f.rename(study / f"{uid}-{f.name}")
    with pytest.raises(InputError, match=re.escape("holds 2 DICOM series: #1 (CT, 2 files) [UID 1.2.3.4.7]; "
                                                   "#1 (CT, 2 files) [UID 1.2.3.4.8]. Point")):
        read_volume(study)
    write_dicom_series(tmp_path / "series", ct_image(slices=3, size=96))
    (tmp_path / "series" / "a").symlink_to("b")
    (tmp_path / "series" / "b").symlink_to("a")
    with pytest.raises(InputError, match="^series: a is a link that leads round in a loop; remove it from the series folder$"):
        read_volume(tmp_path / "series")
    (tmp_path / "series" / "b").unlink()  # a link to no file: GDCM passes over it
    assert read_volume(tmp_path / "series").array.shape == (3, 96, 96)


def test_a_folder_of_several_dicom_series_names_them_and_split_series_parts_them(tmp_path):
    """A PACS export puts every series of a study in one folder: it was refused with "point to one series
    folder", which such a folder has none of."""
    study = tmp_path / "study"
    study.mkdir()
    thick, thin = ct_image(slices=3, size=96, seed=1), ct_image(slices=4, size=96, seed=2)
    for image, uid, number, description in ((thick, "1.2.3.4.5", "2", "ABD 5mm"), (thin, "1.2.3.4.6", "3", "ABD 1mm")):
        write_dicom_series(tmp_path / number, image, uid=uid, number=number, description=description)
        for f in (tmp_path / number).iterdir():
            f.rename(study / f"s{number}-{f.name}")
    before = sorted((f.name, f.read_bytes()) for f in study.iterdir())
    with pytest.raises(InputError, match=r"holds 2 DICOM series: #2 'ABD 5mm' \(CT, 3 files\); #3 'ABD 1mm' \(CT, 4 "
                                         r"files\)\. Point to one series folder \(`ediqa split-series .*study --out DIR`"):
        read_volume(study)
    proc = ediqa("split-series", study, "--out", tmp_path / "series", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert [(s["folder"], s["files"]) for s in printed["series"]] == [
        (str(tmp_path / "series" / "2-ABD_5mm"), 3), (str(tmp_path / "series" / "3-ABD_1mm"), 4)]
    for name, image in (("2-ABD_5mm", thick), ("3-ABD_1mm", thin)):
        parted = read_volume(tmp_path / "series" / name)
        assert np.array_equal(parted.array, np.round(sitk.GetArrayFromImage(image)))
        assert parted.geometry.spacing == pytest.approx(image.GetSpacing())
    assert sorted((f.name, f.read_bytes()) for f in study.iterdir()) == before  # the input untouched
    again = ediqa("split-series", study, "--out", tmp_path / "series")  # never among other files
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    cut = study / "s3-slice001.dcm"  # a slice cut short in its pixel data: GDCM leaves it out of its series
    cut.write_bytes(cut.read_bytes()[:3000])
    damaged = ediqa("split-series", study, "--out", tmp_path / "other")  # not copied as a series without it
    assert damaged.returncode == 2 and not (tmp_path / "other").exists()
    assert damaged.stderr == "ediqa: error: study: s3-slice001.dcm is a slice of one of its series that cannot be read " \
                             "(damaged or cut short?); the volume would miss it\n"


@pytest.mark.parametrize("direction", [OBLIQUE, (1, 0, 0, 0, 0.7071068, -0.7071068, 0, 0.7071068, 0.7071068)],
                         ids=["turned-about-z", "tilted-45-about-x"])
def test_dicom_series_folder_keeps_geometry(tmp_path, direction):
    """A series turned in its plane, and one tilted out of it (its slices step along y and z): slice positions
    are judged along the slice normal."""
    original = ct_image(slices=3, direction=direction)
    write_dicom_series(tmp_path / "series", original)
    vol = read_volume(tmp_path / "series")
    assert vol.modality == "ct"
    assert_same_geometry(image_like(vol.array, vol.geometry), original)
    np.testing.assert_allclose(vol.array, np.round(sitk.GetArrayFromImage(original)), atol=1.0)


def test_an_oblique_series_of_small_pixels_with_rounded_positions_is_read(tmp_path):
    """Positions rounded to 0.1 mm put the slices of an oblique series up to 0.17 mm off one line, which
    the sheared-stack check must take, also where half a pixel is less."""
    write_dicom_series(tmp_path / "series", ct_image(slices=4, size=200, spacing=(0.25, 0.25, 1.3),
                                                      direction=(1, 0, 0, 0, 0.7071068, -0.7071068, 0, 0.7071068, 0.7071068)))
    for path in (tmp_path / "series").iterdir():
        _retag(path, ImagePositionPatient=[round(float(v), 1) for v in pydicom.dcmread(path).ImagePositionPatient])
    assert read_volume(tmp_path / "series").array.shape == (4, 200, 200)


def _write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def _save_image(tmp_path, image, name="bad.nrrd"):
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


def _save(tmp_path, arr, name="bad.nrrd"):
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return path


@pytest.mark.parametrize("make, message", [
    (lambda t: t / "missing.nrrd", "not found"),
    (lambda t: _write_bytes(t / "corrupt.dcm", b"\0" * 128 + b"DICM" + b"garbage" * 50), "cannot read"),
    (lambda t: _write_bytes(t / "truncated.nrrd", b"NRRD0004\ntype: float\ndimension: 3\n"), "cannot read"),
    (lambda t: _save(t, np.zeros((2, 80, 80), np.float32)), "constant"),
    (lambda t: _save(t, np.where(np.eye(80, dtype=bool), np.nan, -1000.0).astype(np.float32)[None]), "NaN"),
    (lambda t: _save(t, np.full((2, 80, 80), np.inf, np.float32)), "NaN or infinite"),
    (lambda t: _save(t, np.where(np.eye(80, dtype=bool), 1e300, -1000.0)[None]), "beyond the float32 range"),
    (lambda t: _save_image(t, sitk.JoinSeries([ct_image(), ct_image()])), "4-D"),
    (lambda t: _save_image(t, sitk.GetImageFromArray(np.ones((80, 80, 3), np.float32), isVector=True)), "component"),
    (lambda t: _save(t, np.random.default_rng(0).normal(-500, 300, size=(2, 40, 40)).astype(np.float32)), "under 64"),
    (lambda t: _save(t, np.random.default_rng(0).normal(-500, 300, size=(96, 1, 96)).astype(np.float32)),
     "a single slice lying along the third axis"),
    (lambda t: _save(t, np.random.default_rng(0).normal(-500, 300, size=(96, 1, 40)).astype(np.float32)), "under 64"),
    (lambda t: _save(t, np.random.default_rng(0).normal(100, 10, size=(1, 80, 80)).astype(np.float32)), "cannot tell the modality"),
    (lambda t: _write_bytes(t / "none.mha", b"ObjectType = Image\nNDims = 3\nDimSize = 96 96 0\nElementType = MET_SHORT"
                            b"\nElementDataFile = LOCAL\n"), "96 × 96 × 0 holds no voxels"),
    (lambda t: _save(t, np.full((1, 80, 80), -1000 + 1j, np.complex64)), "complex pixels"),
    (lambda t: _save_image(t, sitk.GetImageFromArray(np.tile(np.arange(80, dtype=np.uint8), (80, 1))), "scan.png"),
     "scan.png: a picture file, with no pixel spacing in mm"),  # read as 1 mm pixels, the score of another scale
    (lambda t: _save_image(t, sitk.GetImageFromArray(np.tile(np.arange(80, dtype=np.uint16), (80, 1))), "scan.tif")
     .rename(t / "scan"), "scan: a picture file"),  # known by its contents, not its name
    (lambda t: _save(t, np.where(np.eye(80, dtype=bool), 3e38, -1000.0).astype(np.float32)[None]),
     "not Hounsfield units"),
])
def test_bad_input_raises_one_clear_error(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        read_volume(make(tmp_path))


def test_an_empty_path_is_no_input_not_the_current_folder(tmp_path, monkeypatch):
    """``EDIQALib.assess("")`` read the current folder, a DICOM series where it was one."""
    write_dicom_series(tmp_path / "series", ct_image(slices=2, spacing=(0.7, 0.7, 2.0)))
    monkeypatch.chdir(tmp_path / "series")
    for empty in ("", " "):
        with pytest.raises(InputError, match="an empty path names no input"):
            read_volume(empty)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii"])
def test_a_volume_of_one_time_point_is_read_as_the_volume(tmp_path, suffix):
    """A 4-D file whose fourth axis holds one volume was refused as 4-D in NRRD and MHA, read in NIfTI."""
    image = ct_image(origin=(-40.0, 12.5, 7.0))
    path = _save_image(tmp_path, sitk.JoinSeries([image]), f"one{suffix}")
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(volume.geometry.origin, image.GetOrigin())
    np.testing.assert_allclose(volume.geometry.spacing, image.GetSpacing())


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd"])
def test_file_cut_short_is_refused(tmp_path, suffix):
    # ITK reads the missing voxels of a NIfTI file cut short as zeros; NRRD's reader refuses it itself
    whole = tmp_path / f"ct{suffix}"
    sitk.WriteImage(ct_image(), str(whole), suffix.endswith(".gz"))
    data = whole.read_bytes()
    cut = _write_bytes(tmp_path / f"cut{suffix}", data[: int(0.6 * len(data))])
    with pytest.raises(InputError, match="cut short|truncated"):
        read_volume(cut)


@pytest.mark.parametrize("suffix, dtype, value", [(".nii", np.float32, np.nan), (".nii.gz", np.float32, np.nan),
                                                   (".hdr", np.float64, np.nan), (".nii.gz", np.float64, -np.inf)])
def test_nan_in_a_float_nifti_is_refused(tmp_path, suffix, dtype, value):
    array = sitk.GetArrayFromImage(ct_image()).astype(dtype)
    array[1, 40, 40] = value
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / f"ct{suffix}"))
    data_file = "ct.img" if suffix == ".hdr" else f"ct{suffix}"
    for given in {f"ct{suffix}", data_file}:  # a pair is opened by either of its files
        with pytest.raises(InputError, match=rf"{re.escape(data_file)}: image contains NaN or infinite values"):
            read_volume(tmp_path / given)  # ITK's NIfTI reader reads NaN as 0: it was assessed


def test_a_nifti_header_whose_bitpix_is_at_odds_with_its_data_type_is_read_as_itk_reads_it(tmp_path):
    """The float check reads voxels by the data type; a header whose bitpix says otherwise (float64 voxels,
    bitpix 32) made it a traceback."""
    sitk.WriteImage(sitk.GetImageFromArray(sitk.GetArrayFromImage(ct_image()).astype(np.float64)), str(tmp_path / "ct.nii"))
    data = bytearray((tmp_path / "ct.nii").read_bytes())
    data[72:74] = (32).to_bytes(2, "little")  # bitpix
    (tmp_path / "odd.nii").write_bytes(data)
    np.testing.assert_array_equal(read_volume(tmp_path / "odd.nii").array, read_volume(tmp_path / "ct.nii").array)


def test_the_image_file_of_a_nifti_pair_cut_short_is_refused(tmp_path):
    sitk.WriteImage(ct_image(), str(tmp_path / "ct.hdr"))
    assert read_volume(tmp_path / "ct.hdr").array.shape == (2, 96, 96)
    data = (tmp_path / "ct.img").read_bytes()
    (tmp_path / "ct.img").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=rf"ct\.img: the file is cut short \({len(data) // 2} of {len(data)} bytes"):
        read_volume(tmp_path / "ct.hdr")


@pytest.mark.parametrize("spoil, says", [
    (lambda f: f["slice001.dcm"].write_bytes(f["slice001.dcm"].read_bytes()[:3000]),
     "series: slice001.dcm is a slice of the series that cannot be read"),
    (lambda f: f["slice003.dcm"].write_bytes(f["slice003.dcm"].read_bytes()[:400]),  # the last, cut in its header
     "series: slice003.dcm is a slice of the series that cannot be read"),
    (lambda f: shutil.copy(f["slice002.dcm"], f["slice002.dcm"].with_name("copy.dcm")), "two slices of the series lie at one position"),
    (lambda f: f["slice001.dcm"].unlink(), r"series: its slices are unevenly spaced \(2 to 4 mm apart\)"),
    (lambda f: [_retag(f[f"slice00{k}.dcm"], ImagePositionPatient=[v + 1.5 * k * (i == 1) for i, v in
                                                                   enumerate(pydicom.dcmread(f[f"slice00{k}.dcm"]).ImagePositionPatient)])
                for k in range(4)],  # a tilted gantry's sheared stack: the slices were stacked straight
     r"series: its slices shift in their own plane from one to the next \(4.5 mm from the first to the farthest"),
    (lambda f: _retag(f["slice002.dcm"], Modality="MR"), r"several modalities \(CT, MR\)"),
    (lambda f: _untag(f["slice001.dcm"], "ImagePositionPatient"),
     r"series: slice slice001\.dcm has no position \(Image Position Patient\)"),
    (lambda f: _retag(f["slice002.dcm"], PixelSpacing=[0.8, 0.8]),
     r"series: its slices differ in pixel spacing \(slice000\.dcm and slice002\.dcm\)"),
    (lambda f: _retag(f["slice003.dcm"], ImageOrientationPatient=[1, 0, 0, 0, 0.9950042, 0.0998334]),
     r"series: its slices differ in orientation \(slice000\.dcm and slice003\.dcm\)"),
    (lambda f: _retag(f["slice001.dcm"], Rows=64, Columns=64,
                      PixelData=pydicom.dcmread(f["slice001.dcm"]).pixel_array[:64, :64].tobytes()),
     r"series: its slices differ in size \(rows and columns\)"),
    (lambda f: _retag(f["slice001.dcm"], Rows=128, Columns=128,  # larger than the first: ITK words it otherwise
                      PixelData=np.resize(pydicom.dcmread(f["slice001.dcm"]).pixel_array, (128, 128)).tobytes()),
     r"series: its slices differ in size \(rows and columns\)"),
])
def test_a_dicom_series_with_a_slice_damaged_twice_missing_or_unlike_the_others_is_refused(tmp_path, spoil, says):
    """ITK stacks what it can read at one spacing: a damaged file was left out, a copy, a gap or a slice
    without a position (stacked last) put every later slice at a wrong place, and the first slice's modality,
    pixel spacing and orientation stood for all, each without a word."""
    write_dicom_series(tmp_path / "series", ct_image(slices=4, spacing=(0.7, 0.7, 2.0)))
    assert read_volume(tmp_path / "series").array.shape[0] == 4
    spoil({f.name: f for f in (tmp_path / "series").iterdir()})
    with pytest.raises(InputError, match=says):
        read_volume(tmp_path / "series")


def test_a_dicom_series_reads_beside_files_that_are_no_slices_of_it_and_from_inside_its_folder(tmp_path, monkeypatch):
    """A DICOMDIR, a report of the same series (no pixels), a copy's ``._`` resource fork, an empty ``.dcm``
    note, positions rounded to 0.1 mm: none of them is a damaged or missing slice. Read from inside the
    folder (``.``), GDCM names its files ``./...``."""
    write_dicom_series(tmp_path / "series", ct_image(slices=4, spacing=(0.7, 0.7, 0.625)))
    folder = tmp_path / "series"
    for k, f in enumerate(sorted(folder.iterdir())):  # z positions 0.6, 1.2, 1.9: steps of 0.6 and 0.7 mm
        _retag(f, ImagePositionPatient=[*pydicom.dcmread(f).ImagePositionPatient[:2], round(0.625 * k, 1)])
    report = pydicom.dcmread(folder / "slice000.dcm")
    for key in ("PixelData", "Rows", "Columns"):
        delattr(report, key)
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # a basic text report, of the same series
    report.save_as(folder / "report.dcm")
    report.SeriesInstanceUID = "1.2.3"
    report.save_as(folder / "DICOMDIR.dcm")
    (folder / "._slice000.dcm").write_bytes(b"\0\5\26\7" + b"\0" * 200)
    (folder / "notes.dcm").write_bytes(b"")
    assert read_volume(folder).array.shape == (4, 96, 96)
    monkeypatch.chdir(folder)
    inside = read_volume(".")
    assert inside.array.shape == (4, 96, 96) and inside.name == folder.name  # was ".", so results were "image-1"


def _write_enhanced_ct(path, frames: np.ndarray, step_mm: float, offsets_mm: list[float] | None = None,
                       pixel_spacing: bool = True) -> None:
    """One multi-frame (Enhanced CT) file: CT_small's header, ``frames`` as its stored values, one plane
    position per frame, ``step_mm`` apart (or at ``offsets_mm`` from the first), with its pixel spacing
    unless ``pixel_spacing`` is false."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dtype = ds.pixel_array.dtype
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.NumberOfFrames = len(frames)
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([Dataset()])
    if pixel_spacing:
        shared.PixelMeasuresSequence[0].PixelSpacing = ds.PixelSpacing
    else:
        del ds.PixelSpacing
    shared.PlaneOrientationSequence = Sequence([Dataset()])
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = ds.ImageOrientationPatient
    shared.PixelValueTransformationSequence = Sequence([Dataset()])
    transform = shared.PixelValueTransformationSequence[0]
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = ds.RescaleIntercept, ds.RescaleSlope, "HU"
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(len(frames)):
        frame = Dataset()
        frame.PlanePositionSequence = Sequence([Dataset()])
        x, y, z = map(float, ds.ImagePositionPatient)
        frame.PlanePositionSequence[0].ImagePositionPatient = [x, y, z + (step_mm * k if offsets_mm is None
                                                                           else offsets_mm[k])]
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = frames.astype(dtype).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_multi_frame_dicom_reads_as_a_volume_alone_or_in_its_folder(tmp_path):
    stored = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    frames = np.stack([stored + 40 * k for k in range(3)])  # frames told apart by their level
    (tmp_path / "enhanced").mkdir()
    _write_enhanced_ct(tmp_path / "enhanced" / "ct.dcm", frames, step_mm=2.5)
    alone, in_folder = read_volume(tmp_path / "enhanced" / "ct.dcm"), read_volume(tmp_path / "enhanced")
    assert in_folder.name == "enhanced"  # read as 4-D before, and refused
    for vol in (alone, in_folder):
        assert vol.array.shape == (3, 128, 128) and vol.modality == "ct"
        assert vol.spacing == pytest.approx((0.661468, 0.661468, 2.5))
        assert np.diff(vol.array.mean(axis=(1, 2))) == pytest.approx([40, 40])  # in order, rescaled to HU


@pytest.mark.parametrize("offsets, pixel_spacing, says", [
    ([0, 3, 6, 15], True, r"ct\.dcm: its frames are unevenly spaced \(3 to 9 mm apart\): a frame is missing"),
    ([0, 6, 3, 9], True, r"ct\.dcm: its frames are not stored in the order of their positions"),
    ([0, 3, 3, 6], True, r"ct\.dcm: two frames of the file lie at one position"),
    ([0, 3, 6, 9], False, r"ct\.dcm: no pixel spacing \(DICOM Pixel Spacing missing, not above zero, or not a number\), so the size of a lesion in mm is unknown"),
], ids=["gap", "out-of-order", "twice", "no-pixel-spacing"])
def test_a_multi_frame_file_whose_frames_cannot_stack_is_refused(tmp_path, offsets, pixel_spacing, says):
    """GDCM read frames that are not evenly spaced at 1 mm on every axis (0.66 mm pixels read as 1 mm), and
    stacked them as stored, a frame present twice among them; a file without a pixel spacing, at 1 mm."""
    stored = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    _write_enhanced_ct(tmp_path / "ct.dcm", np.stack([stored] * 4), 3.0, offsets, pixel_spacing)
    with pytest.raises(InputError, match=says):
        read_volume(tmp_path / "ct.dcm")


def test_a_dicom_slice_or_series_without_pixel_spacing_is_refused(tmp_path):
    """Read at 1 mm pixels, its lesions were inserted at the wrong size and its score was another."""
    write_dicom_series(tmp_path / "series", ct_image(slices=2, spacing=(0.7, 0.7, 2.0)))
    for f in (tmp_path / "series").iterdir():
        _untag(f, "PixelSpacing")
    with pytest.raises(InputError, match=r"series: no pixel spacing \(DICOM Pixel Spacing missing, not above zero, or not a number\)"):
        read_volume(tmp_path / "series")
    with pytest.raises(InputError, match=r"slice000\.dcm: no pixel spacing"):
        read_volume(tmp_path / "series" / "slice000.dcm")


def test_a_series_whose_slices_are_rescaled_differently_reads_in_hounsfield_units(tmp_path):
    """ITK takes the series' pixel type from its first slice's rescale: unsigned there, a later slice's
    negative values wrapped round to about +64 500 "HU", and air was read as body."""
    image = ct_image(slices=3, spacing=(0.7, 0.7, 2.0))
    hu = np.round(sitk.GetArrayFromImage(image))
    write_dicom_series(tmp_path / "series", image)
    expected = hu.copy()
    expected[0] = np.clip(hu[0], 0, None)  # the first slice stored unsigned as it is: no negative values
    for k, f in enumerate(sorted((tmp_path / "series").iterdir())):
        intercept = 0 if k == 0 else -1024
        stored = (expected[k] - intercept).astype(np.uint16)
        _retag(f, PixelRepresentation=0, BitsStored=16, HighBit=15, RescaleIntercept=intercept,
               PixelData=stored.tobytes())
    np.testing.assert_array_equal(read_volume(tmp_path / "series").array, expected)


def test_padding_above_the_image_s_values_is_read_as_its_lowest_value(tmp_path):
    """GDCM reads DICOM pixel padding (what a scanner stores outside its field of view) as values: in unsigned
    pixels, a padding of 63536 (-2000 written unsigned) read as +62 512 HU, and the outside as dense body."""
    image = ct_image(slices=2, size=128, spacing=(0.7, 0.7, 2.0))
    hu = np.round(sitk.GetArrayFromImage(image))
    outside = np.hypot(*np.mgrid[-64:64, -64:64]) > 60
    write_dicom_series(tmp_path / "series", image)
    for k, f in enumerate(sorted((tmp_path / "series").iterdir())):
        stored = np.where(outside, 63536, np.clip(hu[k] + 1024, 0, None)).astype(np.uint16)
        _retag(f, PixelRepresentation=0, BitsStored=16, HighBit=15, RescaleIntercept=-1024,
               PixelData=stored.tobytes())
        ds = pydicom.dcmread(f)
        ds.add_new(0x00280120, "US", 63536)  # Pixel Padding Value
        ds.save_as(f)
    lowest = np.clip(hu, -1024, None)[:, ~outside].min()
    for path in (tmp_path / "series", tmp_path / "series" / "slice001.dcm"):
        array = read_volume(path).array
        assert (array[:, outside] == lowest).all() and array.max() < 5000, path
        np.testing.assert_array_equal(array[:, ~outside], np.clip(hu[-array.shape[0]:], -1024, None)[:, ~outside])
    signed = read_volume(get_testdata_file("CT_small.dcm")).array  # padding -2000 (-3024 HU): below air, kept
    assert signed.min() == float(pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array.min() - 1024)


def test_monochrome1_pixels_are_refused(tmp_path):
    """GDCM inverts MONOCHROME1 pixels: a CT stored so read at +61 600 to +64 500 HU, "too little body"."""
    write_dicom_series(tmp_path / "series", ct_image(slices=2, spacing=(0.7, 0.7, 2.0)))
    for f in (tmp_path / "series").iterdir():
        _retag(f, PhotometricInterpretation="MONOCHROME1")
    for path, name in ((tmp_path / "series", "series"), (tmp_path / "series" / "slice000.dcm", "slice000.dcm")):
        with pytest.raises(InputError, match=rf"{name}: MONOCHROME1 pixels \(the lowest value shown white\)"):
            read_volume(path)


@pytest.mark.parametrize("sequence, keyword, values, what", [
    ("PixelMeasuresSequence", "PixelSpacing", ([0.661468, 0.661468], [0.8, 0.8]), "pixel spacing"),
    ("PlaneOrientationSequence", "ImageOrientationPatient", ([1, 0, 0, 0, 1, 0], [0, 1, 0, 1, 0, 0]), "orientation"),
    ("PixelValueTransformationSequence", "RescaleIntercept", (-1024, 0), r"rescale \(slope and intercept\)"),
], ids=["spacing", "orientation", "rescale"])
def test_a_multi_frame_file_whose_frames_differ_in_spacing_orientation_or_rescale_is_refused(
        tmp_path, sequence, keyword, values, what):
    """GDCM reads every frame with the first one's pixel spacing, orientation and rescale: a frame of 0.8 mm
    pixels among 0.66 mm ones was read at 0.66 mm, one rescaled otherwise 1 024 HU off."""
    import copy

    from pydicom.sequence import Sequence

    stored = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    _write_enhanced_ct(tmp_path / "ct.dcm", np.stack([stored] * 3), 3.0)
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    shared = ds.SharedFunctionalGroupsSequence[0]
    template = shared[sequence][0]
    delattr(shared, sequence)
    for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        item = copy.deepcopy(template)
        setattr(item, keyword, values[k == 1])
        setattr(frame, sequence, Sequence([item]))
    ds.save_as(tmp_path / "ct.dcm")
    with pytest.raises(InputError, match=rf"ct\.dcm: its frames differ in {what} \(frame 1 and frame 2\), and would "
                                         "all be read with the first frame's"):
        read_volume(tmp_path / "ct.dcm")
    for frame in ds.PerFrameFunctionalGroupsSequence:  # the same in every frame: read
        setattr(frame[sequence][0], keyword, values[0])
    ds.save_as(tmp_path / "ct.dcm")
    assert read_volume(tmp_path / "ct.dcm").array.shape == (3, 128, 128)


def test_a_short_stack_stored_across_its_acquired_slices_is_told_to_reorient(tmp_path):
    """Twenty sagittal slices stored slice axis first: refused as an image under 64 pixels, as if its acquired
    256 × 256 slices were not there."""
    image = sitk.GetImageFromArray(np.full((128, 128, 20), -1000, np.int16))
    image.SetSpacing((4.0, 0.7, 0.7))
    with pytest.raises(InputError, match=r"in-plane size \(20, 128\) is under 64 pixels; its pixels of 4 × 0.7 mm, "
                                         r"0.7 mm apart, look like a volume stored across its acquired slices: reorient"):
        volume_from_image(image, "stack")


def test_a_dicom_disc_points_to_its_series_folders(tmp_path):
    """A disc's root and its DICOMDIR hold no image: the message says where the series are."""
    from pydicom.fileset import FileSet

    disc = FileSet()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        disc.add(get_testdata_file(name))
    disc.write(tmp_path / "disc")
    first = re.escape(os.path.join("PT000000", "ST000000", "SE000000"))
    with pytest.raises(InputError, match=rf"no DICOM series found in folder .*disc; 2 of its sub-folders, such as "
                                         rf"{first}, hold DICOM files: point to a series folder"):
        read_volume(tmp_path / "disc")
    with pytest.raises(InputError, match="DICOMDIR is a DICOMDIR, the index of a DICOM disc, with no image"):
        read_volume(tmp_path / "disc" / "DICOMDIR")
    assert read_volume(tmp_path / "disc" / "PT000000" / "ST000000" / "SE000000").array.shape == (1, 128, 128)
    shutil.rmtree(tmp_path / "disc" / "PT000001")
    with pytest.raises(InputError, match=f"its sub-folder {first} holds DICOM files"):
        read_volume(tmp_path / "disc")


def test_two_slices_at_one_position_are_refused(tmp_path):
    write_dicom_series(tmp_path / "series", ct_image(slices=1))
    shutil.copy(tmp_path / "series" / "slice000.dcm", tmp_path / "series" / "again.dcm")
    with pytest.raises(InputError, match="two slices of the series lie at one position"):
        read_volume(tmp_path / "series")


def test_the_data_file_of_a_nifti_pair_is_found_as_itk_finds_it(tmp_path):
    """``.img.gz`` beside the ``.hdr``: its length was not checked."""
    sitk.WriteImage(ct_image(), str(tmp_path / "ct.hdr"))
    data = (tmp_path / "ct.img").read_bytes()
    (tmp_path / "ct.img").unlink()
    (tmp_path / "ct.img.gz").write_bytes(gzip.compress(data[: len(data) // 2]))
    with pytest.raises(InputError, match=rf"ct\.img\.gz: the file is cut short \({len(data) // 2} of"):
        read_volume(tmp_path / "ct.hdr")
    (tmp_path / "ct.img.gz").unlink()
    with pytest.raises(InputError, match="cannot read ct.hdr"):  # no data file at all: ITK's own refusal
        read_volume(tmp_path / "ct.hdr")


@pytest.mark.parametrize("header, data", [("ct.hdr.gz", "ct.img.gz"), ("ct.hdr", "ct.img.gz"), ("ct.hdr.gz", "ct.img")])
def test_a_nifti_pair_is_checked_whatever_its_files_compression(tmp_path, header, data):
    """ITK reads a pair by either file, gzipped or not; named ``.img.gz`` or ``.hdr.gz``, NaN (read as 0) and
    a data file cut short (read as zeros) were assessed."""
    array = sitk.GetArrayFromImage(ct_image()).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "ct.hdr"))
    good = {"ct.hdr": (tmp_path / "ct.hdr").read_bytes(), "ct.img": (tmp_path / "ct.img").read_bytes()}
    for f in tmp_path.iterdir():
        f.unlink()

    def write(name: str, content: bytes) -> None:
        (tmp_path / name).write_bytes(gzip.compress(content) if name.endswith(".gz") else content)

    write(header, good["ct.hdr"])
    write(data, good["ct.img"])
    for given in (header, data):
        np.testing.assert_array_equal(read_volume(tmp_path / given).array, array)
        assert read_volume(tmp_path / given).name == "ct"
    nan = np.frombuffer(good["ct.img"], np.float32).copy()
    nan[500] = np.nan
    write(data, nan.tobytes())
    for given in (header, data):
        with pytest.raises(InputError, match=rf"{re.escape(data)}: image contains NaN or infinite values"):
            read_volume(tmp_path / given)
    write(data, good["ct.img"][: len(good["ct.img"]) // 2])
    for given in (header, data):
        with pytest.raises(InputError, match=rf"{re.escape(data)}: the file is cut short"):
            read_volume(tmp_path / given)


@pytest.mark.parametrize("data_file", ["ct ü.raw", "LIST 2D"])
def test_a_metaimage_reads_whatever_its_data_file_is_named(tmp_path, data_file):
    """A data file of a non-ASCII name, read from the header as latin-1, was said to be missing; so was a
    ``LIST 2D`` of slice files (``LIST`` alone passed)."""
    array = sitk.GetArrayFromImage(ct_image()).astype(np.int16)
    files = [data_file] if data_file != "LIST 2D" else [f"slab{k}.raw" for k in range(array.shape[0])]
    for name, part in zip(files, [array] if len(files) == 1 else list(array)):
        (tmp_path / name).write_bytes(np.ascontiguousarray(part).astype("<i2").tobytes())
    listed = "".join(f"{f}\n" for f in files) if data_file == "LIST 2D" else ""
    (tmp_path / "ct.mhd").write_bytes(
        ("ObjectType = Image\nNDims = 3\nDimSize = 96 96 2\nElementSpacing = 0.7 0.7 2\n"
         "ElementType = MET_SHORT\nElementByteOrderMSB = False\n"
         f"ElementDataFile = {data_file}\n{listed}").encode("utf-8"))
    np.testing.assert_array_equal(read_volume(tmp_path / "ct.mhd").array, array)
    for f in files:
        (tmp_path / f).unlink()
    says = f"its data file {files[0]} is missing"  # a LIST's too (ITK's "cannot read ct.mhd" before)
    with pytest.raises(InputError, match=re.escape(says)):
        read_volume(tmp_path / "ct.mhd")


def test_a_blank_modality_tag_says_nothing(tmp_path):
    """A Modality of spaces was "modality '' is not supported"; without the tag, CT is told by its HU."""
    image = ct_image()
    image.SetMetaData("0008|0060", "  ")
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    assert read_volume(tmp_path / "ct.nrrd").modality == "ct"


def _retag(path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path)


@pytest.mark.parametrize("name", ["huge.nrrd", "huge.dcm"])
def test_a_header_that_promises_a_huge_slice_is_refused_before_its_voxels_are_allocated(tmp_path, name):
    """A header's 20000 × 20000 pixels (of a few compressed bytes, or a DICOM's rows and columns) were allocated,
    800 MB, before the slice's size was judged: a compressed file of a few megabytes made the reader take
    gigabytes."""
    path = tmp_path / name
    if name.endswith(".nrrd"):
        path.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 20000 20000 1\n"
                         b"space directions: (1,0,0) (0,1,0) (0,0,1)\nendian: little\nencoding: gzip\n"
                         b"space origin: (0,0,0)\n\n" + gzip.compress(bytes(4096)))
    else:
        shutil.copy(get_testdata_file("CT_small.dcm"), path)
        _retag(path, Rows=20000, Columns=20000, PixelSpacing=[1, 1])
    with pytest.raises(InputError, match=re.escape("20000 × 20000 pixels of 1 × 1 mm: resampled to 0.7 mm the slice "
                                                   "would be 28571 × 28571 pixels (at most")):
        read_volume(path)


def test_a_header_that_promises_more_voxels_than_memory_holds_is_refused_before_they_are_allocated(tmp_path):
    """A strip of 63 × 12 000 000 pixels, or slices of an assessable size but a million of them, were allocated
    (gigabytes, or until the system killed the process) before they were refused."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    if memory is None:
        pytest.skip("the system does not tell its memory")
    slices = memory // (512 * 512 * 4) + 1  # one slice more than memory holds as float32
    path = tmp_path / "deep.nrrd"
    path.write_bytes(f"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 512 512 {slices}\n"
                     "space directions: (0.7,0,0) (0,0.7,0) (0,0,1)\nendian: little\nencoding: gzip\n"
                     "space origin: (0,0,0)\n\n".encode() + gzip.compress(bytes(4096)))
    with pytest.raises(InputError, match=rf"deep: 512 × 512 × {slices} voxels would take [\d.]+ GB as float32, more "
                                         r"than this machine's [\d.]+ GB of memory"):
        read_volume(path)


def _raw_tag(path, tag: int, text: bytes) -> None:
    """Write ``text`` as the value of DS tag ``tag`` of the DICOM file ``path``, as a damaged header holds it
    (pydicom refuses to set a value that is no number)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = pydicom.dcmread(path)
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), "DS", len(text), text, 0, False, True)
    ds.save_as(path)


@pytest.mark.parametrize("tag, text, says", [
    (0x00281052, b"abc ", "rescale intercept (0028,1052) is 'abc', not a number"),
    (0x00281053, b"0 ", "rescale slope (0028,1053) is '0', not a number other than 0"),
    (0x00281053, b"NaN ", "rescale slope (0028,1053) is 'NaN'"),
    (0x00281053, b"1\\2 ", "rescale slope (0028,1053) is '1\\2'"),
    (0x00281053, b"1_0 ", "rescale slope (0028,1053) is '1_0'"),  # Python's float() took it for 10; GDCM reads 1
    (0x00281053, b"infinity", "rescale slope (0028,1053) is 'infinity'"),
    (0x00281053, b"1e999 ", "rescale slope (0028,1053) is '1e999'")])
def test_a_rescale_that_is_no_number_is_refused_in_a_file_and_in_a_series(tmp_path, tag, text, says):
    """GDCM read a rescale slope of 0, NaN or two values as 1, and an intercept of text as 0: CT_small's
    intercept of -1024 lost, every value was 1024 HU too high, and scored without a word."""
    path = tmp_path / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    _raw_tag(path, tag, text)
    with pytest.raises(InputError, match=re.escape(f"ct.dcm: its {says}")):
        read_volume(path)
    _raw_tag(path, tag, b"")  # a blank value is none given: the default
    assert read_volume(path).array.min() == pytest.approx(
        read_volume(get_testdata_file("CT_small.dcm")).array.min() + (1024 if tag == 0x00281052 else 0))
    write_dicom_series(tmp_path / "series", ct_image(slices=4))
    _raw_tag(tmp_path / "series" / "slice002.dcm", tag, text)
    with pytest.raises(InputError, match=re.escape(f"series: slice slice002.dcm: its {says}")):
        read_volume(tmp_path / "series")


@pytest.mark.parametrize("slope, intercept", [(b"+1 ", b"-1024.0 "), (b"1E0 ", b"-1.024e3"), (b"1\0", b"-1024\0\0")])
def test_a_rescale_written_in_any_decimal_form_dicom_allows_is_read(tmp_path, slope, intercept):
    path = tmp_path / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    _raw_tag(path, 0x00281053, slope)
    _raw_tag(path, 0x00281052, intercept)
    np.testing.assert_array_equal(read_volume(path).array, read_volume(get_testdata_file("CT_small.dcm")).array)


def _untag(path, key: str) -> None:
    ds = pydicom.dcmread(path)
    delattr(ds, key)
    ds.save_as(path)


def test_a_read_error_is_told_by_its_reason_not_by_where_in_itk_it_was_thrown():
    """Where no line of SimpleITK's exception says "error", its first line was given: a path into ITK's build."""
    from EDIQALib.io import _read_error_detail

    exc = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /build/ITK/itkImportImageContainer.hxx:179:\n"
                       "Failed to allocate memory for image.")
    assert _read_error_detail(exc, "") == "Failed to allocate memory for image."
    exc = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /build/ITK/itkImageFileReader.hxx:135:\n"
                       "ITK ERROR: ImageFileReader(0x55d0): Could not create IO object for reading file a.xyz")
    assert _read_error_detail(exc, "") == "ITK ERROR: ImageFileReader: Could not create IO object for reading file a.xyz"


def test_nifti_cut_short_names_the_missing_bytes(tmp_path):
    whole = tmp_path / "ct.nii"
    sitk.WriteImage(ct_image(), str(whole))
    data = whole.read_bytes()
    cut = _write_bytes(tmp_path / "cut.nii", data[:-1000])
    voxels = 2 * 96 * 96 * 4
    with pytest.raises(InputError, match=rf"cut\.nii: the file is cut short \({voxels - 1000} of {voxels} bytes"):
        read_volume(cut)


def test_a_write_that_fails_leaves_the_earlier_file_whole_and_nothing_else(tmp_path, monkeypatch):
    dest = tmp_path / "out.nrrd"
    write_image(ct_image(), dest)
    before = dest.read_bytes()

    def fails_half_way(image, path, *args):
        with open(path, "wb") as f:
            f.write(before[: len(before) // 2])
        raise RuntimeError("Exception thrown in SimpleITK WriteImage: ...\nitk::ERROR: NrrdImageIO(0x55d0): "
                           "couldn't write gzip data")

    monkeypatch.setattr(sitk, "WriteImage", fails_half_way)
    # ITK's error becomes an OSError naming the file: one line from the command line, as any failed write
    with pytest.raises(OSError, match=r"cannot write .*out\.nrrd: itk::ERROR: NrrdImageIO: couldn't write gzip data"):
        write_image(ct_image(seed=5), dest)
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.nrrd"]  # no temporary folder left behind


def test_an_interrupted_write_leaves_no_folder_it_made(tmp_path):
    """Ctrl-C during the write of a result into a new --out left that folder, empty."""
    from EDIQALib.io import staged_in

    with pytest.raises(KeyboardInterrupt):
        with staged_in(tmp_path / "out" / "ct") as staging:
            (staging / "result.json").write_text("{}", encoding="utf-8")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept.txt").write_text("a user's file", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt):
        with staged_in(tmp_path / "out" / "ct"):
            raise KeyboardInterrupt
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["kept.txt"]  # what was there stays


@pytest.fixture
def ctrl_c_on_the_first_rename(monkeypatch, ctrl_c_interrupts):
    """Ctrl-C arrives as the first staged file is renamed into place."""
    import signal

    from EDIQALib import io

    replace = os.replace

    def interrupted(src, dst):
        replace(src, dst)
        if not interrupted.sent:
            interrupted.sent = True
            os.kill(os.getpid(), signal.SIGINT)

    interrupted.sent = False
    monkeypatch.setattr(io.os, "replace", interrupted)


def _earlier_set(folder, names):
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text("old", encoding="utf-8")


def test_an_interrupt_while_a_set_is_renamed_into_place_leaves_it_whole(tmp_path, ctrl_c_on_the_first_rename):
    """Ctrl-C as the files of a result were renamed over an earlier run's left the set half old, half new;
    it now waits for the renames, and the temporary folder's removal, to end."""
    from EDIQALib.io import staged_in

    names = ["heatmap.nrrd", "overlay.png", "result.json"]
    _earlier_set(tmp_path / "out", names)
    with pytest.raises(KeyboardInterrupt):
        with staged_in(tmp_path / "out") as staging:
            for name in names:
                (staging / name).write_text("new", encoding="utf-8")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # no temporary folder left
    assert {(tmp_path / "out" / n).read_text(encoding="utf-8") for n in names} == {"new"}


def test_an_interrupt_between_the_folders_of_one_set_leaves_the_set_whole(tmp_path, ctrl_c_on_the_first_rename):
    """A comparison's inputs and summary are renamed into place folder by folder: Ctrl-C after the first
    left that folder new and the others old."""
    from EDIQALib.io import staged_together

    out = tmp_path / "out"
    for folder in (out, out / "a", out / "b"):
        _earlier_set(folder, ["result.json"])
    with pytest.raises(KeyboardInterrupt):
        with staged_together() as stage:
            for folder in (out, out / "a", out / "b"):
                (stage(folder) / "result.json").write_text("new", encoding="utf-8")
    assert {(f / "result.json").read_text(encoding="utf-8") for f in (out, out / "a", out / "b")} == {"new"}
    assert not [p for p in out.rglob(".tmp*")]
    with pytest.raises(RuntimeError):  # an error before the end: every folder's earlier set stays
        with staged_together() as stage:
            (stage(out / "a") / "result.json").write_text("newer", encoding="utf-8")
            raise RuntimeError("failed")
    assert (out / "a" / "result.json").read_text(encoding="utf-8") == "new" and not list(out.rglob(".tmp*"))

def test_a_file_open_elsewhere_where_that_blocks_its_replacement_leaves_the_set_whole(tmp_path, monkeypatch):
    """On Windows a file another program holds open (compare.csv in a spreadsheet) cannot be renamed over:
    the inputs' folders were replaced and the summary not, and the error named a temporary file just removed.
    Here the system's refusal is played by a lock on the summary's file."""
    import builtins

    from EDIQALib import io as engine_io
    from EDIQALib.io import staged_together

    out = tmp_path / "out"
    for folder in (out, out / "a"):
        _earlier_set(folder, ["compare.csv" if folder == out else "result.json"])
    held = out / "compare.csv"
    opened = builtins.open

    def spreadsheet(file, mode="r", *args, **kwargs):
        if Path(file) == held and mode != "r":
            raise PermissionError(13, "The process cannot access the file", str(file))
        return opened(file, mode, *args, **kwargs)

    monkeypatch.setattr(engine_io, "_OPEN_FILES_BLOCK_REPLACE", True)
    monkeypatch.setattr(builtins, "open", spreadsheet)
    with pytest.raises(InputError, match=f"^{re.escape(str(held))} cannot be replaced: it is open in another program"):
        with staged_together() as stage:
            summary = stage(out)  # staged first, renamed last
            (stage(out / "a") / "result.json").write_text("new", encoding="utf-8")
            (summary / "compare.csv").write_text("new", encoding="utf-8")
    monkeypatch.undo()
    assert {(f / n).read_text(encoding="utf-8") for f, n in ((out, "compare.csv"), (out / "a", "result.json"))} == {
        "old"} and not list(out.rglob(".tmp*"))


def test_a_rename_that_fails_puts_back_every_folder_of_the_set(tmp_path, monkeypatch):
    """Where a rename fails (a file made immutable, another user's in a shared folder), the files and
    folders of the set renamed before it are put back, a link among them as the link it was: a teacher
    series left its summary new and an input's results old, and the link was deleted."""
    from EDIQALib.io import staged_together

    out = tmp_path / "out"
    for folder in (out, out / "a"):
        _earlier_set(folder, ["result.json", "z.txt"])
    (tmp_path / "elsewhere.json").write_text("the user's", encoding="utf-8")
    (out / "a" / "result.json").unlink()
    (out / "a" / "result.json").symlink_to(tmp_path / "elsewhere.json")
    replace = os.replace

    def refused(src, dst):
        if Path(dst) == out / "z.txt":  # the summary's folder, renamed last; its first file already in
            raise PermissionError(1, "Operation not permitted", str(src), None, str(dst))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(PermissionError):
        with staged_together() as stage:
            summary = stage(out)
            for folder, staging in ((out / "a", stage(out / "a")), (out, summary)):
                for name in ("result.json", "z.txt"):
                    (staging / name).write_text("new", encoding="utf-8")
    monkeypatch.undo()
    assert (out / "a" / "result.json").is_symlink() and (out / "a" / "result.json").read_text(encoding="utf-8") == "the user's"
    assert {(f / n).read_text(encoding="utf-8") for f, n in ((out, "result.json"), (out, "z.txt"), (out / "a", "z.txt"))
            } == {"old"} and not list(out.rglob(".tmp*"))


def test_a_nifti_in_two_gzip_members_is_counted_not_refused(tmp_path):
    # gzip's trailer states only the last member's length: such a stream is decompressed and counted
    plain = tmp_path / "ct.nii"
    sitk.WriteImage(ct_image(), str(plain))
    data = plain.read_bytes()
    members = gzip.compress(data[:5000]) + gzip.compress(data[5000:])
    two = _write_bytes(tmp_path / "two.nii.gz", members)
    assert np.array_equal(read_volume(two).array, read_volume(plain).array)
    cut = _write_bytes(tmp_path / "cut.nii.gz", members[:-2000])
    with pytest.raises(InputError, match="cut short"):
        read_volume(cut)


def test_a_malformed_metaimage_prints_nothing_and_stderr_stays_usable(tmp_path, capfd):
    # MetaIO prints its complaints on file descriptor 2 itself, beside the exception SimpleITK raises
    good = _save_image(tmp_path, ct_image(), "good.mha")
    data = good.read_bytes()
    cut = _write_bytes(tmp_path / "cut.mha", data[: int(0.6 * len(data))])
    with pytest.raises(InputError, match=r"cut\.mha: .*\(the image library says: MetaImage: M_ReadElementsData: data not read completely\)"):
        read_volume(cut)
    assert read_volume(good).array.shape == (2, 96, 96)
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_a_read_error_names_what_went_wrong_not_a_warning_header():
    from EDIQALib.io import _read_error_detail

    raised = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: x.cxx:99:\n"
                          "sitk::ERROR: Unable to determine ImageIO reader for \"g.nii\"")
    assert _read_error_detail(raised, "") == 'sitk::ERROR: Unable to determine ImageIO reader for "g.nii"'
    printed = "WARNING: In itkNiftiImageIO.cxx, line 1053\nNiftiImageIO (0x55d0): g.nii is not a NIfTI file\n"
    assert _read_error_detail(raised, printed) == "NiftiImageIO : g.nii is not a NIfTI file"


def test_unsupported_dicom_modality_is_rejected(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Modality = "US"
    ds.save_as(tmp_path / "us.dcm")
    with pytest.raises(InputError, match="not supported"):
        read_volume(tmp_path / "us.dcm")


def test_a_series_must_be_of_one_modality(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.save_as(tmp_path / "ct.dcm")
    ds.Modality = "MR"  # the same grid and voxels
    ds.save_as(tmp_path / "mr.dcm")
    ct, mr = read_volume(tmp_path / "ct.dcm"), read_volume(tmp_path / "mr.dcm")
    check_same_geometry([ct, read_volume(tmp_path / "ct.dcm")], "inputs of one series")
    with pytest.raises(InputError, match="inputs of one series must be of one modality, but ct is CT and mr is MR"):
        check_same_geometry([ct, mr], "inputs of one series")


@pytest.mark.parametrize("change, says", [
    (lambda im: im.SetOrigin((im.GetOrigin()[0] + 50.0, *im.GetOrigin()[1:])), "origin"),  # 50 mm away
    (lambda im: im.SetSpacing((0.7, 0.7, 2.5)), "spacing"),  # 0.8 mm pixels in the first
    (lambda im: im.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1)), "direction"),  # not oblique
], ids=["origin", "spacing", "direction"])
def test_versions_on_grids_that_differ_are_refused(change, says):
    """Versions of one slice on grids that differ in origin, spacing or direction alone (the same voxels)
    are refused, naming the property; copies of one grid are accepted."""
    first = volume_from_image(ct_image(slices=1, size=64), "a", modality="ct")
    other = ct_image(slices=1, size=64)
    check_same_geometry([first, volume_from_image(other, "b", modality="ct")], "inputs of one series")
    change(other)
    with pytest.raises(InputError, match=f"inputs of one series must share one grid, but a and b differ in {says}"):
        check_same_geometry([first, volume_from_image(other, "b", modality="ct")], "inputs of one series")


def test_modality_override_is_validated(ct_volume_file):
    assert read_volume(ct_volume_file, "mr").modality == "mr"
    with pytest.raises(InputError, match="unknown modality"):
        read_volume(ct_volume_file, "pet")


def test_an_input_the_user_may_not_read_is_said_so(tmp_path, monkeypatch, ct_volume_file):
    """ITK called such a file one that "does not exist", and such a folder one with no DICOM series."""
    import EDIQALib.io as io

    monkeypatch.setattr(io.os, "access", lambda path, mode: False)  # as another user (the tests may run as root)
    for path in (ct_volume_file, tmp_path):
        with pytest.raises(InputError, match=f"cannot read {re.escape(str(path))}: permission denied"):
            read_volume(path)


def test_a_volume_keeps_the_geometry_of_its_image_not_its_voxels():
    """The image as read was kept beside the volume's float32 array: a second copy of every voxel (for a
    float64 file, twice the array's size)."""
    import gc
    import weakref

    image = sitk.Cast(ct_image(), sitk.sitkFloat64)
    read = weakref.ref(image)
    vol = volume_from_image(image, "ct")
    expected = (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    del image
    gc.collect()
    assert read() is None
    geometry = vol.geometry
    assert (geometry.size, geometry.spacing, geometry.origin, geometry.direction) == expected  # exactly


def test_an_output_is_no_input_by_a_hard_link_and_no_longer_a_name_than_its_folder_takes(tmp_path):
    source = tmp_path / "in.nrrd"
    source.write_bytes(b"x")
    os.link(source, tmp_path / "linked.nrrd")
    with pytest.raises(InputError, match="would overwrite the input linked.nrrd"):
        check_outputs([tmp_path / "linked.nrrd"], [source])
    long_name = "a" * 300 + ".nrrd"
    with pytest.raises(InputError, match=rf"cannot write into {tmp_path}: the name a{{40}}… is longer than the 255 bytes its"):
        check_outputs([tmp_path / "out" / long_name], [source])
    check_outputs([tmp_path / "out" / ("a" * 250 + ".nrrd")], [source])
    assert sorted(f.name for f in tmp_path.iterdir()) == ["in.nrrd", "linked.nrrd"]


def test_a_series_file_whose_name_is_not_utf8_is_one_line(tmp_path):
    """The folder's name was checked, but not its files': ITK was given them by name, a TypeError."""
    write_dicom_series(tmp_path / "series", ct_image(slices=2, spacing=(0.7, 0.7, 2.0)))
    first = sorted((tmp_path / "series").iterdir())[0]
    first.rename(first.with_name(os.fsdecode(b"s\xe9.dcm")))
    with pytest.raises(InputError, match="a name in this path is not UTF-8 text"):
        read_volume(tmp_path / "series")


def _header_pointing_to_a_pipe(tmp_path, kind: str) -> Path:
    """A header file (NIfTI pair, MetaImage, detached NRRD) whose data file is a named pipe."""
    image = ct_image(slices=1)
    if kind == "nifti-pair":
        sitk.WriteImage(image, str(tmp_path / "ct.hdr"))
        data, header = tmp_path / "ct.img", tmp_path / "ct.hdr"
    elif kind == "metaimage":
        sitk.WriteImage(image, str(tmp_path / "ct.mhd"))
        data, header = tmp_path / "ct.raw", tmp_path / "ct.mhd"
    else:
        sitk.WriteImage(image, str(tmp_path / "ct.nhdr"))
        data, header = tmp_path / "ct.raw", tmp_path / "ct.nhdr"
    assert data.is_file()
    data.unlink()
    os.mkfifo(data)
    return header


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
@pytest.mark.parametrize("kind", ["nifti-pair", "metaimage", "detached-nrrd"])
def test_a_header_whose_data_file_is_a_pipe_is_refused(tmp_path, kind):
    """ITK waited for the pipe's writer forever (the input itself, a pipe, was refused; its data file not)."""
    header = _header_pointing_to_a_pipe(tmp_path, kind)
    with pytest.raises(InputError, match=rf"cannot read {header.name}: its data file ct\.(img|raw) is not a file"):
        read_volume(header)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
@pytest.mark.parametrize("header, field, files", [
    ("ct.mhd", "ElementDataFile = LIST\nslab0.raw\nslab1.raw\n\nnotes.txt\n", ["slab0.raw", "slab1.raw"]),
    ("ct.mhd", "ElementDataFile = slab%d.raw 0 1 1\n", ["slab0.raw", "slab1.raw"]),
    ("ct.mhd", "ElementDataFile = slab%d.raw\n", ["slab1.raw", "slab2.raw"]),  # MetaIO's MIN 1, MAX its slices
    ("ct.mhd", "ElementDataFile = slab%d.raw 0 1000000000 1\n", ["slab0.raw", "slab1.raw"]),  # its slices only
    ("ct.nhdr", "data file: LIST\nslab0.raw\nslab1.raw\n", ["slab0.raw", "slab1.raw"]),
    ("ct.nhdr", "data file: slab%02d.raw 0 1 1\n", ["slab00.raw", "slab01.raw"]),
    ("ct.nhdr", "data file: slab%d.raw 1 0 -1\n", ["slab1.raw", "slab0.raw"]),
    ("ct.nhdr", "data file: LIST\n" + "".join(f"sub/{'x' * 200}{k}.raw\n" for k in range(2)),
     [f"sub/{'x' * 200}{k}.raw" for k in range(2)])])
def test_a_pipe_among_the_data_files_a_header_lists_or_patterns_is_refused(tmp_path, header, field, files):
    """A header's data files given as a LIST or a pattern were not looked at: ITK waited for a pipe among
    them forever. They are read as ITK reads them (MetaIO's LIST: as many names as slices; a pattern's
    defaults and steps down), and are inputs too, that no output may replace."""
    array = sitk.GetArrayFromImage(ct_image()).astype(np.int16)
    (tmp_path / "sub").mkdir()
    for name, part in zip(files, array):
        (tmp_path / name).write_bytes(np.ascontiguousarray(part).astype("<i2").tobytes())
    if header.endswith(".mhd"):
        text = ("ObjectType = Image\nNDims = 3\nDimSize = 96 96 2\nElementSpacing = 0.7 0.7 2\n"
                "ElementType = MET_SHORT\nElementByteOrderMSB = False\n" + field)
    else:
        text = ("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 96 96 2\n"
                "space directions: (0.7,0,0) (0,0.7,0) (0,0,2)\nendian: little\nencoding: raw\n"
                "space origin: (0,0,0)\n" + field)
    (tmp_path / header).write_text(text, encoding="utf-8")
    np.testing.assert_array_equal(read_volume(tmp_path / header).array, array)
    assert set(input_files([tmp_path / header])) == {resolved(tmp_path / n) for n in [header, *files]}
    (tmp_path / files[1]).unlink()
    os.mkfifo(tmp_path / files[1])
    with pytest.raises(InputError, match=re.escape(f"cannot read {header}: its data file {files[1]} is not a file")):
        read_volume(tmp_path / header)


def test_a_data_file_pattern_of_no_integer_conversion_is_left_to_the_image_library(tmp_path):
    """A ``%c`` pattern of -1 ended in a traceback (Python's formatting refused it)."""
    (tmp_path / "ct.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 96 96 2\nElementType = MET_SHORT\n"
                                     "ElementDataFile = slab%c.raw -1 0 1\n", encoding="utf-8")
    with pytest.raises(InputError, match="^cannot read ct.mhd: "):
        read_volume(tmp_path / "ct.mhd")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_pipe_in_or_below_a_series_folder_is_named_not_waited_for(tmp_path):
    """GDCM's scan left a good slice out beside a pipe (and the slice was blamed); a pipe in a sub-folder of a
    folder without a series was opened to look for DICOM files, and waited for forever."""
    write_dicom_series(tmp_path / "series", ct_image(slices=3, spacing=(0.7, 0.7, 2.0)))
    os.mkfifo(tmp_path / "series" / "zz.dcm")
    with pytest.raises(InputError, match=r"series: zz\.dcm is not a file \(a pipe or a device\); move it out"):
        read_volume(tmp_path / "series")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    os.mkfifo(tmp_path / "empty" / "sub" / "a")
    with pytest.raises(InputError, match="no DICOM series found in folder"):
        read_volume(tmp_path / "empty")


def test_a_series_of_multi_frame_files_is_refused(tmp_path):
    """Their frames were stacked as slices of the files (a traceback, or the direction read from a 4-D image)."""
    stored = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    (tmp_path / "frames").mkdir()
    for k in range(2):
        _write_enhanced_ct(tmp_path / "frames" / f"ct{k}.dcm", np.stack([stored] * 3), 2.0, [6.0 * k + 2.0 * j for j in range(3)])
        ds = pydicom.dcmread(tmp_path / "frames" / f"ct{k}.dcm")
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.InstanceNumber = "1.2.3.4", f"1.2.3.4.{k}", k + 1
        ds.save_as(tmp_path / "frames" / f"ct{k}.dcm")
    with pytest.raises(InputError, match=r"frames: its 2 files hold several frames each \(multi-frame files\)"):
        read_volume(tmp_path / "frames")


@pytest.mark.parametrize("position", ["abc", "nan"])
def test_a_frame_whose_position_is_no_number_is_refused(tmp_path, position):
    stored = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    _write_enhanced_ct(tmp_path / "ct.dcm", np.stack([stored] * 3), 2.0)
    data = (tmp_path / "ct.dcm").read_bytes()
    z = b"-73.699997"  # frame 2's, as written (CT_small's z, -75.699997, plus 2 mm)
    assert data.count(z) == 1
    # a traceback for "abc", a message of frames out of order for NaN
    (tmp_path / "ct.dcm").write_bytes(data.replace(z, position.encode().ljust(len(z))))
    with pytest.raises(InputError, match=r"ct\.dcm: frame 2 has no position \(Image Position Patient\)"):
        read_volume(tmp_path / "ct.dcm")


def test_a_multi_frame_file_with_fewer_frames_than_its_header_says_is_refused(tmp_path):
    """GDCM read the missing frame as air, and it was scored as a second slice (not assessable)."""
    stored = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    _write_enhanced_ct(tmp_path / "ct.dcm", np.stack([stored] * 2), 2.0)
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(tmp_path / "ct.dcm")
    with pytest.raises(InputError, match=r"ct\.dcm: the file is cut short, or its header damaged: its pixel data hold "
                                         r"32768 of the 65536 bytes that 2 frames of 128 × 128 take"):
        read_volume(tmp_path / "ct.dcm")


@pytest.mark.parametrize("spacing", [[0, 0], ["nan", "nan"], [-1, -1]])
def test_a_dicom_pixel_spacing_of_zero_or_no_number_is_refused(tmp_path, spacing):
    """GDCM read it as 1 mm (a 0.66 mm slice's score went from 0.08 to 0.17). A negative one was called
    "missing, zero or not a number"."""
    write_dicom_series(tmp_path / "series", ct_image(slices=2, spacing=(0.7, 0.7, 2.0)))
    for f in (tmp_path / "series").iterdir():
        _retag(f, PixelSpacing=spacing)
    for given in (tmp_path / "series", tmp_path / "series" / "slice000.dcm"):
        with pytest.raises(InputError, match=r"no pixel spacing \(DICOM Pixel Spacing missing, not above zero, or not a number\)"):
            read_volume(given)


def test_a_nifti_or_nrrd_spacing_of_zero_or_no_number_and_a_damaged_nifti_offset_are_refused(tmp_path):
    """ITK read a pixdim of 0 or NaN, and a NRRD spacing of NaN, as 1 mm, and a negative pixdim mirrored (its
    sform dropped for its qform); a negative vox_offset read the header's bytes as voxels."""
    sitk.WriteImage(ct_image(slices=2), str(tmp_path / "ct.nii"))
    data = bytearray((tmp_path / "ct.nii").read_bytes())
    for name, offset, value in (("pixdim0", 80, 0.0), ("pixdimnan", 84, float("nan")), ("offset", 108, -100.0),
                                ("negative", 80, -0.8)):
        spoilt = bytearray(data)
        spoilt[offset:offset + 4] = np.float32(value).tobytes()
        (tmp_path / f"{name}.nii").write_bytes(spoilt)
    with pytest.raises(InputError, match=r"pixdim0\.nii: its voxel size \(0 × 0\.8 × 2\.5 mm, the header's pixdim\) is zero"):
        read_volume(tmp_path / "pixdim0.nii")
    with pytest.raises(InputError, match=r"pixdimnan\.nii: its voxel size \(0\.8 × nan × 2\.5 mm"):
        read_volume(tmp_path / "pixdimnan.nii")
    with pytest.raises(InputError, match=r"negative\.nii: its voxel size \(-0\.8 × 0\.8 × 2\.5 mm, the header's pixdim\) is "
                                         "zero, negative"):
        read_volume(tmp_path / "negative.nii")
    with pytest.raises(InputError, match=r"offset\.nii: its NIfTI header is damaged \(the image data start at byte -100\)"):
        read_volume(tmp_path / "offset.nii")
    with pytest.raises(InputError, match=r"nan\.nrrd: its space directions \(\(nan,0,0\) .*\) are not all numbers"):
        read_volume(_nrrd_with_directions(tmp_path / "nan.nrrd", b"(nan,0,0) (0,0.7,0) (0,0,2)"))


def _nrrd_with_directions(path: Path, directions: bytes) -> Path:
    """A small CT volume written to NRRD at ``path``, its header's space directions replaced by ``directions``."""
    sitk.WriteImage(ct_image(slices=2), str(path), False)
    head, body = path.read_bytes().split(b"\n\n", 1)
    path.write_bytes(re.sub(rb"space directions: .*", b"space directions: " + directions, head) + b"\n\n" + body)
    return path


def test_a_label_map_image_is_refused_not_the_end_of_the_process():
    """SimpleITK aborts the whole process (Slicer's, in the Python API) on the array view of a label map."""
    labels = sitk.Cast(sitk.Cast(ct_image(slices=1) > 0, sitk.sitkUInt8), sitk.sitkLabelUInt8)
    with pytest.raises(InputError, match="ct: label-map pixels"):
        volume_from_image(labels, "ct")


def test_an_interrupt_during_a_read_does_not_lose_the_line_that_says_so():
    """An interrupt can end a read before its redirection of stderr to the read's log is undone (that clean-up
    runs when the exception's frames are freed): "ediqa: interrupted" went into the log, and the command ended
    without a word."""
    import subprocess
    import sys

    code = ("import tempfile\nfrom EDIQALib.commands import process\nfrom EDIQALib.io import _native_stderr_to\n"
            "log = tempfile.TemporaryFile()\nredirection = _native_stderr_to(log)\n"
            "redirection.__enter__()  # as an interrupt leaves it: not yet exited\n"
            "code = process.interrupted()\nredirection.__exit__(None, None, None)\nraise SystemExit(code)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 130 and out.stderr == "ediqa: interrupted\n", out.stderr


@pytest.mark.parametrize("orientation", [[0, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0]], ids=["zeros", "one-line"])
def test_a_dicom_orientation_that_is_no_pair_of_directions_is_refused(tmp_path, orientation):
    """GDCM read it as axial without a word."""
    write_dicom_series(tmp_path / "series", ct_image(slices=2, spacing=(0.7, 0.7, 2.0)))
    for f in (tmp_path / "series").iterdir():
        _retag(f, ImageOrientationPatient=orientation)
    for given, name in ((tmp_path / "series", "series"), (tmp_path / "series" / "slice000.dcm", r"slice000\.dcm")):
        with pytest.raises(InputError, match=rf"{name}: its orientation \(.*\) is not two perpendicular directions"):
            read_volume(given)


def test_deflated_dicom_and_a_secondary_capture_with_a_nominal_spacing_read_with_their_spacing(tmp_path):
    """Neither is cut short or without a spacing: a deflated file's pixel data lie at offsets of the inflated
    stream, and GDCM reads a secondary capture's spacing from Nominal Scanned Pixel Spacing."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.NominalScannedPixelSpacing = ds.PixelSpacing
    del ds.PixelSpacing
    ds.save_as(tmp_path / "capture.dcm")
    for name in ("deflated.dcm", "capture.dcm"):
        assert read_volume(tmp_path / name).spacing[:2] == pytest.approx((0.661468, 0.661468))


@pytest.mark.parametrize("sizes, spacings, kinds, says", [
    ("80 80 2 1", "0.7 0.7 2 nan", "domain domain domain list", None),  # NaN along a non-spatial axis, as NRRD writes
    ("3 80 80 2", "nan 0.7 0.7 2", "vector domain domain domain", r"vec: 3-component pixels"),
    ("80 80 2", "0.7 nan 2", "domain domain domain", r"vec\.nrrd: its spacings \(0\.7 nan 2\) are not all numbers"),
], ids=["time-point", "vector", "in-plane"])
def test_a_nrrd_spacing_of_nan_is_refused_along_the_image_s_axes_only(tmp_path, sizes, spacings, kinds, says):
    voxels = math.prod(map(int, sizes.split()))
    data = np.full(voxels, -1000, "<i2")
    data[::7] = 40  # not constant
    header = (f"NRRD0004\ntype: short\ndimension: {len(sizes.split())}\nsizes: {sizes}\nspacings: {spacings}\n"
              f"kinds: {kinds}\nendian: little\nencoding: raw\n\n")
    (tmp_path / "vec.nrrd").write_bytes(header.encode() + data.tobytes())
    if says is None:
        assert read_volume(tmp_path / "vec.nrrd").spacing == pytest.approx((0.7, 0.7, 2.0))
    else:
        with pytest.raises(InputError, match=says):
            read_volume(tmp_path / "vec.nrrd")


def test_a_sheared_grid_and_a_slice_spacing_no_image_has_are_refused(tmp_path):
    """Rows and columns 60° apart were assessed as a square grid (DICOM refused the same); a slice spacing of
    1e160 mm wrote a heatmap.nrrd that read back at 1 mm, one of 1e-300 mm one that could not be read."""
    flat = ct_image(slices=1)[:, :, 0]
    flat.SetDirection((1, 0.5, 0, 0.8660254))  # columns (1, 0) and (0.5, 0.87)
    with pytest.raises(InputError, match=r"^ct: its rows and columns are not two perpendicular directions \(direction "
                                         r"1, 0\.5, 0, 0\.866025\); a sheared grid cannot be assessed$"):
        volume_from_image(flat, "ct")
    with pytest.raises(InputError, match=r"^sheared: its rows and columns are not two perpendicular directions"):
        read_volume(_nrrd_with_directions(tmp_path / "sheared.nrrd", b"(0.8,0,0) (0.4,0.8,0) (0,0,2)"))
    for spacing in (1e160, 1e-300):
        image = ct_image(slices=2, spacing=(0.8, 0.8, spacing))
        sitk.WriteImage(image, str(tmp_path / "far.mha"))
        with pytest.raises(InputError, match=rf"^far: its slice spacing \({re.escape(f'{spacing:g}')} mm, direction .*\) is no image's$"):
            read_volume(tmp_path / "far.mha")
    tilted = ct_image(slices=2, direction=(1, 0, 0, 0, 1, 0.3, 0, 0, 0.954))  # slices stacked aslant (a gantry tilt)
    sitk.WriteImage(tilted, str(tmp_path / "tilted.nrrd"))
    assert read_volume(tmp_path / "tilted.nrrd").geometry.direction == pytest.approx((1, 0, 0, 0, 1, 0.3, 0, 0, 0.954), abs=1e-3)


def test_a_full_device_while_an_image_is_written_says_so_and_names_the_user_s_file(tmp_path, monkeypatch):
    """ITK's error named the temporary file (cut at 120 characters) and never said the device was full."""
    import shutil

    from EDIQALib.io import write_image

    def full(image, path, *args):
        raise RuntimeError(f"ITK ERROR: NrrdImageIO: Write: Error writing {path}")

    monkeypatch.setattr(sitk, "WriteImage", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 20, 10 << 20, 4096))
    with pytest.raises(OSError, match=f"^cannot write {re.escape(str(tmp_path / 'out' / 'h.nrrd'))}: no space left on the device$"):
        write_image(sitk.Image(8, 8, sitk.sitkFloat32), tmp_path / "out" / "h.nrrd")
    assert not (tmp_path / "out").exists()


def test_an_output_path_too_long_to_be_staged_is_refused_before_any_work(tmp_path):
    """A path a few bytes under the system's longest passed the check, and the run failed at its end: the
    temporary folders an output is written in first add to its path."""
    from EDIQALib.io import check_outputs

    limit = os.pathconf(tmp_path, "PC_PATH_MAX") if hasattr(os, "pathconf") else None
    if limit is None:
        pytest.skip("the file system does not say its longest path")
    folder = tmp_path
    while len(os.fsencode(str(folder))) < limit - 60:
        folder = folder / ("d" * min(200, limit - 60 - len(os.fsencode(str(folder)))))
    with pytest.raises(InputError, match="leaves too few of the .* for the temporary folders"):
        check_outputs([folder / "result.json"], [])
    assert not any(tmp_path.iterdir())
    check_outputs([tmp_path / "out" / "result.json"], [])
