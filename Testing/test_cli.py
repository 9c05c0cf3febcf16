"""The CLI end to end: outputs and geometry, progress events, series, and bad input (exit 2, one line)."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_fill_holes

from EDIQALib.commands.images import folder_names
from EDIQALib.errors import InputError
from EDIQALib.io import check_outputs, read_volume
from EDIQALib.simulate import ACQUIRED_NOISE_SD_HU, correlated_noise, phantom
from conftest import ct_image, ediqa, water_cylinder, write_dicom_series

TINY = ["--realizations", "2", "--repeats", "1"]


def assert_one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ediqa: error:"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_teacher_writes_results_in_input_geometry(tmp_path):
    src = tmp_path / "ct.nrrd"
    body = ct_image(slices=2, size=200, spacing=(0.7, 0.7, 2.5))
    # air below and right of the body (rows and columns added at the far end: the origin stays), so that a
    # map flipped or transposed does not land on the body
    hu = np.pad(sitk.GetArrayFromImage(body), ((0, 0), (0, 40), (0, 70)), constant_values=-1000.0)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(body.GetSpacing())
    image.SetOrigin(body.GetOrigin())
    image.SetDirection(body.GetDirection())
    sitk.WriteImage(image, str(src))
    before = src.read_bytes()
    out = tmp_path / "out"
    proc = ediqa("teacher", src, *TINY, "--out", out, "--progress", "jsonl")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]  # JSON lines, the result's too
    done = [e["done"] for e in records if e.get("stage") == "slices"]
    assert done == [1, 2]
    teacher = [(e["done"], e["total"]) for e in records if e.get("stage") == "teacher"]
    assert teacher == [(1, 2), (2, 2)]  # one count over the volume (1 repeat of 2 slices), not one per slice
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert records[-1]["score"] == pytest.approx(result["score"], abs=1e-6)
    assert result["method"] == "mD2IQA"
    assert len(result["slice_scores"]) == 2 and result["assessable"] == [True, True]
    assert result["shape"] == [270, 240, 2]
    assert len(result["model"]["sha256"]) == 64
    heat = sitk.ReadImage(str(out / "heatmap.nrrd"))
    assert heat.GetSize() == image.GetSize()
    np.testing.assert_allclose(heat.GetSpacing(), image.GetSpacing())
    np.testing.assert_allclose(heat.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(heat.GetDirection(), image.GetDirection(), atol=1e-6)
    assert heat.GetPixelID() == sitk.sitkFloat32
    defined = np.isfinite(sitk.GetArrayFromImage(heat))  # around the inserted lesions, all inside the body
    inside = np.stack([binary_fill_holes(k > -500.0) for k in hu])
    assert defined.sum() > 1000 and inside[defined].mean() > 0.99
    assert (out / "overlay.png").stat().st_size > 10_000
    assert src.read_bytes() == before  # the input is never modified


def test_teacher_series_shares_maps_and_summarises(tmp_path):
    image = ct_image(slices=1, size=200, spacing=(0.7, 0.7, 1.0))
    a = tmp_path / "a.nrrd"
    sitk.WriteImage(image, str(a))
    b = tmp_path / "b.nrrd"
    shutil.copy(a, b)
    arr = sitk.GetArrayFromImage(image)
    arr[:, :, 110:] = -1000.0  # c: the same slice with its right part cut away (a smaller body)
    c = tmp_path / "c.nrrd"
    smaller = sitk.GetImageFromArray(arr)
    smaller.CopyInformation(image)
    sitk.WriteImage(smaller, str(c))
    proc = ediqa("teacher", a, b, c, "--realizations", "2", "--repeats", "2", "--out", tmp_path / "out",
                 "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)  # one JSON object, as a single input's: the folder and each input's
    assert printed["out"] == str(tmp_path / "out")
    assert [(e["name"], e["out"]) for e in printed["inputs"]] == [(n, str(tmp_path / "out" / n)) for n in "abc"]
    ra, rb = (json.loads((tmp_path / "out" / n / "result.json").read_text(encoding="utf-8")) for n in "ab")
    assert ra["score"] == rb["score"]  # identical images, identical insertion maps
    assert len(ra["repeat_scores"]) == 2 and ra["score"] == pytest.approx(np.mean(ra["repeat_scores"]), abs=1e-6)
    assert ra["score_se"] == pytest.approx(np.std(ra["repeat_scores"], ddof=1) / np.sqrt(2), abs=1e-6)
    # one set of insertion maps for all three, inside the body they share (c's): the same lesions are
    # scored in every version, so each map is defined at the same places, none of them right of the cut
    defined = [np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / n / "heatmap.nrrd"))))
               for n in "abc"]
    assert defined[0].any() and not defined[0][:, :, 110:].any()
    assert all(np.array_equal(defined[0], d) for d in defined[1:])
    summary = json.loads((tmp_path / "out" / "series.json").read_text(encoding="utf-8"))
    own = [json.loads((tmp_path / "out" / n / "result.json").read_text(encoding="utf-8")) for n in "abc"]
    assert [{k: e[k] for k in ("name", "input", "score", "score_se", "assessable_slices", "slices")}
            for e in summary["inputs"]] == [
        {"name": n, "input": str(path), "score": r["score"], "score_se": r["score_se"], "assessable_slices": 1, "slices": 1}
        for n, r, path in zip("abc", own, (a, b, c))]
    first, same, other = summary["inputs"]
    assert first["difference"] is None and first["difference_se"] is None  # the reference of the differences
    assert same["difference"] == 0 and same["difference_se"] == 0  # paired repeats: the same maps, the same image
    paired = np.subtract(own[2]["repeat_scores"], own[0]["repeat_scores"])
    assert other["difference"] == pytest.approx(own[2]["score"] - own[0]["score"], abs=2e-6)
    assert other["difference_se"] == pytest.approx(np.std(paired, ddof=1) / np.sqrt(2), abs=1e-6)
    assert summary["realizations"] == 2 and summary["repeats"] == 2
    assert summary["model"] == own[0]["model"] and summary["model"]["sha256"]  # which detector scored them
    with open(tmp_path / "out" / "series.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["name"], r["input"], float(r["score"])) for r in rows] == [
        (n, str(path), pytest.approx(r["score"])) for n, r, path in zip("abc", own, (a, b, c))]
    assert (tmp_path / "out" / "series.png").read_bytes()[:4] == b"\x89PNG"
    # one input into the same folder: the series' summary, not of this run (it names the three), is named
    proc = ediqa("teacher", a, *TINY, "--out", tmp_path / "out", "--progress", "none")
    assert proc.returncode == 0 and "also holds series.json, series.csv, series.png, which this run" in proc.stderr


def test_simulate_writes_a_dose_series_in_input_geometry(tmp_path):
    src = tmp_path / "ct.nrrd"
    image = ct_image(slices=1, size=96, spacing=(0.7, 0.7, 1.0))
    sitk.WriteImage(image, str(src))
    proc = ediqa("simulate", src, "--doses", "1,0.1", "--views", "90", "--out", tmp_path / "sim", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    files = json.loads(proc.stdout)["outputs"]
    assert len(files) == 2
    imgs = [sitk.ReadImage(f) for f in files]
    # tagged CT: a simulated image whose values do not reach air's is read back as CT, not refused
    assert all(im.GetMetaData("0008|0060") == "CT" for im in imgs)
    for im in imgs:
        assert im.GetSize() == image.GetSize()
        np.testing.assert_allclose(im.GetDirection(), image.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(im.GetOrigin(), image.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(im.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    truth = sitk.GetArrayFromImage(image)
    err = [np.std(sitk.GetArrayFromImage(im) - truth) for im in imgs]
    assert err[1] > err[0]

    # the same folder holds one simulation of an input: another --i0 left its one dose beside the others
    # (noise of 839 HU among doses of 57 and 113), another image of the same name likewise
    sim = ["simulate", "--views", "90", "--out", tmp_path / "sim", "--progress", "none"]
    proc = ediqa(*sim[:1], src, *sim[1:], "--doses", "1,0.1", "--i0", "2000", "--filter", "hann")
    assert proc.returncode == 2 and "ramp.nrrd, simulated with another --i0: this run's images" in proc.stderr
    (tmp_path / "other").mkdir()
    sitk.WriteImage(ct_image(slices=1, size=96, spacing=(0.7, 0.7, 1.0), seed=5), str(tmp_path / "other" / "ct.nrrd"))
    proc = ediqa(*sim[:1], tmp_path / "other" / "ct.nrrd", *sim[1:], "--doses", "0.5")
    assert proc.returncode == 2 and "simulated with another source image" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == sorted(Path(f).name for f in files)
    # a dose added by a run of its own is drawn apart from the others, not nested in them
    proc = ediqa(*sim[:1], src, *sim[1:], "--doses", "0.5")
    assert proc.returncode == 2 and "ramp.nrrd, simulated with another --doses: this run's images" in proc.stderr
    proc = ediqa(*sim[:1], src, *sim[1:], "--doses", "1,0.1", "--filter", "hann")  # the same draws, another filter
    assert proc.returncode == 0, proc.stderr
    for f in (tmp_path / "sim").glob("*.nrrd"):  # as the release before wrote them: doses and views unrecorded
        old = sitk.ReadImage(f)
        settings = json.loads(old.GetMetaData("EDIQA_simulation"))
        old.SetMetaData("EDIQA_simulation", json.dumps({k: v for k, v in settings.items() if k not in ("doses", "views")}))
        sitk.WriteImage(old, f)
    proc = ediqa(*sim[:1], src, *sim[1:], "--doses", "1,0.1", "--filter", "cosine")
    assert proc.returncode == 2 and "by an earlier release, its --doses and --views unrecorded" in proc.stderr
    for f in (tmp_path / "sim").glob("*.nrrd"):
        old = sitk.ReadImage(f)
        old.EraseMetaData("EDIQA_simulation")  # as an earlier release wrote it
        sitk.WriteImage(old, f)
    proc = ediqa(*sim[:1], src, *sim[1:], "--doses", "0.25")
    assert proc.returncode == 2 and "simulated by an earlier release, its settings unrecorded" in proc.stderr


def test_an_interrupted_simulate_leaves_no_part_of_its_series(tmp_path, monkeypatch):
    """The series is moved into place whole at the end: interrupted after its first image was written, it
    leaves none (a series without its low doses would read as complete)."""
    from EDIQALib import cli, io

    src = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=96, spacing=(0.7, 0.7, 1.0)), str(src))
    write, written = io.write_image, []

    def interrupted_after_one(image, path, modality=None):
        if written:
            raise KeyboardInterrupt
        write(image, path, modality)
        written.append(path)

    monkeypatch.setattr(io, "write_image", interrupted_after_one)
    out = tmp_path / "sim"
    assert cli.main(["simulate", str(src), "--doses", "1,0.1", "--views", "60", "--out", str(out),
                     "--progress", "none"]) == 130
    assert len(written) == 1 and not out.exists()


def test_a_simulation_or_split_written_meanwhile_into_the_same_folder_is_found_before_the_images_go_in(
        tmp_path, monkeypatch):
    """Two simulate runs of other seeds into one folder, or two split-series into one --out, each passed the
    check at its start and both went in: one series of two simulations, two exports' series in one folder.
    The other run is played here by writing its output while this one computes."""
    from EDIQALib import simulate

    src = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=96, spacing=(0.7, 0.7, 1.0)), str(src))
    real = simulate.simulate_series

    def meanwhile(*args, **kwargs):  # another simulate of another seed ends first
        monkeypatch.setattr(simulate, "simulate_series", real)
        other = ediqa("simulate", src, "--doses", "0.25", "--views", "90", "--seed", "2", "--out", tmp_path / "sim",
                      "--progress", "none")
        assert other.returncode == 0, other.stderr
        return real(*args, **kwargs)

    monkeypatch.setattr(simulate, "simulate_series", meanwhile)
    proc = ediqa("simulate", src, "--doses", "0.5", "--views", "90", "--out", tmp_path / "sim", "--progress", "none")
    assert proc.returncode == 2 and "dose0.25_views90_ramp.nrrd, simulated with another --seed" in proc.stderr
    assert [p.name for p in (tmp_path / "sim").iterdir()] == ["ct_dose0.25_views90_ramp.nrrd"]  # the other's alone

    series = tmp_path / "series"
    write_dicom_series(series, ct_image(slices=2, size=96), number="3", description="HEAD")
    copy = shutil.copyfile

    def other_split(src_file, dst):  # another split-series put its series into the same folder first
        (tmp_path / "split" / "3-HEAD" / "b-slice000.dcm").write_bytes(b"its slice")
        return copy(src_file, dst)

    monkeypatch.setattr(shutil, "copyfile", other_split)
    proc = ediqa("split-series", series, "--out", tmp_path / "split", "--progress", "none")
    assert proc.returncode == 2 and "3-HEAD already exists: give another --out" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "split" / "3-HEAD").iterdir()) == ["b-slice000.dcm"]


def test_simulate_noise_follows_its_seed_and_differs_between_slices(tmp_path):
    """``--seed`` makes a simulation repeatable and another seed gives other noise; within one run each slice
    has its own noise (two identical slices come out different), and no slice shares its noise with a slice
    of the next seed (slice k + 1 of seed 7 was slice k of seed 8)."""
    src = tmp_path / "ct.nrrd"
    twice = sitk.GetArrayFromImage(ct_image(slices=1, size=96, spacing=(0.7, 0.7, 1.0)))
    image = sitk.GetImageFromArray(np.concatenate([twice, twice]))
    image.SetSpacing((0.7, 0.7, 1.0))
    sitk.WriteImage(image, str(src))
    runs = {}
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        proc = ediqa("simulate", src, "--doses", "0.25", "--views", "90", "--seed", seed, "--out", tmp_path / name,
                     "--progress", "none")
        assert proc.returncode == 0, proc.stderr
        runs[name] = sitk.GetArrayFromImage(sitk.ReadImage(json.loads(proc.stdout)["outputs"][0]))
    assert np.array_equal(runs["a"], runs["b"])
    assert not np.allclose(runs["a"], runs["c"], atol=1.0)
    assert not np.allclose(runs["a"][0], runs["a"][1], atol=1.0)
    assert not np.allclose(runs["a"][1], runs["c"][0], atol=1.0)


def test_an_image_named_twice_is_refused_by_teacher_and_label(tmp_path):
    """The two files of a NIfTI pair name one image: `teacher c.hdr c.img` compared it with itself, and
    `label` labelled an image given by two paths twice."""
    sitk.WriteImage(ct_image(slices=1), str(tmp_path / "c.hdr"))
    proc = ediqa("teacher", tmp_path / "c.hdr", tmp_path / "c.img", *TINY, "--out", tmp_path / "out")
    assert_one_line_error(proc)
    assert "is given twice" in proc.stderr and not (tmp_path / "out").exists()
    (tmp_path / "link.hdr").symlink_to(tmp_path / "c.hdr")
    (tmp_path / "link.img").symlink_to(tmp_path / "c.img")
    proc = ediqa("label", tmp_path / "c.hdr", tmp_path / "link.hdr", "--out", tmp_path / "labels.csv", *TINY)
    assert_one_line_error(proc)
    assert "is given twice" in proc.stderr and not (tmp_path / "labels.csv").exists()


def test_validate_refuses_a_kind_named_twice(tmp_path):
    """`--kinds blur,blur` ran every blur series twice and wrote each twice."""
    proc = ediqa("validate", "--kinds", "blur,blur", *TINY, "--out", tmp_path / "v")
    assert_one_line_error(proc)
    assert "names a kind twice" in proc.stderr and not (tmp_path / "v").exists()


def test_simulate_acquires_at_the_input_s_pixel_spacing(tmp_path):
    """One water cylinder stored at 0.35 and at 0.7 mm pixels: simulated at its own spacing, water stays at
    0 HU in both and the finer pixels come out noisier (less attenuation per pixel for the same photons)."""
    hu = water_cylinder(128)
    roi = (0, slice(49, 79), slice(49, 79))
    sd = {}
    for spacing in (0.35, 0.7):
        image = sitk.GetImageFromArray(hu[None])
        image.SetSpacing((spacing, spacing, 1.0))
        src = tmp_path / f"water{spacing:g}.nrrd"
        sitk.WriteImage(image, str(src))
        proc = ediqa("simulate", src, "--doses", "1", "--views", "90", "--i0", "5e4", "--noiseless",
                     "--out", tmp_path / "sim", "--progress", "none")
        assert proc.returncode == 0, proc.stderr
        water = sitk.GetArrayFromImage(sitk.ReadImage(json.loads(proc.stdout)["outputs"][0]))[roi]
        assert abs(float(water.mean())) < 5.0, spacing
        sd[spacing] = float(water.std())
    assert sd[0.35] > 1.3 * sd[0.7], sd


def test_simulate_grows_the_input_s_own_noise_unless_noiseless(tmp_path):
    """An acquired image's streaky noise grows at a lower dose; ``--noiseless`` adds none of it; the input
    file is left untouched."""
    src = tmp_path / "ct.nrrd"
    hu = phantom(2, kind="body")
    noisy = hu + correlated_noise(hu.shape, 30.0, (1.0, 2.5), np.random.default_rng(0))
    image = sitk.GetImageFromArray(noisy[None].astype(np.float32))
    image.SetSpacing((0.7, 0.7, 1.0))
    sitk.WriteImage(image, str(src))
    before = src.read_bytes()
    extra = {}
    for flag in ((), ("--noiseless",)):
        out = tmp_path / ("plain" if flag else "grown")
        proc = ediqa("simulate", src, "--doses", "1,0.25", *flag, "--out", out, "--progress", "none")
        assert proc.returncode == 0, proc.stderr
        full, quarter = (sitk.GetArrayFromImage(sitk.ReadImage(f))[0] for f in json.loads(proc.stdout)["outputs"])
        extra[out.name] = float(np.std(quarter - full))
    assert src.read_bytes() == before
    assert extra["grown"] > 1.5 * extra["plain"]  # 30 HU of grain x sqrt(3) on top of the projection noise


def _write(path, arr):
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return path


def _metaimage(path, compress=False, edit=lambda data: data):
    """A MetaImage file of a CT volume, its bytes (or its .raw data file's, for .mhd) passed through ``edit``."""
    sitk.WriteImage(ct_image(), str(path), compress)
    data = path.with_suffix(".raw") if path.suffix == ".mhd" else path
    data.write_bytes(edit(data.read_bytes()))
    return path


def _cut(data: bytes) -> bytes:
    return data[: int(0.6 * len(data))]


@pytest.mark.parametrize("make, says", [
    (lambda t: t / "missing.nrrd", "input not found"),
    (lambda t: (t / "no-dicom").mkdir() or t / "no-dicom", "no DICOM series found"),
    (lambda t: (t / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICMgarbage") and t / "corrupt.dcm",
     "cannot read corrupt.dcm"),
    (lambda t: _write(t / "constant.nrrd", np.full((1, 80, 80), 40.0, np.float32)), "image is constant"),
    (lambda t: _write(t / "nan.nrrd", np.where(np.eye(80, dtype=bool)[None], np.nan, -900.0).astype(np.float32)),
     "NaN or infinite"),
    (lambda t: _write(t / "small.nrrd", np.random.default_rng(0).normal(-500, 400, (1, 32, 32)).astype(np.float32)),
     "under 64 pixels"),
    (lambda t: _write(t / "unknown.nrrd", np.random.default_rng(0).normal(300, 30, (1, 80, 80)).astype(np.float32)),
     "cannot tell the modality"),
    (lambda t: (t / "header.mhd").write_text("ObjectType = Image\nNDims = 2\nDimSize = 80 80\n"
                                              "ElementType = MET_SHORT\nElementDataFile = header.raw\n") and t / "header.mhd",
     "data file header.raw is missing"),
    (lambda t: _metaimage(t / "cut.mha", edit=_cut), "damaged or cut short"),
    (lambda t: _metaimage(t / "cut-compressed.mha", True, _cut), "damaged or cut short"),
    (lambda t: _metaimage(t / "cut-raw.mhd", edit=_cut), "damaged or cut short"),
    (lambda t: _metaimage(t / "header-only.mha", edit=lambda d: d[: d.index(b"= LOCAL\n") + 8]), "damaged or cut short"),
    (lambda t: _metaimage(t / "seven-d.mha", edit=lambda d: d.replace(b"NDims = 3", b"NDims = 7")), "cannot read seven-d"),
], ids=["missing", "empty-folder", "corrupt-dicom", "constant", "nan", "small", "unknown-modality", "no-data-file",
        "cut-mha", "cut-compressed-mha", "cut-mhd", "header-only", "seven-d"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, make, says):
    src = make(tmp_path)
    out = tmp_path / "out"
    proc = ediqa("teacher", src, *TINY, "--out", out)
    assert_one_line_error(proc)
    assert says in proc.stderr
    assert not out.exists()  # not even an empty results folder


def test_outputs_that_cannot_be_written_or_would_replace_the_input_are_refused_before_any_work(tmp_path, ct_volume_file):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    other = shutil.copy(ct_volume_file, tmp_path / "other.nrrd")
    for args in (("assess", ct_volume_file, "--out", blocker / "out"),
                 ("simulate", ct_volume_file, "--doses", "1", "--out", blocker / "sim"),
                 ("compare", ct_volume_file, other, "--out", blocker),
                 ("label", ct_volume_file, "--out", blocker / "labels.csv", *TINY)):
        proc = ediqa(*args)
        assert_one_line_error(proc)
        assert "is a file, not a folder" in proc.stderr
    maps = tmp_path / "labels_maps"  # a file where label puts the input's maps: refused before the CSV
    maps.mkdir()
    (maps / Path(ct_volume_file).name).write_text("not a folder")
    assert_one_line_error(ediqa("label", ct_volume_file, "--out", tmp_path / "labels.csv", *TINY))
    assert not (tmp_path / "labels.csv").exists()
    named = tmp_path / "heatmap.nrrd"  # an input named as an output, in the output folder
    shutil.copy(ct_volume_file, named)
    before = named.read_bytes()
    proc = ediqa("assess", named, "--out", tmp_path)
    assert_one_line_error(proc)
    assert "would overwrite the input" in proc.stderr
    assert named.read_bytes() == before and not (tmp_path / "result.json").exists()


@pytest.mark.parametrize("header, field", [("ct.nhdr", "data file: "), ("ct.mhd", "ElementDataFile = ")])
def test_the_data_file_of_a_header_input_is_not_replaced_by_an_output(tmp_path, header, field):
    """A detached NRRD's or MetaImage's data file is an input too: one named result.json, in --out, was
    replaced by the result (the header input alone was protected)."""
    sitk.WriteImage(ct_image(slices=1, size=128), str(tmp_path / header))
    raw = tmp_path / "ct.raw"
    raw.rename(tmp_path / "result.json")
    text = (tmp_path / header).read_text(encoding="latin-1")
    (tmp_path / header).write_text(text.replace(f"{field}ct.raw", f"{field}result.json"), encoding="latin-1")
    before = (tmp_path / "result.json").read_bytes()
    proc = ediqa("assess", tmp_path / header, "--out", tmp_path)
    assert_one_line_error(proc)
    assert "would overwrite the input result.json" in proc.stderr
    assert (tmp_path / "result.json").read_bytes() == before and not (tmp_path / "heatmap.nrrd").exists()


def test_an_unforeseen_os_error_is_one_line_and_exit_2(tmp_path, ct_volume_file, monkeypatch):
    """What no check foresees (a disk that fills up while the outputs are written) ends as every error
    does: exit 2, one line naming the file, no traceback."""
    import errno

    import EDIQALib.io

    def full(image, path, modality=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(EDIQALib.io, "write_image", full)
    out = tmp_path / "sim"
    proc = ediqa("simulate", ct_volume_file, "--doses", "1", "--views", "60", "--out", out)
    assert_one_line_error(proc)
    assert "No space left on device" in proc.stderr and "_dose1_views60_ramp.nrrd" in proc.stderr
    assert not out.exists()


def test_every_input_gets_its_own_result_folder():
    """Inputs of one name (from two folders), an input named as a renamed one or as a summary file, and an
    empty name: before, a later input's results replaced an earlier one's, or met the summary file."""
    assert folder_names(["ctb", "ctb", "ctb-1"]) == ["ctb-2", "ctb-3", "ctb-1"]
    assert folder_names(["a", "compare.json"], ("compare.json", "compare.csv", "compare.png")) == ["a", "compare.json-1"]
    assert folder_names(["", "CT", "ct"]) == ["image-1", "CT-1", "ct-2"]  # one folder on a case-blind disk
    assert folder_names(["recon-a", "recon-b"]) == ["recon-a", "recon-b"]
    assert folder_names(["..", "."]) == ["image-1", "image-2"]  # `...nrrd` wrote its results above --out


def test_no_output_goes_into_an_input_folder(tmp_path):
    series = tmp_path / "dicom-series"  # a DICOM series is read from its folder
    series.mkdir()
    with pytest.raises(InputError, match="into the input folder"):
        check_outputs([series / "result.json"], [series])
    check_outputs([tmp_path / "out" / "result.json"], [series])
    image = tmp_path / "ct.nrrd"  # `simulate ct.nrrd --out ct.nrrd`: not a folder
    image.write_bytes(b"")
    with pytest.raises(InputError, match="into a folder named as the input file"):
        check_outputs([image / "ct_dose1.nrrd"], [image])


@pytest.mark.parametrize("option", [["--doses", "0"], ["--doses", "1,2"], ["--doses", ","], ["--views", "3"],
                                    ["--i0", "-5"], ["--doses", "1,1"], ["--doses", "0.1234567,0.1234568"],
                                    ["--doses", "1e-10"]])
def test_simulate_s_bad_options_are_one_line_and_write_nothing(tmp_path, ct_volume_file, option):
    assert_one_line_error(ediqa("simulate", ct_volume_file, *option, "--out", tmp_path / "sim"))
    assert not (tmp_path / "sim").exists()


def test_simulate_names_a_dose_it_refuses_unrounded(tmp_path, ct_volume_file):
    proc = ediqa("simulate", ct_volume_file, "--doses", "1.0000001", "--out", tmp_path / "sim")
    assert_one_line_error(proc)
    assert "1.0000001: each dose is a fraction of the full dose, above 0 and at most 1" in proc.stderr  # not "dose 1", which lies in it


def test_simulate_s_views_range_is_the_one_it_takes(tmp_path, ct_volume_file):
    proc = ediqa("simulate", ct_volume_file, "--views", "1", "--out", tmp_path / "sim")
    assert_one_line_error(proc)
    assert "choose from 8 to 10000" in proc.stderr  # not a range whose low end is refused later


def test_label_writes_nothing_into_its_input_folders(tmp_path, ct_volume_file):
    series = tmp_path / "series"
    series.mkdir()
    shutil.copy(ct_volume_file, series / "a.nrrd")
    proc = ediqa("label", series, "--out", series / "labels.csv", *TINY)
    assert_one_line_error(proc)
    assert "would go into the input folder" in proc.stderr
    assert [p.name for p in series.iterdir()] == ["a.nrrd"]


def test_label_of_an_unreadable_input_writes_no_labels(tmp_path):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: float\ndimension: 2\nsizes: 80 80\nencoding: raw\n\n" + b"\0" * 100)
    out = tmp_path / "labels.csv"
    assert_one_line_error(ediqa("label", bad, "--out", out, *TINY))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nrrd"]  # no labels, maps or lock file


def test_four_d_input_is_rejected(tmp_path):
    src = tmp_path / "four.nrrd"
    sitk.WriteImage(sitk.JoinSeries([ct_image(), ct_image()]), str(src))
    proc = ediqa("teacher", src, *TINY, "--out", tmp_path / "out")
    assert_one_line_error(proc)
    assert "4-D image of 2 time points" in proc.stderr


def _main_without_torch(*argvs: list[str], nor: tuple[str, ...] = ()) -> str:
    """Run ``main`` on each argument list in one child process, which must exit 0 or 2 each time and never
    import torch or torchvision (seconds to load), ``nor`` the modules named; returns the child's stderr."""
    unwanted = ("torch", "torchvision", *nor)
    code = ("import sys\nfrom EDIQALib.cli import main\n"
            f"for argv in {[list(map(str, a)) for a in argvs]!r}:\n"
            "    try:\n        main(argv)\n    except SystemExit as exc:\n        assert exc.code in (0, 2)\n"
            f"print(sorted(m for m in {unwanted!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    return proc.stderr


def test_help_and_usage_errors_answer_without_loading_torch_or_the_image_libraries():
    stderr = _main_without_torch(["--help"], ["train-detector", "--help"], ["teacher", "x.nrrd", "--realizations", "0"],
                                 ["train-detector", "--preset", "huge"], ["validate", "--kinds", "dose,dose"],
                                 ["bench", "--kinds", "x"], nor=("scipy", "skimage", "SimpleITK"))
    assert re.search(r"choose from '?lite'?, '?paper'?", stderr)  # argparse quotes choices in some versions


def test_common_mistakes_are_told_what_to_do(tmp_path, ct_volume_file):
    """Messages that blamed the wrong thing or said nothing of what to do: a folder of NRRD files given as a
    DICOM series folder, label's --out given as a folder, a missing labels file answered as a missing --bank,
    a file given as a model, two label inputs of one series name, a labels "file" that is a folder, a file
    given as a run or a study folder, a bank that is none (with a Python type name), several inputs to assess,
    an image of unknown modality to simulate (told to give --modality mr, which simulate refuses)."""
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.nrrd", "b.nrrd"):
        shutil.copy(ct_volume_file, images / name)
    (tmp_path / "x" / "ct").mkdir(parents=True)
    (tmp_path / "y" / "ct").mkdir(parents=True)
    for folder in ("x", "y"):
        shutil.copy(ct_volume_file, tmp_path / folder / "ct" / "a.nrrd")
    (tmp_path / "labels").mkdir()
    mr = tmp_path / "mr.nrrd"  # no tag, no air: the modality cannot be told
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).normal(100, 10, (1, 80, 80)).astype(np.float32)), str(mr))
    stderr = _main_without_torch(
        ["assess", images, "--out", tmp_path / "o1"],
        ["label", images, "--out", tmp_path / "labels"],
        ["train", "--labels", tmp_path / "missing.csv", "--out", tmp_path / "run"],
        ["assess", ct_volume_file, "--model", ct_volume_file, "--out", tmp_path / "o2"],
        ["label", tmp_path / "x" / "ct", tmp_path / "y" / "ct", "--out", tmp_path / "l.csv"],
        ["train", "--labels", tmp_path / "labels", "--out", tmp_path / "run"],
        ["select-detector", ct_volume_file],
        ["split-series", ct_volume_file],
        ["assess", ct_volume_file, ct_volume_file],
        ["assess", ct_volume_file, "--modaliy", "ct"],  # a misspelt option: no word of compare
        ["simulate", mr, "--out", tmp_path / "sim"])
    assert stderr.splitlines() == [
        f"ediqa: error: no DICOM series found in folder {images}; it holds 2 image files (a.nrrd, …): give an image "
        "file itself (compare takes several)",
        f"ediqa: error: --out {tmp_path / 'labels'} is a folder: label writes one CSV file (and its maps beside it), "
        f"e.g. --out {tmp_path / 'labels' / 'labels.csv'}",
        f"ediqa: error: labels file not found: {tmp_path / 'missing.csv'}",
        f"ediqa: error: not a model's .safetensors file: {ct_volume_file} (a bundled model, detector-lite, student-lite, "
        "or the path of a .safetensors file with its .json card beside it)",
        f"ediqa: error: {tmp_path / 'x' / 'ct'} and {tmp_path / 'y' / 'ct'} are both series ct (a series is named after "
        "its folder or file): rename one",
        f"ediqa: error: {tmp_path / 'labels'} is a folder; give the labels CSV file in it (as `ediqa label --out` wrote it)",
        f"ediqa: error: {ct_volume_file} is a file, not a run folder",
        f"ediqa: error: {ct_volume_file} is a file, not a folder of DICOM series",
        f"ediqa: error: unrecognized arguments: {ct_volume_file} (assess takes one input; ediqa compare takes several)",
        "ediqa: error: unrecognized arguments: --modaliy ct",
        f"ediqa: error: {mr}: simulate needs a CT image in HU, and this one's tags and values do not say it is one; "
        "if it is, give --modality ct"]


def test_a_bank_that_is_none_and_the_modality_in_capitals(tmp_path, ct_volume_file):
    from EDIQALib.backgrounds import load_bank

    with pytest.raises(InputError, match=r"^.*: not a bank of `ediqa train-detector` \(its RUN/bank.npz\)$"):
        load_bank(ct_volume_file)
    proc = ediqa("simulate", ct_volume_file, "--modality", "CT", "--doses", "1", "--views", "60", "--out", tmp_path / "s",
                 "--progress", "none")  # as DICOM writes it
    assert proc.returncode == 0, proc.stderr


def test_the_version_is_the_package_s():
    from EDIQALib import __version__

    proc = ediqa("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"ediqa {__version__}", proc.stderr


def test_a_device_that_is_no_device_name_is_a_usage_error_without_torch(tmp_path, ct_volume_file):
    devices = ["gpu", "cuda:x", "cuda:-1", "cuda1", "CPU"]
    stderr = _main_without_torch(*(["assess", ct_volume_file, "--device", d, "--out", tmp_path / "out"] for d in devices),
                                 nor=("scipy", "skimage", "SimpleITK"))
    errors = [line for line in stderr.splitlines() if line.startswith("ediqa: error:")]
    assert errors == [f"ediqa: error: argument --device: {d!r} is not a device: choose auto|cpu|cuda|cuda:N"
                      for d in devices]
    assert not (tmp_path / "out").exists()


def test_an_empty_path_is_a_usage_error_not_the_current_folder(tmp_path, ct_volume_file):
    """``Path("")`` is the current folder: ``--out ""`` wrote a series there, and an input "" read it."""
    work = tmp_path / "work"
    work.mkdir()
    for argv in (["simulate", ct_volume_file, "--doses", "1,0.5", "--out", ""], ["assess", "", "--out", "out"],
                 ["compare", ct_volume_file, " ", "--out", "out"], ["teacher", ct_volume_file, "--model", ""]):
        proc = ediqa(*argv, cwd=work)
        assert_one_line_error(proc)
        assert "an empty text names no file or folder" in proc.stderr
    assert list(work.iterdir()) == []


def test_an_unknown_model_or_one_of_the_wrong_kind_answers_without_loading_torch(tmp_path, ct_volume_file):
    out = tmp_path / "out"
    stderr = _main_without_torch(["teacher", ct_volume_file, "--model", "nope", "--out", out],
                                 ["assess", ct_volume_file, "--model", "nope", "--out", out],
                                 ["label", ct_volume_file, "--model", "nope", "--out", out / "labels.csv"],
                                 ["validate", "--model", "nope", "--out", out],
                                 ["bench", "--student", "nope", "--out", out],
                                 ["assess", ct_volume_file, "--model", "detector-lite", "--out", out],
                                 ["bench", "--student", "detector-lite", "--out", out],
                                 ["label", tmp_path / "missing", "--out", out / "labels.csv"])
    bundled = "(a bundled model, detector-lite, student-lite, or the path of a .safetensors file with its .json card"
    assert stderr.splitlines() == [f"ediqa: error: model not found: nope {bundled} beside it)"] * 5 + [
        "ediqa: error: detector-lite is a detector model; a student model is needed here, such as student-lite"] * 2 + [
        f"ediqa: error: input not found: {tmp_path / 'missing'}"]
    assert not out.exists()


def test_label_answers_an_unusable_image_or_a_labels_file_it_would_replace_without_loading_torch(tmp_path,
                                                                                                ct_volume_file):
    series = tmp_path / "series"
    series.mkdir()
    shutil.copy(ct_volume_file, series / "a.nrrd")
    (series / "b.nrrd").write_bytes(b"NRRD0004\ntype: short\n")  # cut short in its header
    done = tmp_path / "done.csv"
    done.write_text("series,file,slice,score,assessable,map,path\n")
    stderr = _main_without_torch(["label", series, "--out", tmp_path / "labels.csv"],
                                 ["label", ct_volume_file, "--out", done])
    first, second = stderr.splitlines()
    assert first.startswith("ediqa: error: ") and "b.nrrd" in first
    assert second == f"ediqa: error: {done} exists; pass --resume to continue it or choose another --out"
    assert not (tmp_path / "labels.csv").exists() and not (tmp_path / "labels_maps").exists()
    assert done.read_text() == "series,file,slice,score,assessable,map,path\n"


@pytest.mark.parametrize("args", [["validate", "--kinds", "dose"], ["bench", "--student", "student-lite"],
                                  ["label", "SERIES", "--out", "OUT/labels.csv"]])
def test_every_command_names_an_unknown_model_before_it_asks_for_a_device(tmp_path, ct_volume_file, args):
    """Without a GPU, ``--device cuda`` with a mistyped model name said "no CUDA device" first."""
    (tmp_path / "series").mkdir()
    shutil.copy(ct_volume_file, tmp_path / "series" / "a.nrrd")
    args = [str(a).replace("SERIES", str(tmp_path / "series")).replace("OUT", str(tmp_path / "out")) for a in args]
    out = [] if args[0] == "label" else ["--out", tmp_path / "out"]
    proc = ediqa(*args, "--model", "nope", "--device", "cuda", *out)
    assert_one_line_error(proc)
    assert "model not found: nope" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
@pytest.mark.parametrize("command", [["teacher", *TINY], ["assess"]])
def test_cuda_asked_for_without_a_gpu_is_one_line_and_writes_nothing(tmp_path, ct_volume_file, command, device):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    proc = ediqa(command[0], ct_volume_file, *command[1:], "--device", device, "--out", tmp_path / "out")
    assert_one_line_error(proc)
    assert f"device {device} was asked for but no CUDA device is available (--device" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_usage_errors_and_bad_weights(tmp_path, ct_volume_file):
    assert_one_line_error(ediqa("teacher", ct_volume_file, "--realizations", "0"))
    assert_one_line_error(ediqa("frobnicate"))
    fake = tmp_path / "fake.safetensors"
    from safetensors.numpy import save_file
    save_file({"w": np.zeros(3, np.float32)}, str(fake))
    (tmp_path / "fake.json").write_text(json.dumps({"name": "fake", "kind": "detector", "preset": "lite",
                                                     "sha256": "0" * 64}))
    proc = ediqa("teacher", ct_volume_file, *TINY, "--model", fake, "--out", tmp_path / "o")
    assert_one_line_error(proc)
    assert "sha256" in proc.stderr
    from EDIQALib.models import sha256_of
    (tmp_path / "fake.json").write_text(json.dumps({"name": "fake", "kind": "detector", "preset": "lite",
                                                     "sha256": sha256_of(fake)}))
    proc = ediqa("teacher", ct_volume_file, *TINY, "--model", fake, "--out", tmp_path / "o")
    assert_one_line_error(proc)
    assert "do not fit" in proc.stderr
    (tmp_path / "fake.json").write_text(json.dumps({"name": "fake", "kind": "detector", "preset": "huge",
                                                     "sha256": sha256_of(fake)}))
    proc = ediqa("teacher", ct_volume_file, *TINY, "--model", fake, "--out", tmp_path / "o")
    assert_one_line_error(proc)
    assert "unknown detector preset 'huge'" in proc.stderr
    fake.write_bytes(b"PK\x03\x04 not safetensors")  # e.g. a torch.save archive renamed
    (tmp_path / "fake.json").write_text(json.dumps({"name": "fake", "kind": "detector", "preset": "lite",
                                                     "sha256": sha256_of(fake)}))
    proc = ediqa("teacher", ct_volume_file, *TINY, "--model", fake, "--out", tmp_path / "o")
    assert_one_line_error(proc)
    assert "not readable as safetensors" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_demo_assesses_the_sample_and_compares_a_dose_series_with_the_shipped_student(tmp_path):
    proc = ediqa("demo", "--out", tmp_path, "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "assess" / "result.json").read_text(encoding="utf-8"))
    assert result["method"] == "EDIQA" and result["model"]["name"] == "student-lite"
    assert (tmp_path / "assess" / "overlay.png").stat().st_size > 10_000
    rows = (tmp_path / "compare" / "compare.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows[0].split(",")) == 6  # slice + five doses, best first
    scores = [r["score"] for r in json.loads((tmp_path / "compare" / "compare.json").read_text(encoding="utf-8"))]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 5  # 100 % down to 5 %, in order
    blocked = tmp_path / "blocked"  # the last step's folder is a file: refused before the first step
    blocked.mkdir()
    (blocked / "compare").write_text("a file")
    assert_one_line_error(ediqa("demo", "--out", blocked, "--progress", "none"))
    assert sorted(p.name for p in blocked.iterdir()) == ["compare"]
    # so is a folder in the way of one input's results in the comparison, where the first run wrote them
    inputs = sorted(p for p in (tmp_path / "compare").iterdir() if p.is_dir())
    assert [p.name for p in inputs] == sorted(p.name[: -len(".nrrd")] for p in (tmp_path / "dose-series").iterdir())
    blocked = tmp_path / "blocked-deeper"
    (blocked / "compare" / inputs[0].name / "result.json").mkdir(parents=True)
    assert_one_line_error(ediqa("demo", "--out", blocked, "--progress", "none"))
    assert sorted(p.name for p in blocked.iterdir()) == ["compare"]
    # and a dose-series folder holding another simulation of the sample, before anything is written
    blocked = tmp_path / "blocked-series"
    (blocked / "dose-series").mkdir(parents=True)
    earlier = sitk.ReadImage(str(next((tmp_path / "dose-series").iterdir())))
    earlier.EraseMetaData("EDIQA_simulation")  # as an earlier release wrote it
    sitk.WriteImage(earlier, str(blocked / "dose-series" / "head-ct-slice_dose1_views180_ramp.nrrd"))
    proc = ediqa("demo", "--out", blocked, "--progress", "none")
    assert_one_line_error(proc)
    assert "head-ct-slice_dose1_views180_ramp.nrrd, simulated by an earlier release" in proc.stderr
    assert sorted(p.name for p in blocked.iterdir()) == ["dose-series"]


@pytest.mark.parametrize("command", [["train", "--stage1-iterations", "0", "--out", "run"], ["bench"]])
def test_a_missing_labels_file_is_one_line_and_exit_2(tmp_path, command):
    proc = ediqa(*command, "--labels", tmp_path / "missing.csv", cwd=tmp_path)
    assert_one_line_error(proc)
    assert "labels file not found" in proc.stderr


def test_make_dataset_seeds_noisy_back_phantoms_after_the_plain_ones(tmp_path):
    """A noisy back phantom is the back phantom of its seed plus a noise of its own: its texture series'
    first image (the slice plus 40 HU of white noise) differs from the plain one's by that noise alone."""
    data = tmp_path / "data"
    common = ("make-dataset", "--out", data, "--phantoms", "0", "--first-seed", "77", "--real-variants", "0",
              "--progress", "none")
    assert ediqa(*common, "--back-phantoms", "2").returncode == 0
    proc = ediqa(*common, "--back-phantoms", "1", "--noisy-back-phantoms", "1")  # back-77's series are there
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"series": 8, "made": 4, "out": str(data)}
    assert sorted({p.name.rsplit("-", 1)[0] for p in data.iterdir()}) == ["back-77", "back-78", "noisy-back-78"]
    plain, noisy = (sitk.GetArrayFromImage(sitk.ReadImage(str(data / d / "0-texture-0.nrrd")))
                    for d in ("back-78-texture", "noisy-back-78-texture"))
    low, high = ACQUIRED_NOISE_SD_HU
    assert low <= float(np.std(noisy - plain)) <= high


def test_make_dataset_refuses_a_file_where_a_series_goes_before_it_makes_any(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "back-77-views").write_text("a file where a series goes")
    proc = ediqa("make-dataset", "--out", blocked, "--phantoms", "0", "--back-phantoms", "1", "--first-seed", "77",
                 "--real-variants", "0", "--progress", "none")
    assert_one_line_error(proc)
    assert sorted(p.name for p in blocked.iterdir()) == ["back-77-views"]  # no series made before the check


def test_an_interrupted_make_dataset_leaves_whole_series_only(tmp_path, monkeypatch):
    """``label`` reads the images a series folder holds: an interrupt while a series is written leaves the
    series made before it, whole, and nothing of the one being written. Run again, it makes the others:
    every series kind of the back phantom, at the canonical spacing, tagged CT."""
    from EDIQALib import cli, io
    from EDIQALib.series import LEVELS

    write, written = io.write_image, []

    def interrupted_at_the_seventh(image, path, modality=None):
        written.append(path)
        if len(written) == 7:  # the second series (views), after the five images of the first (dose)
            raise KeyboardInterrupt
        write(image, path, modality)

    monkeypatch.setattr(io, "write_image", interrupted_at_the_seventh)
    out = tmp_path / "data"
    assert cli.main(["make-dataset", "--out", str(out), "--phantoms", "0", "--back-phantoms", "1", "--first-seed",
                     "77", "--real-variants", "0", "--progress", "none"]) == 130
    assert [p.name for p in out.iterdir()] == ["back-77-dose"]
    assert len(list((out / "back-77-dose").iterdir())) == len(LEVELS["dose"]) == 5
    # run again, it makes the rest and keeps the series made
    made = {p: p.stat().st_mtime_ns for p in (out / "back-77-dose").iterdir()}
    proc = ediqa("make-dataset", "--out", out, "--phantoms", "0", "--back-phantoms", "1", "--first-seed", "77",
                 "--real-variants", "0", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"series": 4, "made": 3, "out": str(out)}
    assert sorted(p.name for p in out.iterdir()) == ["back-77-blur", "back-77-dose", "back-77-texture", "back-77-views"]
    assert {p: p.stat().st_mtime_ns for p in (out / "back-77-dose").iterdir()} == made
    views = sorted((out / "back-77-views").iterdir())
    assert len(views) == len(LEVELS["views"])
    image = sitk.ReadImage(str(views[0]))
    assert image.GetSpacing() == (0.7, 0.7) and 110 <= image.GetSize()[0] <= 200
    assert read_volume(views[0]).modality == "ct"  # tagged: the field holds no air to tell HU by


@pytest.mark.parametrize("command", ["compare", "teacher"])
def test_an_input_given_twice_is_refused_before_any_work(tmp_path, command):
    image = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=128), str(image))
    proc = ediqa(command, "ct.nrrd", image, "--out", tmp_path / "out", "--progress", "none", cwd=tmp_path)
    assert_one_line_error(proc)
    assert f"input {image} is given twice (also as ct.nrrd)" in proc.stderr and not (tmp_path / "out").exists()


def test_an_input_without_an_assessable_slice_scores_null_with_a_warning(tmp_path):
    air = _write(tmp_path / "air.nrrd", np.random.default_rng(2).normal(-1000, 5, (1, 160, 160)).astype(np.float32))
    proc = ediqa("assess", air, "--out", tmp_path / "out", "--modality", "ct", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["score"] is None
    assert proc.stderr.strip().splitlines() == ["ediqa: warning: air: no slice is assessable (too little body for a "
                                                "lesion); it has no score (null in result.json, NaN in Python)"]
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "heatmap.nrrd")))
    assert np.isnan(heat).all()


def test_a_teacher_series_with_an_image_without_body_says_why_and_keeps_its_result_keys(tmp_path):
    """The versions of a series are scored where all of them show body: an image that scores alone was
    called "no slice is assessable" without a word of the air beside it; and its result.json lacked the
    teacher's repeat_scores and score_se (KeyError for a script that reads them)."""
    body = _write(tmp_path / "body.nrrd", sitk.GetArrayFromImage(ct_image(slices=1, size=160)))
    air = _write(tmp_path / "air.nrrd", np.random.default_rng(2).normal(-1000, 5, (1, 160, 160)).astype(np.float32))
    proc = ediqa("teacher", body, air, *TINY, "--modality", "ct", "--out", tmp_path / "out", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "ediqa: warning: the images of a series are scored where all of them show body: where one shows none, "
        "the others have no assessable slice either; score them apart")
    for name in ("body", "air"):
        result = json.loads((tmp_path / "out" / name / "result.json").read_text(encoding="utf-8"))
        assert result["score"] is None and result["repeat_scores"] == [] and result["score_se"] is None


def test_the_teacher_s_progress_reaches_its_total_past_a_slice_that_is_not_assessable(tmp_path):
    hu = sitk.GetArrayFromImage(ct_image(slices=2, size=160))
    hu[0] = -1000.0  # air: no lesion to insert, no repeat to count
    path = _write(tmp_path / "ct.nrrd", hu)
    proc = ediqa("teacher", path, *TINY, "--modality", "ct", "--out", tmp_path / "out", "--progress", "jsonl")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["done"], e["total"]) for e in events if e.get("stage") == "teacher"] == [(1, 2), (2, 2)]


def test_mr_slices_without_a_body_are_not_assessed_and_do_not_stop_the_volume(tmp_path):
    """An MR volume with an empty (zero) slice and a slice of background noise: both are not assessable,
    the others are scored (each MR slice is normalised on its volume's scale, not stretched on its own)."""
    head = np.clip((phantom(5, 200, "head") + 1000) * 0.5, 0, None)
    noise = np.random.default_rng(0).rayleigh(10.0, head.shape)  # what an MR slice outside the head holds
    path = _write(tmp_path / "mr.nrrd", np.stack([head, np.zeros_like(head), head, noise]).astype(np.float32))
    proc = ediqa("assess", path, "--modality", "mr", "--out", tmp_path / "out", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert "MR; the shipped detector and student were trained on CT only" in proc.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))
    assert result["assessable"] == [True, False, True, False]
    assert result["score"] == pytest.approx(np.mean([result["slice_scores"][k] for k in (0, 2)]), abs=1e-6)


def test_a_series_must_share_one_grid(tmp_path):
    image = ct_image(slices=1, size=128, spacing=(0.7, 0.7, 1.0))
    sitk.WriteImage(image, str(tmp_path / "a.nrrd"))
    image.SetOrigin(tuple(np.add(image.GetOrigin(), (50.0, 0.0, 0.0))))  # the same voxels, 50 mm away
    sitk.WriteImage(image, str(tmp_path / "b.nrrd"))
    image.SetOrigin(tuple(np.add(image.GetOrigin(), (-49.998, 0.0, 0.0))))  # 0.002 mm off: past the tolerance
    sitk.WriteImage(image, str(tmp_path / "c.nrrd"))
    stderr = _main_without_torch(["teacher", tmp_path / "a.nrrd", tmp_path / "b.nrrd", *TINY, "--out", tmp_path / "out"],
                                 ["teacher", tmp_path / "a.nrrd", tmp_path / "c.nrrd", *TINY, "--out", tmp_path / "out"])
    assert len(stderr.splitlines()) == 2 and "differ in origin" in stderr  # before torch is loaded
    shown = [line.split("differ in origin: ")[1].split(" vs ") for line in stderr.splitlines()]
    assert all(a != b for a, b in shown), shown  # the values tell the two apart (4 significant digits did not)
    assert not (tmp_path / "out").exists()


def test_a_run_folder_is_resumed_only_by_its_own_command_and_preset(tmp_path):
    runs = {"detector-run": {"command": "ediqa train-detector", "args": {"preset": "lite", "init": None}},
            "student-run": {"command": "ediqa train", "args": {"preset": "lite", "init": None, "init_member": None}}}
    for name, info in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(info), encoding="utf-8")
    (tmp_path / "labels.csv").write_text("series,file,slice,score,assessable,map,path\n")  # no rows
    train = ["train", "--labels", tmp_path / "labels.csv", "--stage1-iterations", "0", "--progress", "none"]
    attempts = {"detector-run": [*train, "--out", tmp_path / "detector-run"],
                "student-run": ["train-detector", "--out", tmp_path / "student-run", "--progress", "none"]}
    for name, args in attempts.items():
        proc = ediqa(*args)
        assert_one_line_error(proc)
        assert "holds a run of" in proc.stderr
    proc = ediqa(*train, "--preset", "paper", "--out", tmp_path / "student-run")
    assert_one_line_error(proc)
    assert "--preset lite" in proc.stderr
    runs["detector-run"]["args"].update(phantoms=2, back_phantoms=0, bank_projections=40, seed=0, validate=True)
    (tmp_path / "detector-run" / "run.json").write_text(json.dumps(runs["detector-run"]), encoding="utf-8")
    proc = ediqa("train-detector", "--out", tmp_path / "detector-run", "--phantoms", "5", "--back-phantoms", "0",
                 "--bank-projections", "40", "--progress", "none")  # its bank was built from 2 phantoms
    assert_one_line_error(proc)
    assert "--phantoms 2" in proc.stderr
    proc = ediqa("train-detector", "--out", tmp_path / "detector-run", "--phantoms", "2", "--back-phantoms", "0",
                 "--bank-projections", "40", "--no-validate", "--progress", "none")  # a switch, named as typed
    assert_one_line_error(proc)
    assert "holds a run with no --no-validate (given --no-validate);" in proc.stderr
    labels = str(tmp_path / "labels.csv")
    runs["student-run"]["args"].update(labels=[labels], epochs=30, lr=0.001, batch_size=4, device="cpu")
    (tmp_path / "student-run" / "run.json").write_text(json.dumps(runs["student-run"]), encoding="utf-8")
    shutil.copy(labels, tmp_path / "more.csv")
    for changed, was in ((["--epochs", "40"], "--epochs 30 (given --epochs 40)"),  # a schedule of 30 epochs
                         (["--batch-size", "8"], "--batch-size 4 (given --batch-size 8)"),
                         (["--labels", labels, tmp_path / "more.csv"],
                          f"--labels {labels} (given --labels {labels} {tmp_path / 'more.csv'})")):
        proc = ediqa(*train, *changed, "--out", tmp_path / "student-run")
        assert_one_line_error(proc)
        assert f"holds a run with {was}; resume it with the same settings" in proc.stderr, proc.stderr
    proc = ediqa(*train, "--device", "auto", "--out", tmp_path / "student-run")  # its batch, on another device
    assert_one_line_error(proc)
    assert "holds a run" not in proc.stderr and "no assessable labelled slices" in proc.stderr  # resumed: read
    for name, info in runs.items():  # nothing was written into either folder
        assert json.loads((tmp_path / name / "run.json").read_text(encoding="utf-8")) == info
        assert [p.name for p in (tmp_path / name).iterdir()] == ["run.json"]


def test_a_run_is_checked_for_resuming_without_the_files_of_a_write_that_was_cut_off(tmp_path):
    """A write killed outright (SIGKILL, a power cut) leaves its hidden staging folder: not the run's state."""
    from EDIQALib.commands.runs import check_run_state
    from EDIQALib.models import save_resume_state

    run = tmp_path / "run"
    (run / "stage2" / ".tmp-x").mkdir(parents=True)
    save_resume_state({"model": {}, "optimizer": {}, "best": 0.0, "epoch": 1}, run / "stage2" / "state.pt")
    (run / "stage2" / "log.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n', encoding="utf-8")
    (run / "stage2" / ".tmp-x" / "state.pt").write_bytes(b"\x80\x02half a sta")
    (run / "stage2" / ".tmp-x" / "log.jsonl").write_text('{"epoch": 2, "lo', encoding="utf-8")
    check_run_state(run)  # it was refused as "unreadable": the run could never be resumed
    (run / "stage2" / "state.pt").write_bytes(b"\x80\x02half a sta")
    with pytest.raises(InputError, match="resume state is unreadable"):
        check_run_state(run)


def test_a_run_folder_or_labels_file_is_written_by_one_run_at_a_time(tmp_path):
    """Two runs into one --out at once (two terminals, a script started twice) wrote every log line twice,
    or lost one run's labels: the second is refused while the first holds its lock."""
    from EDIQALib.io import exclusive

    src = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=80, spacing=(0.7, 0.7, 2.0)), str(src))
    with exclusive(tmp_path / "run" / ".lock", "the first run"):
        proc = ediqa("train-detector", "--out", tmp_path / "run", "--phantoms", "2", "--bank-projections", "40",
                     "--progress", "none")
        assert_one_line_error(proc)
        assert "run is being written by another run" in proc.stderr
        assert [p.name for p in (tmp_path / "run").iterdir()] == [".lock"]  # no bank, no run.json
    with exclusive(tmp_path / ".labels_maps.lock", "the first run"):
        for name in ("labels.csv", "labels.txt"):  # a file of another suffix shares the maps folder labels_maps
            proc = ediqa("label", src, "--out", tmp_path / name, "--realizations", "2", "--repeats", "1",
                         "--progress", "none")
            assert_one_line_error(proc)
            assert f"{name} is being written by another run" in proc.stderr
            assert not (tmp_path / name).exists()
    proc = ediqa("label", src, "--out", tmp_path / "labels.csv", "--realizations", "2", "--repeats", "1",
                 "--progress", "none")  # once the first has ended
    assert proc.returncode == 0, proc.stderr


def test_a_detector_run_records_its_settings_before_it_builds_its_bank(tmp_path, monkeypatch):
    """A run stopped while it built or loaded its bank had no run.json yet, so a resume with other settings
    took the old bank and recorded the new settings."""
    import EDIQALib.backgrounds as backgrounds

    def stopped(*args, **kwargs):  # Ctrl-C while the bank is built
        raise KeyboardInterrupt

    monkeypatch.setattr(backgrounds, "training_bases", lambda *args: {})
    monkeypatch.setattr(backgrounds, "build_bank", stopped)
    run = ["train-detector", "--out", tmp_path / "run", "--phantoms", "2", "--back-phantoms", "0",
           "--bank-projections", "40", "--workers", "1"]
    assert ediqa(*run).returncode == 130
    assert not (tmp_path / "run" / "bank.npz").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["args"]["bank_projections"] == 40
    run[-3] = "30"
    proc = ediqa(*run)
    assert_one_line_error(proc)
    assert "--bank-projections 40 (given --bank-projections 30)" in proc.stderr

    (tmp_path / "run" / "run.json").unlink()  # a bank no record describes (an interrupted run of an earlier release)
    (tmp_path / "run" / "bank.npz").write_bytes(b"")
    proc = ediqa(*run)
    assert_one_line_error(proc)
    assert "bank.npz without the run.json of its run" in proc.stderr and not (tmp_path / "run" / "run.json").exists()
    (tmp_path / "run" / "bank.npz").unlink()  # a resume state without its record (a stage of a `train` run, a copy)
    (tmp_path / "run" / "stage2").mkdir()
    (tmp_path / "run" / "stage2" / "state.pt").write_bytes(b"")
    proc = ediqa(*run[:2], tmp_path / "run" / "stage2", *run[3:])
    assert_one_line_error(proc)
    assert "stage2 holds state.pt without the run.json of its run" in proc.stderr
    assert not (tmp_path / "run" / "stage2" / "run.json").exists()


def test_label_names_each_image_s_map_after_its_whole_name_and_resumes_only_a_labels_file(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    hu = phantom(8, size=128, kind="body")
    for dose, sd in (("0.5", 20.0), ("0.25", 40.0)):  # names as `ediqa simulate` writes them
        noisy = hu + np.random.default_rng(len(dose)).normal(0, sd, hu.shape)
        _write(series / f"ct_dose{dose}_views360_ramp.nrrd", noisy[None].astype(np.float32))
    out = tmp_path / "labels.csv"
    proc = ediqa("label", series, "--out", out, *TINY, "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    maps = [line.split(",")[5] for line in out.read_text(encoding="utf-8").splitlines()[1:]]
    assert len(set(maps)) == 2 and all((tmp_path / "labels_maps" / m).exists() for m in maps)

    notes = tmp_path / "notes.csv"
    notes.write_text("name,value\na,1\n", encoding="utf-8")
    proc = ediqa("label", series, "--out", notes, "--resume", *TINY)
    assert_one_line_error(proc)
    assert "not a labels CSV" in proc.stderr
    assert notes.read_text(encoding="utf-8") == "name,value\na,1\n" and not (tmp_path / "notes_maps").exists()


@pytest.mark.parametrize("args, says", [(["validate", "--kinds", "bogus"], "choose among dose"),
                                        (["bench", "--kinds", "dose,bogus"], "choose among dose"),
                                        (["publish-student", "run", "--name", "../outside"], "not a model name"),
                                        (["publish-detector", "run", "--name", ""], "not a model name"),
                                        (["train-detector", "--out", "run", "--crop", "8"], "8: choose from 64 to 1,024"),
                                        (["teacher", "ct.nrrd", "--realizations", "99999999999999999999999"],
                                         "choose from 1 to 100,000"),
                                        (["train-detector", "--out", "run", "--batch-size", "100000"],
                                         "choose from 1 to 1,024"),
                                        (["make-dataset", "--out", "data", "--phantoms", "100000000"],
                                         "choose from 0 to 10,000"),
                                        (["make-dataset", "--out", "data", "--first-seed", "-5"], "not a count"),
                                        (["make-dataset", "--out", "data", "--phantoms", "0", "--real-variants", "0"],
                                         "nothing to make"),
                                        (["simulate", "ct.nrrd", "--seed", "-1"], "not a seed"),
                                        (["train", "--labels", "l.csv", "--seed", str(2**64)], "not a seed"),
                                        (["simulate", "ct.nrrd", "--i0", "inf"], "photons per ray"),
                                        (["simulate", "ct.nrrd", "--views", "1000000000000"], "views: choose"),
                                        (["teacher", "ct.nrrd", "--contrasts", ","], "comma-separated list"),
                                        (["label", "d", "--out", "l.csv", "--contrasts", "0.05,1.5"],
                                         "do not all lie in (0, 1)"),
                                        (["bench", "--volume-shape", "1,32,32"], "1 to 2,000 slices of 64 to 2,048 pixels"),
                                        (["bench", "--volume-shape", "1,64,640"], "differ more than 5 times"),
                                        (["bench", "--volume-shape", "2000,2048,2048"], "at most 200,000,000")])
def test_bad_settings_of_the_long_commands_are_refused_at_once(args, says):
    proc = ediqa(*args)
    assert_one_line_error(proc)
    assert says in proc.stderr


@pytest.mark.parametrize("args, says", [
    (["--lr", "-1"], "not a positive number"), (["--held-out", "1.5"], "not a fraction"),
    (["--stage1-iterations", "-1"], "not a count"), (["--wrong-header"], "not a labels CSV"),
    (["--rank-weight", "nan"], "not a weight"), (["--lr", "inf"], "not a positive number"),
])
def test_train_s_bad_settings_and_labels_are_one_line_and_write_no_run(tmp_path, args, says):
    labels = tmp_path / "labels.csv"
    labels.write_text("series,file,slice\na,b.nrrd,0\n", encoding="utf-8")  # not what `ediqa label` writes
    extra = [] if args == ["--wrong-header"] else args
    proc = ediqa("train", "--labels", labels, "--stage1-iterations", "0", *extra, "--out", tmp_path / "run")
    assert_one_line_error(proc)
    assert says in proc.stderr
    assert not (tmp_path / "run").exists()


def test_train_whose_held_out_series_are_all_says_so(tmp_path):
    """A --held-out that holds out every series was "batch size 2 must be … at most the 0 training slices",
    naming a --batch-size never given."""
    labels = tmp_path / "labels.csv"
    sitk.WriteImage(ct_image(slices=1, size=96, spacing=(0.7, 0.7, 1.0)), str(tmp_path / "a.nrrd"))
    (tmp_path / "labels_maps" / "s").mkdir(parents=True)
    np.save(tmp_path / "labels_maps" / "s" / "a.npy", np.zeros((24, 24), np.float16))  # 96 px at stride 4
    labels.write_text("series,file,slice,score,assessable,map,path\ns,a.nrrd,0,0.2,1,s/a.npy,a.nrrd\n",
                      encoding="utf-8")
    proc = ediqa("train", "--labels", labels, "--stage1-iterations", "0", "--held-out", "0.999",
                 "--out", tmp_path / "run")
    assert_one_line_error(proc)
    assert "--held-out 0.999 holds out every series of the labels (1 slice): nothing is left" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_train_refuses_one_series_name_for_other_images_in_two_labels_files(tmp_path):
    """Two patients' `dose` folders, labelled into two files, were versions of one slice to train: `--mix`
    joined the two (a traceback where their sizes differed). Two labellings of the same images still train."""
    for patient, size in (("p1", 96), ("p2", 128)):
        (tmp_path / patient).mkdir()
        sitk.WriteImage(ct_image(slices=1, size=size, spacing=(0.7, 0.7, 1.0)), str(tmp_path / patient / "a.nrrd"))
        (tmp_path / f"{patient}_maps" / "dose").mkdir(parents=True)
        np.save(tmp_path / f"{patient}_maps" / "dose" / "a.npy", np.zeros((size // 4, size // 4), np.float16))
        (tmp_path / f"{patient}.csv").write_text("series,file,slice,score,assessable,map,path\n"
                                                 f"dose,a.nrrd,0,0.2,1,dose/a.npy,{patient}/a.nrrd\n", encoding="utf-8")
    proc = ediqa("train", "--labels", tmp_path / "p1.csv", tmp_path / "p2.csv", "--stage1-iterations", "0",
                 "--out", tmp_path / "run")
    assert_one_line_error(proc)
    assert "the series dose of" in proc.stderr and "holds other images" in proc.stderr
    assert not (tmp_path / "run").exists()
    shutil.copy(tmp_path / "p1.csv", tmp_path / "again.csv")  # the same images labelled again: no refusal
    shutil.copytree(tmp_path / "p1_maps", tmp_path / "again_maps")
    proc = ediqa("train", "--labels", tmp_path / "p1.csv", tmp_path / "again.csv", "--stage1-iterations", "0",
                 "--held-out", "0.999", "--out", tmp_path / "run")
    assert "holds out every series" in proc.stderr  # past the series check, to the next one


def test_a_labels_file_or_a_run_given_twice_is_refused(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("series,file,slice,score,assessable,map,path\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    proc = ediqa("train", "--labels", labels, tmp_path / "sub" / ".." / "labels.csv", "--stage1-iterations", "0",
                 "--out", tmp_path / "run")
    assert_one_line_error(proc)
    assert f"the labels file {tmp_path}/sub/../labels.csv is given twice (also as {labels})" in proc.stderr
    assert not (tmp_path / "run").exists()
    proc = ediqa("publish-student", tmp_path / "run-a", tmp_path / "run-a", "--models-dir", tmp_path / "reg")
    assert_one_line_error(proc)
    assert "the run" in proc.stderr and "is given twice" in proc.stderr and not (tmp_path / "reg").exists()


def test_train_detector_checks_its_batch_before_building_a_bank(tmp_path):
    proc = ediqa("train-detector", "--batch-size", "3", "--accumulate", "2", "--out", tmp_path / "run")
    assert_one_line_error(proc)
    assert "batch size 3 must be a multiple of ranks × accumulate (2)" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_detector_runs_with_unusable_weights_or_records_are_refused_before_writing(tmp_path, monkeypatch):
    """select-detector and publish-detector on a run whose snapshot, best weights or run record cannot be
    used: one line, and nothing written (no best weights, no selection, nothing published). The snapshots
    are compared on one validation series, not the six of a real selection."""
    import torch

    from EDIQALib import validation
    from EDIQALib.detector import build_detector
    from EDIQALib.models import save_weights
    from EDIQALib.series import make_series
    from EDIQALib.student import Student

    monkeypatch.setattr(validation, "default_validation_series",
                        lambda: [make_series("dose", "phantom-500", phantom(500, kind="body"), seed=500)])

    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"command": "ediqa train-detector", "args": {"preset": "lite",
                                                                                         "iterations": 2}}))
    (run / "log.jsonl").write_text(json.dumps({"step": 2, "loss": 1.0}) + "\n")  # finished
    save_weights(build_detector("lite"), run / "snapshots" / "step000010.safetensors")
    (run / "snapshots" / "step000020.safetensors").write_bytes(b"\0" * 32)  # cut short
    proc = ediqa("select-detector", run, "--realizations", "1", "--progress", "none")
    assert_one_line_error(proc)
    assert "step000020.safetensors: not readable" in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == ["log.jsonl", "run.json", "snapshots"]
    (run / "snapshots" / "step000020.safetensors").unlink()
    (run / "best.safetensors").mkdir()  # in the way: refused before the snapshots are evaluated
    proc = ediqa("select-detector", run, "--realizations", "1", "--progress", "none")
    assert_one_line_error(proc)
    assert "a folder of that name is in the way" in proc.stderr
    assert sorted(p.name for p in run.iterdir()) == ["best.safetensors", "log.jsonl", "run.json", "snapshots"]
    (run / "best.safetensors").rmdir()
    diverged = build_detector("lite")  # a snapshot of a run that diverged: no candidate, the others are
    torch.nn.init.constant_(next(diverged.parameters()), float("nan"))
    save_weights(diverged, run / "snapshots" / "step000020.safetensors")
    proc = ediqa("select-detector", run, "--realizations", "1", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["snapshot"] == "step000010.safetensors"
    rows = json.loads((run / "selection.json").read_text(encoding="utf-8"))["snapshots"]
    assert [r["validity"] is None for r in rows] == [False, True]
    (run / "snapshots" / "step000020.safetensors").unlink()
    (run / "selection.json").unlink()

    save_weights(Student("lite"), run / "best.safetensors")  # another network's weights
    registry = tmp_path / "reg"
    proc = ediqa("publish-detector", run, "--models-dir", registry)
    assert_one_line_error(proc)
    assert "do not fit" in proc.stderr and not registry.exists()
    save_weights(build_detector("lite"), run / "best.safetensors")
    for text in ("[1, 2", "[1, 2]"):  # not JSON; not a report
        (tmp_path / "validity.json").write_text(text, encoding="utf-8")
        proc = ediqa("publish-detector", run, "--validity", tmp_path / "validity.json", "--models-dir", registry)
        assert_one_line_error(proc)
        assert "validity report" in proc.stderr and not registry.exists()
    (tmp_path / "validity.json").write_text(json.dumps({"model": {"name": "detector-lite", "sha256": "0" * 64}}))
    proc = ediqa("publish-detector", run, "--validity", tmp_path / "validity.json", "--models-dir", registry)
    assert_one_line_error(proc)  # a report of other weights
    assert "measured a model of sha256 000000000000…, not the weights published" in proc.stderr
    assert not registry.exists()
    proc = ediqa("publish-detector", run, "--name", "det", "--models-dir", registry)
    assert proc.returncode == 0, proc.stderr
    card = json.loads((registry / "det.json").read_text(encoding="utf-8"))
    assert card["preset"] == "lite" and "lite preset): Faster R-CNN, ResNet-18" in card["description"]


def test_publish_detector_refuses_an_unfinished_run_and_a_selection_of_other_weights(tmp_path):
    """A run stopped before its last step, or whose best weights are no longer the snapshot its
    selection.json chose (training went on and found a new best): one line, nothing published. A paper
    run's card names the paper's detector."""
    import torch

    from EDIQALib.detector import build_detector
    from EDIQALib.models import save_weights

    run, registry = tmp_path / "run", tmp_path / "reg"
    (run / "snapshots").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"command": "ediqa train-detector", "args": {
        "preset": "lite", "iterations": 4, "phantoms": 3, "back_phantoms": 0, "bank_projections": 5}}))
    (run / "log.jsonl").write_text(json.dumps({"step": 2, "loss": 1.0}) + "\n")
    torch.manual_seed(0)
    save_weights(build_detector("lite"), run / "snapshots" / "step000002.safetensors")
    save_weights(build_detector("lite"), run / "best.safetensors")
    proc = ediqa("publish-detector", run, "--models-dir", registry, "--progress", "none")
    assert_one_line_error(proc)
    assert "stopped after step 2 of 4" in proc.stderr and not registry.exists()
    (run / "log.jsonl").write_text(json.dumps({"step": "2", "loss": 1.0}) + "\n")  # a log edited by hand
    proc = ediqa("publish-detector", run, "--models-dir", registry)
    assert_one_line_error(proc)
    assert "its training log's last step '2' is not a count" in proc.stderr
    (run / "log.jsonl").write_text(json.dumps({"step": 2, "loss": 1.0}) + "\n")
    with open(run / "log.jsonl", "a") as log:
        log.write(json.dumps({"step": 4, "loss": 0.5}) + "\n")
    selection = {"realizations": 1, "best": {"snapshot": "step000002.safetensors", "validity": 0.5}}
    (run / "selection.json").write_text(json.dumps(selection))
    proc = ediqa("publish-detector", run, "--models-dir", registry)
    assert_one_line_error(proc)
    assert "is no longer step000002.safetensors" in proc.stderr and not registry.exists()
    (run / "best.safetensors").write_bytes((run / "snapshots" / "step000002.safetensors").read_bytes())
    proc = ediqa("publish-detector", run, "--models-dir", registry, "--name", "det")
    assert proc.returncode == 0, proc.stderr
    card = json.loads((registry / "det.json").read_text(encoding="utf-8"))
    assert card["selection_figures"] == selection
    assert card["training"]["data"].startswith("3 seeded body and head phantoms and 0 back phantoms (seeds 1000+) "
                                               "and pydicom's 693_J2KI.dcm head CT slice, in 5 simulated acquisitions")
    (run / "selection.json").unlink()
    # a run without its record, or a record of another command or of no length, cannot be checked as finished
    # (each was published, an unfinished run among them)
    for record in (None, {"command": "ediqa train", "args": {"preset": "lite", "iterations": 4}},
                   {"command": "ediqa train-detector", "args": {"preset": "lite"}}):
        (run / "run.json").unlink(missing_ok=True)
        if record is not None:
            (run / "run.json").write_text(json.dumps(record))
        proc = ediqa("publish-detector", run, "--models-dir", registry, "--name", "unchecked")
        assert_one_line_error(proc)
        assert "has no run.json of `ediqa train-detector` that gives its length" in proc.stderr
        assert not (registry / "unchecked.json").exists()
    (run / "run.json").write_text(json.dumps({"command": "ediqa train-detector", "args": {"preset": "paper",
                                                                                         "iterations": 4}}))
    save_weights(build_detector("paper"), run / "best.safetensors")
    proc = ediqa("publish-detector", run, "--models-dir", registry, "--name", "paper-det")
    assert proc.returncode == 0, proc.stderr
    card = json.loads((registry / "paper-det.json").read_text(encoding="utf-8"))
    assert "paper preset): Mask R-CNN, Swin-T FPN" in card["description"] and "ResNet" not in card["description"]


def test_help_states_each_default_as_the_option_is_written():
    from EDIQALib.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    simulate, detector = sub["simulate"].format_help(), sub["train-detector"].format_help()
    assert "default: 1,0.5,0.25,0.1,0.05" in simulate and "default: 360" in simulate
    assert "(default: True)" not in detector and "(default: False)" not in detector  # flags state no default


def test_help_prints_on_a_windows_console():
    """A Windows console or redirected output (code page 1252) could not print ``ediqa --help`` (a '→')."""
    from EDIQALib.cli import build_parser

    parser = build_parser()
    for text in (parser.format_help(), *(p.format_help() for p in parser._subparsers._group_actions[0].choices.values())):
        text.encode("cp1252")


def test_every_command_takes_the_progress_option():
    """The CLI contract: every command takes ``--progress jsonl`` (publish-detector refused it)."""
    from EDIQALib.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    assert [name for name, p in sub.items() if "--progress {bar,jsonl,none}" not in p.format_help()] == []


def test_a_name_with_a_line_break_is_still_one_line_of_error(tmp_path):
    proc = ediqa("assess", tmp_path / "new\nline.nrrd", "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr == f"ediqa: error: input not found: {tmp_path}/new\\nline.nrrd\n"


def test_letters_the_plots_font_lacks_leave_stderr_empty(tmp_path):
    """matplotlib said, a line of source with each, which of a name's letters its font lacks (in a process
    of its own: pytest records Python's warnings instead of printing them)."""
    from EDIQALib.cli import DEMO_SAMPLE

    named = tmp_path / "頭部 CT.nrrd"
    shutil.copy(DEMO_SAMPLE, named)
    proc = subprocess.run([sys.executable, "-m", "EDIQALib", "assess", named, "--out", tmp_path / "out", "--progress",
                           "none"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == ""
    assert (tmp_path / "out" / "overlay.png").stat().st_size > 0


def test_a_name_that_is_not_utf8_is_one_line_not_an_abort(tmp_path, ct_volume_file):
    """ITK aborted the process (exit 134, no line of ours) on such a name, and left staging folders."""
    latin1 = tmp_path / os.fsdecode(b"lat\xe9n.nrrd")  # a name written on a Latin-1 system
    shutil.copy(ct_volume_file, latin1)
    for args in ([latin1, "--out", tmp_path / "out"], [ct_volume_file, "--out", tmp_path / os.fsdecode(b"o\xe9")]):
        proc = subprocess.run([sys.executable, "-m", "EDIQALib", "assess", *map(os.fsencode, args), "--progress", "none"],
                              capture_output=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.decode().endswith("a name in this path is not UTF-8 text, which the image library cannot "
                                             "take; rename it\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ct.nrrd", latin1.name])  # no output, no staging


def test_names_with_dollar_signs_are_drawn_as_written(tmp_path, ct_volume_file):
    """matplotlib reads text between two ``$`` as math: a name ``p$\\frac$`` stopped the overlay with a
    traceback, and ``a$x^2$b`` was drawn as "ax²b"."""
    from EDIQALib.report import _shown

    names = [tmp_path / "p$\\frac$.nrrd", tmp_path / "a$x^2$b.nrrd"]
    for name in names:
        shutil.copy(ct_volume_file, name)
    proc = ediqa("compare", *names, "--out", tmp_path / "out", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "p$\\frac$" / "overlay.png").stat().st_size > 0
    assert _shown("a$x^2$b") == "a\\$x^2\\$b"  # matplotlib draws an escaped $ as the sign


def test_an_input_given_again_by_a_hard_link_or_an_output_named_too_long_is_refused_before_any_work(tmp_path,
                                                                                                  ct_volume_file):
    linked = tmp_path / "linked.nrrd"
    os.link(ct_volume_file, linked)
    for command in (["compare"], ["teacher", *TINY]):
        proc = ediqa(command[0], ct_volume_file, linked, *command[1:], "--out", tmp_path / "out")
        assert_one_line_error(proc)
        assert f"the input {linked} is given twice (also as {ct_volume_file})" in proc.stderr
    named = tmp_path / ("a" * 240 + ".nrrd")  # its series' names add the dose and more: over 255 bytes
    shutil.copy(ct_volume_file, named)
    proc = ediqa("simulate", named, "--doses", "1", "--out", tmp_path / "out")
    assert_one_line_error(proc)
    assert "is longer than the 255 bytes" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_links_that_lead_nowhere_or_round_and_an_input_that_cannot_be_read_are_refused_before_any_work(
        tmp_path, ct_volume_file):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "nowhere").symlink_to(tmp_path / "missing" / "sub")
    os.mkfifo(tmp_path / "pipe.nrrd")  # the image library waited for a writer forever
    for args, says in (([ct_volume_file, "--out", tmp_path / "loop" / "out"], "a loop of links"),
                       ([ct_volume_file, "--out", tmp_path / "nowhere"],
                        f"{tmp_path / 'nowhere'} is a link to {tmp_path / 'missing' / 'sub'}, which does not exist"),
                       ([tmp_path / "pipe.nrrd", "--out", tmp_path / "out"], "neither a file nor a folder")):
        proc = ediqa("assess", *args, "--progress", "none")
        assert_one_line_error(proc)
        assert says in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd", "loop", "nowhere", "pipe.nrrd"]
    (tmp_path / "out").mkdir()  # a link to nowhere in the output's place is replaced by the file written
    (tmp_path / "out" / "result.json").symlink_to(tmp_path / "archive" / "old.json")
    proc = ediqa("assess", ct_volume_file, "--out", tmp_path / "out", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "out" / "result.json").is_symlink() and not (tmp_path / "archive").exists()


def test_a_one_file_series_folder_and_its_file_are_one_input(tmp_path):
    from EDIQALib.commands.common import refuse_twice

    (tmp_path / "one").mkdir()
    sitk.WriteImage(sitk.Cast(ct_image(slices=1, size=128), sitk.sitkInt16), str(tmp_path / "one" / "s000.dcm"))
    (tmp_path / "one" / ".DS_Store").write_bytes(b"")  # a hidden file is no slice
    proc = ediqa("compare", tmp_path / "one", tmp_path / "one" / "s000.dcm", "--out", tmp_path / "out")
    assert_one_line_error(proc)
    assert f"the input {tmp_path / 'one' / 's000.dcm'} is given twice (also as {tmp_path / 'one'})" in proc.stderr
    (tmp_path / "other").mkdir()  # label's series folders may share an image: two series of one image each
    os.link(tmp_path / "one" / "s000.dcm", tmp_path / "other" / "s000.dcm")
    refuse_twice([tmp_path / "one", tmp_path / "other"], "input")


def test_bench_does_not_write_over_the_labels_it_reads(tmp_path):
    labels = tmp_path / "out" / "bench.json"
    labels.parent.mkdir()
    labels.write_text("series,file,slice,score,assessable,map,path\n")
    proc = ediqa("bench", "--labels", labels, "--out", tmp_path / "out")
    assert_one_line_error(proc)
    assert "would overwrite the input bench.json" in proc.stderr
    assert labels.read_text() == "series,file,slice,score,assessable,map,path\n"


def test_training_benching_and_publishing_answer_bad_input_without_loading_torch(tmp_path):
    run, blocked, labels = tmp_path / "nosuchrun", tmp_path / "file", tmp_path / "labels.csv"
    blocked.write_text("")
    labels.write_text("series,file,slice,score,assessable,map,path\n")
    (tmp_path / "labels_maps").mkdir()
    stderr = _main_without_torch(["bench", "--model", "nope", "--out", tmp_path / "b"],
                                 ["bench", "--labels", tmp_path / "missing.csv", "--out", tmp_path / "b"],
                                 ["publish-student", run, "--models-dir", tmp_path / "reg"],
                                 ["publish-detector", run, "--models-dir", tmp_path / "reg"],
                                 ["select-detector", run],
                                 ["train", "--labels", tmp_path / "missing.csv", "--out", tmp_path / "r",
                                  "--stage1-iterations", "0"],
                                 ["train", "--labels", labels, "--out", tmp_path / "r", "--stage1-iterations", "0",
                                  "--init", "nope"],
                                 ["train-detector", "--out", tmp_path / "t", "--init", "nope"],
                                 ["train-detector", "--out", blocked / "run"],
                                 ["train", "--labels", labels, "--out", tmp_path / "labels_maps" / "run",
                                  "--stage1-iterations", "0"])  # into the labels' own maps (accepted before)
    lines = stderr.splitlines()
    assert len(lines) == 10 and all(line.startswith("ediqa: error: ") for line in lines), stderr
    for line, says in zip(lines, ["model not found: nope", "missing.csv", f"no stage2/best.safetensors in {run}",
                                  f"no best.safetensors in {run}", f"run folder not found: {run}",
                                  "missing.csv", "model not found: nope", "model not found: nope",
                                  f"{blocked} is a file, not a folder", "would go into the input folder"]):
        assert says in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "labels.csv", "labels_maps"]
    assert not any((tmp_path / "labels_maps").iterdir())


def test_an_error_after_a_bar_cut_short_starts_its_own_line(monkeypatch):
    """On a terminal the error was written on the bar's line: ``reading [....] 0/2ediqa: error: ...``."""
    import io as stdio

    from EDIQALib.progress import ProgressReporter, say

    class Terminal(stdio.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    ProgressReporter("bar")("reading", 0, 2)
    say("error", "nan: image contains NaN or infinite values")
    ProgressReporter("bar")("reading", 2, 2)  # a bar that ends its own line is not ended twice
    say("warning", "done")
    lines = terminal.getvalue().split("\n")
    assert lines[0].endswith("] 0/2") and lines[1] == "ediqa: error: nan: image contains NaN or infinite values"
    assert lines[2].endswith("] 2/2") and lines[3:] == ["ediqa: warning: done", ""]
