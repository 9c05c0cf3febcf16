"""EDIQALib: task-based, no-reference image quality assessment for CT and MR (the EDIQA engine).

``EDIQALib.assess(path)`` assesses an image with the bundled student and returns a
:class:`~EDIQALib.assessment.QualityResult`.
"""

__version__ = "0.1.0"

from .assessment import QualityResult, assess  # noqa: E402  (the public API)

__all__ = ["QualityResult", "assess"]
