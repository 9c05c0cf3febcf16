"""EDIQALib: task-based, no-reference image quality assessment for CT and MR (the EDIQA engine)."""

__version__ = "0.1.0"
