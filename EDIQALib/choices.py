"""Named choices of the engine's options (device names among them), and the label maps' stride, shared by the
engine and the command line.

This module imports nothing but the standard library's ``re``, so that ``ediqa --help`` and a usage error
answer at once, without loading torch (three to four seconds).
"""
import re

PRESETS = ("lite", "paper")  # of the detector and of the student: ``lite`` for CPUs, ``paper`` for GPUs
READOUTS = ("agnostic", "paper")  # the teacher's mAP: class-agnostic (the default), or the paper's 4-class
MAP_STRIDE = 4  # of the teacher's label maps (``ediqa label``), as of the heatmap the student returns
DEVICES = "auto|cpu|cuda|cuda:N"  # auto: a CUDA GPU when there is one; cuda: the first GPU; cuda:N: the GPU of index N


def is_device_name(name: str) -> bool:
    """Whether ``name`` is one of :data:`DEVICES` (whether that device is present is for torch to say)."""
    return re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", name) is not None
