"""The warnings of neuroal_jax: each is printed by the command line as one line `neuroal-jax: warning: ...`."""
from __future__ import annotations


class NeuroalWarning(UserWarning):
    """Base of our warnings (the command line prints them as one line)."""


class SparsityWarning(NeuroalWarning):
    """The achieved sparsity is far from the target (the top-up's clipping or rounding)."""


class PrecisionWarning(NeuroalWarning):
    """bfloat16 asked for on a CPU that can only emulate it."""


class AllocationWarning(NeuroalWarning):
    """A top-up's settings give an allocation other than the one they usually do (e.g. uniform)."""
