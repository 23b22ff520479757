"""AlphaPruning top-up (docs/algorithm.md §4): block sparsities from the heavy-tail exponent of each layer's spectrum.

Reference semantics (AlphaPruning, haiquanlu/AlphaPruning, as re-used by the NeuroAL reference):

1. Per prunable layer, the empirical spectral density of WᵀW: eigenvalues λ = squared singular values of W
   (float32, ascending). A power law p(λ) ∝ λ^-α is fitted by maximum likelihood,
   ``α(xmin) = 1 + n / Σ_{λ_i ≥ xmin} log(λ_i / xmin)`` (n = number of eigenvalues ≥ xmin), trying every
   eigenvalue as xmin inside a window around the peak of the histogram (100 bins) of log10 λ, and keeping the
   α whose fit has the smallest Kolmogorov–Smirnov distance (WeightWatcher's "xmin_peak" fix). See
   :func:`esd_alpha` for the window, which follows the reference's arithmetic exactly.
2. α is averaged over the layers of each block ("block_wise" mapping, the reference default).
3. The block values are mapped linearly onto ``[1 - ε, 1 + ε]`` (min α → 1 - ε, max α → 1 + ε: a block with a
   *larger* α, i.e. a less heavy-tailed, less well-trained spectrum, is pruned *more*), and all layer ratios
   are multiplied by one scaler so that the parameter-weighted mean sparsity is the target s.

Everything is computed from the dense weights alone (no calibration data). ε is the option ``alpha_epsilon``
(default 0.3, the value the NeuroAL paper uses).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..options import Options, in_range, option
from ..pruning.targets import layer_keys, prunable_weights
from .base import Allocation, PruneJob, register_topup

F32 = np.float32
HIST_BINS = 100  # the reference's histogram of log10 eigenvalues


# ---------------------------------------------------------------- the spectrum of one layer

def esd_eigenvalues(W) -> np.ndarray:
    """Eigenvalues of WᵀW (squared singular values of W), float32, ascending."""
    sv = np.linalg.svd(np.asarray(W, F32), compute_uv=False)
    return np.sort(np.square(sv.astype(F32)))


def torch_linspace_f32(start: np.float32, stop: np.float32, steps: int) -> np.ndarray:
    """float32 linspace as torch evaluates it on CPU: a float32 step, the first half as start + step·i and the
    second half as stop - step·(steps-1-i), each with one rounding (a fused multiply-add; the float64 product
    of a float32 and a small integer is exact)."""
    start64, stop64 = np.float64(start), np.float64(stop)
    step = np.float64(F32((F32(stop) - F32(start)) / F32(steps - 1)))
    i = np.arange(steps, dtype=np.float64)
    half = steps // 2
    vals = np.where(i < half, start64 + step * i, stop64 - step * (steps - 1 - i))
    return vals.astype(F32)


def histc_f32(x: np.ndarray, bins: int, lo: np.float32, hi: np.float32) -> np.ndarray:
    """Counts of torch.histc(x, bins, min=lo, max=hi) on float32 data: bin = trunc((x - lo) * bins / (hi - lo)),
    the right edge falling into the last bin."""
    x = np.asarray(x, F32)
    if lo == hi:  # torch widens a degenerate range by 1 on both sides
        lo, hi = F32(lo - 1), F32(hi + 1)
    inside = x[(x >= lo) & (x <= hi)]
    pos = ((inside - lo) * F32(bins) / F32(hi - lo)).astype(np.int64)
    pos = np.minimum(pos, bins - 1)
    return np.bincount(pos, minlength=bins)


def xmin_window(eigs: np.ndarray, bins: int = HIST_BINS) -> tuple[np.float32, np.float32]:
    """(lower, upper) bounds on the xmin candidates, as the reference computes them.

    The peak bin of the histogram of log10 λ gives ``xmin2 = 10 ** left_edge``; the reference then keeps
    candidates with ``λ ≥ log10(0.95 xmin2)`` and ``λ ≤ 1.5 xmin2``. The lower bound mixes a log10 value with
    raw eigenvalues (an oddity of the reference, kept here so the fitted α are the same): for
    xmin2 < 1/0.95 it is negative and no candidate is excluded from below.
    """
    log_e = np.log10(eigs).astype(F32)
    lo, hi = log_e.min(), log_e.max()
    counts = histc_f32(log_e, bins, lo, hi)
    edges = torch_linspace_f32(lo, hi, bins + 1)
    xmin2 = np.power(F32(10), edges[int(np.argmax(counts))]).astype(F32)
    return F32(np.log10(F32(0.95) * xmin2)), F32(F32(1.5) * xmin2)


def power_law_fit(eigs: np.ndarray, log_eigs: np.ndarray, i: int) -> tuple[np.float32, np.float32]:
    """(α, KS distance) of the power-law fit with xmin = eigs[i] (float32, the reference's formulas).

    log_eigs = log(eigs) in float32. The distance is 1 (the reference's "no fit" value) when α ≤ 1.
    """
    tail, log_tail = eigs[i:], log_eigs[i:]
    n = F32(len(tail))
    alpha = F32(1) + n / (np.sum(log_tail, dtype=F32) - n * log_tail[0])
    if not alpha > 1:
        return F32(alpha), F32(1)
    cdf_fit = F32(1) - np.power(tail / tail[0], F32(1) - alpha).astype(F32)
    cdf_emp = np.arange(len(tail), dtype=F32) / n
    return F32(alpha), F32(np.max(np.abs(cdf_fit - cdf_emp)))


def esd_alpha(W, bins: int = HIST_BINS) -> float:
    """Heavy-tail exponent α of the ESD of WᵀW with xmin chosen near the histogram peak (reference "xmin_peak").

    Every eigenvalue but the largest inside the xmin window is tried as xmin (ascending, stopping at the first
    one above the window); α of the fit with the smallest KS distance wins (the first on ties). Candidates that
    are never fitted count as (α = 0, D = 1), as in the reference, so a layer with no fit with D < 1 gets the
    α of the first eigenvalue (or 0 if that one was outside the window).
    """
    eigs = esd_eigenvalues(W)
    n_cand = len(eigs) - 1
    if n_cand < 1:
        raise UsageError(f"a power-law fit needs at least 2 singular values, W has shape {np.shape(W)}")
    lo, hi = xmin_window(eigs, bins)
    first = int(np.searchsorted(eigs, lo, side="left"))  # first eigenvalue not below the window
    stop = min(int(np.searchsorted(eigs, hi, side="right")), n_cand)  # first one above the window
    log_eigs = np.log(eigs).astype(F32)
    alphas, dists = np.zeros(n_cand, F32), np.ones(n_cand, F32)
    for i in range(first, stop):
        alphas[i], dists[i] = power_law_fit(eigs, log_eigs, i)
    return float(alphas[int(np.argmin(dists))])


# ---------------------------------------------------------------- from α to sparsities

def block_means(layer_alpha: np.ndarray, layers_per_block: int) -> np.ndarray:
    """Mean α of each block (float64, consecutive groups of the ordered layer list)."""
    a = np.asarray(layer_alpha, np.float64)
    return np.array([np.mean(a[i:i + layers_per_block]) for i in range(0, len(a), layers_per_block)])


def alpha_sparsities(metric: np.ndarray, sizes: np.ndarray, sparsity: float, epsilon: float) -> np.ndarray:
    """Layer sparsities from a per-layer metric: linear map to [1-ε, 1+ε] (larger metric → more pruning), then
    one scaler so that Σ size·ratio = s·Σ size.

    Reference numerics: the mapping and the weighted sum are float64, but the numerator ``Σ size · s`` is an
    int64 tensor times a Python float in the reference, i.e. rounded to float32; we do the same, so the
    parameter-weighted mean equals s to float32 precision (≈1e-7 relative), not to the last float64 bit.
    A constant metric (the reference would divide 0 by 0) gives every layer s.
    """
    m = np.asarray(metric, np.float64)
    s1, s2 = 1.0 - epsilon, 1.0 + epsilon
    span = m.max() - m.min()
    ratios = (m - m.min()) / span * (s2 - s1) + s1 if span > 0 else np.ones_like(m)
    sizes = np.asarray(sizes, np.int64)
    numerator = np.float64(F32(F32(sizes.sum()) * F32(sparsity)))
    return ratios * (numerator / np.sum(sizes * ratios))


@dataclass(frozen=True)
class AlphaPruningOptions(Options):
    alpha_epsilon: float = option(0.3, "AlphaPruning: ε, block sparsities span [1-ε, 1+ε] × s before rescaling",
                                  check=in_range(0.0, 1.0, high_open=True), metavar="ε")


def layer_alphas(cfg, params) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(prunable layer keys, α per layer, mean α per block) of the dense weights."""
    keys = layer_keys(cfg)
    layer_alpha = np.array([esd_alpha(w) for w in prunable_weights(cfg, params["blocks"]).values()])
    return keys, layer_alpha, block_means(layer_alpha, len(keys) // cfg.num_layers)


@register_topup("alphapruning", AlphaPruningOptions)
def alphapruning(job: PruneJob) -> Allocation:
    """AlphaPruning: blocks whose layers have a larger mean ESD exponent α are pruned more (ε = alpha_epsilon)."""
    eps = job.options.alpha_epsilon
    keys, layer_alpha, block_alpha = layer_alphas(job.cfg, job.params)
    per_block = len(keys) // job.cfg.num_layers
    sizes = np.array([int(np.size(w)) for w in prunable_weights(job.cfg, job.params["blocks"]).values()])
    ratios = alpha_sparsities(np.repeat(block_alpha, per_block), sizes, job.sparsity, eps)
    over = ratios > 1.0  # the reference prunes such a layer entirely (its slice saturates)
    ratios = np.minimum(ratios, 1.0)
    block_sparsity = ratios[::per_block]
    info = {"alpha_epsilon": eps,
            "alpha": {str(b): float(a) for b, a in enumerate(block_alpha)},
            "alpha_layer": {k: float(a) for k, a in zip(keys, layer_alpha)},
            "alpha_block_sparsity": {str(b): float(s) for b, s in enumerate(block_sparsity)},
            "alpha_clipped_layers": [k for k, o in zip(keys, over) if o]}
    return Allocation({k: float(r) for k, r in zip(keys, ratios)}, info)
