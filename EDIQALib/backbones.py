"""Hierarchical feature extractors, from scratch: four maps, low to high level.

Each returns a list of NCHW tensors and states their channel counts and strides. The torchvision
backbones (strides 4–32) serve the ``paper`` presets; :class:`CompactStages` (strides 8–64) is the CPU
student's. The teacher's ``paper`` detector, the stage-1 detectors and the student share them, so that
stage-1 weights transfer by name.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models import convnext_tiny, swin_t

# what every backbone reads: an image in [0, 1] standardised by these (the detectors' and the student's
# alike, so that stage-1 weights see in the student the input they were trained on)
IMAGE_MEAN, IMAGE_STD = 0.5, 0.25

class _Stages(nn.Module):
    """Runs ``body`` block by block and collects the outputs of the blocks listed in ``taps``."""

    channels: tuple[int, ...]
    strides = (4, 8, 16, 32)
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


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2 if stride == 1 else 0, groups=groups,
                      bias=False), nn.BatchNorm2d(c_out)]


def _separable(c: int) -> list[nn.Module]:
    """Depthwise 3×3 then pointwise, with a ReLU after each: the cheap way to mix space and channels."""
    return [*_conv(c, c, 3, groups=c), nn.ReLU(inplace=True), *_conv(c, c, 1), nn.ReLU(inplace=True)]


class CompactStages(nn.Module):
    """The CPU student's backbone: a non-overlapping 4×4 stem that sees every pixel once (noise and blur
    live at the pixel scale), then a 2×2 down-sampling and a depthwise-separable block per stage.
    Taps at strides 8, 16, 32, 64 (24, 48, 64, 96 channels). About 28 M multiply-adds per 512² slice.
    The stem has no separable block of its own: at stride 4 with 16 channels one took about a quarter of
    the student's time on a 2-core CPU (memory-bound), for a tenth of its multiply-adds.

    Slices arrive as grey copied to three channels; the stem reads one.
    """

    channels = (24, 48, 64, 96)
    strides = (8, 16, 32, 64)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv(1, 16, 4, 4), nn.ReLU(inplace=True))
        widths = (16, *self.channels)
        self.stages = nn.ModuleList(
            nn.Sequential(*_conv(c_in, c_out, 2, 2), nn.ReLU(inplace=True), *_separable(c_out))
            for c_in, c_out in zip(widths, widths[1:]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x[:, :1])
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def fold_input_affine(backbone: nn.Module, scale: float, shift: float) -> None:
    """For inference on grey slices: make the backbone's first convolution read a raw one-channel slice
    ``x`` as it read ``scale * x + shift`` copied to all its input channels, which saves the passes over the
    whole slice that normalising and copying it take. Exact (up to rounding) for an unpadded first
    convolution, which every backbone here has: a patchifying stem."""
    conv = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    if any(conv.padding) or conv.groups != 1:
        raise ValueError("the first convolution must be unpadded and ungrouped")
    weight = conv.weight.detach().sum(dim=1, keepdim=True)
    bias = conv.bias.detach() if conv.bias is not None else weight.new_zeros(conv.out_channels)
    conv.bias = nn.Parameter(bias + shift * weight.sum(dim=(1, 2, 3)))
    conv.weight = nn.Parameter(scale * weight)
    conv.in_channels = 1


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """For inference: fold every BatchNorm that directly follows a convolution in an ``nn.Sequential``
    into that convolution (same outputs in eval mode, fewer passes over memory). Returns ``model``."""
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        items = list(seq)
        for i in range(len(items) - 1):
            if isinstance(items[i], nn.Conv2d) and isinstance(items[i + 1], nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(items[i].eval(), items[i + 1].eval())
                seq[i + 1] = nn.Identity()
    return model
