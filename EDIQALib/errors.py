"""The one exception type for bad user input (reported as one line on stderr, exit code 2)."""


class InputError(ValueError):
    """Input the engine cannot assess: missing/corrupt file, wrong dimensionality, NaN, ..."""
