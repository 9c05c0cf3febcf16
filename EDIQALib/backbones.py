"""Hierarchical feature extractors (torchvision backbones, from scratch): four maps at strides 4–32.

Each returns a list of NCHW tensors, low to high level, and states their channel counts. The teacher's
``paper`` detector and the student share them, so that stage-1 weights transfer by name.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import convnext_tiny, mobilenet_v3_small, swin_t


class _Stages(nn.Module):
    """Runs ``body`` block by block and collects the outputs of the blocks listed in ``taps``."""

    channels: tuple[int, ...]
    channels_last = False

    def __init__(self, body: nn.Sequential, taps: tuple[int, ...]) -> None:
        super().__init__()
        self.body = body
        self.taps = taps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, block in enumerate(self.body):
            x = block(x)
            if i in self.taps:
                feats.append(x.permute(0, 3, 1, 2).contiguous() if self.channels_last else x)
            if i == self.taps[-1]:
                break
        return feats


class SwinTStages(_Stages):
    """Swin-T stages (96, 192, 384, 768 channels)."""

    channels = (96, 192, 384, 768)
    channels_last = True

    def __init__(self) -> None:
        super().__init__(swin_t(weights=None).features, (1, 3, 5, 7))


class ConvNeXtTStages(_Stages):
    """ConvNeXt-T stages (96, 192, 384, 768 channels)."""

    channels = (96, 192, 384, 768)

    def __init__(self) -> None:
        super().__init__(convnext_tiny(weights=None).features, (1, 3, 5, 7))


class MobileNetV3SmallStages(_Stages):
    """MobileNetV3-Small blocks at strides 4, 8, 16, 32 (16, 24, 48, 96 channels): the CPU backbone."""

    channels = (16, 24, 48, 96)

    def __init__(self) -> None:
        super().__init__(mobilenet_v3_small(weights=None).features, (1, 3, 8, 11))
