"""A tiny two-stage distillation end to end on CPU: stage-1 transfer, stage-2 loss falls, ranking learnt."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from EDIQALib import training_log
from EDIQALib.backgrounds import make_background
from EDIQALib.detector import DetectorTraining, train_detector
from EDIQALib.distill import (Sample, StudentTraining, distillation_loss, load_samples, mixed_quality,
                              pool_labellings, predict, split_by_series, stage1_detectors, train_student,
                              transfer_backbones, version_pairs, versions_of)
from EDIQALib.errors import InputError
from EDIQALib.models import package_model
from EDIQALib.simulate import phantom
from EDIQALib.student import Student
from conftest import ct_image, ediqa


def _series(tmp_path, seed):
    folder = tmp_path / f"series-{seed}"
    folder.mkdir()
    hu = phantom(seed, size=192, kind="body")
    for i, sd in enumerate((5.0, 120.0)):  # clean, much noisier
        img = sitk.GetImageFromArray(hu + np.random.default_rng(seed + i).normal(0, sd, hu.shape).astype(np.float32))
        img.SetSpacing((0.7, 0.7))
        sitk.WriteImage(img, str(folder / f"{i}.nrrd"))
    return folder


def _label(data, labels, realizations: int) -> None:
    proc = ediqa("label", *data, "--out", labels, "--realizations", realizations, "--repeats", "1", "--progress", "none")
    assert proc.returncode == 0, proc.stderr


def test_two_stage_distillation_end_to_end(tmp_path):
    torch.manual_seed(0)
    data = [_series(tmp_path, s) for s in (41, 42)]
    labels = tmp_path / "labels.csv"
    _label(data, labels, 8)

    # stage 1: a detector on the student's backbone, trained on insertions; its stages seed the student
    student = Student("lite")
    detectors = stage1_detectors("lite")
    bank = [make_background(phantom(43, size=192, kind="body"))]
    train_detector(detectors[0], bank, tmp_path / "stage1", DetectorTraining(iterations=2, batch_size=2, crop_px=96))
    transfer_backbones(student, detectors)
    for k, v in detectors[0].backbone.stages.state_dict().items():
        assert torch.equal(student.backbones[0].state_dict()[k], v)

    # stage 2: regress the teacher's scores and maps
    samples = load_samples(labels)
    assert len(samples) == 4
    train, held = split_by_series(samples, held_out_fraction=0.0)
    assert len(train) == 4 and not held
    train_student(student, train, [], tmp_path / "stage2", StudentTraining(epochs=40, batch_size=4, lr=2e-3, rank_weight=2.0))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "stage2" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert (tmp_path / "stage2" / "training.png").read_bytes()[:4] == b"\x89PNG"
    teacher = np.array([s.score for s in samples])
    pred = predict(student, samples)
    for i in (0, 2):  # each series: the clean slice above the noisy one, for teacher and student
        assert teacher[i] > teacher[i + 1]
        assert pred[i] > pred[i + 1]


def test_training_curves_mark_the_epoch_the_run_keeps(tmp_path):
    entries = [{"epoch": 1, "loss": 0.3, "plcc": 0.8, "srocc": 0.7}, {"epoch": 2, "loss": 0.2, "plcc": 0.9, "srocc": 0.85},
               {"epoch": 3, "loss": 0.1, "plcc": 0.95, "srocc": 0.7}]  # PLCC + SROCC best at epoch 2
    for entry in entries:
        training_log.append(tmp_path, entry)
    assert [json.loads(line) for line in (tmp_path / "log.jsonl").read_text(encoding="utf-8").splitlines()] == entries
    assert (tmp_path / "training.png").read_bytes()[:4] == b"\x89PNG" and not list(tmp_path.glob(".tmp*"))
    loss_axes, validation_axes = training_log.curves_figure(entries).axes
    assert [line.get_label() for line in loss_axes.get_lines()] == ["loss"]
    assert [line.get_label() for line in validation_axes.get_lines()] == ["plcc", "srocc", "kept: epoch 2"]
    diverged_first = [{"epoch": 1, "loss": 9.0, "plcc": float("nan"), "srocc": float("nan")}, *entries[1:]]
    assert training_log.curves_figure(diverged_first).axes[1].get_lines()[-1].get_label() == "kept: epoch 2"


def test_mixed_quality_composite_joins_two_versions_along_one_cut():
    rng = np.random.default_rng(0)
    a = Sample(np.zeros((64, 48), np.float32), 0.4, np.zeros((16, 12), np.float32), "s/0")
    b = Sample(np.ones((64, 48), np.float32), 0.1, np.ones((16, 12), np.float32), "s/0")
    for _ in range(20):
        mixed = mixed_quality(a, b, rng)
        assert np.isnan(mixed.score) and mixed.group == "s/0"
        assert 0.25 < mixed.image01.mean() < 0.75  # both versions present
        # the image changes version exactly where its map label does (map cells are 4 × 4 pixels)
        np.testing.assert_array_equal(mixed.heatmap, mixed.image01[::4, ::4])
        assert np.all(np.diff(mixed.image01, axis=0) >= 0) and np.all(np.diff(mixed.image01, axis=1) >= 0)
    assert a.image01.max() == 0 and b.heatmap.min() == 1  # inputs untouched

    # without a score label, the loss is the map term alone and stays finite
    cfg = StudentTraining(rank_weight=1.0)
    logits = torch.zeros(2, requires_grad=True)
    maps = torch.zeros(2, 1, 16, 12, requires_grad=True)
    score = torch.tensor([float("nan"), 0.3])
    loss = distillation_loss(logits, maps, score, torch.full((2, 1, 16, 12), 0.5), ["s/0", "s/0"], cfg)
    assert torch.isfinite(loss)
    np.testing.assert_allclose(loss.item(), (0.5 ** 0.5 - 0.3 ** 0.5) ** 2, atol=1e-6)  # map term 0 (sigmoid(0) = 0.5)
    loss.backward()
    assert logits.grad[0] == 0 and logits.grad[1] != 0


def test_the_score_loss_weighs_an_error_at_a_low_score_up_and_stays_finite():
    cfg = StudentTraining(rank_weight=0.0, map_weight=0.0)
    no_map = torch.full((1, 1, 2, 2), float("nan"))

    def score_loss(pred: float, truth: float) -> float:
        logit = torch.logit(torch.tensor([pred]))
        return distillation_loss(logit, torch.zeros(1, 1, 2, 2), torch.tensor([truth]), no_map, ["s/0"], cfg).item()

    # the same error of 0.02 costs more at the floor than at a high score (plain MSE: the same)
    assert score_loss(0.04, 0.02) > 10 * score_loss(0.52, 0.50)
    logit = torch.tensor([-200.0], requires_grad=True)  # sigmoid underflows to 0
    loss = distillation_loss(logit, torch.zeros(1, 1, 2, 2), torch.tensor([0.1]), no_map, ["s/0"], cfg)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logit.grad).all()


def test_each_training_slice_is_paired_with_another_version_of_itself():
    image = np.zeros((8, 8), np.float32)
    groups = ["a"] * 5 + ["b"] * 4 + ["c"]  # five versions, four, one
    samples = [Sample(image, 0.1 * i, image, g) for i, g in enumerate(groups)]
    versions = versions_of(samples)
    assert versions == {"a": [0, 1, 2, 3, 4], "b": [5, 6, 7, 8], "c": [9]}
    pairs = version_pairs(versions, np.random.default_rng(0))
    assert len(pairs) == 3 + 2 + 1
    assert all(groups[i] == groups[j] for i, j in pairs)
    assert sorted({i for pair in pairs for i in pair}) == list(range(10))  # every slice is in a pair
    # only a slice without another version is paired with itself (the odd one out of "a" is not)
    assert [pair for pair in pairs if pair[0] == pair[1]] == [(9, 9)]
    drawn = {tuple(sorted(version_pairs(versions, np.random.default_rng(seed)))) for seed in range(5)}
    assert len(drawn) > 1  # drawn anew each epoch


def test_labels_rows_that_do_not_fit_their_slice_are_refused(tmp_path):
    """A slice the volume lacks (-1 took the last), a score outside 0-1 (inf trained to NaN losses), a map
    of another image's size (an IndexError, or a map misplaced), a file that is not text: one line each."""
    sitk.WriteImage(ct_image(slices=1, size=96, spacing=(0.7, 0.7, 1.0)), str(tmp_path / "a.nrrd"))
    (tmp_path / "labels_maps" / "s").mkdir(parents=True)
    np.save(tmp_path / "labels_maps" / "s" / "a_s0000.npy", np.zeros((24, 24), np.float16))  # 96 px at stride 4
    np.save(tmp_path / "labels_maps" / "s" / "small.npy", np.zeros((10, 10), np.float16))
    (tmp_path / "labels_maps" / "s" / "empty.npy").write_bytes(b"")  # a map cut to nothing
    labels = tmp_path / "labels.csv"

    def row(slice_="0", score="0.2", map_="s/a_s0000.npy", assessable="1"):
        labels.write_text("series,file,slice,score,assessable,map,path\n"
                          f"s,a.nrrd,{slice_},{score},{assessable},{map_},a.nrrd\n", encoding="utf-8")

    row()
    assert [s.score for s in load_samples(labels)] == [0.2]
    for bad, says in (({"slice_": "-1"}, "slice -1 is no slice number"), ({"slice_": "1"}, "slice 1 of a volume of 1"),
                      ({"score": "inf"}, "outside 0-1"),
                      ({"score": "nan"}, "outside 0-1"), ({"map_": "s/small.npy"}, "a map of (10, 10)"),
                      ({"map_": "s/none.npy"}, "FileNotFoundError"), ({"map_": "s/empty.npy"}, "EOFError"),
                      ({"assessable": "2"}, "assessable '2', not 0 or 1")):  # was skipped as not assessable
        row(**bad)
        with pytest.raises(InputError, match=f"line 2: not a labels row.*{re.escape(says)}"):
            load_samples(labels)
    labels.write_text("series,file,slice,score,assessable,map,path\ns,a.nrrd,0,0.2,1,s/a_s0000.npy,gone.nrrd\n",
                      encoding="utf-8")
    with pytest.raises(InputError, match=r"^input not found: .*gone\.nrrd$"):  # the image's own line, whole
        load_samples(labels)
    labels.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(InputError, match="not text"):
        load_samples(labels)
    row()  # a labels file moved without its maps: said so (a FileNotFoundError of the first map, cut short, before)
    (tmp_path / "labels_maps").rename(tmp_path / "elsewhere")
    with pytest.raises(InputError, match=r"labels\.csv: its maps folder labels_maps is missing \(`ediqa label` writes"):
        load_samples(labels)


def test_a_diverged_training_says_so_instead_of_naming_weights_it_never_wrote(tmp_path):
    rng = np.random.default_rng(0)
    samples = [Sample(rng.random((96, 96), dtype=np.float32), 0.1 * (k % 3 + 1), np.zeros((24, 24), np.float32),
                      f"s{k // 2}/{k % 2}") for k in range(4)]
    torch.manual_seed(0)
    for _ in range(2):  # run again, it resumes a finished run: no epoch left, the same answer
        with pytest.raises(InputError, match="training diverged.*lower --lr and another --out"):
            train_student(Student("lite"), samples, [], tmp_path, StudentTraining(epochs=2, batch_size=2, lr=1e30))
    assert not (tmp_path / "best.safetensors").exists()


def test_pooled_labellings_average_each_slice_and_refuse_other_slices():
    image = np.zeros((8, 8), np.float32)

    def labelling(scores: dict[str, float]) -> list[Sample]:
        return [Sample(image, v, np.full((2, 2), v, np.float32), "s/0", k) for k, v in scores.items()]

    first = labelling({"s/a/0": 0.2, "s/b/0": 0.6})
    second = labelling({"s/b/0": 0.4, "s/a/0": 0.0})  # another seed, rows in another order
    pooled = pool_labellings([first, second])
    assert [s.key for s in pooled] == ["s/a/0", "s/b/0"]
    np.testing.assert_allclose([s.score for s in pooled], [0.1, 0.5])  # each slice with its own, not its row's
    np.testing.assert_allclose(pooled[0].heatmap, 0.1)
    np.testing.assert_allclose(pooled[1].heatmap, 0.5)
    # a cell that one seed's lesions reached and the other's did not keeps its value (was NaN: lost)
    reached = [Sample(image, 0.2, np.array([[0.2, np.nan], [np.nan, 0.4]], np.float32), "s/0", "s/a/0"),
               Sample(image, 0.4, np.array([[0.4, 0.6], [np.nan, np.nan]], np.float32), "s/0", "s/a/0")]
    np.testing.assert_allclose(pool_labellings([[r] for r in reached])[0].heatmap, [[0.3, 0.6], [np.nan, 0.4]])
    with pytest.raises(InputError, match="same slices"):
        pool_labellings([first, labelling({"s/a/0": 0.2, "s/c/0": 0.1})])


def test_training_can_start_from_a_trained_student(tmp_path):
    from pathlib import Path

    from safetensors.torch import load_file

    data = [_series(tmp_path, s) for s in (44, 45)]
    labels = tmp_path / "labels.csv"
    _label(data, labels, 3)
    train = ["train", "--labels", labels, "--stage1-iterations", "0",
             "--epochs", "1", "--held-out", "0", "--lr", "1e-7", "--device", "cpu", "--progress", "none"]
    runs = {"init": ["--init", "student-lite"], "fresh": [], "member": ["--init", "student-lite", "--init-member", "1"]}
    for name, extra in runs.items():  # --init trains no stage 1 (it needed --stage1-iterations 0 given)
        proc = ediqa(*(train[:3] + train[5:] if name == "init" else train), *extra, "--out", tmp_path / name)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "held out no series" in proc.stderr  # --held-out 0: the best epoch is the lowest loss's
    # the Slicer panel publishes its retraining so: the shipped ensemble fine-tuned, one run, into the folder
    # that holds the run
    proc = ediqa("publish-student", tmp_path / "init", "--name", "init", "--models-dir", tmp_path, "--progress", "jsonl")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["weights"] == str(tmp_path / "init.safetensors")
    card = json.loads((tmp_path / "init.json").read_text(encoding="utf-8"))
    assert card["kind"] == "student" and card["training"]["init"]["name"] == "student-lite"
    shipped = load_file(str(Path(__file__).resolve().parent.parent / "Resources" / "Models" / "student-lite.safetensors"))
    learnt = {run: load_file(str(tmp_path / run / "stage2" / "best.safetensors")) for run in runs}
    weights = [k for k in shipped if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    # one step of lr 1e-7 from the shipped student (an ensemble: all its members) stays on it
    assert set(learnt["init"]) == set(shipped)
    assert all(torch.allclose(learnt["init"][k], shipped[k], atol=1e-5) for k in weights)
    # a fresh student is one student, elsewhere than any member
    member = lambda k: k.split(".", 2)[2] if k.startswith("members.") else k  # noqa: E731
    assert set(learnt["fresh"]) == {member(k) for k in shipped}
    assert not all(torch.allclose(learnt["fresh"][member(k)], shipped[k], atol=1e-2) for k in weights)
    # --init-member 1: one student, started from the ensemble's second member, and recorded as such
    assert set(learnt["member"]) == set(learnt["fresh"])
    second = [k for k in weights if k.startswith("members.1.")]
    assert second and all(torch.allclose(learnt["member"][member(k)], shipped[k], atol=1e-5) for k in second)
    assert not all(torch.allclose(learnt["member"][member(k)], shipped[k], atol=1e-2) for k in weights
                   if k.startswith("members.0."))
    run_info = json.loads((tmp_path / "member" / "run.json").read_text(encoding="utf-8"))
    assert run_info["args"]["init_member"] == 1 and run_info["init"]["name"] == "student-lite"
    # no --batch-size: the default 8 shrinks to the 4 slices these labels train on (as a folder relabelled
    # in Slicer and retrained there), and the run records the batch it took
    assert run_info["train_slices"] == 4 and run_info["args"]["batch_size"] == 4
    # resuming it from another start would record a start its weights did not come from
    proc = ediqa(*train, *runs["member"][:-1], "0", "--out", tmp_path / "member")
    assert proc.returncode == 2 and "--init-member 1 (given --init-member 0); resume it" in proc.stderr, proc.stderr
    assert json.loads((tmp_path / "member" / "run.json").read_text(encoding="utf-8")) == run_info
    # ... or with another learning rate (its weights would not be what the run records); the same command,
    # which took the default batch, resumes it (finished: no epoch left)
    proc = ediqa(*[("1e-6" if a == "1e-7" else a) for a in train], *runs["member"], "--out", tmp_path / "member")
    assert proc.returncode == 2 and "--lr 1e-07 (given --lr 1e-06)" in proc.stderr, proc.stderr
    proc = ediqa(*train, *runs["member"], "--out", tmp_path / "member")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "member" / "run.json").read_text(encoding="utf-8")) == run_info
    # its files are compared by content: the same labels by another path resume it, other labels by the
    # same path do not
    relative = [("labels.csv" if a == labels else a) for a in train]
    proc = ediqa(*relative, *runs["member"], "--out", tmp_path / "member", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    content = labels.read_bytes()
    first_score = content.splitlines()[1].split(b",")[3]
    labels.write_bytes(content.replace(b"," + first_score + b",", b",%.6f," % (float(first_score) / 2), 1))
    proc = ediqa(*train, *runs["member"], "--out", tmp_path / "member")
    assert proc.returncode == 2 and "whose --labels held other data than given now" in proc.stderr, proc.stderr
    labels.write_bytes(content)

    one = package_model(tmp_path / "fresh" / "stage2" / "best.safetensors", "one", "student", "lite", {}, tmp_path)
    for extra, message in ((["--init", "student-lite", "--stage1-iterations", "5"], "it trains no stage 1"),
                           (["--init", "student-lite", "--bank", str(labels)], "give it without --bank"),
                           (["--init", "detector-lite"], "a student model is needed here"),
                           (["--init-member", "0"], "pass --init with it"),
                           (["--init", "student-lite", "--init-member", "9"], "has members 0-"),
                           (["--init", str(one), "--init-member", "0"], "is one student, not an ensemble"),
                           (["--accumulate", "4"], "the 4 training slices do not fill a batch of one pair of "
                                                   "versions on each of 1 rank(s) × 4 micro-batches"),  # 2 pairs, not 4
                           (["--accumulate", "2", "--batch-size", "6"], "multiple of 2 × ranks × accumulate"),
                           # stage 1's detectors train at a batch of 8, which 3 micro-batches do not cut
                           (["--bank", str(labels), "--stage1-iterations", "2", "--accumulate", "3"],
                            "batch size 8 must be a multiple of ranks × accumulate (3)")):
        proc = ediqa(*train, *extra, "--out", tmp_path / "bad")
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not (tmp_path / "bad").exists()

    # a damaged run folder is refused before anything in it is written again, its run.json included
    fresh = tmp_path / "fresh"
    kept = {name: (fresh / name).read_bytes() for name in ("run.json", "stage2/state.pt", "stage2/log.jsonl")}
    for name, damaged, message in (
            ("stage2/state.pt", b"not a state", "resume state is unreadable"),  # e.g. a disk that filled up
            ("stage2/state.pt", b"hello\n", "resume state is unreadable"),
            ("stage2/log.jsonl", kept["stage2/log.jsonl"] + b"{not json\n", "not one JSON object per line"),
            ("run.json", kept["run.json"].replace(b'"args": {', b'"args": null, "was": {'), "args are not a JSON object"),
            ("run.json", kept["run.json"].replace(b'"inputs_sha256": {', b'"inputs_sha256": null, "was": {'),
             "its inputs_sha256 is not an object of sha256 texts")):
        (fresh / name).write_bytes(damaged)
        proc = ediqa(*train, "--out", fresh)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert (fresh / name).read_bytes() == damaged and all(
            (fresh / other).read_bytes() == content for other, content in kept.items() if other != name)
        (fresh / name).write_bytes(kept[name])


def test_a_smaller_slice_is_mirrored_to_the_batch_field_and_its_map_is_undefined_there():
    """Slices are batched as a ``field_batch``: at the largest slice's size, and at least the training field."""
    from EDIQALib.distill import MAP_STRIDE, Sample, _batch
    from EDIQALib.student import MIN_FIELD_PX

    rng = np.random.default_rng(0)
    small = Sample(rng.random((40, 30)).astype(np.float32), 0.2, np.ones((10, 8), np.float32), "a")
    large = Sample(rng.random((64, MIN_FIELD_PX + 8)).astype(np.float32), 0.4,
                   np.ones((16, (MIN_FIELD_PX + 8) // MAP_STRIDE), np.float32), "b")
    images, scores, maps = _batch([small, large])
    h, w = MIN_FIELD_PX, MIN_FIELD_PX + 8
    assert images.shape == (2, 1, h, w) and maps.shape == (2, 1, h // MAP_STRIDE, w // MAP_STRIDE)
    np.testing.assert_array_equal(images[0, 0, :40, :30].numpy(), small.image01)
    np.testing.assert_array_equal(images[0, 0, 40:64, :30].numpy(), small.image01[::-1][:24])  # mirrored, not air
    np.testing.assert_array_equal(images[0, 0, :40, 30:60].numpy(), small.image01[:, ::-1])
    np.testing.assert_array_equal(images[1, 0, :64].numpy(), large.image01)
    np.testing.assert_array_equal(images[1, 0, 64:128].numpy(), large.image01[::-1])
    assert torch.isnan(maps[0, 0, 10:]).all() and torch.isnan(maps[0, 0, :, 8:]).all()
    assert not torch.isnan(maps[0, 0, :10, :8]).any() and not torch.isnan(maps[1, 0, :16]).any()
    assert torch.isnan(maps[1, 0, 16:]).all()


def test_a_flipped_slice_keeps_its_map_on_it_whatever_its_width():
    """Mirroring a training slice mirrors its map cell on cell, also when the width is no multiple of the
    map's stride (the back phantoms', the real slice's)."""
    from EDIQALib.distill import MAP_STRIDE, Sample, _batch
    from EDIQALib.labels import pool_map

    for width in (148, 150, 151):
        ramp = np.tile(np.arange(width, dtype=np.float32) / width, (160, 1))  # quality rising to the right
        sample = Sample(ramp, 0.3, pool_map(ramp).astype(np.float32), "a")
        images, _, maps = _batch([sample], flips=[True])
        cells = width // MAP_STRIDE  # the map's cells: whole strides of the slice
        image = images[0, 0, :160, : cells * MAP_STRIDE].numpy()
        np.testing.assert_array_equal(image, ramp[:, : cells * MAP_STRIDE][:, ::-1])  # mirrored: falling to the right
        pooled = image.reshape(160 // MAP_STRIDE, MAP_STRIDE, cells, MAP_STRIDE).mean(axis=(1, 3))
        np.testing.assert_allclose(maps[0, 0, : 160 // MAP_STRIDE, :cells].numpy(), pooled, atol=1e-3)


def test_every_series_of_one_slice_is_on_one_side_of_the_split():
    """A texture and a blur series share their first image: all series of one base slice train or are
    held out together."""
    from EDIQALib.series import KINDS, base_of, series_name

    bases = [f"phantom-{seed}" for seed in range(2000, 2030)] + [f"back-{seed}" for seed in range(2030, 2038)]
    samples = [Sample(np.zeros((4, 4), np.float32), 0.1, np.zeros((1, 1), np.float32), f"{series_name(b, k)}/0")
               for b in bases for k in KINDS]
    train, held = split_by_series(samples, 0.2)
    held_bases = {base_of(s.group.split("/")[0]) for s in held}
    assert held_bases and held_bases.isdisjoint(base_of(s.group.split("/")[0]) for s in train)
    assert len(held) == 4 * len(held_bases)  # whole bases, every kind
    assert base_of("ct693-v3-blur") == "ct693-v3" and base_of("my-scan") == "my-scan"


@pytest.mark.parametrize("train_slices, accumulate, world, batch", [
    (100, 1, 1, 8), (100, 2, 2, 8), (100, 3, 1, 6), (4, 1, 1, 4), (5, 1, 1, 4), (2, 1, 1, 2)])
def test_the_default_batch_fits_the_training_set_in_whole_pairs(train_slices, accumulate, world, batch):
    from EDIQALib.distill import fitting_batch

    assert fitting_batch(train_slices, accumulate, world) == batch


def test_a_training_set_that_fills_no_default_batch_says_so_without_a_batch_size():
    """It was "batch size 200 must be a multiple of … and at most the 54 training slices", of a batch never given."""
    from EDIQALib.distill import fitting_batch

    for train_slices, accumulate, world, remedy in ((54, 100, 1, "label more slices, or lower --accumulate$"),
                                                    (1, 1, 1, "label more slices$"), (3, 1, 2, "or use fewer ranks$")):
        with pytest.raises(InputError, match=f"^the {train_slices} training slices do not fill a batch of one pair "
                                             f"of versions on each of {world} rank.s. × {accumulate} micro-batches.*{remedy}"):
            fitting_batch(train_slices, accumulate, world)


def test_agreement_needs_two_held_out_slices_of_differing_scores_and_is_0_for_a_collapsed_student():
    """One held-out slice was a traceback of scipy's after the first epoch, equal teacher scores NaN
    figures and at the end "training diverged"; a student that predicts one score for all is NaN too."""
    from EDIQALib.distill import check_rankable
    from EDIQALib.scoring import agreement

    def samples(*scores: float) -> list[Sample]:
        return [Sample(np.zeros((8, 8), np.float32), v, np.zeros((2, 2), np.float32), f"s/{k}") for k, v in enumerate(scores)]

    for scores, says in (((0.2,), "hold 1 slice: too few"), ((0.2, 0.2), "hold 2 slices whose teacher scores are all equal")):
        with pytest.raises(InputError, match=f"^held out {says}.*; hold out more$"):
            check_rankable(samples(*scores), "held out", "hold out more")
    check_rankable(samples(0.2, 0.3), "held out", "hold out more")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ConstantInputWarning
        assert agreement(np.array([0.3, 0.3, 0.3]), np.array([0.1, 0.2, 0.3])) == {"plcc": 0.0, "srocc": 0.0}
    assert agreement(np.array([0.1, 0.3, 0.2]), np.array([0.1, 0.2, 0.3]))["srocc"] == pytest.approx(0.5)
