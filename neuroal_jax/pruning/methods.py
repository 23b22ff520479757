"""The base methods and what the passes ask of each: one `Method` record per method.

Every registered score (`scores.py`) is a method that masks the top-k of its score and keeps the kept weights as
they are; SparseGPT instead updates the kept weights from the layer inputs' Hessian, one sparsity per layer.
A pass asks the record (`method_info(name).updates_weights`, ...), never the method's name.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from .scores import SCORES


@dataclass(frozen=True)
class Method:
    name: str
    #: prunes by updating the kept weights (SparseGPT's OBS update), not by a top-k mask of a score: no
    #: score-mask refinement (DSnoT) and, in NeuroAL's search, no N:M candidates
    updates_weights: bool = False
    #: its statistics include the Hessian 2 XᵀX / N of each layer's inputs
    needs_hessian: bool = False
    #: takes per-row sparsity vectors (NeuroAL's row step), not only one sparsity per layer
    row_targets: bool = True


#: The methods that are not a registered score.
WEIGHT_UPDATES = {"sparsegpt": Method("sparsegpt", updates_weights=True, needs_hessian=True, row_targets=False)}


def methods() -> tuple[str, ...]:
    """The base methods: every registered score, and sparsegpt (which also updates the kept weights)."""
    return (*SCORES.names(), *WEIGHT_UPDATES)


def check_method(method: str) -> str:
    if method not in methods():
        raise UsageError(f"unknown pruning method {method!r}; valid: {', '.join(methods())}")
    return method


def method_info(name: str) -> Method:
    """The record of a base method (a ValueError naming the valid ones for an unknown name)."""
    return WEIGHT_UPDATES.get(check_method(name)) or Method(name)
