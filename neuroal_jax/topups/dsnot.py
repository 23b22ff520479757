"""DSnoT top-up (docs/algorithm.md §4): training-free prune-and-regrow on top of a base mask (Zhang et al., ICLR 2024).

The sparsity distribution stays uniform; each layer's mask from the base score is then rewritten row by row,
swapping one pruned and one kept weight per cycle, to shrink the expected reconstruction error of the row.
Reference semantics (zyxxmu/DSnoT ``prune_DSnoT``, unstructured branch, as re-used by the NeuroAL reference):

- statistics of the layer input over the calibration windows: ``m_j`` = mean over samples of Σ_t x_tj (the
  reference's ``sum_metric_row``), ``v_j`` = mean over samples of the per-sample token variance (``var``) and the
  Wanda norm ``a_j``;
- ``D = W * m[None, :]``: the contribution of each weight to the row's expected output; the reconstruction error
  of row r is ``e_r = Σ_{j pruned} D_rj`` (dense minus sparse expected output);
- regrowing candidates: the pruned weights ordered by ``D / v^p`` ascending (p = variance power, 1); when
  ``e_r > 0`` the next one from the top (largest positive) is regrown, otherwise the next from the bottom;
- pruning candidates: the kept weights ordered by the Wanda score |W|·a ascending, then rearranged so that those
  with ``D < 0`` come first (ascending Wanda) and those with ``D > 0`` last (so that walking from the end visits
  them by ascending Wanda); when ``e_r < 0`` the next from the end (a positive D) is pruned, otherwise the next
  from the front (a negative D);
- each cycle every active row does one swap: ``e_r ← (e_r + D_pruned) − D_regrown``; a row stops for good once
  ``|e_r| ≤ threshold`` (0.1) at the start of a cycle; at most ``max_cycles`` (50) cycles. The reference's
  same-sign test is disabled by its defaults (``without_same_sign=True``), so it is not applied here;
- by default only the attention projections are refined: the reference skips the MLP layers
  (``skip_layer='mlp'`` for Llama/Mistral/Phi, ``'fc'`` for OPT), which here is ``dsnot_skip="mlp"``.

Exactness of the counts: every swap exchanges a weight that is pruned *and was pruned in the base mask* with one
that is kept *and was kept in the base mask*, so each row keeps exactly its base number of weights. Where the
reference itself keeps the count (always, for real layer sizes) the result is the reference's. It differs only
in degenerate cases where the reference would not keep the count: a row that runs out of candidates (then it
stops here, while the reference walks into kept weights or revisits weights), and kept weights with ``D == 0``
exactly (the reference's reordering maps them to a duplicate index; here they sit between the negative and
positive ones). Rows that have stopped are left alone (in the reference their later no-op writes only matter in
those same degenerate cases).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from ..errors import UsageError
from ..models import split_key
from ..options import Options, Target, at_least, option
from ..pruning.methods import method_info
from ..pruning.targets import uniform_distribution
from .base import Allocation, PruneJob, register_topup

F32 = jnp.float32
SKIPS = ("mlp", "self_attn", "none")


# ---------------------------------------------------------------- candidate orders

def _stable_order(values, first):
    """Per row, column indices with the `first` entries before the others, each group by ascending value
    (stable: ties keep column order)."""
    by_value = jnp.argsort(values, axis=1, stable=True)
    later = jnp.take_along_axis(~first, by_value, axis=1)
    return jnp.take_along_axis(by_value, jnp.argsort(later, axis=1, stable=True), axis=1)


def regrow_order(D, var, pruned, var_power: float):
    """Pruned columns of each row by ascending ``D / v^p`` (stable), then the kept columns (never used)."""
    metric = jnp.where(pruned, D, 0.0)
    if var_power == 1.0:
        metric = metric / var[None, :]
    elif var_power != 0.0:
        metric = metric / jnp.power(var, var_power)[None, :]
    metric = jnp.where(metric == 0, 0.0, metric)  # -0.0 sorts with +0.0, as in torch
    return _stable_order(metric, pruned)


def prune_order(D, wanda, kept):
    """Kept columns of each row: ``D < 0`` by ascending Wanda, then ``D == 0`` (ascending), then ``D > 0`` by
    *descending* Wanda; then the pruned columns (never used)."""
    n_cols = D.shape[1]
    by_wanda = _stable_order(wanda, kept)  # kept first, ascending Wanda
    d = jnp.take_along_axis(D, by_wanda, axis=1)
    t = jnp.arange(n_cols)[None, :]
    n_kept = jnp.sum(kept, axis=1, keepdims=True)
    group = jnp.where(t >= n_kept, 3, jnp.where(d < 0, 0, jnp.where(d == 0, 1, 2)))
    within = jnp.where(group == 2, n_cols - 1 - t, t)
    return jnp.take_along_axis(by_wanda, jnp.argsort(group * n_cols + within, axis=1), axis=1)


# ---------------------------------------------------------------- the prune-and-regrow loop

def _pick(order, lo, hi, from_top):
    """Column at pointer `hi` (from_top) or `lo` of each row's candidate order (clamped; unused when empty)."""
    pos = jnp.clip(jnp.where(from_top, hi, lo), 0, order.shape[1] - 1)
    return jnp.take_along_axis(order, pos[:, None], axis=1)[:, 0]


@partial(jax.jit, static_argnames=("var_power",))
def dsnot_mask(W, mask, wanda_norm, input_sum, input_var, max_cycles=50, threshold=0.1, var_power: float = 1.0):
    """DSnoT refinement of one layer's mask (True = kept), all rows at once. Returns the new bool[out, in] mask.

    W: [out, in]; wanda_norm (a), input_sum (m), input_var (v): f32[in] statistics of the layer input.
    """
    W = jnp.asarray(W).astype(F32)
    mask = jnp.asarray(mask, bool)
    rows = jnp.arange(W.shape[0])
    D = W * jnp.asarray(input_sum, F32)[None, :]
    pruned = ~mask
    e0 = jnp.sum(jnp.where(pruned, D, 0.0), axis=1)
    grow = regrow_order(D, jnp.asarray(input_var, F32), pruned, var_power)
    cut = prune_order(D, jnp.abs(W) * jnp.asarray(wanda_norm, F32)[None, :], mask)
    n_pruned = jnp.sum(pruned, axis=1).astype(jnp.int32)
    zeros = jnp.zeros_like(n_pruned)

    def cond(state):
        cycle, active = state[0], state[1]
        return (cycle < max_cycles) & jnp.any(active)

    def body(state):
        cycle, active, e, m, g_lo, g_hi, c_lo, c_hi = state
        active = active & (jnp.abs(e) > threshold) & (g_lo <= g_hi) & (c_lo <= c_hi)
        up, down = e > 0, e < 0
        col_g = _pick(grow, g_lo, g_hi, up)
        col_c = _pick(cut, c_lo, c_hi, down)
        rm, pm = D[rows, col_g], D[rows, col_c]
        m = m.at[rows, col_c].set(jnp.where(active, False, m[rows, col_c]))
        m = m.at[rows, col_g].set(jnp.where(active, True, m[rows, col_g]))
        e = e + jnp.where(active, pm, 0.0)
        e = e - jnp.where(active, rm, 0.0)
        step = active.astype(jnp.int32)
        g_lo, g_hi = g_lo + step * ~up, g_hi - step * up
        c_lo, c_hi = c_lo + step * ~down, c_hi - step * down
        return cycle + 1, active, e, m, g_lo, g_hi, c_lo, c_hi

    init = (jnp.int32(0), jnp.ones(W.shape[0], bool), e0, mask, zeros, n_pruned - 1, zeros,
            W.shape[1] - n_pruned - 1)
    return lax.while_loop(cond, body, init)[3]


# ---------------------------------------------------------------- the top-up

def is_attention(name: str) -> bool:
    """Attention projections are the layers under ``self_attn``; everything else is the MLP (reference rule)."""
    return name.startswith("self_attn.")


@dataclass(frozen=True)
class DSnoTRefine:
    """`Allocation.refine` for DSnoT: (key, W, mask, stats, target) -> mask. Asks the pruning pass for the input
    moments (``needs_input_moments``) and counts the swaps per layer in ``swaps``."""
    max_cycles: int = 50
    threshold: float = 0.1
    var_power: float = 1.0
    skip: str = "mlp"
    swaps: dict = field(default_factory=dict, compare=False)
    needs_input_moments = True

    def skipped(self, name: str) -> bool:
        return (self.skip == "mlp" and not is_attention(name)) or (self.skip == "self_attn" and is_attention(name))

    def __call__(self, key, W, mask, stats, target):
        name = split_key(key)[1]
        if self.skipped(name) or self.max_cycles <= 0:
            return mask
        if stats.input_sum is None or stats.input_var is None:
            raise ValueError("DSnoT needs the input moments: collect_block_stats(..., moments=True)")
        new = dsnot_mask(W, mask, stats.act_norm[name], stats.input_sum[name], stats.input_var[name],
                         self.max_cycles, self.threshold, var_power=self.var_power)
        self.swaps[key] = int(jnp.sum(new != jnp.asarray(mask, bool))) // 2
        return new


@dataclass(frozen=True)
class DSnoTOptions(Options):
    dsnot_max_cycles: int = option(50, "DSnoT: at most this many prune-and-regrow cycles (0: no refinement)",
                                   check=at_least(0), metavar="N")
    dsnot_threshold: float = option(0.1, "DSnoT: a row stops once its reconstruction error is at most this",
                                    check=at_least(0.0), metavar="T")
    dsnot_var_power: float = option(1.0, "DSnoT: power of the input variance in the regrow order", metavar="P")
    dsnot_skip: str = option("mlp", "DSnoT: layers left unrefined: mlp (the reference), self_attn or none",
                             choices=SKIPS)

    def validate(self, target: Target) -> None:
        if method_info(target.method).updates_weights:
            raise UsageError(f"DSnoT refines score-based masks; it does not apply to {target.method} (use wanda, "
                             "magnitude or multiflow as the base method)")


@register_topup("dsnot", DSnoTOptions)
def dsnot(job: PruneJob) -> Allocation:
    """DSnoT: uniform sparsity, then a prune-and-regrow refinement of each (attention) layer's mask
    (dsnot_skip "mlp": refine only the attention projections, as the reference; "self_attn": only the MLP;
    "none": every layer)."""
    o = job.options
    refine = DSnoTRefine(max_cycles=o.dsnot_max_cycles, threshold=o.dsnot_threshold, var_power=o.dsnot_var_power,
                         skip=o.dsnot_skip)
    info = {"dsnot_max_cycles": refine.max_cycles, "dsnot_threshold": refine.threshold,
            "dsnot_var_power": refine.var_power, "dsnot_skip": refine.skip, "dsnot_swaps": refine.swaps}
    return Allocation(uniform_distribution(job.cfg, job.sparsity), info, refine)
