"""Where float rounding can move a mask: rows whose kept/pruned boundary is a near tie.

XLA:CPU's kernels differ between x86-64 hosts (AVX2 vs AVX-512/AMX), so float32 activations differ in
their last bits from host to host, and from the reference's PyTorch. A mask is robust to that unless
some row's last kept score and first pruned score are nearly equal; such a row may flip on another host,
and every layer after it (the flip changes the stream) may then differ slightly. Tests compare exactly
up to the first near tie and within a measured bound after it.
"""
from __future__ import annotations

import numpy as np

from neuroal_jax.pruning import keep_and_ties, prune_blocks
from neuroal_jax.pruning.scores import LayerStats, get_score

#: Relative score gap below which a kept/pruned boundary counts as a near tie. The row that flipped between an
#: AVX2 and an AVX-512 host had a gap of 2.8e-7; with the fixture's embedding perturbed by 3e-7 and 1e-6
#: relative noise (several seeds; stronger than host rounding), no boundary with a larger gap than 3e-6 flipped.
NEAR_TIE = 3e-6


def boundary_gap(scores: np.ndarray, keep: np.ndarray) -> float:
    """Smallest relative gap, over rows, between the last kept and the first pruned score."""
    s = -np.sort(-np.asarray(scores, np.float64), axis=1)
    rows = np.arange(len(s))
    k = np.asarray(keep)
    inner = (k > 0) & (k < s.shape[1])
    if not inner.any():
        return np.inf
    last_kept, first_pruned = s[rows[inner], k[inner] - 1], s[rows[inner], k[inner]]
    scale = np.maximum(np.abs(last_kept), 1e-30)
    return float(np.min((last_kept - first_pruned) / scale))


def first_near_tie(cfg, params, windows, dist, method) -> str | None:
    """The first layer (in forward order) of a sequential pass over `dist` whose mask has a near-tie row;
    None when every boundary is clear. The pass is the search's for one candidate (dense statistics on the
    candidate's own sparse stream)."""
    found = []

    def watch(key, W, mask, stats, target):
        if not found:
            name = key.split(".", 1)[1]
            scores = get_score(method)(W, LayerStats(act_norm=stats.act_norm[name], hessian=None))
            keep, _ = keep_and_ties(target, W.shape)
            if boundary_gap(scores, keep) < NEAR_TIE:
                found.append(key)
        return mask

    for _ in prune_blocks(cfg, params, windows, dist, method, refine=watch, progress=False):
        pass
    return found[0] if found else None


def exempt_from(order: list[str], first: str | None) -> set[str]:
    """The layers a near tie at `first` can reach: it and every later layer."""
    return set() if first is None else set(order[order.index(first):])
