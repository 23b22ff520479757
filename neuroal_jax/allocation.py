"""Sparsity allocation ("top-up") methods: one signature, one registry (SPEC §4).

    allocation(job: PruneJob) -> Allocation

An allocation decides how much each layer (or row) is pruned; the base method's scores decide
which weights. `Allocation.refine` optionally rewrites each layer's mask after scoring (DSnoT).
NeuroAL registers itself here too (see `neuroal_jax.search`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .config import ModelConfig
from .pruning import (Distribution, Structure, block_distribution, dense_activation_norms,
                      uniform_distribution)


@dataclass(frozen=True)
class PruneJob:
    """Everything an allocation may look at."""
    cfg: ModelConfig
    params: dict
    windows: np.ndarray  # calibration windows [n, seqlen]
    sparsity: float
    method: str
    structure: Structure = Structure()
    options: dict = field(default_factory=dict)  # top-up options, e.g. {"owl_m": 5, "owl_lambda": 0.08}
    batch_size: int = 8
    progress: bool = True

    def option(self, name: str, default):
        return self.options.get(name, default) if self.options.get(name) is not None else default


@dataclass
class Allocation:
    dist: Distribution
    info: dict = field(default_factory=dict)  # goes into report.json
    refine: Callable | None = None  # (key, W, mask, stats: BlockStats, target) -> mask


ALLOCATIONS: dict[str, Callable[[PruneJob], Allocation]] = {}


def register_allocation(name: str):
    def deco(fn):
        ALLOCATIONS[name] = fn
        return fn
    return deco


def get_allocation(name: str) -> Callable[[PruneJob], Allocation]:
    try:
        return ALLOCATIONS[name]
    except KeyError:
        raise ValueError(f"unknown top-up {name!r}; valid: {', '.join(ALLOCATIONS)}") from None


def clip_sparsity(s: np.ndarray) -> np.ndarray:
    """The reference's guard: sparsity <= 0 → 0.01 and >= 1 → 0.99."""
    s = np.asarray(s, np.float64).copy()
    s[s <= 0] = 0.01
    s[s >= 1] = 0.99
    return s


def minmax_densities(values: np.ndarray, lam: float, sparsity: float) -> np.ndarray:
    """d = minmax(values) * 2λ, recentred so the mean density is 1 - s (float64, as the reference)."""
    v = np.asarray(values, np.float64)
    d = (v - v.min()) * (1.0 / (v.max() - v.min()) * lam * 2)
    return d - np.mean(d) + (1 - sparsity)


@register_allocation("uniform")
def uniform(job: PruneJob) -> Allocation:
    return Allocation(uniform_distribution(job.cfg, job.sparsity))


def outlier_ratio(scores: list[np.ndarray], m: float) -> float:
    """Percent of pooled scores above m × their mean."""
    flat = np.concatenate([np.asarray(s, np.float32).ravel() for s in scores])
    return float(np.mean(flat > m * flat.mean(dtype=np.float32))) * 100


@register_allocation("owl")
def owl(job: PruneJob) -> Allocation:
    """OWL: blocks with more outlier Wanda scores (on the dense model's stream) are pruned less."""
    from .models import family_of
    m, lam = job.option("owl_m", 5.0), job.option("owl_lambda", 0.08)
    norms = dense_activation_norms(job.cfg, job.params, job.windows, job.batch_size, job.progress)
    ratios = []
    for b, block in enumerate(job.params["blocks"]):
        scores = [np.abs(np.asarray(block[n]["weight"], np.float32)) * norms[f"{b}.{n}"][None, :]
                  for n in family_of(job.cfg).prunable]
        ratios.append(outlier_ratio(scores, m))
    block_sparsity = clip_sparsity(1 - minmax_densities(np.array(ratios), lam, job.sparsity))
    info = {"owl_outlier_ratios": {str(b): r for b, r in enumerate(ratios)},
            "owl_block_sparsity": {str(b): float(s) for b, s in enumerate(block_sparsity)},
            "owl_m": m, "owl_lambda": lam}
    return Allocation(block_distribution(job.cfg, block_sparsity), info)

from . import alphapruning, dsnot  # noqa: E402,F401  (register the "alphapruning" and "dsnot" top-ups)
