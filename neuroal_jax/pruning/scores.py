"""Base pruning scores: one signature, one registry (docs/algorithm.md §2).

Every score is a pure function ``score_fn(W, stats) -> scores`` with

- ``W``: ``[out, in]`` weight in PyTorch layout (a row is an output neuron), cast to float32 first;
- ``stats``: :class:`LayerStats`, the calibration statistics of the layer's *input*
  (``neuroal_jax.pruning.statistics``);
- result: ``f32[out, in]``, higher = more important (masks keep the highest scores).

Registered scores: ``magnitude``, ``wanda``, ``multiflow``. SparseGPT is not a score: it changes the
weights (see :mod:`neuroal_jax.pruning.sparsegpt`), so it is deliberately absent from :data:`SCORES`.

    @register_score("my_score")
    def my_score(W, stats): return jnp.abs(W.astype(jnp.float32)) * stats.act_norm[None, :] ** 2
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ..registry import Registry

F32 = jnp.float32


class LayerStats(NamedTuple):
    """Calibration statistics of one linear layer's input (a JAX pytree: NamedTuple).

    act_norm: f32[in]       a_j = sqrt(Σ_n ‖X_n[:, j]‖² / N)
    hessian:  f32[in, in]   H = 2/N Σ_n X_nᵀ X_n, or None (only SparseGPT needs it)
    """

    act_norm: jax.Array
    hessian: jax.Array | None = None


ScoreFn = Callable[[jax.Array, LayerStats], jax.Array]

SCORES: Registry[ScoreFn] = Registry("score")
register_score = SCORES.register


def get_score(name: str) -> ScoreFn:
    """The registered score function ``name``; ValueError naming the valid choices otherwise."""
    return SCORES[name]


# --------------------------------------------------------------------------- scores

def _abs_f32(W: jax.Array) -> jax.Array:
    return jnp.abs(jnp.asarray(W).astype(F32))


@register_score("magnitude")
def magnitude(W: jax.Array, stats: LayerStats | None = None) -> jax.Array:
    """|W|  -> f32[out, in]. ``stats`` is ignored."""
    return _abs_f32(W)


@register_score("wanda")
def wanda(W: jax.Array, stats: LayerStats) -> jax.Array:
    """Wanda: |W| * a[None, :]  -> f32[out, in]."""
    a = jnp.asarray(stats.act_norm).astype(F32)  # [in]
    return _abs_f32(W) * a[None, :]


@register_score("multiflow")
def multiflow(W: jax.Array, stats: LayerStats) -> jax.Array:
    """MultiFlow: G = |W| * a; score = |W| * outer(mean(G, axis=1), mean(G, axis=0)).

    mean over axis 1 is the per-output importance f32[out]; over axis 0 the per-input
    importance f32[in].
    """
    absw = _abs_f32(W)  # [out, in]
    G = absw * jnp.asarray(stats.act_norm).astype(F32)[None, :]  # [out, in]
    per_out = jnp.mean(G, axis=1)  # [out]
    per_in = jnp.mean(G, axis=0)  # [in]
    return absw * (per_out[:, None] * per_in[None, :])
