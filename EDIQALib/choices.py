"""Named choices and limits of the engine's options (device names among them), and the label maps' stride,
shared by the engine and the command line.

This module imports nothing but the standard library, so that ``ediqa --help`` and a usage error answer at
once, without loading torch (three to four seconds) or the image libraries (one second).
"""
import re
from pathlib import Path

ENGINE_ROOT = Path(__file__).resolve().parent.parent  # the folder that holds EDIQALib and Resources
MODELS_DIR = ENGINE_ROOT / "Resources" / "Models"  # the bundled models' registry
DEFAULT_DETECTOR = "detector-lite"  # the teacher's detector
DEFAULT_STUDENT = "student-lite"  # the student of `assess`
OVERLAY_OPACITY = 0.45  # of the heatmap over its image: overlay.png, compare.png and Slicer's views
HEATMAP_CMAP = "RdYlBu"  # matplotlib's colour map of the heatmap, in the figures and in Slicer's views: red = lesions
# missed, blue = found; its ends stay apart for a red-green colour-blind reader, as RdYlGn's do not

PRESETS = ("lite", "paper")  # of the detector and of the student: ``lite`` for CPUs, ``paper`` for GPUs
READOUTS = ("agnostic", "paper")  # the teacher's mAP: class-agnostic (the default), or the paper's 4-class
KINDS = ("dose", "views", "texture", "blur")  # of the evaluation series (``EDIQALib.series``)
MIN_SIZE = 64  # pixels a side of an image, as read and as resampled to the canonical spacing
MAP_STRIDE = 4  # of the teacher's label maps (``ediqa label``), as of the heatmap the student returns
MIN_FIELD_PX = 320  # the student's training phantoms' field (pixels); a smaller slice is mirrored out to it
FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")  # the simulator's FBP filters
MAX_PHOTONS = 1e12  # per ray at dose 1: far above any scanner's, and below where Poisson sampling overflows
MIN_VIEWS = 8  # projections per rotation: fewer leave FBP nothing but streaks
MAX_VIEWS = 10_000  # a scanner takes about 1 000-3 000
# image files other than DICOM, by suffix (NRRD, NIfTI and its pairs, MetaImage), as the reader takes them
IMAGE_SUFFIXES = (".nii.gz", ".hdr.gz", ".img.gz", ".nrrd", ".nhdr", ".nii", ".hdr", ".img", ".mha", ".mhd")
DEVICES = "auto|cpu|cuda|cuda:N"  # auto: a CUDA GPU when there is one; cuda: the first GPU; cuda:N: the GPU of index N


def is_device_name(name: str) -> bool:
    """Whether ``name`` is one of :data:`DEVICES` (whether that device is present is for torch to say)."""
    return re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", name) is not None
