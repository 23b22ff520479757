"""What users get wrong, and what they should know: the error types every check raises and the warnings.

The command line turns a `UsageError` (and an `OSError`) into one line `neuroal-jax: error: ...` with exit status 2,
and prints each warning here as one line `neuroal-jax: warning: ...`; anything else is a bug and keeps its
traceback (exit status 1)."""
from __future__ import annotations


class NeuroalWarning(UserWarning):
    """Base of our warnings (the command line prints them as one line)."""


class SparsityWarning(NeuroalWarning):
    """The achieved sparsity is far from the target (the top-up's clipping or rounding)."""


class PrecisionWarning(NeuroalWarning):
    """bfloat16 asked for on a CPU that can only emulate it."""


class AllocationWarning(NeuroalWarning):
    """A top-up's settings give an allocation other than the one they usually do (e.g. uniform)."""


class UsageError(ValueError):
    """Something the user gave is wrong (a value, a file, a combination of settings): the command line prints the
    message as one line and exits with status 2. Every check of the project raises it (or a subclass); any other
    exception is a bug, shown with its traceback."""


class OutputError(UsageError):
    """An output path that cannot or must not be written."""


class MissingDependency(UsageError, ImportError):
    """An optional dependency the asked-for feature needs is not installed (the message says how to install it)."""
