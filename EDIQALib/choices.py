"""Named choices of the engine's options, and the label maps' stride, shared by the engine and the command line.

This module imports nothing, so that ``ediqa --help`` and a usage error answer at once, without loading
torch (three to four seconds).
"""

PRESETS = ("lite", "paper")  # of the detector and of the student: ``lite`` for CPUs, ``paper`` for GPUs
READOUTS = ("agnostic", "paper")  # the teacher's mAP: class-agnostic (the default), or the paper's 4-class
MAP_STRIDE = 4  # of the teacher's label maps (``ediqa label``), as of the heatmap the student returns
