"""Student assessment plumbing: volume → per-slice scores, heatmap in input geometry, compare outputs.

The network here is freshly initialised (the values mean nothing); what is checked is the volume
handling, which is the same whatever the weights."""
from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from pydicom.data import get_testdata_file
from scipy import ndimage as ndi

from EDIQALib import assessment
from EDIQALib.bench import held_out_agreement, summary_table, volume_seconds
from EDIQALib.choices import HEATMAP_CMAP
from EDIQALib.errors import InputError
from EDIQALib.distill import Sample
from EDIQALib.models import package_model, save_weights
from EDIQALib.report import bench_figure
from EDIQALib.student import Student, field_batch
from conftest import ct_image, ediqa, water_cylinder



@pytest.fixture(scope="module")
def student_file(tmp_path_factory):
    torch.manual_seed(0)
    return _registered(Student("lite"), tmp_path_factory.mktemp("models"), "student-test")


def test_assess_volume_outputs_in_input_geometry(tmp_path, student_file):
    image = ct_image(slices=4, size=160, spacing=(0.6, 0.6, 3.0), seed=2)
    # air below and right of the body: a slice of 200 rows by 230 columns, the body in its top-left part, so
    # that a map flipped, transposed or cut to the wrong extent does not land on the body
    empty = np.pad(sitk.GetArrayFromImage(image), ((0, 0), (0, 40), (0, 70)), constant_values=-1000.0)
    empty[1] = np.random.default_rng(1).normal(-1000.0, 5.0, empty[1].shape)  # air and noise: not assessable
    empty[3] += np.random.default_rng(3).normal(0.0, 300.0, empty[3].shape)  # a slice unlike the others
    src = sitk.GetImageFromArray(empty)
    src.SetSpacing(image.GetSpacing())
    src.SetOrigin(image.GetOrigin())
    src.SetDirection(image.GetDirection())
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(src, str(path))
    proc = ediqa("assess", path, "--model", student_file, "--out", tmp_path / "out", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))
    assert result["method"] == "EDIQA"
    assert result["assessable"] == [True, False, True, True]
    assert result["slice_scores"][1] is None
    scored = [result["slice_scores"][k] for k in (0, 2, 3)]
    assert result["score"] == pytest.approx(np.mean(scored), abs=2e-6)  # the mean of the assessable slices
    heat = sitk.ReadImage(str(tmp_path / "out" / "heatmap.nrrd"))
    assert heat.GetSize() == src.GetSize()
    np.testing.assert_allclose(heat.GetDirection(), src.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(heat.GetOrigin(), src.GetOrigin(), atol=1e-5)
    arr = sitk.GetArrayFromImage(heat)
    assert np.isnan(arr[1]).all() and np.isfinite(arr[0]).mean() > 0.2  # no map on a slice not assessed
    for k in (0, 2):  # the map is defined on the body (NaN outside it), voxel for voxel on the input's grid
        body, defined = ndi.binary_fill_holes(empty[k] > -500.0), np.isfinite(arr[k])
        assert body[defined].mean() > 0.99 and defined[body].mean() > 0.9


def test_compare_writes_side_by_side_outputs(tmp_path, student_file):
    paths = []
    # a comma in a name: quoted in the CSV; an input named as its first column, "slice": a column of its own
    for name, seed in (("slice", 3), ("recon,b", 5)):
        p = tmp_path / f"{name}.nrrd"
        sitk.WriteImage(ct_image(slices=2, size=128, seed=seed), str(p))
        paths.append(p)
    proc = ediqa("compare", *paths, "--model", student_file, "--out", tmp_path / "cmp", "--progress", "jsonl")
    assert proc.returncode == 0 and "pair slices by number" not in proc.stderr, proc.stderr  # one grid
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["done"], e["total"]) for e in records[:-1] if e["stage"] == "slices"] == [(2, 4), (4, 4)]
    # reading and writing show too (seconds for a DICOM series or a large heatmap): every input read, then
    # each one assessed and written in turn, then the comparison
    assert [e["stage"] for e in records[:-1]] == ["reading"] * 3 + ["slices", "writing"] * 2 + ["writing"]
    assert [(e["done"], e["total"]) for e in records[:-1] if e["stage"] != "slices"] == [
        (0, 2), (1, 2), (2, 2), (1, 3), (2, 3), (3, 3)]
    assert records[-1]["out"] == str(tmp_path / "cmp")  # one JSON object, as every line
    assert [(r["name"], r["out"]) for r in records[-1]["inputs"]] == [
        ("slice-1", str(tmp_path / "cmp" / "slice-1")), ("recon,b", str(tmp_path / "cmp" / "recon,b"))]
    text = (tmp_path / "cmp" / "compare.csv").read_text(encoding="utf-8")
    assert text.splitlines()[0] == 'slice,slice-1,"recon,b"'
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == ["slice", "slice-1", "recon,b"] and len(rows) == 3 and all(len(r) == 3 for r in rows)
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text(encoding="utf-8"))
    assert [r["name"] for r in summary] == ["slice-1", "recon,b"]
    assert [r["input"] for r in summary] == [str(p) for p in paths]  # which file each result is of
    cells = [row[1:] for row in rows[1:]]  # one row per slice, one column per input
    for column, entry in enumerate(summary):
        assert [float(c[column]) if c[column] else None for c in cells] == pytest.approx(entry["slice_scores"], abs=1e-6)
    assert all(all(c) for c in cells)  # every slice of both inputs is assessable here
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000
    for entry in summary:  # each input's own outputs, for viewers that show them side by side
        own = json.loads((tmp_path / "cmp" / entry["name"] / "result.json").read_text(encoding="utf-8"))
        assert own["score"] == pytest.approx(entry["score"]) and own["slice_scores"] == entry["slice_scores"]
        assert (tmp_path / "cmp" / entry["name"] / "heatmap.nrrd").exists()


def test_compare_says_where_it_pairs_slices_that_lie_apart(tmp_path, student_file):
    """compare.csv and the curves pair the inputs' slices by number: inputs of 3 mm and 2.5 mm slices, or
    from different heights, were paired row by row without a word."""
    from EDIQALib.commands.images import _unpaired_slices
    from EDIQALib.io import Geometry

    def grid(slices=3, z=0.0, spacing=2.5, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
        return Geometry((128, 128, slices), (0.7, 0.7, spacing), (-40.0, 10.0, z), direction)

    names = ["a.nrrd", "b.nrrd"]
    assert _unpaired_slices(names, [grid(), grid(z=0.2)]) == []  # positions rounded to 0.1 mm, or nearly
    shifted = Geometry((128, 128, 3), (0.9, 0.9, 2.5), (-60.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert _unpaired_slices(names, [grid(), shifted]) == []  # another field of view, the same slices
    flat = Geometry((128, 128), (0.7, 0.7), (0.0, 0.0), (1, 0, 0, 1))  # a 2-D image
    assert _unpaired_slices(names, [flat] * 2) == []
    for pair, counts in (([flat, grid()], "1 and 3"), ([grid(), flat], "3 and 1")):  # beside a volume: an
        [note] = _unpaired_slices(names, pair)  # IndexError before (a 2-D grid has no third spacing)
        assert f"different positions ({counts} slices)" in note
    for other, why in ((grid(z=2.5), "first slices 2.5 mm apart"), (grid(spacing=3.0), "slices 2.5 and 3 mm apart"),
                       (grid(slices=4), "3 and 4 slices"),
                       (grid(direction=(1, 0, 0, 0, 0, 1, 0, -1, 0)), "slices in other planes"),
                       # stacked downwards from the same first slice (z = 0, -2.5, -5), or from the last one
                       (grid(direction=(1, 0, 0, 0, 1, 0, 0, 0, -1)), "slices stacked in opposite directions"),
                       (grid(z=5.0, direction=(1, 0, 0, 0, 1, 0, 0, 0, -1)), "the same positions in reverse order")):
        [note] = _unpaired_slices(names, [grid(), other])
        assert note.startswith(f"a.nrrd and b.nrrd have their slices at different positions ({why}): "), note
    paths = []
    for name, slices in (("thick", 2), ("thin", 3)):
        paths.append(tmp_path / f"{name}.nrrd")
        sitk.WriteImage(ct_image(slices=slices, size=128), str(paths[-1]))
    proc = ediqa("compare", *paths, "--model", student_file, "--out", tmp_path / "cmp")
    assert proc.returncode == 0 and "warning:" in proc.stderr
    assert "(2 and 3 slices): compare.csv and the curves pair slices by number, not by position" in proc.stderr


def test_files_of_another_layout_beside_a_run_s_are_named_and_kept(tmp_path, student_file):
    """Written into one --out, a single result's result.json and overlay.png stayed beside a later
    comparison's compare.json (and the reverse) without a word, and read as this run's. They may be the
    user's own files: they are named, not removed."""
    out = tmp_path / "out"
    b, c = tmp_path / "b.nrrd", tmp_path / "c.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=128), str(b))
    sitk.WriteImage(ct_image(slices=1, size=128, seed=4), str(c))
    proc = ediqa("assess", b, "--model", student_file, "--out", out, "--progress", "none")
    assert proc.returncode == 0 and "also holds" not in proc.stderr, proc.stderr
    proc = ediqa("compare", b, c, "--model", student_file, "--out", out, "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    assert (f"warning: {out} also holds result.json, heatmap.nrrd, overlay.png, which this run did not write"
            in proc.stderr)
    assert {"result.json", "compare.json"} <= {p.name for p in out.iterdir()}  # kept
    (out / "series.csv").write_text("my own table\n", encoding="utf-8")
    proc = ediqa("assess", b, "--model", student_file, "--out", out, "--progress", "none")
    assert proc.returncode == 0 and "also holds series.csv, compare.json, compare.csv, compare.png" in proc.stderr
    assert (out / "series.csv").read_text(encoding="utf-8") == "my own table\n"
    mine = tmp_path / "mine"  # an input that bears an output's name is this run's input, not another run's file
    mine.mkdir()
    sitk.WriteImage(ct_image(slices=1, size=128, seed=5), str(mine / "heatmap.nrrd"))
    proc = ediqa("compare", mine / "heatmap.nrrd", c, "--model", student_file, "--out", mine, "--progress", "none")
    assert proc.returncode == 0 and "also holds" not in proc.stderr, proc.stderr


def test_compare_holds_one_input_and_its_heatmap_at_a_time(tmp_path, student_file, monkeypatch):
    """Memory holds the input being assessed, not every input and heatmap of the comparison: the inputs
    read to be checked are let go, and each one with its result once they are written."""
    import gc
    import weakref

    from EDIQALib import assessment, cli, io

    reads, assessed, alive = [], [], []
    read, assess_series = io.read_volume, assessment.assess_series

    def reading(*args, **kwargs):
        reads.append(args[0])
        return read(*args, **kwargs)

    def assessing(volumes, *args, **kwargs):
        gc.collect()
        alive.append(sum(earlier() is not None for earlier in assessed))  # earlier inputs and results
        results = assess_series(volumes, *args, **kwargs)
        assessed.extend(weakref.ref(x) for x in (*volumes, *results, *(r.heatmap for r in results)))
        return results

    monkeypatch.setattr(io, "read_volume", reading)
    monkeypatch.setattr(assessment, "assess_series", assessing)
    (tmp_path / "more").mkdir()
    paths = _recons(tmp_path, slices=2) + _recons(tmp_path / "more", slices=1)
    assert cli.main(["compare", *map(str, paths), "--model", str(student_file), "--out", str(tmp_path / "cmp"),
                     "--progress", "none"]) == 0
    assert reads == [str(p) for p in paths] * 2  # all checked first, then each read again to be assessed
    assert alive == [0] * 4  # no earlier input, result or heatmap is held while the next is assessed
    assert len(json.loads((tmp_path / "cmp" / "compare.json").read_text(encoding="utf-8"))) == 4


def _recons(folder: Path, slices: int, first_seed: int = 0) -> list[Path]:
    """Two small CT volumes, ``recon-a`` and ``recon-b``, as a comparison's inputs (over earlier ones)."""
    paths = [folder / "recon-a.nrrd", folder / "recon-b.nrrd"]
    for seed, path in enumerate(paths, start=first_seed):
        sitk.WriteImage(ct_image(slices=slices, size=128, seed=seed), str(path))
    return paths


def test_an_interrupted_compare_writes_nothing_and_leaves_an_earlier_set_whole(tmp_path, student_file, monkeypatch):
    """Each input's files and the comparison are moved into place together at the end: an interrupt while
    they are written leaves none of them, and an earlier run's set as it was, not half replaced."""
    from EDIQALib import cli, report

    paths = _recons(tmp_path, slices=2)
    out = tmp_path / "cmp"
    args = ["compare", *map(str, paths), "--model", str(student_file), "--out", str(out), "--progress", "none"]

    def interrupted(*_):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(report, "write_comparison", interrupted)
        assert cli.main(args) == 130
    assert not out.exists()
    assert cli.main(args) == 0
    earlier = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert len(earlier) == 9
    _recons(tmp_path, slices=2, first_seed=7)  # other images: every result would change
    monkeypatch.setattr(report, "write_comparison", interrupted)
    assert cli.main(args) == 130
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == earlier
    assert [p.name for p in out.iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.skipif(not Path("/dev/shm").is_dir()
                    or Path("/dev/shm").stat().st_dev == Path(tempfile.gettempdir()).stat().st_dev,
                    reason="needs a second file system")
def test_compare_writes_into_an_input_s_folder_that_links_to_another_file_system(tmp_path, student_file):
    """Each folder's files are staged in that folder: a rename cannot cross file systems."""
    from EDIQALib import cli

    paths = _recons(tmp_path, slices=1)
    out = tmp_path / "cmp"
    out.mkdir()
    with tempfile.TemporaryDirectory(dir="/dev/shm") as elsewhere:
        (out / "recon-a").symlink_to(elsewhere)
        assert cli.main(["compare", *map(str, paths), "--model", str(student_file), "--out", str(out),
                         "--progress", "none"]) == 0
        assert sorted(p.name for p in Path(elsewhere).iterdir()) == ["heatmap.nrrd", "overlay.png", "result.json"]
    assert (out / "recon-b" / "result.json").is_file() and (out / "compare.json").is_file()


def test_assess_refuses_a_detector_as_student(tmp_path):
    sample = Path(__file__).resolve().parent.parent / "Resources" / "SampleData" / "head-ct-slice.nrrd"
    proc = ediqa("assess", sample, "--model", "detector-lite", "--out", tmp_path)
    assert proc.returncode == 2 and "a student model is needed here" in proc.stderr


def test_bench_measures_every_figure_in_one_run(tmp_path, student_file):
    proc = ediqa("bench", "--student", student_file, "--realizations", "2", "--repeats", "1", "--dose-draws", "1",
                "--volume-shape", "3,160,160", "--volume-runs", "1", "--kinds", "texture,blur", "--out", tmp_path,
                "--progress", "jsonl")
    assert proc.returncode == 0, proc.stderr
    figures = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # every line one JSON object ...
    assert lines[-1] == figures and all("stage" in e for e in lines[:-1])  # ... the figures last
    assert [e["done"] for e in lines[:-1] if e["stage"] == "bench"] == list(range(1, 8))  # a step per part
    assert figures["teacher_model"]["name"] == "detector-lite" and len(figures["teacher_model"]["sha256"]) == 64
    assert figures["teacher_settings"] == {"realizations": 2, "repeats": 1, "seed": 0, "readout": "agnostic",
                                           "psf_aware": True, "contrasts": [0.03, 0.04, 0.05]}
    for key in ("student_ms_per_slice", "teacher_s_per_slice", "speedup", "volume_s", "peak_mem_gb"):
        assert figures[key] > 0, key
    # bench.json rounds each figure; the ratio is computed before rounding
    assert figures["speedup"] == pytest.approx(figures["teacher_s_per_slice"] / figures["student_ms_per_slice"] * 1000,
                                               rel=0.05, abs=0.1)
    assert set(figures["validity"]["summary"]) == {"texture", "blur"}
    assert figures["volume_runs"] == 1
    order = figures["dose_order"]  # every evaluation slice's dose series, one noise draw each
    assert order["series"] == 5 and {len(v) for v in order["rho"].values()} == {1} and len(order["rho"]) == 5
    every = [r for v in order["rho"].values() for r in v]
    assert order["min_rho"] == min(every) and order["in_order"] == pytest.approx(np.mean(np.isclose(every, 1.0)))
    assert figures["heatmap_half_noise"]["cases"] == 44  # 20 unseen phantoms + 2 real slices, each side
    assert figures["fidelity"] is None  # no held-out labels given
    assert len(bench_figure(figures).axes) == 2  # a panel per validity kind, no scatter without labels
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".tmp-*"))
    assert figures["cpu"] and figures["cpus"] >= 1 and figures["threads"] >= 1  # which host the times are of
    assert figures["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # AVX2, AVX512...
    # the versions the figures depend on: a seed's noise draws are NumPy's, the times PyTorch's kernels
    assert figures["versions"]["numpy"] == np.__version__ and figures["versions"]["torch"] == torch.__version__
    table = summary_table(figures)  # what the bench prints without --progress jsonl
    assert "noise-SD rho" in table and "half-noise" in table and "CPUs" in table and "dose order" in table
    assert f"({figures['cpu_capability']})" in table and f"numpy {np.__version__}, " in table
    assert f"{figures['speedup']}" in table


def test_bench_volume_figure_is_of_a_real_assessment_in_a_child_process(tmp_path, student_file, monkeypatch):
    """The volume is assessed, by a child process of its own. A strip was cut from the phantom's corner, no
    body in it: the figure timed a start-up, not an assessment. The child imported a ``random.py`` of the
    user's working folder before the standard library's."""
    (tmp_path / "random.py").write_text("raise SystemExit('a stray random.py was imported')\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    seconds, peak_gb = volume_seconds(str(student_file), (2, 64, 320), Path("work"), runs=1)  # relative, as --out may be
    result = json.loads((tmp_path / "work" / "out" / "result.json").read_text(encoding="utf-8"))
    assert result["shape"] == [320, 64, 2] and len(result["slice_scores"]) == 2 and 0 < result["score"] < 1
    assert seconds >= result["seconds"] > 0  # the whole command, the assessment in it
    # the volume's own peak: the same beside a bench that holds 1 GB more (PyTorch, the teacher), whose peak
    # counted as the volume's (a child's ru_maxrss starts from its parent's), as did any earlier child's
    held = bytearray(1024 ** 3)
    held[::4096] = b"x" * len(held[::4096])  # resident, page by page
    subprocess.run([sys.executable, "-c", "b = bytearray(1024 ** 3); b[::4096] = b'x' * len(b[::4096])"], check=True)
    _, beside = volume_seconds(str(student_file), (2, 64, 320), Path("work"), runs=1)
    del held
    assert peak_gb > 0.1 and abs(beside - peak_gb) < 0.3, (peak_gb, beside)
    with pytest.raises(InputError, match="assessing the bench's volume failed: model not found"):
        volume_seconds("no-such-student", (2, 64, 320), Path("work"), runs=1)


def test_bench_times_a_child_where_the_system_reports_no_memory(monkeypatch):
    """Windows has no ``os.wait4``: the bench stopped there with a traceback, minutes into its run."""
    from EDIQALib.bench import _measured_run

    monkeypatch.delattr(os, "wait4")
    code, stderr, seconds, peak = _measured_run([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert (code, stderr, peak) == (3, "", None) and seconds > 0


def test_bench_plots_student_against_teacher_on_held_out_slices():
    torch.manual_seed(0)
    student = Student("lite")
    rng = np.random.default_rng(0)
    samples = [Sample(rng.random((96, 96), dtype=np.float32), score, np.zeros((24, 24), np.float32), f"g{k}")
               for k, score in enumerate((0.05, 0.1, 0.2, 0.3, 0.4))]
    agreed = held_out_agreement(student, samples)
    truth = [0.05, 0.1, 0.2, 0.3, 0.4]
    assert agreed["teacher_scores"] == truth and agreed["slices"] == 5
    with torch.inference_mode():  # each slice alone, mirrored out as assessment does: the student's own verdicts, in order
        alone = [float(torch.sigmoid(student.eval()(torch.from_numpy(field_batch([s.image01])))[0])[0]) for s in samples]
    assert agreed["student_scores"] == pytest.approx(alone, abs=1e-5)
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert agreed["plcc"] == pytest.approx(np.corrcoef(alone, truth)[0, 1], abs=1e-4)
    assert agreed["srocc"] == pytest.approx(np.corrcoef(ranks(alone), ranks(truth))[0, 1], abs=1e-4)
    validity = {"series": [{"base": "a", "kind": "dose", "levels": [1.0, 0.5], "scores": [0.2, 0.1], "rho": 1.0}],
                "summary": {"dose": {"mean_rho": 1.0, "mean_rho_noise_sd": 1.0}}}
    figures = {"validity": validity, "fidelity": agreed, "student_ms_per_slice": 4.3, "teacher_s_per_slice": 41.0,
               "teacher_realizations": 100, "teacher_repeats": 5, "speedup": 9534.9, "volume_s": 8.5,
               "volume_shape": [300, 512, 512],
               "peak_mem_gb": 2.9, "device": "cpu", "cpu": "AMD EPYC"}
    fig = bench_figure(figures)
    assert fig._suptitle.get_text().endswith("(AMD EPYC)")
    assert bench_figure({**figures, "device": "cuda", "gpu": "NVIDIA H100"})._suptitle.get_text().endswith("(NVIDIA H100)")
    alone = bench_figure({**figures, "fidelity": None})  # one panel: the title was cut at both ends
    FigureCanvasAgg(alone).draw()
    title = alone._suptitle.get_window_extent()
    assert len(alone.axes) == 1 and title.x0 >= 0 and title.x1 <= alone.bbox.width
    scatter = fig.axes[-1]
    assert len(fig.axes) == 2 and "PLCC" in scatter.get_title() and scatter.get_xlabel() == "teacher score"
    np.testing.assert_allclose(scatter.collections[0].get_offsets(),
                               np.c_[agreed["teacher_scores"], agreed["student_scores"]])


def test_python_api_assesses_a_file_and_matches_the_cli(tmp_path, student_file):
    import inspect

    import EDIQALib
    import EDIQALib.assessment

    # the function and the module it lives in have names of their own: the module was EDIQALib.assess,
    # which the function shadowed (`import EDIQALib.assess` then gave the function)
    assert inspect.isfunction(EDIQALib.assess) and inspect.ismodule(EDIQALib.assessment)
    assert EDIQALib.assessment.assess is EDIQALib.assess
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=2, size=128, seed=9), str(path))
    result = EDIQALib.assess(path, model=str(student_file), device="cpu")
    assert isinstance(result, EDIQALib.QualityResult) and result.method == "EDIQA"
    assert len(result.slice_scores) == 2 and result.heatmap.shape == (2, 128, 128)
    proc = ediqa("assess", path, "--model", student_file, "--device", "cpu", "--out", tmp_path / "out", "--progress",
                 "none")  # on the API's device: a GPU's scores differ from the CPU's beyond the tolerance
    assert proc.returncode == 0, proc.stderr
    cli = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))
    assert cli["slice_scores"] == pytest.approx(result.slice_scores, abs=1e-5)
    assert not result.details and "score_se" not in cli  # one forward pass: no repeats to scatter
    # the shipped student's verdicts through the API: much noise added, a lower score on every slice
    clean = sitk.ReadImage(str(path))
    noisy = sitk.GetImageFromArray(sitk.GetArrayFromImage(clean) + np.random.default_rng(0).normal(0, 150, (2, 128, 128)))
    noisy.CopyInformation(clean)
    sitk.WriteImage(noisy, str(tmp_path / "noisy.nrrd"))
    scores = [EDIQALib.assess(p, device="cpu").slice_scores for p in (path, tmp_path / "noisy.nrrd")]
    assert all(n < c for c, n in zip(*scores)), scores


def test_python_api_takes_an_image_in_memory_or_a_volume_with_its_modality(tmp_path):
    import EDIQALib
    from EDIQALib.io import Volume, read_volume

    path = tmp_path / "ct.nrrd"  # the shipped student: MR's normalisation moves its score
    sitk.WriteImage(ct_image(slices=1, size=128, seed=9), str(path))
    by_path = EDIQALib.assess(path, device="cpu")
    in_memory = EDIQALib.assess(sitk.ReadImage(str(path)), device="cpu")
    assert in_memory.score == pytest.approx(by_path.score, abs=1e-6) and by_path.modality == "ct"
    with pytest.warns(UserWarning, match="MR"):
        mr_by_path = EDIQALib.assess(path, device="cpu", modality="mr")
    with pytest.warns(UserWarning, match="MR"):  # the modality given applies to a volume already read too
        mr_volume = EDIQALib.assess(read_volume(path), device="cpu", modality="mr")
    assert mr_volume.modality == "mr" and mr_volume.score == pytest.approx(mr_by_path.score, abs=1e-6)
    assert mr_volume.score != pytest.approx(by_path.score, abs=1e-3)
    with pytest.raises(TypeError, match="a path, a SimpleITK image or an EDIQALib.io.Volume"):
        EDIQALib.assess(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    # None is the default model and device, as it is the default modality (a TypeError from deep inside before)
    assert EDIQALib.assess(path, model=None, device=None).slice_scores == pytest.approx(
        EDIQALib.assess(path, model="student-lite", device="auto").slice_scores, abs=1e-6)
    with pytest.raises(TypeError, match="^device is 'auto', 'cpu', 'cuda' or 'cuda:N', not int$"):
        EDIQALib.assess(path, device=0)
    with pytest.raises(TypeError, match="^model is a student's name or the path of its .safetensors, not int$"):
        EDIQALib.assess(path, model=1)
    # before any work (a progress that is no function failed after the first batch of slices: all of them here)
    with pytest.raises(TypeError, match="^progress is a function of \\(stage, done, total\\) or None, not bool$"):
        EDIQALib.assess(path, progress=True)
    with pytest.raises(TypeError, match="^modality is 'ct', 'mr' or None, not int$"):
        EDIQALib.assess(path, modality=1)
    assert {"assess", "QualityResult"} <= set(dir(EDIQALib))  # loaded on first use, listed before it (completion)
    from EDIQALib.report import write_outputs
    with pytest.raises(TypeError, match="EDIQALib.io.volume_from_image"):  # an image assessed in memory: no .geometry
        write_outputs(in_memory, sitk.ReadImage(str(path)), tmp_path / "out")
    whole = read_volume(path)
    g = whole.geometry
    other = Volume(whole.array[:, :64], type(g)((128, 64, *g.size[2:]), g.spacing, g.origin, g.direction), "ct", "half")
    with pytest.raises(ValueError, match="pass the volume that was assessed"):  # wrote another image's map
        write_outputs(in_memory, other, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    volume = read_volume(path)
    with pytest.raises(InputError, match="modality 'CT'"):  # scored as MR before, without the MR warning
        Volume(volume.array, volume.geometry, "CT", "ct")
    with pytest.raises(InputError, match="not on its image's grid"):
        Volume(volume.array[:, :64], volume.geometry, "ct", "ct")
    # a volume made by hand is checked as a file's voxels and geometry are (NaN was scikit-image's
    # ValueError, an image of one value a score of NaN, a NaN origin a result of NaN geometry)
    holed = volume.array.copy()
    holed[0, 5, 5] = np.nan
    for made, says in ((Volume(holed, volume.geometry, "ct", "holed"), "holed: image contains NaN"),
                       (Volume(np.zeros_like(holed), volume.geometry, "ct", "flat"), "flat: image is constant")):
        with pytest.raises(InputError, match=says):
            EDIQALib.assess(made, device="cpu")
    flat = replace(volume.geometry, spacing=(0.0, 0.7, 1.0))  # SimpleITK's RuntimeError before
    with pytest.raises(InputError, match=r"spacing \(0.0, 0.7, 1.0\) is not positive millimetres"):
        Volume(volume.array, flat, "ct", "flat")
    image = sitk.ReadImage(str(path))
    image.SetOrigin((0.0, float("nan"), 0.0))
    with pytest.raises(InputError, match="image: its spacing, origin or direction holds NaN"):
        EDIQALib.assess(image, device="cpu")
    assert (by_path == in_memory) is False  # results compare as objects (a heatmap is no truth value)


@pytest.mark.parametrize("spacing, across", [((4.0, 0.7, 0.7), True), ((0.7, 3.0, 1.0), True),
                                            ((0.9, 0.9, 0.5), False), ((0.5, 1.1, 5.0), False),
                                            ((0.7, 0.7, 0.7), False)],
                         ids=["sagittal-stored-axially", "coronal-stored-axially", "thin-slice-ct",
                              "mr-rectangular-pixels", "isotropic"])
def test_a_volume_stored_across_its_acquired_slices_is_named(spacing, across):
    """Slices whose pixels are long one way, the long way longer than the distance between slices, are
    reformats across the acquired slices; thin slices under square pixels, rectangular pixels under
    thicker slices and isotropic voxels are not, nor is a volume of one slice."""
    from EDIQALib.io import looks_stored_across
    from EDIQALib.io import volume_from_image

    assert looks_stored_across(volume_from_image(ct_image(slices=3, size=128, spacing=spacing), "ct").spacing, 3) == across
    assert not looks_stored_across(volume_from_image(ct_image(slices=1, size=128, spacing=spacing), "ct").spacing, 1)


def test_values_unlike_the_modality_assessed_are_named(student_file):
    """A CT converted without its rescale (HU + 1024), or an MR given as CT, scored better than the CT itself
    without a word; a CT given as MR said only that MR is not validated."""
    import warnings

    import EDIQALib

    image = ct_image(slices=1, size=128)
    padded = sitk.GetArrayFromImage(image + 1024)  # as stored, with a scanner's padding outside its field of view
    padded[:, :8, :] = -2000  # (a padding below air's made it pass for HU)
    for stored in (image + 1024, sitk.GetImageFromArray(padded)):
        with pytest.warns(UserWarning, match=r"image: assessed as CT, but no value lies below 0 HU \(no air, no fat; "):
            EDIQALib.assess(stored, model=str(student_file), device="cpu", modality="ct")
    with pytest.warns(UserWarning) as caught:  # beside MR's own caveat
        EDIQALib.assess(image, model=str(student_file), device="cpu", modality="mr")
    assert any("image: assessed as MR, but its values reach −1000 as a CT's air does" in str(w.message) for w in caught)
    with pytest.warns(UserWarning) as caught:  # a CT whose padding is set aside shows no air: its tag says it
        EDIQALib.assess(get_testdata_file("CT_small.dcm"), model=str(student_file), device="cpu", modality="mr")
    assert any("CT_small: its Modality tag says CT; assessed as MR, as asked" in str(w.message) for w in caught)
    in_hu = sitk.GetArrayFromImage(image)
    in_hu[:, :8, :] = -3024  # a CT in HU with its padding: no warning
    for as_read, modality in ((image, "ct"), (sitk.GetImageFromArray(in_hu), "ct"), (image + 1024, "mr")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            EDIQALib.assess(as_read, model=str(student_file), device="cpu", modality=modality)
        assert not [w for w in caught if "but" in str(w.message)], [str(w.message) for w in caught]


def test_the_python_api_warns_of_a_volume_stored_across_its_acquired_slices(student_file):
    import EDIQALib

    image = ct_image(slices=3, size=128, spacing=(4.0, 0.7, 0.7))
    with pytest.warns(UserWarning, match=r"image: its pixels are 4 × 0\.7 mm and its slices 0\.7 mm apart, as in a "
                                         r"volume stored across its acquired slices"):
        EDIQALib.assess(image, model=str(student_file), device="cpu")


def test_python_api_leaves_the_caller_s_random_numbers_and_plotting_backend_alone(tmp_path, student_file):
    import EDIQALib

    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=128, seed=9), str(path))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    EDIQALib.assess(path, model=str(student_file), device="cpu")  # builds the network before its weights load
    assert torch.equal(torch.rand(3), expected)
    script = ("import matplotlib; matplotlib.use('svg'); import EDIQALib; from EDIQALib.io import read_volume; "
              "from EDIQALib.report import write_outputs; import sys; v = read_volume(sys.argv[1]); "
              "write_outputs(EDIQALib.assess(v, model=sys.argv[2], device='cpu'), v, sys.argv[3]); "
              "print(matplotlib.get_backend())")
    proc = subprocess.run([sys.executable, "-c", script, str(path), str(student_file), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["svg"]  # a notebook's inline backend stays as it was
    assert (tmp_path / "out" / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_assessment_runs_where_the_system_reports_no_cpu_affinity(tmp_path, student_file, monkeypatch):
    import os

    import EDIQALib

    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=2, size=128, seed=9), str(path))
    expected = EDIQALib.assess(path, model=str(student_file), device="cpu").slice_scores
    monkeypatch.delattr(os, "sched_getaffinity")  # as on macOS and Windows
    assert EDIQALib.assess(path, model=str(student_file), device="cpu").slice_scores == pytest.approx(expected)


def test_the_assessment_time_counts_the_heatmap_resampled_back(tmp_path, student_file, monkeypatch):
    import time

    import EDIQALib

    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=128, seed=9), str(path))
    resample_back = assessment.from_canonical

    def slow(*args):
        time.sleep(0.5)
        return resample_back(*args)

    monkeypatch.setattr(assessment, "from_canonical", slow)
    assert EDIQALib.assess(path, model=str(student_file), device="cpu").seconds >= 0.5


def test_large_slices_at_the_canonical_spacing_are_scored_in_fewer_per_batch(tmp_path):
    from EDIQALib.io import read_volume
    from EDIQALib.signals import InsertionConfig

    calls = []

    def scorer(positions, indices):
        calls.append(sum(b.image01.size for versions in positions for b in versions))
        return [[(0.5, np.zeros_like(b.image01), True) for b in versions] for versions in positions]

    for name, spacing in (("fine", 0.7), ("coarse", 5.0)):  # 128² at 5 mm: 914² slices at 0.7 mm
        path = tmp_path / f"{name}.nrrd"
        sitk.WriteImage(ct_image(slices=40, size=128, spacing=(spacing, spacing, 1.0), seed=3), str(path))
        calls.clear()
        assessment.assess_series([read_volume(path)], scorer, "EDIQA", {}, InsertionConfig(),
                                 chunk=assessment.BATCH_SLICES, with_psf=False)
        side = 128 if name == "fine" else 914
        assert sum(calls) == 40 * side ** 2  # every slice, once
        assert max(calls) <= assessment.BATCH_PIXELS
        if name == "fine":
            assert max(calls) == assessment.BATCH_SLICES * side ** 2  # small slices: full batches, as before
        else:
            assert len(calls) > -(-40 // assessment.BATCH_SLICES)  # large ones: more calls than full batches take


def test_a_volume_is_resampled_scored_and_mapped_back_a_few_slices_at_a_time(tmp_path, monkeypatch):
    """Memory holds one scorer call's slices at the canonical spacing, never the whole volume's: each call's
    slices are resampled, scored and their maps resampled back before the next call's, and each map lands
    on its own slice."""
    from EDIQALib.io import read_volume
    from EDIQALib.signals import InsertionConfig

    steps = []
    resample, resample_back = assessment.to_canonical, assessment.from_canonical

    def to_canonical(*args, **kwargs):
        out = resample(*args, **kwargs)
        steps.append(("resample", len(out)))
        return out

    def from_canonical(array, volume):
        steps.append(("back", len(array)))
        return resample_back(array, volume)

    def scorer(positions, indices):
        steps.append(("score", len(indices)))
        return [[(0.5, np.full(b.image01.shape, k / 100, np.float32), True) for b in versions]
                for k, versions in zip(indices, positions)]

    monkeypatch.setattr(assessment, "to_canonical", to_canonical)
    monkeypatch.setattr(assessment, "from_canonical", from_canonical)
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=40, size=128, spacing=(0.6, 0.6, 1.0), seed=3), str(path))
    (result,) = assessment.assess_series([read_volume(path)], scorer, "EDIQA", {}, InsertionConfig(), chunk=32,
                                         with_psf=False)
    assert steps == [("resample", 32), ("score", 32), ("back", 32), ("resample", 8), ("score", 8), ("back", 8)]
    np.testing.assert_allclose(result.heatmap, np.arange(40)[:, None, None] / 100 * np.ones((40, 128, 128)),
                               atol=1e-6)


def test_the_shipped_student_s_map_is_lower_where_one_half_of_a_slice_is_noisier():
    from EDIQALib.bench import heatmap_half_noise
    from EDIQALib.models import load_model

    figure = heatmap_half_noise(load_model("student-lite", "student")[0], cases=4)
    assert figure["cases"] == 12  # four unseen phantoms and the two real slices, each half in turn
    assert figure["lower_in_degraded"] >= 0.75  # 0.83 measured; a map that ignored the noise would be near 0.5


def _train_run(folder: Path, seed: int) -> Path:
    """An `ediqa train` run folder as publish-student reads it (a fresh student as its best)."""
    torch.manual_seed(seed)
    (folder / "stage2").mkdir(parents=True)
    save_weights(Student("lite"), folder / "stage2" / "best.safetensors")
    (folder / "run.json").write_text(json.dumps({"command": "ediqa train", "args": {"preset": "lite", "seed": seed,
                                                                                     "epochs": 1}}))
    (folder / "stage2" / "log.jsonl").write_text(json.dumps({"epoch": 1, "loss": 0.1}) + "\n")
    return folder


def test_published_ensemble_scores_the_mean_of_its_members(tmp_path):
    from EDIQALib import assess

    runs = [_train_run(tmp_path / f"run{seed}", seed) for seed in (1, 2)]
    (runs[1] / "run.json").write_text(json.dumps({  # trained on labels a student made (`ediqa label --model`)
        "command": "ediqa train", "held_out_slices": 0, "args": {"preset": "lite", "seed": 2, "stage1_iterations": 9,
                                                                 "epochs": 1},
        "labellers": [{"labels_file": "ens.csv", "model": {"name": "student-lite", "sha256": "0" * 64}}]}))
    image = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=2, size=160, spacing=(0.7, 0.7, 2.0)), str(image))
    singles = []
    for run in runs:
        card = package_model(run / "stage2" / "best.safetensors", run.name, "student", "lite", {}, tmp_path)
        singles.append(assess(image, model=str(card), device="cpu"))
    proc = ediqa("publish-student", *runs, "--name", "ensemble", "--models-dir", tmp_path / "registry")
    assert proc.returncode == 0, proc.stderr
    card = json.loads((tmp_path / "registry" / "ensemble.json").read_text(encoding="utf-8"))
    assert [m["args"]["seed"] for m in card["training"]["members"]] == [1, 2]
    assert card["description"].endswith(  # each run as it was trained and kept its best epoch
        "heatmap; stage-2 regression of the teacher's scores and maps from random weights (no stage 1); two-stage "
        "distillation (stage-1 insertion detector on the student's backbone, stage-2 regression of student-lite's "
        "scores and maps); an ensemble of 2 students, their probabilities averaged.")
    assert card["selection"] == ("epoch of the lowest training loss (no series held out); epoch with the highest "
                                 "PLCC + SROCC against the teacher on held-out series")
    both = assess(image, model=str(tmp_path / "registry" / "ensemble.safetensors"), device="cpu")
    for k in range(2):  # the mean of the members' probabilities, slice by slice and pixel by pixel
        assert both.slice_scores[k] == pytest.approx(np.mean([s.slice_scores[k] for s in singles]), abs=1e-5)
    np.testing.assert_allclose(both.heatmap, np.mean([s.heatmap for s in singles], axis=0), atol=1e-5)
    assert singles[0].slice_scores != singles[1].slice_scores

    paper = _train_run(tmp_path / "paper", 3)
    (paper / "run.json").write_text(json.dumps({"command": "ediqa train", "args": {"preset": "paper", "epochs": 1}}))
    proc = ediqa("publish-student", runs[0], paper, "--name", "mixed", "--models-dir", tmp_path / "registry")
    assert proc.returncode == 2 and "must share their preset" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "registry" / "mixed.safetensors").exists()


def test_publishing_can_blend_a_fine_tuned_student_with_its_start(tmp_path):
    """A run fine-tuned from member 1 of an ensemble (``train --init ... --init-member 1``) is published
    blended with that member."""
    from safetensors.torch import load_file

    from EDIQALib.commands.runs import initial_student
    from EDIQALib.student import StudentEnsemble

    torch.manual_seed(5)
    start = _registered(StudentEnsemble("lite", 2), tmp_path / "start", "start")
    run = _train_run(tmp_path / "tuned", 6)
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    info["args"].update(init=str(start), init_member=1)
    info["init"] = initial_student(str(start), 1, "lite")[1]  # as train records it
    (run / "run.json").write_text(json.dumps(info))
    proc = ediqa("publish-student", run, "--blend-init", "0.25", "--name", "blend", "--models-dir", tmp_path / "reg")
    assert proc.returncode == 0, proc.stderr
    begin, end = load_file(str(start)), load_file(str(run / "stage2" / "best.safetensors"))
    blend = load_file(str(tmp_path / "reg" / "blend.safetensors"))
    assert set(blend) == set(end)
    for key in ("head.0.weight", "map_head.0.bias"):
        member = begin[f"members.1.{key}"]
        assert not torch.allclose(member, end[key], atol=1e-3) and not torch.allclose(member, begin[f"members.0.{key}"])
        torch.testing.assert_close(blend[key], 0.25 * member + 0.75 * end[key])
    card = json.loads((tmp_path / "reg" / "blend.json").read_text())
    assert "0.25 of the start's" in card["blend_init"] and "fine-tuned from start (its member 1)" in card["description"]
    image = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=160, spacing=(0.7, 0.7, 2.0)), str(image))
    assert ediqa("assess", image, "--model", tmp_path / "reg" / "blend.safetensors", "--out", tmp_path / "out",
                "--progress", "none").returncode == 0

    fresh = _train_run(tmp_path / "fresh", 7)  # no --init to blend with
    torch.manual_seed(8)
    _registered(Student("lite"), tmp_path / "start", "start")  # the start replaced since the run
    for runs, extra, message in (([fresh], ["--blend-init", "0.5"], "did not start from a trained student"),
                                 ([run], ["--blend-init", "0.5"], "has since changed"),
                                 ([run], ["--blend-init", "1"], "in [0, 1)")):
        proc = ediqa("publish-student", *runs, *extra, "--name", "bad", "--models-dir", tmp_path / "reg")
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "reg" / "bad.safetensors").exists()


def test_publishing_refuses_to_replace_what_it_publishes_from_or_to_nest_ensembles(tmp_path):
    """The card written over the notes it records, the weights over a run's best; runs whose bests are
    ensembles published as an ensemble no network loads; a run record of another shape, a traceback."""
    from EDIQALib.student import StudentEnsemble

    runs = [_train_run(tmp_path / f"run{seed}", seed) for seed in (1, 2)]
    registry = tmp_path / "reg"
    registry.mkdir()
    notes = registry / "notes.json"
    notes.write_text('{"a": 1}')
    best = runs[0] / "stage2" / "best.safetensors"
    before = best.read_bytes()
    for args, replaced in ((["--name", "notes", "--notes", notes, "--models-dir", registry], "notes.json"),
                           (["--name", "best", "--models-dir", runs[0] / "stage2"], "best.safetensors")):
        proc = ediqa("publish-student", *runs, *args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"would overwrite the input {replaced}" in proc.stderr
    assert notes.read_text() == '{"a": 1}' and best.read_bytes() == before

    torch.manual_seed(4)
    save_weights(StudentEnsemble("lite", 2), best)  # as `train --init <ensemble>` without --init-member saves it
    proc = ediqa("publish-student", *runs, "--name", "nested", "--models-dir", registry)
    assert proc.returncode == 2 and f"{best} holds an ensemble" in proc.stderr, proc.stderr
    assert ediqa("publish-student", runs[0], "--name", "alone", "--models-dir", registry).returncode == 0

    info = json.loads((runs[1] / "run.json").read_text())
    for args, init in (({"init": 5}, {"name": "x", "sha256": "f0"}),
                       ({"init": "student-lite", "init_member": "0"}, {"name": "x", "sha256": "f0"})):
        (runs[1] / "run.json").write_text(json.dumps({**info, "args": {**info["args"], **args}, "init": init}))
        proc = ediqa("publish-student", runs[1], "--blend-init", "0.5", "--name", "odd", "--models-dir", registry)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "does not record its start as `ediqa train` does" in proc.stderr
    assert sorted(f.name for f in registry.iterdir()) == ["alone.json", "alone.safetensors", "notes.json"]


def test_publish_student_refuses_unfinished_runs_and_unreadable_records_before_writing(tmp_path):
    from safetensors.torch import load_file

    from EDIQALib.student import StudentEnsemble

    run = _train_run(tmp_path / "run", 1)
    registry = tmp_path / "reg"
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    info["args"]["epochs"] = 3  # its log holds one epoch
    (run / "run.json").write_text(json.dumps(info))
    bench = tmp_path / "bench.json"
    bench.write_text("{not json", encoding="utf-8")
    weights = run / "stage2" / "best.safetensors"
    cases = [("stopped after epoch 1 of 3", lambda: None),
             ("bench report", lambda: (run / "stage2" / "log.jsonl").write_text(
                 "".join(json.dumps({"epoch": e, "loss": 0.1}) + "\n" for e in (1, 2, 3)))),
             ("not readable as safetensors", lambda: (bench.write_text("{}"), weights.write_bytes(b"\0" * 64))),
             ("run record", lambda: (run / "run.json").write_text("{", encoding="utf-8"))]
    for says, change in cases:  # each fixed in turn, until the next defect is the first one met
        change()
        proc = ediqa("publish-student", run, "--bench", bench, "--name", "s", "--models-dir", registry)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not registry.exists()
    # a run that fine-tuned a whole ensemble (`train --init` an ensemble) publishes as one
    (run / "run.json").write_text(json.dumps(info))
    save_weights(StudentEnsemble("lite", 2), weights)
    proc = ediqa("publish-student", run, "--name", "s", "--models-dir", registry)
    assert proc.returncode == 0, proc.stderr
    assert {k.split(".")[1] for k in load_file(str(registry / "s.safetensors"))} == {"0", "1"}
    # a bench's figures go into the card only when they are of the weights published
    published = json.loads((registry / "s.json").read_text(encoding="utf-8"))["sha256"]
    for model, says in (({}, "measured no model it names"),
                        ({"name": "other", "sha256": "0" * 64}, "measured a model of sha256 000000000000…")):
        bench.write_text(json.dumps({"model": model}), encoding="utf-8")
        proc = ediqa("publish-student", run, "--bench", bench, "--name", "s2", "--models-dir", registry)
        assert proc.returncode == 2 and f"--bench {bench} {says}, not the weights published" in proc.stderr, proc.stderr
    bench.write_text(json.dumps({"model": {"name": "s", "sha256": published}}), encoding="utf-8")
    proc = ediqa("publish-student", run, "--bench", bench, "--name", "s2", "--models-dir", registry)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((registry / "s2.json").read_text(encoding="utf-8"))["metrics"]["model"]["sha256"] == published


def _registered(student: Student, folder: Path, name: str) -> Path:
    """``student`` saved into the registry ``folder`` as ``name`` with a card; the weights' path."""
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(student, folder / "weights.safetensors")
    return package_model(folder / "weights.safetensors", name, "student", "lite", {}, folder)


def test_a_small_slice_is_scored_as_in_training():
    """Assessment sees a slice smaller than the training field as training did (mirrored out to
    ``field_batch``), so the trained student's score of it is the one it learnt: the assessment path and
    the training batch path give the same score, and a smaller field alone would not."""
    from EDIQALib.assessment import student_scorer
    from EDIQALib.backgrounds import slice_background
    from EDIQALib.distill import Sample, predict
    from EDIQALib.signals import InsertionConfig
    from EDIQALib.simulate import phantom
    from EDIQALib.student import MIN_FIELD_PX

    torch.manual_seed(0)
    net = Student("lite")
    with torch.no_grad():
        net.head[-1].weight.mul_(30.0)  # an untrained head barely moves: make the input's field show
    hu = phantom(3, kind="back")[:150, :150]
    background = slice_background(hu, "ct", InsertionConfig(), with_psf=False)
    assert max(background.image01.shape) < MIN_FIELD_PX
    trained = predict(net, [Sample(background.image01, 0.0, np.zeros((1, 1)), "g")])[0]
    assessed = student_scorer(copy.deepcopy(net), InsertionConfig())([[background]], [0])[0][0][0]
    net.eval()
    with torch.no_grad():
        alone = torch.sigmoid(net(torch.from_numpy(background.image01)[None, None])[0]).item()
    logit = torch.logit(torch.tensor([assessed, trained, alone], dtype=torch.float64)).tolist()
    assert logit[0] == pytest.approx(logit[1], abs=1e-4)
    assert abs(logit[2] - logit[1]) > 1e-3


def test_one_physical_slice_gets_one_score_and_one_map_however_its_file_stores_it():
    """The bundled head slice, and the same voxels stored with rows flipped (as NIfTI converters often
    store them), rows and columns flipped, and transposed: the shipped student scored them 0.147, 0.100, 0.096
    and 0.084."""
    from EDIQALib.assessment import student_assessor
    from EDIQALib.io import image_like, read_volume, volume_from_image

    head = read_volume(Path(__file__).resolve().parent.parent / "Resources" / "SampleData" / "head-ct-slice.nrrd")
    image = image_like(head.array, head.geometry)
    image = image if image.GetDimension() == 3 else sitk.JoinSeries(image)
    codes = ("LPS", "LAS", "RAS", "PLS")
    stored = [sitk.DICOMOrient(image, code) for code in codes]
    assess_one = student_assessor(device="cpu")
    results = [assess_one(volume_from_image(s, code, modality="ct")) for s, code in zip(stored, codes)]
    assert [r.score for r in results] == pytest.approx([results[0].score] * 4, abs=1e-6)
    maps = []
    for result, s in zip(results, stored):
        heat = sitk.GetImageFromArray(result.heatmap.reshape(sitk.GetArrayFromImage(s).shape))
        heat.CopyInformation(s)
        maps.append(sitk.GetArrayFromImage(sitk.DICOMOrient(heat, "LPS")))  # each map in one physical order
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], atol=1e-5)


def test_a_volume_s_repeat_scores_average_its_slices_per_repeat_and_give_its_standard_error():
    from EDIQALib.assessment import repeat_summary

    # slice 1 is not assessable (no repeats); slice 2 missed one repeat's score
    summary = repeat_summary([(0.1, 0.3, 0.2), (), (0.3, float("nan"), 0.4)])
    assert summary["repeat_scores"] == pytest.approx([0.2, 0.3, 0.3])
    assert summary["score_se"] == pytest.approx(np.std([0.2, 0.3, 0.3], ddof=1) / np.sqrt(3), abs=1e-6)
    assert repeat_summary([(0.25,), (0.35,)]) == {"repeat_scores": [0.3], "score_se": None}  # one repeat
    assert repeat_summary([(), ()]) == {}  # the student's slices: no repeats


def test_the_overlay_of_a_volume_plots_its_slice_scores_and_marks_the_shown_slice(tmp_path, student_file):
    import EDIQALib
    from EDIQALib.io import read_volume
    from EDIQALib.report import overlay_figure
    from EDIQALib.scoring import worst_slice

    arr = sitk.GetArrayFromImage(ct_image(slices=3, size=128, seed=4))
    arr[1] = -1000.0  # air only: not assessable
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.8, 0.8, 2.5))
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(image, str(path))
    result = EDIQALib.assess(path, model=str(student_file), device="cpu")
    assert result.slice_scores[1] is None and None not in (result.slice_scores[0], result.slice_scores[2])

    fig = overlay_figure(read_volume(path), result)
    (curve,) = [ax for ax in fig.axes if ax.get_xlabel() == "slice"]
    scores, marker = curve.get_lines()
    np.testing.assert_allclose(scores.get_ydata(), [result.slice_scores[0], np.nan, result.slice_scores[2]])
    assert list(marker.get_xdata()) == [worst_slice(result.slice_scores)] * 2
    bottom, top = curve.get_ylim()  # from 0, and the highest point inside the frame, not on it
    assert bottom == 0 and top >= 1.05 * max(result.slice_scores[0], result.slice_scores[2])

    one = tmp_path / "one.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=128, seed=4), str(one))
    single = overlay_figure(read_volume(one), EDIQALib.assess(one, model=str(student_file), device="cpu"))
    assert not [ax for ax in single.axes if ax.get_xlabel() == "slice"]  # one slice: the image alone


def test_figures_stay_readable_with_long_names_many_inputs_isolated_slices_and_mr(tmp_path, student_file):
    """A long name ran off the overlay's title (its slice and score lost); an assessable slice between two that
    are not was not drawn in a curve of 30 slices or more; the 11th input's curve took the 1st's colour; an
    MR figure said nothing of MR; a volume without an assessable slice marked a worst slice."""
    from dataclasses import replace

    import EDIQALib
    from EDIQALib.io import read_volume
    from EDIQALib.report import overlay_figure, plot_slice_scores
    from matplotlib.figure import Figure

    path = tmp_path / ("Patient_Müller_contrast-enhanced_head_CT_axial_series_0001_reconstruction_soft_tissue.nrrd")
    sitk.WriteImage(ct_image(slices=1, size=128, seed=4), str(path))
    volume = read_volume(path)
    result = EDIQALib.assess(volume, model=str(student_file), device="cpu")
    title = overlay_figure(volume, result).axes[0].get_title()
    assert max(len(line) for line in title.splitlines()) <= 60 and f"EDIQA {result.slice_scores[0]:.3f}" in title
    assert all(line[-1] in "_-" for line in title.splitlines()[:-2])  # the name broken between its words
    assert "MR" not in title
    as_mr = replace(result, modality="mr")
    assert "MR: scores not validated" in overlay_figure(volume, as_mr).axes[0].get_title()

    scores = [None] * 40
    scores[10], scores[20], scores[30] = 0.3, 0.2, 0.25
    isolated = replace(result, slice_scores=scores, assessable=[s is not None for s in scores])
    ax = Figure().subplots()
    plot_slice_scores(ax, [isolated] + [replace(isolated, name=f"v{i}") for i in range(10)])
    lines = ax.get_lines()
    assert lines[0].get_marker() == "o"  # points with gaps on both sides are drawn
    assert len({line.get_color() for line in lines}) == 11  # eleven inputs, eleven colours
    air = replace(isolated, slice_scores=[None] * 40, assessable=[False] * 40, score=float("nan"))
    ax = Figure().subplots()
    plot_slice_scores(ax, [air], marked=None)
    assert [t.get_text() for t in ax.texts] == ["no slice assessable"]


def test_the_heatmap_colour_scale_spans_the_maps_values_on_one_scale_for_compared_results(tmp_path, student_file):
    from dataclasses import replace

    import EDIQALib
    from EDIQALib.report import heatmap_display_max
    from EDIQALib.io import read_volume
    from EDIQALib.report import overlay_figure

    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=128, seed=4), str(path))
    result = EDIQALib.assess(path, model=str(student_file), device="cpu")
    inside = np.isfinite(result.heatmap)
    values = np.full(result.heatmap.shape, np.nan, np.float32)
    values[inside] = np.linspace(0.02, 0.21, inside.sum())  # a full-dose head CT's range
    low = replace(result, heatmap=values)
    assert heatmap_display_max([low]) == pytest.approx(0.25)  # the 99th percentile, 0.208, rounded up to 0.05
    high = replace(low, heatmap=low.heatmap * 3)
    assert heatmap_display_max([low, high]) == heatmap_display_max([high]) == pytest.approx(0.65)
    volume = replace(low, heatmap=np.concatenate([low.heatmap, high.heatmap / 2, high.heatmap / 2]))
    top = np.ceil(np.nanpercentile(volume.heatmap, 99) / 0.05) * 0.05  # every slice's values count
    assert top == pytest.approx(0.35)
    assert heatmap_display_max([volume]) == heatmap_display_max([low, volume]) == pytest.approx(top)
    # side by side, the highest of their own scales: a small map of high values keeps its own, 0.6, where
    # the 99th percentile of both maps' values together (0.25: over 99 % of them are low's) would saturate it
    small = np.full(low.heatmap.shape, np.nan, np.float32)
    small.flat[:50] = np.linspace(0.3, 0.6, 50)
    assert inside.sum() > 50 * 100
    assert heatmap_display_max([low, replace(low, heatmap=small)]) == pytest.approx(0.6)
    # an input without a map (no slice assessable) keeps the others' scale: it set it to 0-1 before
    empty = replace(low, heatmap=np.full(low.heatmap.shape, np.nan, np.float32))
    assert heatmap_display_max([low, empty]) == pytest.approx(0.25) and heatmap_display_max([empty]) == 0.05
    (heat,) = [im for im in overlay_figure(read_volume(path), low).axes[0].get_images() if im.get_cmap().name == HEATMAP_CMAP]
    assert heat.get_clim() == pytest.approx((0.0, 0.25))


def test_the_heatmap_s_ends_stay_apart_for_a_red_green_colour_blind_reader():
    """"Lesions missed" and "found" must not look alike to the one reader in twelve or so who cannot tell red
    from green: RdYlGn's ends, seen through a full deuteranopia or protanopia (Machado, Oliveira and Fernandes
    2009, in linear RGB), lie about 18 CIELAB units apart, as two shades of one olive, against 98 for normal
    vision."""
    from matplotlib import colormaps
    from skimage.color import rgb2lab

    seen_as = {"deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                                [-0.011820, 0.042940, 0.968881]],
               "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                              [-0.003882, -0.048116, 1.051998]]}
    ends = colormaps[HEATMAP_CMAP]([0.0, 1.0])[:, :3]
    linear = np.where(ends <= 0.04045, ends / 12.92, ((ends + 0.055) / 1.055) ** 2.4)
    for name, matrix in seen_as.items():
        seen = np.clip(linear @ np.array(matrix).T, 0.0, 1.0)
        srgb = np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)
        low, high = rgb2lab(srgb[None])[0]
        assert np.linalg.norm(low - high) > 50, name


def test_the_comparison_figure_shows_bars_for_single_slices_and_curves_for_volumes_on_one_heatmap_scale(
        tmp_path, student_file):
    import EDIQALib
    from EDIQALib.io import read_volume
    from EDIQALib.report import compared_input, comparison_figure

    def assessed(name, slices, seed, size=128):
        path = tmp_path / f"{name}.nrrd"
        sitk.WriteImage(ct_image(slices=slices, size=size, seed=seed), str(path))
        return compared_input(EDIQALib.assess(path, model=str(student_file), device="cpu"), read_volume(path), path)

    singles = [assessed(f"one-{s}", 1, s) for s in (3, 5)]
    air = tmp_path / "air.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(2).normal(-1000, 5, (1, 128, 128)).astype(np.float32)),
                    str(air))
    with pytest.warns(UserWarning, match="no slice is assessable"):  # the API's form of the CLI's warning line
        unassessed = compared_input(EDIQALib.assess(air, model=str(student_file), device="cpu", modality="ct"),
                                    read_volume(air, "ct"), air)
    fig = comparison_figure([*singles, unassessed])
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars] == pytest.approx([c.score for c in singles] + [0.0])
    assert [t.get_text() for t in fig.axes[0].texts][-1] == "not assessable"
    tops = {im.get_clim() for ax in fig.axes[1:] for im in ax.get_images() if im.get_cmap().name == HEATMAP_CMAP}
    assert len(tops) == 1  # one colour scale for both panels
    with pytest.warns(UserWarning, match="no slice is assessable"):  # too small for a lesion; shown all the same
        small = assessed("small", 1, 7, size=96)
    fig = comparison_figure([singles[0], small])  # on common axes: the small image leaves its panel's edges blank
    panel, c = fig.axes[2], small
    FigureCanvasAgg(fig).draw()
    corners = panel.transData.transform([(0, 0), (c.image.shape[1] * c.spacing[0], c.image.shape[0] * c.spacing[1])])
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)  # the small image, in the figure's pixels
    letters = [t.get_transform().transform(t.get_position()) for t in panel.texts if t.get_text() in ("R", "L", "A", "P")]
    assert len(letters) == 4 and all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in letters)  # not on the blank beyond
    volumes = [assessed(f"vol-{s}", 2, s) for s in (3, 5)]
    fig = comparison_figure(volumes)
    assert not fig.axes[0].patches and len(fig.axes[0].get_lines()) == 2 and fig.axes[0].get_xlabel() == "slice"


def test_the_overlay_names_the_patient_directions_at_the_image_edges(tmp_path, student_file):
    import EDIQALib
    from EDIQALib.io import read_volume
    from EDIQALib.report import display_slice, edge_letters, overlay_figure

    image = ct_image(slices=1, size=128, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    path = tmp_path / "axial.nrrd"
    sitk.WriteImage(image, str(path))
    volume = read_volume(path)
    assert edge_letters(volume) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}  # the radiological view
    texts = {t.get_text() for t in overlay_figure(volume, EDIQALib.assess(path, model=str(student_file))).axes[0].texts}
    assert {"R", "L", "A", "P"} <= texts
    image.SetDirection((-1, 0, 0, 0, 0, 1, 0, -1, 0))  # coronal, stored mirrored
    sitk.WriteImage(image, str(path))
    assert edge_letters(read_volume(path)) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}  # shown turned
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))  # axial, stored transposed
    sitk.WriteImage(image, str(path))
    turned = read_volume(path)
    assert edge_letters(turned) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    shown = overlay_figure(turned, EDIQALib.assess(path, model=str(student_file))).axes[0].images[0].get_array()
    assert np.allclose(shown, display_slice(volume, 0, np.zeros((1, 128, 128)), "ct")[0].T)  # shown as displayed


def test_an_mr_slice_is_shown_on_its_volume_s_scale(tmp_path):
    """A slice of background noise was stretched to [0, 1] on its own, as bright as the body."""
    from EDIQALib.io import read_volume
    from EDIQALib.report import display_slice

    body = (water_cylinder(128) > -500) * 800.0
    noise = np.random.default_rng(0).normal(20, 5, (2, 128, 128))
    path = tmp_path / "mr.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray((noise + [body, 0 * body]).astype(np.float32)), str(path))
    volume = read_volume(path, "mr")
    shown = [display_slice(volume, k, np.zeros(volume.array.shape), "mr")[0] for k in (0, 1)]
    assert shown[0].max() == pytest.approx(1.0) and shown[1].max() < 0.1


def test_the_overlay_shows_the_image_as_the_modality_it_was_assessed_as(tmp_path, student_file):
    """``assess(volume, modality="mr")`` of a CT volume, then its overlay, drew the image in the CT window."""
    import EDIQALib
    from EDIQALib.io import read_volume
    from EDIQALib.report import display_slice, overlay_figure

    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct_image(slices=1, size=128), str(path))
    volume = read_volume(path)
    with pytest.warns(UserWarning, match="MR"):
        result = EDIQALib.assess(volume, model=str(student_file), modality="mr")
    shown = overlay_figure(volume, result).axes[0].images[0].get_array()
    as_mr, as_ct = (display_slice(volume, 0, result.heatmap, m)[0] for m in ("mr", "ct"))
    assert not np.allclose(as_mr, as_ct) and np.allclose(shown, as_mr)
    assert any("not validated" in note for note in assessment.caveats(volume, result))  # the CT volume, assessed as MR


def test_the_overlay_of_a_wide_slice_keeps_its_legend_and_of_a_tall_one_fits_a_page(tmp_path, student_file):
    """A 64 × 1000 strip left the colour legend's label cut off; 0.5 × 1.5 mm pixels made a figure 20 in tall."""
    import EDIQALib
    from EDIQALib.io import read_volume
    from EDIQALib.report import overlay_figure

    heights = {}
    for name, hu, spacing in (("wide", water_cylinder(1000)[468:532], (0.7, 0.7)), ("tall", water_cylinder(320), (0.5, 1.5))):
        image = sitk.GetImageFromArray(np.stack([hu, hu]).astype(np.float32))
        image.SetSpacing((*spacing, 2.0))
        sitk.WriteImage(image, str(tmp_path / f"{name}.nrrd"))
        volume = read_volume(tmp_path / f"{name}.nrrd")
        fig = overlay_figure(volume, EDIQALib.assess(volume, model=str(student_file)))
        renderer = FigureCanvasAgg(fig).get_renderer()
        legend = next(a for a in fig.axes if a.get_ylabel().startswith("local detectability"))
        label = legend.yaxis.label.get_window_extent(renderer)
        assert label.y0 >= 0 and label.y1 <= fig.bbox.height  # the whole label on the figure
        heights[name] = fig.get_figheight()
    assert heights["tall"] <= 11


def test_the_student_s_map_is_read_where_the_slice_lies_in_its_field():
    """The scorer cuts each slice's map out of the network's field (the slice mirrored out at its bottom
    and right, 4× coarser): with a network whose map is its input's local brightness, the map follows the
    slice's own image, on a slice that is neither square nor as large as the field."""
    import torch.nn.functional as F

    from EDIQALib.assessment import student_scorer
    from EDIQALib.backgrounds import slice_background
    from EDIQALib.signals import InsertionConfig
    from EDIQALib.simulate import phantom

    class Brightness(torch.nn.Module):
        def for_inference(self):
            return self

        def forward(self, x):
            return x.mean(dim=(1, 2, 3)), 8.0 * (F.avg_pool2d(x, 4) - 0.5)

    hu = np.pad(phantom(3, size=200, kind="body")[:, 30:], ((0, 0), (0, 60)), constant_values=-1000.0)
    background = slice_background(hu, "ct", InsertionConfig(), with_psf=False)
    assert background.image01.shape == (200, 230)
    score, hmap, ok, _ = student_scorer(Brightness(), InsertionConfig())([[background]], [0])[0][0]
    assert ok and hmap.shape == background.image01.shape
    defined = np.isfinite(hmap)
    assert np.array_equal(defined, background.body)
    # the map matches the slice's image, smoothed as the 4× pooling smooths it, best where not shifted
    smooth, core = ndi.gaussian_filter(background.image01, 2.0), ndi.binary_erosion(defined, iterations=3)
    match = {(dy, dx): np.corrcoef(hmap[core], np.roll(smooth, (dy, dx), axis=(0, 1))[core])[0, 1]
             for dy in range(-2, 3) for dx in range(-2, 3)}
    assert match[0, 0] > 0.9 and max(match, key=match.get) == (0, 0), match


class _ConstantStudent(torch.nn.Module):
    """A stand-in student whose outputs are constants (a score logit, a map logit); it records the size of
    each batch it sees."""

    def __init__(self, score: float, heat: float):
        super().__init__()
        self.score, self.heat, self.batches = score, heat, []

    def for_inference(self):
        return self

    def forward(self, x):
        self.batches.append(len(x))
        return (torch.full((len(x),), self.score),
                torch.full((len(x), 1, x.shape[2] // 4, x.shape[3] // 4), self.heat))


def test_a_student_that_gives_nan_is_refused_not_written_as_a_score():
    """Weights that are finite but blow the activations up (a training at an absurd learning rate) gave NaN
    scores, written to result.json as bare NaN, which is not JSON."""
    from EDIQALib.assessment import student_scorer
    from EDIQALib.backgrounds import slice_background
    from EDIQALib.signals import InsertionConfig
    from EDIQALib.simulate import phantom

    background = slice_background(phantom(3, size=200, kind="body"), "ct", InsertionConfig(), with_psf=False)
    assert student_scorer(_ConstantStudent(0.0, 0.0), InsertionConfig())([[background]], [0])[0][0][0] == 0.5
    for score, heat in ((float("nan"), 0.0), (0.0, float("nan")), (float("inf"), 0.0)):
        with pytest.raises(InputError, match="NaN or infinite outputs: its weights are broken"):
            student_scorer(_ConstantStudent(score, heat), InsertionConfig())([[background]], [0])


def test_slices_that_are_not_assessable_do_not_go_through_the_network():
    """Slices of air (a volume's empty end slices) are not assessable: they get no score and no map without
    a forward pass; the others fill the batches."""
    from EDIQALib.assessment import student_scorer
    from EDIQALib.backgrounds import slice_background
    from EDIQALib.signals import InsertionConfig
    from EDIQALib.simulate import phantom

    body = slice_background(phantom(3, size=200, kind="body"), "ct", InsertionConfig(), with_psf=False)
    air = slice_background(np.random.default_rng(0).normal(-1000.0, 5.0, (200, 200)), "ct", InsertionConfig(),
                           with_psf=False)
    net = _ConstantStudent(0.0, 0.0)
    verdicts = student_scorer(net, InsertionConfig(), batch_size=2)([[air], [body], [air], [body], [body]],
                                                                    list(range(5)))
    assert net.batches == [2, 1]
    assert [v[0][2] for v in verdicts] == [False, True, False, True, True]
    for (score, heat, assessable, repeats), in verdicts:
        assert repeats == ()  # one forward pass: no repeats
        assert np.isnan(heat).all() != assessable
        assert score == 0.5 if assessable else np.isnan(score)