"""DLP, Dynamic Layerwise Pruning (Chen et al., ICML 2025), as its released code computes it (docs/algorithm.md §4).

On the dense model's own stream over the calibration windows (like OWL), every block l gets one statistic
s_l of the Wanda scores |W_ij|·a_j of all its prunable layers (whatever the base method): their mean (the
released code) or their median (the paper; the lower middle value, as torch.median). The code then turns
the importance 1 - s_l / Σ s into densities by the same min–max scaling as OWL, which amounts to

    S_l = s + 2α · (s_l - mean(s)) / (max(s) - min(s))

and prunes every layer of block l at S_l, with the reference's guard (≤ 0 → 0.01; we also map ≥ 1 to
0.99). No weighting by parameter counts. Equal statistics in every block give a uniform allocation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..options import Options, in_range, option
from ..pruning.statistics import dense_activation_norms, dense_wanda_scores
from ..pruning.targets import block_distribution
from .base import Allocation, PruneJob, clip_sparsity, minmax_densities, register_topup

STATISTICS = ("mean", "median")


@dataclass(frozen=True)
class DLPOptions(Options):
    dlp_alpha: float = option(0.15, "DLP: α, the half-range of the block sparsities around the target",
                              check=in_range(0.0, 1.0), metavar="α")
    dlp_statistic: str = option("mean", "DLP: statistic of a block's Wanda scores: mean (the released code) or "
                                        "median (the paper)", choices=STATISTICS)


def block_statistic(scores: list[np.ndarray], statistic: str) -> float:
    """|mean| or median of all entries of a block's score matrices (float32, as the released code)."""
    flat = np.concatenate([np.asarray(s, np.float32).ravel() for s in scores])
    if statistic == "mean":
        return abs(float(flat.mean(dtype=np.float32)))
    return float(np.partition(flat, (flat.size - 1) // 2)[(flat.size - 1) // 2])  # the lower middle value


def block_importance(cfg, params, norms: dict, statistic: str) -> tuple[np.ndarray, np.ndarray]:
    """(s_l, importance 1 - s_l / Σ s) per block, float64, from the Wanda scores on the dense stream."""
    stats = np.array([block_statistic(scores, statistic) for scores in dense_wanda_scores(cfg, params, norms)],
                     np.float64)
    return stats, 1.0 - stats / stats.sum()


@register_topup("dlp", DLPOptions)
def dlp(job: PruneJob) -> Allocation:
    """DLP: blocks whose Wanda scores are larger on average are pruned more, by up to ±α."""
    o = job.options
    norms = dense_activation_norms(job.cfg, job.params, job.windows, job.batch_size, job.progress)
    stats, importance = block_importance(job.cfg, job.params, norms, o.dlp_statistic)
    block_sparsity = clip_sparsity(1 - minmax_densities(importance, o.dlp_alpha, job.sparsity))
    info = {"dlp_block_statistic": {str(b): float(s) for b, s in enumerate(stats)},
            "dlp_block_sparsity": {str(b): float(s) for b, s in enumerate(block_sparsity)}}
    if stats.max() == stats.min():
        info["dlp_note"] = f"every block has the same {o.dlp_statistic} score, so the allocation is uniform"
    return Allocation(block_distribution(job.cfg, block_sparsity), info)
