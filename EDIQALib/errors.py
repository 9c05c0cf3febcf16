"""The exception type for bad user input (reported as one line on stderr, exit code 2)."""


class InputError(ValueError):
    """Input the engine cannot assess: missing/corrupt file, wrong dimensionality, NaN, ..."""


class UnknownModality(InputError):
    """An image whose modality neither its tags nor its values tell: a command that takes one modality only
    says what to give instead of offering both."""
