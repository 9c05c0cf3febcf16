"""EDIQA student networks: one forward pass → quality score and local-quality heatmap.

Architecture (DESIGN §2): backbones in parallel → one shared FPN (4 levels) → per-level concatenation
of the backbones' FPN maps → CBAM-style channel and spatial attention per level → global average
pooling per level → concatenation → Linear → GELU → Linear → score. A dense head fuses the attended
levels at the finest level's stride into the heatmap, returned at stride 4 (the teacher's label maps).

An ensemble (:class:`StudentEnsemble`) averages the probabilities of students trained alike from
different seeds: the students disagree most on images unlike their training data, and the mean of
several varies less than any one of them.

Presets:
    ``paper``: Swin-T and ConvNeXt-T, 256-channel FPN (4 × 512 = 2048 → 1024 → 1), for GPUs.
    ``lite`` (default): :class:`~EDIQALib.backbones.CompactStages` (strides 8–64), 24-channel FPN
    (4 × 24 = 96 → 64 → 1), for a 2-core CPU.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from .backbones import (IMAGE_MEAN, IMAGE_STD, CompactStages, ConvNeXtTStages, SwinTStages, fold_batchnorm,
                        fold_input_affine)
from .choices import MAP_STRIDE, MIN_FIELD_PX

STUDENT_SPECS = {
    "paper": {"backbones": (SwinTStages, ConvNeXtTStages), "fpn": 256, "hidden": 1024, "map": 32},
    "lite": {"backbones": (CompactStages,), "fpn": 24, "hidden": 64, "map": 8},
}


def field_batch(images: list[np.ndarray]) -> np.ndarray:
    """Slices as one ``(N, 1, H, W)`` float32 batch, in training and in assessment alike: H × W is the
    largest slice's size and at least ``MIN_FIELD_PX``, and a smaller slice is mirrored out to it at its
    bottom and right edges (the network sees a small slice mirrored out, never alone)."""
    h = max(MIN_FIELD_PX, *(im.shape[0] for im in images))
    w = max(MIN_FIELD_PX, *(im.shape[1] for im in images))
    return np.stack([np.pad(im, ((0, h - im.shape[0]), (0, w - im.shape[1])), mode="symmetric")
                     for im in images])[:, None].astype(np.float32)


class CBAM(nn.Module):
    """Channel attention (shared MLP on average- and max-pooled features) then spatial attention
    (7×7 convolution on channel-wise average and max)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def _shared_mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        """The shared MLP on ``(N, C)`` pooled features, its 1×1 convolutions applied as the linear maps
        they are: a convolution call on a 1×1 map costs far more than the product."""
        first, act, last = self.mlp
        return F.linear(act(F.linear(pooled, first.weight.flatten(1), first.bias)), last.weight.flatten(1), last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = (self._shared_mlp(F.adaptive_avg_pool2d(x, 1).flatten(1))
                  + self._shared_mlp(F.adaptive_max_pool2d(x, 1).flatten(1)))
        x = x * torch.sigmoid(logits)[:, :, None, None]
        # the channel-wise max from a channels-first copy: over the channels of a channels-last map (the
        # inference path's layout) ATen's amax is 2-3x slower than the copy and the max together
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.contiguous().amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


def _concat(maps: list[torch.Tensor]) -> torch.Tensor:
    """The backbones' maps of one level, concatenated along channels (one backbone's as it is: no copy)."""
    return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)


class Student(nn.Module):
    """The EDIQA student. ``forward(x)`` takes ``(B, 1, H, W)`` normalised slices and returns
    ``(score (B,), heatmap logits (B, 1, ⌈H/4⌉, ⌈W/4⌉))``; apply a sigmoid to both for [0, 1] values."""

    def __init__(self, preset: str = "lite") -> None:
        super().__init__()
        if preset not in STUDENT_SPECS:
            raise ValueError(f"unknown student preset {preset!r}; choose from {', '.join(STUDENT_SPECS)}")
        spec = STUDENT_SPECS[preset]
        self.preset = preset
        self.backbones = nn.ModuleList(b() for b in spec["backbones"])
        channels = self.backbones[0].channels
        fused = spec["fpn"] * len(self.backbones)
        self.fpn = FeaturePyramidNetwork(list(channels), spec["fpn"])
        self.attention = nn.ModuleList(CBAM(fused) for _ in channels)
        self.head = nn.Sequential(nn.Linear(fused * len(channels), spec["hidden"]), nn.GELU(),
                                  nn.Linear(spec["hidden"], 1))
        self.map_proj = nn.ModuleList(nn.Conv2d(fused, spec["map"], 1) for _ in channels)
        self.map_head = nn.Sequential(nn.Conv2d(spec["map"], spec["map"], 3, padding=1), nn.GELU(),
                                      nn.Conv2d(spec["map"], 1, 1))
        self.input_folded = False  # set by for_inference: the backbones then read the raw slice

    def for_inference(self) -> Student:
        """Eval mode with BatchNorm and the input's normalisation folded into the convolutions, and
        channels-last memory: the fast path for assessment. Not to be trained or saved afterwards: the
        first convolutions then read one channel, which a saved student's weights do not."""
        fold_batchnorm(self.eval())
        if not self.input_folded:
            for backbone in self.backbones:
                fold_input_affine(backbone, 1 / IMAGE_STD, -IMAGE_MEAN / IMAGE_STD)
            self.input_folded = True
        return self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        cell = max(b.strides[-1] for b in self.backbones)
        if h % cell or w % cell:  # every backbone sees whole cells
            x = F.pad(x, (0, -w % cell, 0, -h % cell), mode="replicate")
        if not self.input_folded:
            x = x.mul(1 / IMAGE_STD).sub_(IMAGE_MEAN / IMAGE_STD).expand(-1, 3, -1, -1)
        per_backbone = [self.fpn(OrderedDict((str(i), f) for i, f in enumerate(b(x)))) for b in self.backbones]
        levels = [self.attention[i](_concat([p[str(i)] for p in per_backbone]))
                  for i in range(len(self.attention))]
        score = self.head(torch.cat([lv.mean(dim=(2, 3)) for lv in levels], dim=1)).squeeze(1)
        fused_map = self.map_proj[0](levels[0])
        for proj, lv in zip(self.map_proj[1:], levels[1:]):
            fused_map = fused_map + F.interpolate(proj(lv), size=fused_map.shape[-2:], mode="bilinear",
                                                  align_corners=False)
        heatmap = self.map_head(fused_map)
        scale = self.backbones[0].strides[0] // MAP_STRIDE
        if scale > 1:
            heatmap = F.interpolate(heatmap, scale_factor=scale, mode="bilinear", align_corners=False)
        return score, heatmap[..., : -(-h // MAP_STRIDE), : -(-w // MAP_STRIDE)]


class StudentEnsemble(nn.Module):
    """Students of one preset as one network: ``forward(x)`` returns the logits of the mean of their score
    and heatmap probabilities, so it stands wherever a :class:`Student` does (assessment, fine-tuning).
    Its weights are the members' under ``members.<i>.``."""

    def __init__(self, preset: str = "lite", members: int = 2) -> None:
        super().__init__()
        self.preset = preset
        self.members = nn.ModuleList(Student(preset) for _ in range(members))

    def for_inference(self) -> StudentEnsemble:
        """Each member's fast path (:meth:`Student.for_inference`)."""
        for member in self.members:
            member.for_inference()
        return self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, heatmaps = zip(*(member(x) for member in self.members))
        mean_of = lambda logits: torch.logit(torch.stack(logits).sigmoid().mean(dim=0), eps=1e-6)  # noqa: E731
        return mean_of(scores), mean_of(heatmaps)


def student_for(state: dict[str, torch.Tensor], preset: str) -> Student | StudentEnsemble:
    """The network that ``state`` (a saved state dict) belongs to: an ensemble when its keys are the
    members' (``members.<i>.…``), else one student. An ensemble is built only where ``state`` holds
    members 0 to N - 1, each a whole student of ``preset`` (tensors of its shapes): else one student, which
    the weights then do not fit (a small file of many members' names would build as many networks first).
    """
    members = {k.split(".")[1] for k in state if k.startswith("members.")}
    if members:
        with torch.device("meta"):  # shapes alone: no memory, no initialisation
            shapes = {k: v.shape for k, v in Student(preset).state_dict().items()}
        whole = {f"members.{i}.{k}": shape for i in range(len(members)) for k, shape in shapes.items()}
        if whole.keys() == state.keys() and all(state[k].shape == shape for k, shape in whole.items()):
            return StudentEnsemble(preset, len(members))
    return Student(preset)


def ensemble_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The state dict of a :class:`StudentEnsemble` whose members have the single students' ``states``."""
    return {f"members.{i}.{k}": v for i, state in enumerate(states) for k, v in state.items()}


def blend_states(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor],
                 start_weight: float) -> dict[str, torch.Tensor]:
    """Weights a share ``start_weight`` of the way back from a fine-tuned student (``end``) to the student it
    started from (``start``): ``w · start + (1 − w) · end`` for every floating tensor, counters from ``end``.
    Two ends of one fine-tuning lie in one basin of the loss, so their blend is a working student that
    keeps some of what the start knew off the new training data (weight-space ensembling)."""
    if start.keys() != end.keys():
        raise ValueError("the fine-tuned weights and the weights they started from are not of one architecture")
    return {k: (start_weight * start[k].float() + (1 - start_weight) * v.float()) if v.is_floating_point() else v
            for k, v in end.items()}
