"""Labels: one row and one map per slice, shared maps within a series, resume without loss; a student as
the labeller gives its own verdicts."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import EDIQALib
from EDIQALib import distributed
from EDIQALib.distill import load_samples
from EDIQALib.errors import InputError
from EDIQALib.labels import discover_series, pool_map, read_series
from EDIQALib.models import MODELS_DIR
from EDIQALib.simulate import phantom
from conftest import ediqa


def _dataset(tmp_path):
    series = tmp_path / "series-a"
    series.mkdir()
    hu = phantom(31, size=200, kind="body")
    for i, extra in enumerate((0.0, 60.0)):
        img = sitk.GetImageFromArray(
            np.stack([hu, hu]) + np.random.default_rng(i).normal(0, extra + 1, (2, 200, 200)).astype(np.float32))
        img.SetSpacing((0.7, 0.7, 2.0))
        sitk.WriteImage(img, str(series / f"{i}.nrrd"))
    single = tmp_path / "single.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(series / "0.nrrd")), str(single))
    return [series, single]


def _label(data, out, *extra):
    return ediqa("label", *data, "--out", out, "--realizations", "2", "--repeats", "1", "--progress", "none", *extra)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_label_then_resume_after_interruption(tmp_path):
    data = _dataset(tmp_path)
    out = tmp_path / "labels.csv"
    proc = _label(data, out)
    assert proc.returncode == 0, proc.stderr
    full = _rows(out)
    assert [(r["series"], r["file"], r["slice"]) for r in full] == [
        ("series-a", "0.nrrd", "0"), ("series-a", "1.nrrd", "0"), ("series-a", "0.nrrd", "1"),
        ("series-a", "1.nrrd", "1"), ("single.nrrd", "single.nrrd", "0"), ("single.nrrd", "single.nrrd", "1")]
    assert all(r["assessable"] == "1" for r in full)
    m = np.load(tmp_path / "labels_maps" / full[0]["map"])
    assert m.shape == (50, 50) and np.isfinite(m).any()

    # simulate an interruption: keep the first three rows and the fourth but its last characters (the cut falls
    # inside its last field: every field is there, and one is short)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:-4])
    assert _label(data, out).returncode == 2  # refuses to overwrite without --resume
    proc = _label(data, out, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows_written"] == 3  # the three rows it lacked, not all six again
    assert _rows(out) == full  # the row cut short written again whole, map and path included
    labeller = json.loads((tmp_path / "labels_maps" / "labeller.json").read_text(encoding="utf-8"))
    assert labeller["model"]["name"] == "detector-lite" and labeller["realizations"] == 2

    # continued by another labeller, its rows would mix two teachers' scores without a mark
    out.write_text("".join(lines[:4]))
    record = tmp_path / "labels_maps" / "labeller.json"
    kept = record.read_text(encoding="utf-8")
    record.unlink()  # a file of an earlier release: nothing says what labelled it
    proc = _label(data, out, "--resume")
    assert proc.returncode == 2 and "has no record of what labelled it" in proc.stderr
    record.write_text(kept, encoding="utf-8")
    for other in (["--realizations", "3"], ["--seed", "1"], ["--model", "student-lite"]):
        proc = _label(data, out, "--resume", *other)
        assert proc.returncode == 2 and "was labelled with" in proc.stderr and "Traceback" not in proc.stderr
        assert out.read_text(encoding="utf-8") == "".join(lines[:4])  # nothing written


def test_a_student_labels_each_slice_with_its_own_verdict(tmp_path):
    data = _dataset(tmp_path)
    out = tmp_path / "soft.csv"
    proc = _label(data, out, "--model", "student-lite", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    assert len(rows) == 6 and all(r["assessable"] == "1" for r in rows)
    for r in rows:  # the row is what `assess` says of that slice (the images are at the canonical spacing)
        result = EDIQALib.assess(tmp_path / r["path"], device="cpu")
        k = int(r["slice"])
        assert abs(float(r["score"]) - result.slice_scores[k]) < 1e-5
        label_map = np.load(tmp_path / "soft_maps" / r["map"]).astype(np.float32)
        assessed = pool_map(result.heatmap[k]).astype(np.float32)  # back from the input grid: edges may differ
        both = np.isfinite(label_map) & np.isfinite(assessed)
        assert both.sum() > 0.99 * np.isfinite(label_map).sum() > 500
        np.testing.assert_allclose(label_map[both], assessed[both], atol=2e-3)
    assert float(rows[0]["score"]) > float(rows[1]["score"])  # clean above noisy

    card = tmp_path / "other.json"  # a model of another kind is refused with one line
    card.write_text((MODELS_DIR / "student-lite.json").read_text().replace('"kind": "student"', '"kind": "segmenter"'))
    (tmp_path / "other.safetensors").write_bytes((MODELS_DIR / "student-lite.safetensors").read_bytes())
    proc = _label(data, tmp_path / "x.csv", "--model", tmp_path / "other.safetensors")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "kind" in proc.stderr
    assert not (tmp_path / "x.csv").exists()


def _constant_scorer(positions, indices):
    return [[(0.5, np.full(b.image01.shape, 0.5, np.float32), True) for b in versions] for versions in positions]


def _keys(path):
    return [(r["series"], r["file"], r["slice"]) for r in _rows(path)]


def test_the_ranks_parts_are_merged_before_the_labels_file_is_unlocked(tmp_path, monkeypatch):
    """Under ``torchrun``, rank 0 joins the ranks' part files into the labels file while it still holds the
    file's lock: a second run let in before the merge would append to a part that the merge then removes."""
    import EDIQALib.labels as labels
    from EDIQALib.io import exclusive
    from EDIQALib.signals import InsertionConfig

    out = tmp_path / "labels.csv"
    merge_parts, merged = labels.merge_parts, []

    def merge(inputs, out_csv):
        with pytest.raises(InputError, match="is being written by another run"):
            with exclusive(labels.labels_lock(out_csv), str(out_csv)):
                pass
        merged.append(out_csv)
        return merge_parts(inputs, out_csv)

    monkeypatch.setattr(distributed, "barrier", lambda world: None)  # rank 0 of two, alone in this process
    monkeypatch.setattr(labels, "merge_parts", merge)
    labels.label_series(read_series(discover_series(_dataset(tmp_path))), _constant_scorer, InsertionConfig(), out,
                        {"model": "test"}, rank=0, world=2, with_psf=False)
    assert merged == [out]
    assert _keys(out) == [  # rank 0's positions: 0 and 2
        ("series-a", "0.nrrd", "0"), ("series-a", "1.nrrd", "0"), ("single.nrrd", "single.nrrd", "0")]
    assert not list(tmp_path.glob("labels.part*.csv"))


def test_a_resume_under_torchrun_keeps_the_rows_of_other_inputs(tmp_path, monkeypatch):
    """Rank 0 merged the parts in the order of this call's inputs, and rows of the series labelled before
    (not among them) stopped it with a KeyError, the new rows left in the parts. Its progress ends at the
    total, though the other rank labelled the last position."""
    import EDIQALib.labels as labels
    from EDIQALib.signals import InsertionConfig

    monkeypatch.setattr(distributed, "barrier", lambda world: None)  # rank 0 of two, alone in this process
    series_a, single = read_series(discover_series(_dataset(tmp_path)))
    out = tmp_path / "labels.csv"
    labels.label_series([single], _constant_scorer, InsertionConfig(), out, {"model": "test"}, with_psf=False)
    progress = []
    labels.label_series([series_a], _constant_scorer, InsertionConfig(), out, {"model": "test"}, resume=True,
                        rank=0, world=2, with_psf=False, progress=lambda *event: progress.append(event))
    assert progress == [("label", 1, 2), ("label", 2, 2)]
    assert _keys(out) == [("single.nrrd", "single.nrrd", "0"), ("single.nrrd", "single.nrrd", "1"),
                          ("series-a", "0.nrrd", "0"), ("series-a", "1.nrrd", "0")]  # rank 0's position of series-a
    assert not list(tmp_path.glob("labels.part*.csv"))


def test_a_resume_refuses_another_image_of_a_labelled_series_s_name(tmp_path):
    """Rows were matched by series, file and slice: another patient's ``single.nrrd`` (or a folder of the same
    name) was taken as labelled, or its later slices mixed into the first one's series, exit 0."""
    import EDIQALib.labels as labels
    from EDIQALib.signals import InsertionConfig

    (tmp_path / "p1").mkdir()
    _, single = read_series(discover_series(_dataset(tmp_path / "p1")))
    out = tmp_path / "labels.csv"
    labels.label_series([single], _constant_scorer, InsertionConfig(), out, {"model": "test"}, with_psf=False)
    before = out.read_bytes()
    (tmp_path / "p2").mkdir()
    _, other = read_series(discover_series(_dataset(tmp_path / "p2")))
    with pytest.raises(InputError, match=r"labels\.csv holds series single\.nrrd labelled from p1/single\.nrrd, not "
                                         r"from p2/single\.nrrd; label those images into another --out$"):
        labels.label_series([other], _constant_scorer, InsertionConfig(), out, {"model": "test"}, resume=True,
                            with_psf=False)
    assert out.read_bytes() == before
    # the same images, their rows' paths absolute (as earlier releases wrote them): nothing left to label
    out.write_text(before.decode().replace(",p1/single.nrrd", f",{tmp_path / 'p1' / 'single.nrrd'}"))
    assert f",{tmp_path}/p1/single.nrrd" in out.read_text()
    assert labels.label_series([single], _constant_scorer, InsertionConfig(), out, {"model": "test"}, resume=True,
                               with_psf=False) == 0


def test_a_resume_refuses_a_series_that_holds_other_images_than_its_rows(tmp_path):
    """An image added to (or removed from) a series labelled in part was labelled on insertion maps drawn for
    the new set, its other images' rows on those of the old, exit 0: the series' versions no longer shared
    their maps."""
    import shutil

    import EDIQALib.labels as labels
    from EDIQALib.signals import InsertionConfig

    folder, _ = _dataset(tmp_path)
    out = tmp_path / "labels.csv"
    labels.label_series(read_series(discover_series([folder])), _constant_scorer, InsertionConfig(), out,
                        {"model": "test"}, with_psf=False)
    before = out.read_bytes()
    shutil.copy(folder / "1.nrrd", folder / "2.nrrd")
    with pytest.raises(InputError, match=r"labels\.csv holds rows of series series-a labelled from other images \(it "
                                         r"now holds 2\.nrrd too\), whose insertion maps"):
        labels.label_series(read_series(discover_series([folder])), _constant_scorer, InsertionConfig(), out,
                            {"model": "test"}, resume=True, with_psf=False)
    (folder / "1.nrrd").unlink()
    with pytest.raises(InputError, match=r"\(it now holds 2\.nrrd too; it no longer holds 1\.nrrd\)"):
        labels.label_series(read_series(discover_series([folder])), _constant_scorer, InsertionConfig(), out,
                            {"model": "test"}, resume=True, with_psf=False)
    assert out.read_bytes() == before


def test_one_process_resumes_a_run_of_two_ranks_cut_short(tmp_path, monkeypatch):
    """The part files of a run under ``torchrun`` were neither read nor removed by a resume in one process,
    which labelled everything again."""
    import EDIQALib.labels as labels
    from EDIQALib.signals import InsertionConfig

    series = read_series(discover_series(_dataset(tmp_path)))
    out = tmp_path / "labels.csv"
    monkeypatch.setattr(distributed, "barrier", lambda world: None)
    calls = []

    def cut_short(positions, indices):  # rank 0 of two dies in its second slice position
        calls.append(indices)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _constant_scorer(positions, indices)

    with pytest.raises(KeyboardInterrupt):
        labels.label_series(series, cut_short, InsertionConfig(), out, {"model": "test"}, rank=0, world=2, with_psf=False)
    assert not out.exists() and len(_rows(tmp_path / "labels.part0.csv")) == 2
    seen = []

    def scorer(positions, indices):
        seen.append(len(positions[0]))
        return _constant_scorer(positions, indices)

    written = labels.label_series(series, scorer, InsertionConfig(), out, {"model": "test"}, resume=True, with_psf=False)
    assert written == 4 and len(seen) == 3  # the two rows kept are not labelled again
    assert len(_keys(out)) == len(set(_keys(out))) == 6 and not list(tmp_path.glob("labels.part*.csv"))


def test_a_run_of_three_ranks_cut_short_is_resumed_by_two(tmp_path, monkeypatch):
    """Rank 2's part, beyond the two ranks' own, was neither read nor merged; a file of another name that
    starts like a part is no part."""
    import EDIQALib.labels as labels
    from EDIQALib.signals import InsertionConfig

    series = read_series(discover_series(_dataset(tmp_path)))
    out = tmp_path / "labels.csv"
    monkeypatch.setattr(distributed, "barrier", lambda world: None)
    merge_parts = labels.merge_parts
    monkeypatch.setattr(labels, "merge_parts", lambda *args: 0)  # the run dies before rank 0 merges
    for rank in (0, 2):  # positions 0 and 3, and 2; rank 1 wrote nothing (each rank checks before any writes)
        labels.label_series(series, _constant_scorer, InsertionConfig(), out, {"model": "test"}, resume=rank > 0,
                            rank=rank, world=3, with_psf=False)
    monkeypatch.setattr(labels, "merge_parts", merge_parts)
    (tmp_path / "labels.partial.csv").write_text("notes\n", encoding="utf-8")
    seen = []

    def scorer(positions, indices):
        seen.append(indices)
        return _constant_scorer(positions, indices)

    assert labels.label_series(series, scorer, InsertionConfig(), out, {"model": "test"}, resume=True, rank=0, world=2,
                               with_psf=False) == 0
    assert seen == []  # rank 0's positions, 0 and 2, were labelled by ranks 0 and 2 of the run cut short
    assert _keys(out) == [("series-a", "0.nrrd", "0"), ("series-a", "1.nrrd", "0"), ("single.nrrd", "single.nrrd", "0"),
                          ("single.nrrd", "single.nrrd", "1")]
    assert [p.name for p in tmp_path.glob("labels.part*.csv")] == ["labels.partial.csv"]


def test_pool_map_ignores_nan():
    heat = np.full((8, 8), np.nan, np.float32)
    heat[:4, :4] = 0.5
    heat[0, 0] = 1.0
    heat[3, 3] = np.nan  # a block with a hole: the mean of the rest
    pooled = pool_map(heat)
    assert pooled.shape == (2, 2)
    assert abs(float(pooled[0, 0]) - (1.0 + 14 * 0.5) / 15) < 1e-3
    assert np.isnan(pooled[1, 1])


def test_a_series_given_as_dot_is_named_after_its_folder(tmp_path, monkeypatch):
    """Its maps go to ``<labels>_maps/<folder name>/``; an empty name put them at the file system's root."""
    folder = tmp_path / "series-a"
    folder.mkdir()
    for name in ("0.nrrd", "1.nrrd"):
        (folder / name).write_bytes(b"")
    monkeypatch.chdir(folder)
    assert discover_series(["."]) == [("series-a", [Path("0.nrrd"), Path("1.nrrd")])]
    dicom = tmp_path / "dicom-b"  # a DICOM series folder is a series of one: its file entry is the folder,
    dicom.mkdir()  # named, where "." left the labels' file field empty (a file that resume and train refuse)
    (dicom / "slice000.dcm").write_bytes(b"")
    monkeypatch.chdir(dicom)
    assert discover_series(["."]) == [("dicom-b", [dicom])]
    with pytest.raises(InputError, match="no series folder"):
        discover_series(["/"])
    (tmp_path / "patient-b").symlink_to(folder)  # a link keeps its own name, as an earlier labels file has it
    assert discover_series([tmp_path / "patient-b"])[0][0] == "patient-b"


def test_labels_rows_are_checked_as_they_are_read(tmp_path):
    """Rows whose score is no score were kept, and trained on as NaN or infinite scores; an empty score is
    one where the slice is not assessable. A row that lacks a field, or whose slice is no number, is refused
    rather than dropped (a resumed run would label its unit again, twice). One reader serves resuming and
    training."""
    from EDIQALib.labels import FIELDS, read_labels

    labels = tmp_path / "labels.csv"
    for score, assessable, says in (("", "0", None), ("0.25", "1", None), ("", "1", "without a score"),
                                    ("abc", "1", "score abc is no number"), ("nan", "1", "score nan outside 0-1"),
                                    ("inf", "1", "outside 0-1"), ("1.5", "0", "outside 0-1")):
        labels.write_text(f"{','.join(FIELDS)}\ns,a.nrrd,0,{score},{assessable},s/a_s0000.npy,a.nrrd\n",
                          encoding="utf-8")
        if says is None:
            assert [row["score"] for row in read_labels(labels)] == [score]
        else:
            with pytest.raises(InputError, match=f"line 2: not a labels row.*{says}"):
                read_labels(labels)
    for row, says in (("s,a.nrrd,x,0.2,1,m.npy,a.nrrd", "slice x is no slice number"),
                      ("s,a.nrrd,²,0.2,1,m.npy,a.nrrd", "slice ² is no slice number"),
                      ("s,a.nrrd,0,0.2,1,,a.nrrd", "no map"), ("s,,0,0.2,,m.npy,a.nrrd", "no file, assessable"),
                      ("s,a.nrrd,0,0.3,1,n.npy,a.nrrd", "slice 0 of s/a.nrrd is labelled on line 2 too")):
        labels.write_text(f"{','.join(FIELDS)}\ns,a.nrrd,0,0.2,1,m.npy,a.nrrd\n{row}\n", encoding="utf-8")
        with pytest.raises(InputError, match=f"line 3: not a labels row.*{says}"):
            read_labels(labels)
    labels.write_text("series,file,slice\na,b.nrrd,0\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a labels CSV of `ediqa label` .its header is not series,file,"):
        read_labels(labels)
    labels.write_text(f"{','.join(FIELDS)}\ns,{'b' * 200_000},0,0.2,1,m.npy,a.nrrd\n", encoding="utf-8")
    with pytest.raises(InputError, match="labels.csv: not a labels CSV of `ediqa label` .field larger than field limit"):
        read_labels(labels)  # the csv module's error, which was a traceback


def test_a_series_with_two_images_of_one_name_is_refused(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    image = sitk.GetImageFromArray(phantom(31, size=96, kind="body")[None].astype(np.float32))
    for name in ("scan.nrrd", "scan.nii.gz"):  # their maps would both be scan_s0000.npy
        sitk.WriteImage(image, str(series / name))
    with pytest.raises(InputError, match="two images named scan"):
        discover_series([series])


def test_a_series_folder_lists_every_image_format_the_engine_reads(tmp_path):
    """A detached NRRD header (.nhdr + its data) and a NIfTI pair (.hdr + .img, listed once) are images of
    the series; the data files beside them are not. Such a folder was "no DICOM series found"."""
    series = tmp_path / "series"
    series.mkdir()
    image = sitk.GetImageFromArray(phantom(31, size=96, kind="body")[None].astype(np.float32))
    for name in ("a.nhdr", "b.hdr", "c.nrrd"):
        sitk.WriteImage(image, str(series / name))
    assert sorted(p.name for p in series.iterdir()) == ["a.nhdr", "a.raw", "b.hdr", "b.img", "c.nrrd"]
    assert discover_series([series]) == [("series", [series / "a.nhdr", series / "b.hdr", series / "c.nrrd"])]
    assert [v.name for v in read_series(discover_series([series]))[0].volumes] == ["a", "b", "c"]


def test_a_new_labels_file_does_not_take_over_the_maps_of_another(tmp_path):
    """``m.csv`` and ``m.txt`` share ``m_maps/``: labelling the second overwrote the first's maps and its
    record of what labelled it, so that the first then pointed at the second's maps."""
    src = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(phantom(31, size=96, kind="body")[None].astype(np.float32)), str(src))
    first = tmp_path / "m.csv"
    assert _label([src], first, "--model", "student-lite").returncode == 0
    before = {p: p.read_bytes() for p in (tmp_path / "m_maps").rglob("*") if p.is_file()}
    proc = _label([src], tmp_path / "m.txt")
    assert proc.returncode == 2 and "m_maps holds the maps of m.csv, not of m.txt" in proc.stderr, proc.stderr
    assert not (tmp_path / "m.txt").exists()
    assert {p: p.read_bytes() for p in (tmp_path / "m_maps").rglob("*") if p.is_file()} == before
    # nor with --resume, even by the same labeller (the maps are of m.csv's images)
    proc = _label([src], tmp_path / "m.txt", "--model", "student-lite", "--resume")
    assert proc.returncode == 2 and "m_maps holds the maps of m.csv, not of m.txt" in proc.stderr, proc.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "m_maps").rglob("*") if p.is_file()} == before
    (tmp_path / "m.csv").unlink()  # its maps stay: a new m.csv is the run they were of, to resume
    proc = _label([src], first, "--model", "student-lite")
    assert proc.returncode == 2 and "interrupted run of m.csv: pass --resume" in proc.stderr, proc.stderr


def test_a_teacher_labels_file_of_an_earlier_release_resumes(tmp_path):
    """Earlier releases recorded the teacher's resolution-aware insertion as ``psf``; the Slicer panel
    relabels a folder with --resume, so a renamed key must not refuse its labels."""
    from EDIQALib.labels import LABELLER_NAME, _check_labeller, maps_folder

    settings = {"model": {"name": "detector-lite", "sha256": "0" * 64}, "realizations": 2, "repeats": 1,
                "seed": 0, "readout": "agnostic", "contrasts": [0.03, 0.04, 0.05]}
    out = tmp_path / "labels.csv"
    maps_folder(out).mkdir()
    (maps_folder(out) / LABELLER_NAME).write_text(json.dumps({**settings, "psf": True}))
    settings["labels_file"] = out.name  # as label_series gives it; earlier records have none
    _check_labeller(out, {**settings, "psf_aware": True})
    with pytest.raises(InputError, match="labelled with psf_aware True"):
        _check_labeller(out, {**settings, "psf_aware": False})


def test_label_takes_the_modality_of_images_that_do_not_tell_it_and_warns_of_mr(tmp_path):
    """An MR image without a DICOM tag was "cannot tell the modality; give it … (--modality …)", an option
    `label` lacked. With it, the labels carry the caveat that `assess` prints, and a resume reads the images
    as the run did."""
    head = np.clip((phantom(5, 200, "head") + 1000) * 0.5, 0, None)
    image = sitk.GetImageFromArray((head + np.random.default_rng(0).rayleigh(10.0, head.shape))[None].astype(np.float32))
    sitk.WriteImage(image, str(tmp_path / "mr.nrrd"))
    out = tmp_path / "labels.csv"
    proc = _label([tmp_path / "mr.nrrd"], out)
    assert proc.returncode == 2 and "cannot tell the modality" in proc.stderr and not out.exists()
    proc = _label([tmp_path / "mr.nrrd"], out, "--modality", "mr")
    assert proc.returncode == 0, proc.stderr
    assert "warning: mr.nrrd: MR; the shipped detector and student were trained on CT only" in proc.stderr
    assert len(_rows(out)) == 1
    proc = _label([tmp_path / "mr.nrrd"], out, "--modality", "ct", "--resume")
    assert proc.returncode == 2 and "was labelled with" in proc.stderr and "modality" in proc.stderr, proc.stderr
    # training reads the images as they were labelled ("cannot tell the modality" before)
    assert len(load_samples(out)) == sum(r["assessable"] == "1" for r in _rows(out)) == 1


def test_a_labels_file_names_its_images_alike_on_every_system(tmp_path, monkeypatch):
    """Image paths are relative to the labels file with '/' between folders (written on Windows with '\\', a
    file relabelled there was no file on Linux), or absolute where no relative path leads (another drive:
    Windows' relpath raised ValueError, a traceback)."""
    import os

    from EDIQALib import labels

    image = tmp_path / "scans" / "s1" / "a.nrrd"
    assert labels._path_from(tmp_path / "labels", image) == "../scans/s1/a.nrrd"

    def other_drive(path, start):
        raise ValueError("path is on mount 'D:', start on mount 'C:'")

    monkeypatch.setattr(os.path, "relpath", other_drive)
    assert labels._path_from(tmp_path / "labels", image) == image.resolve().as_posix()
