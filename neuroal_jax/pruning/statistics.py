"""Calibration statistics of every prunable layer's input, from the block functions themselves (no hooks).

With N calibration windows X_n [T, in] (docs/algorithm.md §1):
    activation norm   a_j = sqrt(Σ_n ‖X_n[:, j]‖² / N)      (Wanda, multiflow, OWL, DLP, NeuroAL)
    Hessian           H = 2/N Σ_n X_nᵀ X_n                   (SparseGPT)
    input moments     mean over windows of Σ_t x_tj and of the token variance   (DSnoT)
The reference accumulates these as float32 running means over windows; `running_mean` is that recurrence.

Mixture of experts (docs/algorithm.md "Mixture of experts"): an expert layer's statistics are over the tokens
routed to it (`statistics_tokens`), normalised per routed token: N above becomes n_e / T, its routed tokens in
windows' worth, so an expert's norms and Hessian are on the scale of a dense layer's.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..errors import UsageError
from ..models import ROUTED, block_contexts, embed, family_of, layer_key, prunable_layers

F32 = jnp.float32
#: The values of `ModelConfig.moe_statistics`: an expert's statistics over its routed tokens, or over all tokens.
MOE_STATISTICS = ("routed", "all")


def check_moe_statistics(value: str) -> str:
    if value not in MOE_STATISTICS:
        raise UsageError(f"moe_statistics must be one of {list(MOE_STATISTICS)}, got {value!r}")
    return value


def statistics_tokens(cfg: ModelConfig, inputs: dict, use_all: dict | None = None) -> tuple[dict, dict, dict]:
    """The tokens each prunable layer's statistics cover, and the experts' token counts.

    Dense layers: every token. An expert layer (listed under `ROUTED`): the tokens routed to it, unless
    `cfg.moe_statistics` is "all", or it falls back to all tokens: use_all[layer] (the caller saw no calibration
    token reach it), or, with use_all None, no token of this call reached it.
    Returns (the inputs without `ROUTED`, {expert layer: f32[B,T] 1 on its covered tokens, else 0},
    {expert layer: f32[2] (tokens routed to it, tokens its statistics are over)}). The weights multiply the
    sums below rather than masking a copy of each input: a MoE block's every expert shares one [B,T,H] input.
    """
    inputs = dict(inputs)
    weights, counts = {}, {}
    for name, routed in inputs.pop(ROUTED, {}).items():  # routed: bool[B, T]
        n_routed = jnp.sum(routed, dtype=F32)
        if check_moe_statistics(cfg.moe_statistics) == "all":
            covered = jnp.ones_like(routed)
        else:
            covered = routed | (n_routed == 0 if use_all is None else use_all[name])
        weights[name] = covered.astype(F32)
        counts[name] = jnp.stack([n_routed, jnp.sum(weights[name])])
    return inputs, weights, counts


def token_sums(v, w=None, square: bool = False):
    """Σ_t w_t x_tj (of x² with square) per sample: [B, in] in float32 from v [B,T,in] (w [B,T] or None: all)."""
    v = jnp.square(v.astype(F32)) if square else v.astype(F32)
    return jnp.sum(v, axis=1) if w is None else jnp.einsum("bt,bti->bi", w, v)


@partial(jax.jit, static_argnums=(0, 4, 5))
def block_stats(cfg: ModelConfig, p: dict, x, ctx, hessian: bool = False, outputs: bool = True, use_all=None):
    """Dense block on x: (output, {layer: Σ_t x_tj² per sample [B, in]}, {layer: Σ_b,t XᵀX [in, in]},
    {expert layer: f32[2] token counts}) over the tokens of `statistics_tokens` ({} for a dense model).

    outputs=False returns None for the output, so XLA skips the work only it needs (the last layer)."""
    y, inputs = family_of(cfg).block(cfg, p, x, ctx)
    inputs, w, counts = statistics_tokens(cfg, inputs, use_all)
    sumsq = {k: token_sums(v, w.get(k), square=True) for k, v in inputs.items()}
    xtx = {}
    for k, v in inputs.items() if hessian else ():
        v = v.astype(F32)
        xtx[k] = jnp.einsum("bti,btj->ij", v * w[k][..., None] if k in w else v, v)
    return (y if outputs else None), sumsq, xtx, counts


@partial(jax.jit, static_argnums=0)
def routed_tokens(cfg: ModelConfig, p: dict, x, ctx) -> dict:
    """{expert layer: how many tokens of x are routed to it} (f32; XLA skips the experts themselves)."""
    _, inputs = family_of(cfg).block(cfg, p, x, ctx)
    return {k: jnp.sum(v, dtype=F32) for k, v in inputs.get(ROUTED, {}).items()}


@partial(jax.jit, static_argnums=0)
def block_input_moments(cfg: ModelConfig, p: dict, x, ctx, use_all=None):
    """Dense block on x: ({layer: Σ_t x_tj per sample [B, in]}, {layer: variance over tokens per sample [B, in]})
    of every prunable layer's input (float32, population variance). An expert layer's sums are over
    `statistics_tokens`' tokens, and its per-sample variance is left 0: `collect_block_stats` pools its variance
    over the covered tokens instead. Only DSnoT asks for these."""
    _, inputs = family_of(cfg).block(cfg, p, x, ctx)
    inputs, w, _ = statistics_tokens(cfg, inputs, use_all)
    sums = {k: token_sums(v, w.get(k)) for k, v in inputs.items()}
    var = {k: jnp.zeros_like(sums[k]) if k in w else
           jnp.mean(jnp.square(v.astype(F32) - jnp.mean(v.astype(F32), axis=1, keepdims=True)), axis=1)
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
    #: {expert layer: (tokens routed to it, tokens its statistics are over)} (MoE only): the two differ with
    #: moe_statistics "all", and for an expert no calibration token reached (it falls back to all tokens)
    tokens: dict | None = None


def per_routed_token(windows: int, seqlen: int, covered):
    """The float32 factor N·T / n_e that turns a statistic normalised per window into one per n_e / T windows'
    worth of routed tokens (1 when the statistics cover every token); `covered` an int or a traced f32 count."""
    return np.float32(windows * seqlen) / (np.float32(covered) if isinstance(covered, int) else covered)


def collect_block_stats(cfg, p, xs, ctx, hessian: bool = False, moments: bool = False,
                        outputs: bool = True) -> tuple[list, BlockStats]:
    """Run the dense block over every batch of the stream; returns (dense outputs or Nones, statistics).

    moments=True also fills input_sum / input_var (DSnoT) from a separate forward, so the other
    statistics are computed exactly as without it. For a MoE model, routed statistics first count each expert's
    tokens over all batches (`routed_tokens`), so an expert no token reached falls back to all tokens."""
    use_all = None
    if cfg.num_experts and check_moe_statistics(cfg.moe_statistics) == "routed":
        totals = [routed_tokens(cfg, p, x, ctx) for x in xs]
        use_all = {k: jnp.asarray(sum(float(t[k]) for t in totals) == 0) for k in totals[0]}
    ys, sumsqs, xtxs, counts = [], [], [], []
    for x in xs:
        y, s, h, c = block_stats(cfg, p, x, ctx, hessian, outputs, use_all)
        ys.append(y), sumsqs.append(s), xtxs.append(h), counts.append(c)
    names = sumsqs[0].keys()
    n, T = sum(x.shape[0] for x in xs), xs[0].shape[1]
    act = {k: running_mean_norms(np.concatenate([np.asarray(s[k]) for s in sumsqs])) for k in names}
    hess = {k: (2.0 / n) * sum(np.asarray(h[k], np.float32) for h in xtxs) for k in xtxs[0]} if hessian else {}
    tokens = {k: tuple(int(v) for v in np.sum([np.asarray(c[k]) for c in counts], axis=0)) for k in counts[0]}
    for k, (_, covered) in tokens.items():
        scale = per_routed_token(n, T, covered)
        act[k] = act[k] * np.sqrt(scale)
        if hessian:
            hess[k] = hess[k] * scale
    stats = BlockStats(act, hess, tokens=tokens or None)
    if moments:
        mom = [block_input_moments(cfg, p, x, ctx, use_all) for x in xs]
        stats.input_sum = {k: running_mean(np.concatenate([np.asarray(m[0][k]) for m in mom])) for k in names}
        stats.input_var = {k: running_mean_vars(np.concatenate([np.asarray(m[1][k]) for m in mom]), T)
                           for k in names}
        for k, (_, covered) in tokens.items():  # pooled over the covered tokens
            total = np.sum([np.asarray(m[0][k], np.float32).sum(0) for m in mom], axis=0)
            sq = np.sum([np.asarray(s[k], np.float32).sum(0) for s in sumsqs], axis=0)
            stats.input_sum[k] = stats.input_sum[k] * per_routed_token(n, T, covered)
            stats.input_var[k] = np.maximum(sq / covered - np.square(total / covered), 0).astype(np.float32)
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

