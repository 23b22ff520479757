"""The one-shot pruning pass: sequential over blocks on the sparse stream (docs/algorithm.md §1–3).

    dense block b on the stream → input-activation statistics of its layers → prune block b
    → pruned block b on the same stream → input of block b+1
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..errors import UsageError
from ..models import block_contexts, block_output, layer_key, prunable_layers
from . import masks as M
from .methods import check_method, method_info
from .scores import LayerStats, get_score
from .statistics import BlockStats, collect_block_stats, embed_batches
from .targets import Distribution, Structure, keep_and_ties

F32 = jnp.float32


# ---------------------------------------------------------------- masks of one layer

@partial(jax.jit, static_argnames=("method", "ties"))
def _score_topk(W, act_norm, keep, method: str, ties: str):
    scores = get_score(method)(W, LayerStats(act_norm=act_norm, hessian=None))
    return M.topk_mask(scores, keep, ties=ties)


def layer_mask(method: str, W, act_norm, target, structure: Structure):
    """bool[out, in] (True = kept) for one layer with a score-based method."""
    if structure.kind == "row":
        keep, ties = keep_and_ties(target, W.shape)
        return _score_topk(W, act_norm, jnp.asarray(keep), method=method, ties=ties)
    if np.ndim(target) != 0:
        raise UsageError(f"per-row sparsities need the row structure, not {structure}")
    scores = get_score(method)(W, LayerStats(act_norm=jnp.asarray(act_norm), hessian=None))
    if structure.kind == "layer":
        return M.prune_layer(scores, float(target))
    return M.prune_nm(scores, structure.group_pruned(target), structure.m)


def prune_block(cfg: ModelConfig, b: int, p: dict, stats: BlockStats, dist: Distribution, method: str,
                structure: Structure, refine: Callable | None = None) -> tuple[dict, dict]:
    """Prune every prunable layer of block b; returns (new block params, {key: mask})."""
    new, masks = dict(p), {}
    info = method_info(method)
    for name in prunable_layers(cfg):
        key, W = layer_key(b, name), p[name]["weight"]
        target = dist[key]
        if np.ndim(target) != 0 and not info.row_targets:
            raise UsageError(f"{method} takes one sparsity per layer (block step only), not per-row vectors")
        if info.updates_weights:
            from .sparsegpt import sparsegpt_prune
            n = structure.group_pruned(target) if structure.kind == "nm" else 0
            W_new, mask = sparsegpt_prune(W.astype(F32), jnp.asarray(stats.hessian[name]), float(target),
                                          n, structure.m)
            W_new = W_new.astype(W.dtype)
        else:
            mask = layer_mask(method, W, stats.act_norm[name], target, structure)
            if refine is not None:
                mask = refine(key, W, mask, stats, target)
            W_new = jnp.where(mask, W, jnp.zeros((), W.dtype))
        new[name] = {**p[name], "weight": W_new}
        masks[key] = mask
    return new, masks


# ---------------------------------------------------------------- the sequential pass

def prune_on_stream(cfg: ModelConfig, b: int, p: dict, xs: list, ctx, dist: Distribution, method: str,
                    structure: Structure = Structure(), refine: Callable | None = None,
                    routing: dict | None = None) -> tuple[dict, dict]:
    """Statistics of dense block b on the stream xs (batches [B, T, H]), then block b pruned with them:
    (pruned block params, {key: mask}). A MoE block's expert token counts (`BlockStats.tokens`) go into
    `routing[b]` when a dict is given (`outputs.report.moe_info` reads it)."""
    _, stats = collect_block_stats(cfg, p, xs, ctx, hessian=method_info(method).needs_hessian,
                                   moments=bool(getattr(refine, "needs_input_moments", False)), outputs=False)
    if routing is not None and stats.tokens:
        routing[b] = stats.tokens
    return prune_block(cfg, b, p, stats, dist, method, structure, refine)


def advance(cfg: ModelConfig, p: dict, xs: list, ctx) -> list:
    """The stream's batches through block p."""
    return [block_output(cfg, p, x, ctx) for x in xs]


def prune_blocks(cfg: ModelConfig, params: dict, windows: np.ndarray, dist: Distribution, method: str,
                 structure: Structure = Structure(), batch_size: int = 8, refine: Callable | None = None,
                 progress: bool = True, restore: Callable[[int], tuple | None] | None = None,
                 routing: dict | None = None):
    """Yield (b, pruned block b params, {key: mask} of block b), block by block on the sparse stream.

    Only block b's weights are touched at step b, so `params["blocks"]` may be a lazy sequence that
    reads each block from disk. `restore(b)` returns the (params, masks) of a block pruned by an earlier,
    interrupted run, or None; a restored block only advances the stream. routing: see `prune_on_stream`."""
    check_method(method)
    xs = embed_batches(cfg, params, windows, batch_size)
    ctxs = block_contexts(cfg, np.shape(windows)[1])
    for b in tqdm(range(cfg.num_layers), desc=f"pruning ({method})", disable=not progress, leave=False):
        done = restore(b) if restore is not None else None
        if done is None:
            done = prune_on_stream(cfg, b, params["blocks"][b], xs, ctxs[b], dist, method, structure, refine,
                                   routing)
        p_new, m = done
        xs = advance(cfg, p_new, xs, ctxs[b])
        yield b, p_new, m
        del done, p_new, m  # a lazily read model then holds one block at a time


def sequential_prune(cfg: ModelConfig, params: dict, windows: np.ndarray, dist: Distribution, method: str,
                     structure: Structure = Structure(), batch_size: int = 8, refine: Callable | None = None,
                     progress: bool = True, routing: dict | None = None) -> tuple[dict, dict]:
    """Prune the whole model block by block on the sparse stream. Returns (pruned params, masks).
    routing: a dict that receives each MoE block's expert token counts (see `prune_on_stream`)."""
    blocks, masks = [], {}
    for _, p_new, m in prune_blocks(cfg, params, windows, dist, method, structure, batch_size, refine, progress,
                                    routing=routing):
        blocks.append(p_new)
        masks.update(m)
    return {**params, "blocks": blocks}, masks


