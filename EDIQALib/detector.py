"""The teacher's detector: torchvision detection models, trained self-supervised on inserted lesions.

Presets:
    ``lite``: Faster R-CNN on a ResNet-18 trunk cut after its second stage (strides 4 and 8: the objects
    are 14–20 px) with a 64-channel FPN and a small box head. Trains from scratch on a 2-core CPU.
    ``paper``: Mask R-CNN with a Swin-T FPN backbone (the authors used Cascade Mask R-CNN, which
    torchvision does not provide), for GPUs.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .backbones import IMAGE_MEAN, IMAGE_STD, SwinTStages
from .backgrounds import Background
from .distributed import barrier, data_parallel, mean_over_ranks, split_parts, step_gradients
from . import training_log
from .choices import PRESETS
from .errors import InputError
from .models import restore_resume_state, save_resume_state, save_weights
from .progress import Progress
from .signals import SHAPES, InsertionConfig, mask_boxes, object_blur, plan_insertion, render

LITE_FPN_CHANNELS = 64
ARCHITECTURES = {"lite": "Faster R-CNN, ResNet-18 trunk to stride 8, 64-channel FPN",
                 "paper": "Mask R-CNN, Swin-T FPN"}  # each preset's detector, as its model card names it


class NativeSizeTransform(GeneralizedRCNNTransform):
    """Normalises and batches images without resizing them: pixel size is physical (canonical spacing)."""

    def resize(self, image, target=None):  # noqa: D102 - torchvision hook
        return image, target


class StagesFPN(nn.Module):
    """Hierarchical stages (strides 4–32, see :mod:`EDIQALib.backbones`) → FPN with a max-pool level."""

    def __init__(self, stages: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.stages = stages
        self.fpn = FeaturePyramidNetwork(list(stages.channels), out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.stages(x))))


NUM_CLASSES = len(SHAPES) + 1  # the object shapes and the background


def _faster_rcnn(backbone: nn.Module, channels: int, anchors: AnchorGenerator) -> nn.Module:
    """The lite Faster R-CNN on ``backbone`` (an FPN of ``channels`` channels): RoIs pooled from its two
    finest levels, a small box head, and proposal counts sized for a few objects per image."""
    return FasterRCNN(
        backbone, num_classes=None, rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0", "1"], 7, 2),
        box_head=TwoMLPHead(channels * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, NUM_CLASSES),
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=150, rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=128, box_batch_size_per_image=64,
        box_detections_per_img=20)


def build_stage1_detector(stages: nn.Module, fpn_channels: int) -> nn.Module:
    """A Faster R-CNN on a student's backbone stages: trained on insertions, its stages seed the student."""
    anchors = AnchorGenerator(((12, 20), (28, 40), (56, 80), (112, 160), (224, 320)), ((0.7, 1.0, 1.4),) * 5)
    model = _faster_rcnn(StagesFPN(stages, fpn_channels), fpn_channels, anchors)
    model.transform = NativeSizeTransform(1, 1, [IMAGE_MEAN] * 3, [IMAGE_STD] * 3)
    return model


def build_detector(preset: str = "lite") -> nn.Module:
    """A detector for the inserted objects (:data:`NUM_CLASSES` classes, the background included)."""
    if preset == "lite":
        trunk = resnet18(weights=None)
        backbone = BackboneWithFPN(trunk, {"layer1": "0", "layer2": "1"}, [64, 128], LITE_FPN_CHANNELS,
                                   extra_blocks=LastLevelMaxPool())
        anchors = AnchorGenerator(((12, 20), (28, 40), (56, 80)), ((0.7, 1.0, 1.4),) * 3)
        model = _faster_rcnn(backbone, LITE_FPN_CHANNELS, anchors)
    elif preset == "paper":
        anchors = AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 5)
        model = MaskRCNN(StagesFPN(SwinTStages(), 256), num_classes=NUM_CLASSES, rpn_anchor_generator=anchors)
    else:
        raise ValueError(f"unknown detector preset {preset!r}; choose from {', '.join(PRESETS)}")
    model.transform = NativeSizeTransform(1, 1, [IMAGE_MEAN] * 3, [IMAGE_STD] * 3)
    return model


def to_tensor(image01: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """A normalised 2-D slice as the 3-channel tensor the detectors take (grey copied to 3 channels)."""
    t = torch.as_tensor(np.ascontiguousarray(image01), dtype=torch.float32, device=device)
    return t.unsqueeze(0).expand(3, -1, -1)


@torch.inference_mode()
def detect(model: nn.Module, images01: list[np.ndarray], device: torch.device | str = "cpu"
           ) -> list[dict[str, np.ndarray]]:
    """Run the detector on normalised slices; returns boxes (x0, y0, x1, y1), scores, labels per image.

    Images (the teacher's realisations) go through in batches of 64 on a GPU, 8 on a CPU, in float32 on
    both, so that the teacher's scores compare across devices: on an H100, bfloat16 autocast lowered them
    by 2-10 % on a dose series (mAP@[.5:.95] rewards box precision).
    """
    cuda = torch.device(device).type == "cuda"
    batch_size = 64 if cuda else 8
    model.eval()
    out = []
    for start in range(0, len(images01), batch_size):
        batch = [to_tensor(im, device) for im in images01[start:start + batch_size]]
        for det in model(batch):
            out.append({k: det[k].cpu().numpy() for k in ("boxes", "scores", "labels")})
    return out


@dataclass(frozen=True)
class DetectorTraining:
    """Training schedule of the detector (self-supervised: the labels are the inserted objects).

    Attributes:
        iterations: optimiser steps.
        batch_size: crops per step.
        crop_px: square crop around the insertions (the objects need little context).
        lr: peak AdamW learning rate (linear warm-up, cosine decay).
        snapshot_every: steps between checkpoints (and validations).
        contrasts: contrast magnitudes drawn during training (wider than the teacher's read-out
            contrasts, so that the detector sees faint and conspicuous objects).
        accumulate: micro-batches per rank and step (see :func:`EDIQALib.distributed.split_parts`).
        seed: all sampling derives from (seed, step): a resumed run continues identically.
    """

    iterations: int = 4000
    batch_size: int = 8
    crop_px: int = 160
    lr: float = 1e-3
    weight_decay: float = 1e-4
    snapshot_every: int = 250
    contrasts: tuple[float, ...] = (0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10)
    accumulate: int = 1
    seed: int = 0


def training_sample(bg: Background, schedule: DetectorTraining, config: InsertionConfig,
                    rng: np.random.Generator) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """One training crop with inserted objects and its targets (boxes, labels, masks)."""
    cfg = replace(config, contrasts=schedule.contrasts)
    plan = plan_insertion(bg.body, bg.salient, cfg, rng)
    h, w = bg.image01.shape
    ch, cw = min(schedule.crop_px, h), min(schedule.crop_px, w)
    if len(plan):
        cy, cx = plan.centres[rng.integers(len(plan))]
        top = int(np.clip(cy - rng.uniform(20, ch - 20), 0, h - ch))
        left = int(np.clip(cx - rng.uniform(20, cw - 20), 0, w - cw))
    else:
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    local = plan.shifted(top, left)
    reach = local.radii + 2
    inside = ((local.centres[:, 0] - reach >= 0) & (local.centres[:, 1] - reach >= 0)
              & (local.centres[:, 0] + reach < ch) & (local.centres[:, 1] + reach < cw))
    local = local.subset(inside)
    signal, masks, boxes = render(local, (ch, cw), object_blur(config, bg.psf_sigma_px))
    image = bg.image01[top:top + ch, left:left + cw] + signal
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    image, masks = np.rot90(image, k), np.rot90(masks, k, axes=(1, 2))
    if flip:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    boxes = mask_boxes(masks)
    target = {"boxes": torch.from_numpy(boxes), "labels": torch.as_tensor(local.labels + 1, dtype=torch.int64),
              "masks": torch.from_numpy(np.ascontiguousarray(masks).astype(np.uint8))}
    return np.ascontiguousarray(image, dtype=np.float32), target


def _lr_factor(step: int, total: int, warmup: int = 200) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def check_batch(batch_size: int, accumulate: int, world: int) -> None:
    """Raises InputError unless the batch cuts into whole parts on every rank and micro-batch."""
    if batch_size % (world * accumulate):
        raise InputError(f"batch size {batch_size} must be a multiple of ranks × accumulate ({world * accumulate})")


def train_detector(model: nn.Module, bank: list[Background], out_dir: str | Path,
                   schedule: DetectorTraining = DetectorTraining(), config: InsertionConfig = InsertionConfig(),
                   validate: Callable[[nn.Module], float] | None = None,
                   progress: Progress | None = None,
                   device: torch.device | str = "cpu", rank: int = 0, world: int = 1) -> Path:
    """Train on insertions into bank images; resumable from ``out_dir/state.pt``.

    Every ``snapshot_every`` steps: ``state.pt`` (resume), ``last.safetensors``, ``snapshots/stepN.safetensors``
    (for a later selection with more realisations), and — when ``validate``
    returns a higher validity than before — ``best.safetensors``. Returns the path of the best weights
    (the last ones when there is no validation). A JSON line per snapshot goes to ``log.jsonl``, its curves to
    ``training.png``.

    On a GPU the forward passes run under bfloat16 autocast. Under ``torchrun`` (``world`` > 1) every
    rank draws the same batch and trains on its share
    (``batch[rank::world]``) with gradients averaged across ranks (DistributedDataParallel); rank 0
    validates and writes. ``world`` ranks take the gradient steps of one process with ``accumulate = world``
    (BatchNorm's running statistics follow rank 0's share).

    Raises:
        InputError: (on rank 0) without a best snapshot, the last weights hold NaN or infinite values.
    """
    check_batch(schedule.batch_size, schedule.accumulate, world)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    step, best = 0, -math.inf
    state_path = out / "state.pt"
    if state_path.exists():
        state = restore_resume_state(state_path, device, model, opt)
        step, best = int(state["step"]), float(state["best"])
        if rank == 0:
            training_log.keep_until(out, "step", step)
    parallel = data_parallel(model, world)
    with_masks = isinstance(model, MaskRCNN)
    running: dict[str, float] = {}  # summed losses of the steps since the last snapshot
    steps_run = 0  # how many: a last snapshot off the snapshot_every grid averages over fewer

    def loss_of(numbered: tuple[int, list[tuple[np.ndarray, dict[str, torch.Tensor]]]]) -> torch.Tensor:
        number, part = numbered  # the part's place in the whole batch seeds the detector's box sampling
        torch.manual_seed(int(np.random.SeedSequence([schedule.seed, step, number]).generate_state(1)[0]))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
            losses = parallel([to_tensor(image, device) for image, _ in part],
                              [{k: v.to(device) for k, v in target.items() if with_masks or k != "masks"}
                               for _, target in part])
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach()) / schedule.accumulate
        return sum(losses.values())

    while step < schedule.iterations:
        rng = np.random.default_rng([schedule.seed, step])
        batch = [training_sample(bank[int(rng.integers(len(bank)))], schedule, config, rng)
                 for _ in range(schedule.batch_size)]
        for group in opt.param_groups:
            group["lr"] = schedule.lr * _lr_factor(step, schedule.iterations)
        opt.zero_grad(set_to_none=True)
        parts = split_parts(batch[rank::world], schedule.accumulate)
        step_gradients(parallel, [(rank + world * i, part) for i, part in enumerate(parts)], loss_of)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        step += 1
        steps_run += 1
        if progress:
            progress("train-detector", step, schedule.iterations)
        if step % schedule.snapshot_every == 0 or step == schedule.iterations:
            entry = {"step": step, **{k: mean_over_ranks(v, world) / steps_run for k, v in sorted(running.items())}}
            running, steps_run = {}, 0
            if rank == 0:
                _snapshot(model, opt, out, step, entry, validate, best)
                best = max(best, entry.get("validity", best))
            barrier(world)
    best_path = out / "best.safetensors"
    if best_path.exists():
        return best_path
    if rank == 0 and not all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()):
        raise InputError(f"training diverged: the last weights of {out} hold NaN or infinite values; start again "
                         "in another folder with a lower learning rate")
    return out / "last.safetensors"


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer, out: Path, step: int, entry: dict,
              validate: Callable[[nn.Module], float] | None, best: float) -> None:
    """Write the weights (last, snapshot, best when more valid), the resume state and the log line."""
    save_weights(model, out / "last.safetensors")
    snapshot = training_log.snapshot_path(out, step)
    snapshot.parent.mkdir(exist_ok=True)
    save_weights(model, snapshot)
    if validate is not None:
        entry["validity"] = float(validate(model))
        model.train()
        if entry["validity"] > best:
            save_weights(model, out / "best.safetensors")
    training_log.append(out, entry)  # before the state (training_log.keep_until)
    save_resume_state({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                       "best": max(best, entry.get("validity", best))}, out / "state.pt")
