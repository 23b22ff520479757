"""The one-shot pruning pass (SPEC §1–3): statistics from the block functions, scores, exact masks,
sequential over blocks on the sparse stream.

    dense block b on the stream → input-activation statistics of its layers → prune block b
    → pruned block b on the same stream → input of block b+1

Sparsity targets are a `Distribution`: {"<block>.<module name>": s} with s a float (one sparsity for
the layer) or a float64 vector [out] (one sparsity per row, NeuroAL's row step).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from . import masks as M
from .config import ModelConfig
from .models import block_apply, block_contexts, embed, family_of
from .scores import SCORES, LayerStats, get_score

F32 = jnp.float32
METHODS = (*SCORES, "sparsegpt")
Distribution = dict  # {"<block>.<module>": float | np.ndarray[out]}


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class Structure:
    """Mask granularity: "row" (default), "layer", or N:M ("2:4" prunes 2 of every 4)."""
    kind: str = "row"
    n: int = 0
    m: int = 0

    @classmethod
    def parse(cls, spec: str | None) -> "Structure":
        if spec in (None, "", "row", "unstructured"):
            return cls()
        if spec == "layer":
            return cls("layer")
        try:
            n, m = (int(v) for v in spec.split(":"))
        except ValueError:
            raise ValueError(f"unknown structure {spec!r}; valid: row, layer, N:M (e.g. 2:4, 4:8)") from None
        if not 0 < n < m:
            raise ValueError(f"N:M structure needs 0 < N < M, got {spec!r}")
        return cls("nm", n, m)

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.kind == "nm" else self.kind


def check_sparsity(s: float) -> float:
    if not isinstance(s, (int, float)) or not 0.0 <= float(s) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {s!r}")
    return float(s)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown pruning method {method!r}; valid: {', '.join(METHODS)}")
    return method


def layer_keys(cfg: ModelConfig) -> list[str]:
    """All prunable layers, in order: "<block>.<module name>"."""
    return [f"{b}.{name}" for b in range(cfg.num_layers) for name in family_of(cfg).prunable]


def uniform_distribution(cfg: ModelConfig, sparsity: float) -> Distribution:
    return {k: float(sparsity) for k in layer_keys(cfg)}


def block_distribution(cfg: ModelConfig, block_sparsity) -> Distribution:
    """Every layer of block b gets block_sparsity[b]."""
    return {f"{b}.{n}": float(block_sparsity[b]) for b in range(cfg.num_layers) for n in family_of(cfg).prunable}


# ---------------------------------------------------------------- statistics

@partial(jax.jit, static_argnums=(0, 4, 5))
def block_stats(cfg: ModelConfig, p: dict, x, ctx, hessian: bool = False, outputs: bool = True):
    """Dense block on x: (output, {layer: Σ_t x_tj² per sample [B, in]}, {layer: Σ_b,t XᵀX [in, in]}).

    outputs=False returns None for the output, so XLA skips the work only it needs (the last layer)."""
    y, inputs = family_of(cfg).block(cfg, p, x, ctx)
    sumsq = {k: jnp.sum(jnp.square(v.astype(F32)), axis=1) for k, v in inputs.items()}
    xtx = {k: jnp.einsum("bti,btj->ij", v.astype(F32), v.astype(F32)) for k, v in inputs.items()} if hessian else {}
    return (y if outputs else None), sumsq, xtx


@partial(jax.jit, static_argnums=0)
def block_input_moments(cfg: ModelConfig, p: dict, x, ctx):
    """Dense block on x: ({layer: Σ_t x_tj per sample [B, in]}, {layer: variance over tokens per sample [B, in]})
    of every prunable layer's input (float32, population variance). Only DSnoT asks for these."""
    _, inputs = family_of(cfg).block(cfg, p, x, ctx)
    sums = {k: jnp.sum(v.astype(F32), axis=1) for k, v in inputs.items()}
    var = {k: jnp.mean(jnp.square(v.astype(F32) - jnp.mean(v.astype(F32), axis=1, keepdims=True)), axis=1)
           for k, v in inputs.items()}
    return sums, var


def running_mean_sums(per_sample_sums: np.ndarray) -> np.ndarray:
    """Σ_n (Σ_t X_n[t, j]) / N, accumulated as the reference's float32 running mean over samples."""
    acc = np.zeros(np.shape(per_sample_sums)[1], np.float32)
    for n, row in enumerate(np.asarray(per_sample_sums, np.float32)):
        acc *= np.float32(n / (n + 1))
        acc += row / np.float32(n + 1)
    return acc


def running_mean_vars(per_sample_vars: np.ndarray, tokens: int) -> np.ndarray:
    """Token-weighted running mean of per-sample variances, in float32 as the reference accumulates it
    (the mean of within-sample variances, not the variance of the pooled tokens)."""
    rows = np.asarray(per_sample_vars, np.float32)
    acc, seen = rows[0].copy(), tokens
    for row in rows[1:]:
        acc = (acc * np.float32(seen) + row * np.float32(tokens)) / np.float32(seen + tokens)
        seen += tokens
    return acc


def running_mean_norms(per_sample_sumsq: np.ndarray) -> np.ndarray:
    """a_j = sqrt(Σ_n ‖X_n[:, j]‖² / N), accumulated as the reference's float32 running mean."""
    sq = np.square(np.sqrt(np.asarray(per_sample_sumsq, np.float32)))  # torch.norm(...) ** 2
    acc = np.zeros(sq.shape[1], np.float32)
    for n, row in enumerate(sq):
        acc *= np.float32(n / (n + 1))
        acc += row / np.float32(n + 1)
    return np.sqrt(acc)


@dataclass
class BlockStats:
    act_norm: dict  # {layer: f32[in]}
    hessian: dict  # {layer: f32[in, in]} (sparsegpt only)
    input_sum: dict | None = None  # {layer: f32[in]} mean over samples of Σ_t x_tj (moments=True only)
    input_var: dict | None = None  # {layer: f32[in]} mean over samples of the token variance (moments=True only)


def collect_block_stats(cfg, p, xs, ctx, hessian: bool = False, moments: bool = False,
                        outputs: bool = True) -> tuple[list, BlockStats]:
    """Run the dense block over every batch of the stream; returns (dense outputs or Nones, statistics).

    moments=True also fills input_sum / input_var (DSnoT) from a separate forward, so the other
    statistics are computed exactly as without it."""
    ys, sumsqs, xtxs = [], [], []
    for x in xs:
        y, s, h = block_stats(cfg, p, x, ctx, hessian, outputs)
        ys.append(y), sumsqs.append(s), xtxs.append(h)
    names = sumsqs[0].keys()
    n = sum(x.shape[0] for x in xs)
    act = {k: running_mean_norms(np.concatenate([np.asarray(s[k]) for s in sumsqs])) for k in names}
    hess = {k: (2.0 / n) * sum(np.asarray(h[k], np.float32) for h in xtxs) for k in xtxs[0]} if hessian else {}
    stats = BlockStats(act, hess)
    if moments:
        mom = [block_input_moments(cfg, p, x, ctx) for x in xs]
        stats.input_sum = {k: running_mean_sums(np.concatenate([np.asarray(m[0][k]) for m in mom])) for k in names}
        stats.input_var = {k: running_mean_vars(np.concatenate([np.asarray(m[1][k]) for m in mom]), xs[0].shape[1])
                           for k in names}
    return ys, stats


# ---------------------------------------------------------------- masks of one layer

def keep_and_ties(target, shape) -> tuple[np.ndarray, str]:
    """Per-row keep counts and tie rule of a sparsity target (SPEC §3 numerics, float64 on host)."""
    out, inp = shape
    if np.ndim(target) == 0:
        return np.full(out, inp - int(inp * float(target)), np.int32), "high"
    vec = np.asarray(target, np.float64)
    if vec.shape != (out,):
        raise ValueError(f"per-row sparsity has shape {vec.shape}, expected ({out},)")
    return M.keep_from_row_sparsity(vec, inp), "low"


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
        raise ValueError(f"per-row sparsities need the row structure, not {structure}")
    scores = get_score(method)(W, LayerStats(act_norm=jnp.asarray(act_norm), hessian=None))
    if structure.kind == "layer":
        return M.prune_layer(scores, float(target))
    return M.prune_nm(scores, structure.n, structure.m)


def prune_block(cfg: ModelConfig, b: int, p: dict, stats: BlockStats, dist: Distribution, method: str,
                structure: Structure, refine: Callable | None = None) -> tuple[dict, dict]:
    """Prune every prunable layer of block b; returns (new block params, {key: mask})."""
    new, masks = dict(p), {}
    for name in family_of(cfg).prunable:
        key, W = f"{b}.{name}", p[name]["weight"]
        target = dist[key]
        if method == "sparsegpt":
            from .sparsegpt import sparsegpt_prune
            if np.ndim(target) != 0:
                raise ValueError("sparsegpt takes one sparsity per layer (block step only), not per-row vectors")
            W_new, mask = sparsegpt_prune(W.astype(F32), jnp.asarray(stats.hessian[name]), float(target),
                                          structure.n, structure.m)
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

def embed_batches(cfg: ModelConfig, params: dict, windows: np.ndarray, batch_size: int) -> list:
    windows = np.asarray(windows, np.int32)
    return [embed(cfg, params, jnp.asarray(windows[i:i + batch_size])) for i in range(0, len(windows), batch_size)]


def prune_blocks(cfg: ModelConfig, params: dict, windows: np.ndarray, dist: Distribution, method: str,
                 structure: Structure = Structure(), batch_size: int = 8, refine: Callable | None = None,
                 progress: bool = True, restore: Callable[[int], tuple | None] | None = None):
    """Yield (b, pruned block b params, {key: mask} of block b), block by block on the sparse stream.

    Only block b's weights are touched at step b, so `params["blocks"]` may be a lazy sequence that
    reads each block from disk. `restore(b)` returns the (params, masks) of a block pruned by an earlier,
    interrupted run, or None; a restored block only advances the stream."""
    check_method(method)
    xs = embed_batches(cfg, params, windows, batch_size)
    ctxs = block_contexts(cfg, np.shape(windows)[1])
    for b in tqdm(range(cfg.num_layers), desc=f"pruning ({method})", disable=not progress, leave=False):
        done = restore(b) if restore is not None else None
        if done is None:
            p = params["blocks"][b]
            _, stats = collect_block_stats(cfg, p, xs, ctxs[b], hessian=(method == "sparsegpt"),
                                           moments=bool(getattr(refine, "needs_input_moments", False)),
                                           outputs=False)
            done = prune_block(cfg, b, p, stats, dist, method, structure, refine)
        p_new, m = done
        xs = [block_apply(cfg, p_new, x, ctxs[b])[0] for x in xs]
        yield b, p_new, m


def sequential_prune(cfg: ModelConfig, params: dict, windows: np.ndarray, dist: Distribution, method: str,
                     structure: Structure = Structure(), batch_size: int = 8, refine: Callable | None = None,
                     progress: bool = True) -> tuple[dict, dict]:
    """Prune the whole model block by block on the sparse stream. Returns (pruned params, masks)."""
    blocks, masks = [], {}
    for _, p_new, m in prune_blocks(cfg, params, windows, dist, method, structure, batch_size, refine, progress):
        blocks.append(p_new)
        masks.update(m)
    return {**params, "blocks": blocks}, masks


def dense_activation_norms(cfg: ModelConfig, params: dict, windows: np.ndarray, batch_size: int = 8,
                           progress: bool = True) -> dict:
    """{key: a[in]} on the dense model's own stream (no pruning), e.g. for OWL."""
    xs = embed_batches(cfg, params, windows, batch_size)
    ctxs = block_contexts(cfg, np.shape(windows)[1])
    norms = {}
    for b in tqdm(range(cfg.num_layers), desc="dense statistics", disable=not progress, leave=False):
        xs, stats = collect_block_stats(cfg, params["blocks"][b], xs, ctxs[b])
        norms.update({f"{b}.{k}": v for k, v in stats.act_norm.items()})
    return norms


# ---------------------------------------------------------------- summaries

def layer_sparsities(masks: dict) -> tuple[dict, dict]:
    """({key: fraction pruned}, {key: number of weights}) of some layers' masks."""
    return ({k: 1.0 - float(np.mean(np.asarray(m))) for k, m in masks.items()},
            {k: int(np.size(m)) for k, m in masks.items()})


def summarize_sparsity(cfg: ModelConfig, layer: dict, sizes: dict) -> dict:
    """Achieved sparsity: overall (over prunable layers), per layer and per block."""
    blocks = {}
    for b in range(cfg.num_layers):
        ks = [k for k in layer if k.split(".", 1)[0] == str(b)]
        total = sum(sizes[k] for k in ks)
        blocks[str(b)] = sum(layer[k] * sizes[k] for k in ks) / total if total else 0.0
    overall = sum(layer[k] * sizes[k] for k in layer) / max(1, sum(sizes.values()))
    return {"sparsity": overall, "layer_sparsity": layer, "block_sparsity": blocks}


def sparsity_summary(cfg: ModelConfig, masks: dict) -> dict:
    return summarize_sparsity(cfg, *layer_sparsities(masks))
