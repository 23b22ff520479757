"""One block, every candidate: the jitted kernel of NeuroAL's search (docs/algorithm.md §5).

On each candidate's own stream x: the dense block gives aᴰ per layer (and SparseGPT's Hessians), the masks come
from the base method with aᴰ, the pruned block gives aˢ and the next stream, and every alignment metric reads
aᴰ and aˢ. `candidate_block` does it for one candidate (the readable baseline), `candidates_block` for all at
once (the stream carries a leading candidate axis [K, N, T, H]).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ...errors import UsageError
from ...pruning import masks as M
from ...pruning.methods import method_info
from ...pruning.scores import LayerStats, get_score
from ...pruning.sparsegpt import block_threshold_ranks, sparsegpt_core
from ...pruning.statistics import block_stats, per_routed_token
from ...pruning.targets import Structure, keep_and_ties
from .alignment import get_metric

F32 = jnp.float32


def running_mean_sq(per_sample_sumsq):
    """[N, in] per-sample Σ_t x² → Σ_n ‖X_n[:, j]‖² / N as the reference's float32 running mean."""
    sq = jnp.square(jnp.sqrt(per_sample_sumsq.astype(F32)))
    n = sq.shape[0]
    mult = jnp.asarray(np.array([i / (i + 1) for i in range(n)], np.float32))
    div = jnp.asarray(np.arange(1, n + 1, dtype=np.float32))

    def step(acc, xs):
        m, d, row = xs
        return acc * m + row / d, None

    acc, _ = jax.lax.scan(step, jnp.zeros(sq.shape[1], F32), (mult, div, sq))
    return acc


def _per_token(counts: dict, x) -> dict:
    """{expert layer: N·T / n_e} of `statistics.per_routed_token` for the stream x [N, T, H] ({} when dense)."""
    return {k: per_routed_token(x.shape[0], x.shape[1], c[1]) for k, c in counts.items()}


def _norms(sumsq: dict, scale: dict) -> dict:
    """a = sqrt(running mean of Σ_t x²), per routed token for the expert layers in `scale` (`_per_token`)."""
    return {k: jnp.sqrt(running_mean_sq(v) * scale[k]) if k in scale else jnp.sqrt(running_mean_sq(v))
            for k, v in sumsq.items()}


def layer_targets(method: str, target, shape, structure: Structure = Structure()) -> tuple[np.ndarray, object]:
    """What one candidate's layer needs on device and the mask rule (static): per-row keep counts and tie rule;
    with N:M the number pruned per group for every row and ("nm", M); for SparseGPT its slab threshold ranks
    (k_block, k_last)."""
    if structure.kind == "nm":
        return np.full(shape[0], structure.group_pruned(target), np.int32), ("nm", structure.m)
    info = method_info(method)
    if not info.updates_weights:
        return keep_and_ties(target, shape)
    if np.ndim(target) != 0 and not info.row_targets:
        raise UsageError(f"{method} takes one sparsity per layer (block step only)")
    return np.asarray(block_threshold_ranks(*shape, float(target)), np.int32), method


def _mask(scores, k, rule):
    """The kept entries of scores [..., out, in]: N:M with k pruned per group of every row, or the top-k rows."""
    if isinstance(rule, tuple):
        return M.prune_nm_rows(scores, k, rule[1])
    return M.topk_mask(scores, k, ties=rule)


def _dense_pass(cfg, method, p, x, ctx):
    """Dense block on one candidate's stream x [N, T, H]: (aᴰ {layer: [in]}, SparseGPT Hessians or {}). An expert
    layer's statistics are over its routed tokens on this stream (all of them if none is routed to it)."""
    _, sumsq, xtx, counts = block_stats(cfg, p, x, ctx, method_info(method).needs_hessian)
    scale = _per_token(counts, x)
    hessian = {k: (2.0 / x.shape[0]) * v for k, v in xtx.items()}
    return _norms(sumsq, scale), {k: h * scale[k] if k in scale else h for k, h in hessian.items()}


def _sparse_weights(method, rule, p, keep, a_dense, hessian, batched):
    """Pruned weights of every prunable layer. batched: a_dense/keep/hessian carry a leading candidate
    axis [K, ...]; the masks are then built in one call over all candidates (rows folded), outside any
    vmap, so the mask function's data-dependent shortcuts stay shortcuts."""
    out, updates_weights = {}, method_info(method).updates_weights
    for name, k in keep.items():
        W = p[name]["weight"]
        if updates_weights:
            core = lambda h, kk: sparsegpt_core(W.astype(F32), h, kk[0], kk[1])[0].astype(W.dtype)
            out[name] = (jax.vmap(core) if batched else core)(hessian[name], k)
            continue
        score = lambda a: get_score(method)(W, LayerStats(act_norm=a, hessian=None))
        scores = (jax.vmap(score) if batched else score)(a_dense[name])
        out[name] = jnp.where(_mask(scores, k, rule), W, jnp.zeros((), W.dtype))
    return out


def _sparse_pass(cfg, metrics, p, weights, x, ctx, a_dense):
    """Sparse block on one candidate's stream: (next stream, aˢ, {metric: per-layer alignment}). Every metric
    reads the same aᴰ and aˢ: adding a metric adds no pass."""
    sparse = {**p, **{name: {**p[name], "weight": w} for name, w in weights.items()}}
    y, sumsq, _, counts = block_stats(cfg, sparse, x, ctx, False)
    a_sparse = _norms(sumsq, _per_token(counts, x))
    return y, a_sparse, {m: {k: get_metric(m)(a_dense[k], a_sparse[k]) for k in weights} for m in metrics}


def candidate_block(cfg, method, rule, metrics, p, x, ctx, keep, a_dense_given=None):
    """One candidate, one block: (next stream, aᴰ, aˢ, {metric: per-layer alignment}). metrics: a tuple of
    registered names; rule: the mask rule of `layer_targets`; x [N, T, H]; keep {layer: [out]} (N:M: the number
    pruned per group of every row; SparseGPT: {layer: [k_block, k_last]}, with the Hessian from the dense block on
    this stream).
    `candidates_block` does the same for all candidates at once; this is the one-at-a-time baseline."""
    a_dense, hessian = _dense_pass(cfg, method, p, x, ctx)
    a_dense = a_dense if a_dense_given is None else a_dense_given
    weights = _sparse_weights(method, rule, p, keep, a_dense, hessian, batched=False)
    y, a_sparse, align = _sparse_pass(cfg, metrics, p, weights, x, ctx, a_dense)
    return y, a_dense, a_sparse, align


def over_candidates(loop: str):
    """f(*args) over the leading candidate axis of every argument: `vmap` (one batched program, what fills a
    GPU) or `map` (`lax.map`, one candidate at a time: its activations stay in the CPU's caches and its
    matmuls keep their best shape; 10–20 % faster on the build machine's CPU)."""
    if loop == "vmap":
        return lambda f, *args: jax.vmap(f)(*args)
    return lambda f, *args: jax.lax.map(lambda a: f(*a), args)


@partial(jax.jit, static_argnums=(0, 1, 2, 3), static_argnames="loop", donate_argnums=5)
def candidates_block(cfg, method, rule, metrics, p, xs, ctx, keeps, a_dense_given=None, loop="vmap"):
    """All candidates of one block at once, the same three phases as `candidate_block`: the dense
    pass over the streams xs [K, N, T, H] (donated: the next streams take their place), the masks
    of all candidates in one call per layer, the sparse pass over streams and weights; `loop` says how the
    passes go over the candidates (`over_candidates`).
    Returns (next streams [K, N, T, H], δ = aᴰ − aˢ {layer: [K, in]}, {metric: {layer: [K]}})."""
    over = over_candidates(loop)
    a_dense, hessian = over(lambda x: _dense_pass(cfg, method, p, x, ctx), xs)
    if a_dense_given is not None:
        a_dense = jax.tree.map(lambda v: jnp.broadcast_to(v, (xs.shape[0], *v.shape)), a_dense_given)
    weights = _sparse_weights(method, rule, p, keeps, a_dense, hessian, batched=True)
    y, a_sparse, align = over(lambda w, x, a: _sparse_pass(cfg, metrics, p, w, x, ctx, a), weights, xs, a_dense)
    return y, {k: a_dense[k] - a_sparse[k] for k in a_sparse}, align


@partial(jax.jit, static_argnums=0)
def dense_step(cfg, p, x, ctx):
    """The dense block on the dense model's stream x: (next stream, aᴰ) (`dense_stream="model"`)."""
    y, sumsq, _, counts = block_stats(cfg, p, x, ctx, False)
    return y, _norms(sumsq, _per_token(counts, x))
