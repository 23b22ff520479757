"""Uniform: every prunable layer at the target sparsity (the baseline; works with N:M structure)."""
from __future__ import annotations

from ..pruning.targets import uniform_distribution
from .base import Allocation, PruneJob, register_topup


@register_topup("uniform", nm="uniform")
def uniform(job: PruneJob) -> Allocation:
    return Allocation(uniform_distribution(job.cfg, job.sparsity))
