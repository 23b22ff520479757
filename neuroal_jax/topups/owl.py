"""OWL (Yin et al., ICML 2024): blocks with more outlier Wanda scores are pruned less (docs/algorithm.md §4).

The outlier ratio of block l is the percentage of its Wanda scores |W_ij|·a_j (on the dense model's own
stream) above M times their mean; block densities are the min–max-scaled ratios spread over ±λ around
1 - sparsity. Equal ratios (e.g. a very large M) give a uniform allocation, and the report says so.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import AllocationWarning
from ..options import Options, in_range, option, positive
from ..pruning.statistics import dense_activation_norms, dense_wanda_scores
from .base import Allocation, PruneJob, block_allocation, clip_sparsity, minmax_densities, register_topup


def outlier_ratio(scores: list[np.ndarray], m: float) -> float:
    """Percent of pooled scores above m × their mean."""
    flat = np.concatenate([np.asarray(s, np.float32).ravel() for s in scores])
    return float(np.mean(flat > m * flat.mean(dtype=np.float32))) * 100


def block_outlier_ratios(cfg, params, norms: dict, m: float) -> np.ndarray:
    """Outlier ratio (percent) of every block's Wanda scores on the dense stream (`dense_activation_norms`)."""
    return np.array([outlier_ratio(scores, m) for scores in dense_wanda_scores(cfg, params, norms)])


@dataclass(frozen=True)
class OWLOptions(Options):
    owl_m: float = option(5.0, "OWL: outlier threshold M (a Wanda score above M × the mean of its block is an "
                               "outlier)", check=positive, metavar="M")
    owl_lambda: float = option(0.08, "OWL: λ, the half-range of the block densities around 1 - sparsity",
                               check=in_range(0.0, 1.0), metavar="λ")


@register_topup("owl", OWLOptions, nm="mixed")
def owl(job: PruneJob) -> Allocation:
    """OWL: blocks with more outlier Wanda scores (on the dense model's stream) are pruned less; with N:M
    structure a whole N per block (the OWL paper's mixed N:M), nearest to those sparsities."""
    m, lam = job.options.owl_m, job.options.owl_lambda
    norms = dense_activation_norms(job.cfg, job.params, job.windows, job.batch_size, job.progress)
    ratios = block_outlier_ratios(job.cfg, job.params, norms, m)
    block_sparsity = clip_sparsity(1 - minmax_densities(ratios, lam, job.sparsity))
    dist, nm_info = block_allocation(job.cfg, block_sparsity, job.structure)
    info = {"owl_outlier_ratios": {str(b): float(r) for b, r in enumerate(ratios)},
            "owl_block_sparsity": {str(b): float(s) for b, s in enumerate(block_sparsity)},
            "owl_m": m, "owl_lambda": lam, **nm_info}
    if max(ratios) == min(ratios):
        info["owl_note"] = (f"every block has the same outlier ratio ({ratios[0]:g} %) at M = {m:g} (--owl-m), "
                            "so the allocation is uniform")
        warnings.warn(info["owl_note"], AllocationWarning, stacklevel=2)
    return Allocation(dist, info)
