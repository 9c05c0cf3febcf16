"""Detector: presets build, a few training steps run, the run resumes where it stopped."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torchvision.models.detection import MaskRCNN
from torchvision.ops import box_iou

from EDIQALib.backbones import SwinTStages
from EDIQALib.backgrounds import make_background
from EDIQALib.detector import DetectorTraining, build_detector, detect, train_detector, training_sample
from EDIQALib.errors import InputError
from EDIQALib.models import load_model
from EDIQALib.signals import InsertionConfig
from EDIQALib.simulate import phantom
from conftest import ediqa


def tiny_bank():
    return [make_background(phantom(s, kind="body", size=200)) for s in (21, 22)]


def test_training_sample_targets_match_objects():
    bg = tiny_bank()[0]
    image, target = training_sample(bg, DetectorTraining(crop_px=128), InsertionConfig(), np.random.default_rng(0))
    assert image.shape == (128, 128)
    assert len(target["boxes"]) == len(target["labels"]) == len(target["masks"]) >= 1
    b = target["boxes"].numpy()
    assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] <= 128)
    assert set(target["labels"].tolist()) <= {1, 2, 3, 4}


def _flat_disk():
    yy, xx = np.mgrid[:200, :200]
    return make_background(np.where((yy - 100) ** 2 + (xx - 100) ** 2 < 95 ** 2, 40.0, -1000.0).astype(np.float32))


def test_each_target_s_class_is_its_object_s_shape():
    """Class k + 1 is the config's k-th shape: a circle fills about π/4 of its box, a five-point star far
    less, whatever the crop's rotation and flip."""
    bg, seen = _flat_disk(), set()
    for seed in range(6):
        _, target = training_sample(bg, DetectorTraining(crop_px=128), InsertionConfig(shapes=("circle", "star")),
                                    np.random.default_rng(seed))
        for mask, label, (x0, y0, x1, y1) in zip(target["masks"].numpy(), target["labels"].tolist(),
                                                  target["boxes"].numpy()):
            fill = mask.sum() / ((x1 - x0) * (y1 - y0))
            assert (label, fill > 0.6) in {(1, True), (2, False)}, (label, fill)
            seen.add(label)
    assert seen == {1, 2}


def test_training_targets_lie_where_the_objects_are_after_rotation_and_flip():
    """On a flat disk, whatever the crop's rotation and flip, the inserted signal lies inside the objects'
    masks, and each box bounds its mask."""
    bg = _flat_disk()
    flat = float(np.median(bg.image01[bg.body]))
    for seed in range(3):
        image, target = training_sample(bg, DetectorTraining(crop_px=128), InsertionConfig(),
                                        np.random.default_rng(seed))
        signal = np.abs(np.where(np.abs(image - flat) < 0.3, image - flat, 0.0))  # the objects (air left out)
        masks = target["masks"].numpy().astype(bool)
        assert len(masks) >= 1
        assert signal[masks.any(axis=0)].sum() > 0.6 * signal.sum()  # blurred edges spill a little
        for mask, (x0, y0, x1, y1) in zip(masks, target["boxes"].numpy().astype(int)):
            # the box bounds its mask tightly, its upper edges exclusive: the mask lies inside it and
            # touches each of its four sides
            assert mask[y0:y1, x0:x1].sum() == mask.sum()
            assert mask[y0].any() and mask[y1 - 1].any() and mask[:, x0].any() and mask[:, x1 - 1].any()


def test_train_resume_and_detect(tmp_path):
    bank = tiny_bank()
    schedule = DetectorTraining(iterations=4, batch_size=2, crop_px=96, snapshot_every=2)
    calls = []
    torch.manual_seed(0)
    model = build_detector("lite")
    best = train_detector(model, bank, tmp_path / "run", DetectorTraining(**{**schedule.__dict__, "iterations": 2}),
                          validate=lambda m: calls.append(1) or -len(calls))
    assert best.name == "best.safetensors" and best.exists()
    with open(tmp_path / "run" / "log.jsonl", "a", encoding="utf-8") as log:  # as if interrupted after the line
        log.write(json.dumps({"step": 4, "loss": 9.0}) + "\n")  # of step 4, before its resume state
    # a new process would build a fresh model and resume from state.pt at step 2
    train_detector(build_detector("lite"), bank, tmp_path / "run", schedule,
                   validate=lambda m: calls.append(1) or -len(calls))
    run = tmp_path / "run"
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert steps == [2, 4]  # the line past the resume state is written again, not twice
    assert (run / "training.png").read_bytes()[:4] == b"\x89PNG"
    assert len(calls) == 2
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step000002.safetensors", "step000004.safetensors"]
    kept, first, last = (load_file(str(p)) for p in (best, run / "snapshots" / "step000002.safetensors",
                                                     run / "snapshots" / "step000004.safetensors"))
    assert all(torch.equal(kept[k], first[k]) for k in kept)  # the more valid snapshot (-1 against -2)
    assert any(not torch.equal(first[k], last[k]) for k in first)
    # resumed from step 2, the run ends where one run of 4 steps ends: weights, optimiser and steps restored
    torch.manual_seed(0)  # the same start
    train_detector(build_detector("lite"), bank, tmp_path / "whole", schedule, validate=lambda m: 0.0)
    whole = load_file(str(tmp_path / "whole" / "snapshots" / "step000004.safetensors"))
    assert all(torch.allclose(whole[k], last[k], atol=1e-5) for k in whole)


def test_a_last_snapshot_off_the_grid_logs_the_mean_loss_of_the_steps_it_covers(tmp_path):
    """3 steps logged every 2: the line of step 3 averages one step's losses (it divided them by 2)."""
    bank = tiny_bank()
    logs = {}
    for every in (1, 2):
        torch.manual_seed(0)
        train_detector(build_detector("lite"), bank, tmp_path / str(every),
                       DetectorTraining(iterations=3, batch_size=2, crop_px=96, snapshot_every=every))
        logs[every] = [json.loads(line) for line in (tmp_path / str(every) / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logs[2]] == [2, 3]
    step3 = logs[1][2]
    assert step3["step"] == 3 and set(step3) == set(logs[2][1])
    assert all(logs[2][1][k] == pytest.approx(step3[k], rel=1e-4) for k in step3)
    first_two = {k: (logs[1][0][k] + logs[1][1][k]) / 2 for k in step3 if k != "step"}
    assert all(logs[2][0][k] == pytest.approx(v, rel=1e-4) for k, v in first_two.items())


def test_a_run_that_diverged_without_validation_is_an_error(tmp_path):
    """Its last weights, all NaN, were given as the run's result (exit 0); `train` said so already."""
    torch.manual_seed(0)
    with pytest.raises(InputError, match="training diverged: the last weights of .* hold NaN"):
        train_detector(build_detector("lite"), tiny_bank(), tmp_path / "run",
                       DetectorTraining(iterations=3, batch_size=2, crop_px=96, snapshot_every=3, lr=1e10))


def test_the_shipped_detector_finds_inserted_objects():
    model, _ = load_model("detector-lite", "detector")
    for seed in range(4):
        image, target = training_sample(_flat_disk(), DetectorTraining(crop_px=128, contrasts=(0.1,)), InsertionConfig(),
                                        np.random.default_rng(seed))
        found = detect(model, [image])[0]
        assert found["boxes"].shape == (len(found["scores"]), 4) and len(found["labels"]) == len(found["scores"])
        confident = torch.as_tensor(found["boxes"][found["scores"] > 0.3])
        assert len(confident) and box_iou(confident, target["boxes"]).max() > 0.5, seed


def test_paper_preset_builds_a_mask_rcnn_with_swin_fpn():
    model = build_detector("paper").eval()
    with torch.inference_mode():
        out = model([torch.rand(3, 128, 128)])
    assert "masks" in out[0]
    assert isinstance(model, MaskRCNN) and isinstance(model.backbone.stages, SwinTStages)
    assert model.backbone.out_channels == 256


def test_train_detector_can_fine_tune_the_shipped_detector(tmp_path):
    from pathlib import Path

    from safetensors.torch import load_file

    run = ["train-detector", "--phantoms", "1", "--back-phantoms", "1",
           "--bank-projections", "2", "--workers", "1", "--iterations", "1", "--batch-size", "2", "--crop", "96",
           "--lr", "1e-7", "--no-validate", "--device", "cpu", "--progress", "none"]
    proc = ediqa(*run, "--init", "detector-lite", "--out", tmp_path / "tuned")
    assert proc.returncode == 0, proc.stderr[-2000:]
    shipped = load_file(str(Path(__file__).resolve().parent.parent / "Resources" / "Models" / "detector-lite.safetensors"))
    tuned = load_file(str(tmp_path / "tuned" / "last.safetensors"))
    weights = [k for k in shipped if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.allclose(tuned[k], shipped[k], atol=1e-5) for k in weights)  # one tiny step stays there
    run_info = json.loads((tmp_path / "tuned" / "run.json").read_text(encoding="utf-8"))
    assert run_info["init"]["name"] == "detector-lite" and run_info["init"]["training"]["command"] == "ediqa train-detector"
    bank = np.load(tmp_path / "tuned" / "bank.npz")
    assert any(json.loads(m)["base"].startswith("back-") for m in bank["meta"])

    proc = ediqa(*run, "--init", "student-lite", "--out", tmp_path / "bad")
    assert proc.returncode == 2 and "a detector model is needed here" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad").exists()
