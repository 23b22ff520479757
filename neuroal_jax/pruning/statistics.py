"""Calibration statistics of every prunable layer's input, from the block functions themselves (no hooks).

With N calibration windows X_n [T, in] (docs/algorithm.md §1):
    activation norm   a_j = sqrt(Σ_n ‖X_n[:, j]‖² / N)      (Wanda, multiflow, OWL, DLP, NeuroAL)
    Hessian           H = 2/N Σ_n X_nᵀ X_n                   (SparseGPT)
    input moments     mean over windows of Σ_t x_tj and of the token variance   (DSnoT)
The reference accumulates these as float32 running means over windows; `running_mean` is that recurrence.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..models import block_contexts, embed, family_of, layer_key, prunable_layers

F32 = jnp.float32


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


def running_mean(rows: np.ndarray) -> np.ndarray:
    """Σ_n rows[n] / N as the reference accumulates it over windows, in float32:
    acc ← acc · (n / (n + 1)) + rows[n] / (n + 1). (The search's on-device copy, `neuroal.kernel.running_mean_sq`,
    rounds differently: XLA:CPU's float32 division is not correctly rounded.)"""
    acc = np.zeros(np.shape(rows)[1], np.float32)
    for n, row in enumerate(np.asarray(rows, np.float32)):
        acc *= np.float32(n / (n + 1))
        acc += row / np.float32(n + 1)
    return acc


def running_mean_norms(per_sample_sumsq: np.ndarray) -> np.ndarray:
    """a_j = sqrt(Σ_n ‖X_n[:, j]‖² / N) from per-window Σ_t x_tj² [N, in] (the reference squares torch.norm)."""
    return np.sqrt(running_mean(np.square(np.sqrt(np.asarray(per_sample_sumsq, np.float32)))))


def running_mean_vars(per_sample_vars: np.ndarray, tokens: int) -> np.ndarray:
    """Token-weighted running mean of per-window variances, in float32 as the reference accumulates it
    (the mean of within-window variances, not the variance of the pooled tokens)."""
    rows = np.asarray(per_sample_vars, np.float32)
    acc, seen = rows[0].copy(), tokens
    for row in rows[1:]:
        acc = (acc * np.float32(seen) + row * np.float32(tokens)) / np.float32(seen + tokens)
        seen += tokens
    return acc


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
        stats.input_sum = {k: running_mean(np.concatenate([np.asarray(m[0][k]) for m in mom])) for k in names}
        stats.input_var = {k: running_mean_vars(np.concatenate([np.asarray(m[1][k]) for m in mom]), xs[0].shape[1])
                           for k in names}
    return ys, stats


def embed_batches(cfg: ModelConfig, params: dict, windows: np.ndarray, batch_size: int) -> list:
    """The embedded calibration windows in batches of `batch_size`: [B, T, H] each."""
    windows = np.asarray(windows, np.int32)
    return [embed(cfg, params, jnp.asarray(windows[i:i + batch_size])) for i in range(0, len(windows), batch_size)]


def dense_activation_norms(cfg: ModelConfig, params: dict, windows: np.ndarray, batch_size: int = 8,
                           progress: bool = True) -> dict:
    """{key: a[in]} on the dense model's own stream (no pruning), e.g. for OWL."""
    xs = embed_batches(cfg, params, windows, batch_size)
    ctxs = block_contexts(cfg, np.shape(windows)[1])
    norms = {}
    for b in tqdm(range(cfg.num_layers), desc="dense statistics", disable=not progress, leave=False):
        xs, stats = collect_block_stats(cfg, params["blocks"][b], xs, ctxs[b])
        norms.update({layer_key(b, k): v for k, v in stats.act_norm.items()})
    return norms


def dense_wanda_scores(cfg: ModelConfig, params: dict, norms: dict):
    """Per block b, the Wanda scores |W|·a (float32, NumPy) of its prunable layers, with a from
    `dense_activation_norms` (what OWL and DLP rank blocks by). A generator: one block's scores at a time."""
    for b, block in enumerate(params["blocks"]):
        yield [np.abs(np.asarray(block[n]["weight"], np.float32)) * norms[layer_key(b, n)][None, :]
               for n in prunable_layers(cfg)]

