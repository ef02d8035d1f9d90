"""The error types gptrl raises on bad input. Each message names the file (or argument) and the key at fault."""

from __future__ import annotations


class BundleError(ValueError):
    """A bundle, graph or config that cannot be used: the message names the file and the key at fault."""


class NonFiniteOutputError(FloatingPointError):
    """A policy produced a NaN or infinite output; the message names the row and the step."""


class OutputExistsError(FileExistsError):
    """An output that exists and is replaced only on request. ``str`` names the Python argument (overwrite=True);
    the command line names its own flag (``--overwrite``) from ``path``."""

    def __init__(self, path: str):
        super().__init__(f"{path}: already exists (pass overwrite=True to replace it)")
        self.path = path
