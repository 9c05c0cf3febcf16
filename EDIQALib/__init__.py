"""EDIQALib: task-based, no-reference image quality assessment for CT and MR (the EDIQA engine).

``EDIQALib.assess(path)`` assesses an image with the bundled student and returns a
:class:`~EDIQALib.assess.QualityResult`.
"""

__version__ = "0.1.0"

from .assess import QualityResult, assess  # noqa: E402  (the public API)

__all__ = ["QualityResult", "assess"]
