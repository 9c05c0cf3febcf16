"""EDIQALib: task-based, no-reference image quality assessment for CT and MR (the EDIQA engine).

``EDIQALib.assess(path)`` assesses an image with the bundled student and returns a
:class:`~EDIQALib.assessment.QualityResult`.

The two are loaded on first use, so that importing a light module of the package (the command line's
parser, for its help) does not load SciPy, scikit-image and SimpleITK.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["QualityResult", "assess"]

if TYPE_CHECKING:
    from .assessment import QualityResult, assess


def __getattr__(name: str) -> Any:
    """The public API's names, imported from :mod:`EDIQALib.assessment` when first asked for."""
    if name in __all__:
        from . import assessment
        return getattr(assessment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """The module's names with the public API's, which load on first use (for ``dir`` and tab completion)."""
    return sorted({*globals(), *__all__})
