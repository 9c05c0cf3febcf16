"""``python -m EDIQALib``."""
from .cli import run

run()
