"""Base pruning scores (SPEC section 2): one signature, one registry.

Every score is a pure function ``score_fn(W, stats) -> scores`` with

- ``W``: ``f32[out, in]`` weight in PyTorch layout (a row is an output neuron), cast to
  float32 first;
- ``stats``: :class:`LayerStats`, the calibration statistics of the layer's *input*;
- result: ``f32[out, in]``, higher = more important (masks keep the highest scores).

Registered scores: ``magnitude``, ``wanda``, ``multiflow``. SparseGPT is not a score: it
changes the weights (see :mod:`neuroal_jax.sparsegpt`), so it is deliberately absent from
:data:`SCORES`.

Statistics helpers follow the reference's semantics (Wanda/SparseGPT wrappers), where the
counter ``N`` is the number of calibration *samples* (windows of ``seqlen`` tokens), not of
tokens:

- activation norm ``a_j = sqrt(Σ_n ‖X_n[:, j]‖² / N)``;
- Hessian ``H = 2/N Σ_n X_nᵀ X_n``.

The reference accumulates both as float32 running means (``acc *= n/(n+b); acc += .../(n+b)``);
:func:`act_sumsq_running_update` and :func:`hessian_running_update` reproduce that recurrence
step by step for callers who need the reference's exact rounding; :func:`act_norm_from_sumsq`
and :func:`hessian_from_xtx` give the closed form from plain sums.

Reference quirk: NeuroAL's SparseGPT block step reads its dense/sparse activation norms from the
SparseGPT wrapper, whose running mean is accumulated on the input already scaled by
``sqrt(2/n)`` (n = samples seen so far), i.e. ``a_j = sqrt(1/N Σ_n (2/n) ‖X_n[:, j]‖²)``:
earlier samples weigh more. :func:`act_norm_sparsegpt_wrapper` gives that vector.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "SCORES",
    "LayerStats",
    "ScoreFn",
    "act_norm_from_sumsq",
    "act_norm_sparsegpt_wrapper",
    "act_sumsq_running_update",
    "get_score",
    "hessian_from_xtx",
    "hessian_running_update",
    "magnitude",
    "multiflow",
    "register_score",
    "wanda",
]

F32 = jnp.float32


class LayerStats(NamedTuple):
    """Calibration statistics of one linear layer's input (a JAX pytree: NamedTuple).

    act_norm: f32[in]       a_j = sqrt(Σ_n ‖X_n[:, j]‖² / N)
    hessian:  f32[in, in]   H = 2/N Σ_n X_nᵀ X_n, or None (only SparseGPT needs it)
    """

    act_norm: jax.Array
    hessian: jax.Array | None = None


ScoreFn = Callable[[jax.Array, LayerStats], jax.Array]

SCORES: dict[str, ScoreFn] = {}


def register_score(name: str, *, override: bool = False) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator adding ``fn(W, stats) -> f32[out, in]`` to :data:`SCORES` under ``name``.

    Raises ValueError if ``name`` is already registered, unless ``override=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"score name must be a non-empty string, got {name!r}")

    def deco(fn: ScoreFn) -> ScoreFn:
        if name in SCORES and not override:
            raise ValueError(f"score {name!r} is already registered (pass override=True to replace it)")
        SCORES[name] = fn
        return fn

    return deco


def get_score(name: str) -> ScoreFn:
    """The registered score function ``name``; ValueError naming the valid choices otherwise."""
    try:
        return SCORES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown score {name!r}; valid choices: {sorted(SCORES)}") from None


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


# --------------------------------------------------------------------------- statistics

def _check_count(n) -> None:
    if isinstance(n, (int, float)) and not n > 0:
        raise ValueError(f"the number of calibration samples must be positive, got {n!r}")


def act_norm_from_sumsq(sumsq: jax.Array, n_samples) -> jax.Array:
    """a = sqrt(sumsq / N)  -> f32[in].

    sumsq: f32[in], Σ_n ‖X_n[:, j]‖² over all tokens of all samples;
    n_samples: N, the number of calibration samples (windows), not tokens.
    """
    _check_count(n_samples)
    return jnp.sqrt(jnp.asarray(sumsq).astype(F32) / jnp.asarray(n_samples, F32))


def hessian_from_xtx(xtx: jax.Array, n_samples) -> jax.Array:
    """H = 2/N * Σ_n X_nᵀ X_n  -> f32[in, in].

    xtx: f32[in, in], Σ over samples of X_nᵀ X_n (X_n: tokens × in);
    n_samples: N, the number of calibration samples (windows), not tokens.
    """
    _check_count(n_samples)
    return (2.0 / jnp.asarray(n_samples, F32)) * jnp.asarray(xtx).astype(F32)


def act_sumsq_running_update(acc: jax.Array, sample_sumsq: jax.Array, n_seen: int, batch: int = 1) -> jax.Array:
    """One step of the reference's float32 running mean of squared column norms.

    acc: f32[in], the running value after ``n_seen`` samples (zeros at start);
    sample_sumsq: f32[in], ‖X[:, j]‖² over the ``batch`` new samples (tokens flattened);
    returns f32[in] = acc * (n/(n+b)) + sample_sumsq / (n+b). After all N samples,
    ``sqrt(acc)`` is the activation norm (equal to :func:`act_norm_from_sumsq` up to rounding).
    ``n_seen`` and ``batch`` are Python ints (the ratio is formed in float64 then cast, as torch does).
    """
    total = n_seen + batch
    return (jnp.asarray(acc, F32) * jnp.float32(n_seen / total)
            + jnp.asarray(sample_sumsq, F32) / jnp.float32(total))


def hessian_running_update(H: jax.Array, X: jax.Array, n_seen: int, batch: int = 1) -> jax.Array:
    """One step of SparseGPT's float32 running Hessian (reference ``add_batch`` semantics).

    H: f32[in, in] after ``n_seen`` samples (zeros at start); X: f32[tokens, in], the input of
    the ``batch`` new samples with tokens flattened. Returns
    ``H * (n/(n+b)) + Yᵀ Y`` with ``Y = sqrt(2/(n+b)) * X``; after all N samples this is
    ``2/N Σ_n X_nᵀ X_n``. The matmul uses full float32 precision (no TF32).
    """
    total = n_seen + batch
    Y = jnp.float32(math.sqrt(2.0 / total)) * jnp.asarray(X).astype(F32)  # [tokens, in]
    return (jnp.asarray(H, F32) * jnp.float32(n_seen / total)
            + jnp.matmul(Y.T, Y, precision=jax.lax.Precision.HIGHEST))


def act_norm_sparsegpt_wrapper(per_sample_sumsq: jax.Array) -> jax.Array:
    """Activation norms as NeuroAL's SparseGPT wrapper accumulates them  -> f32[in].

    per_sample_sumsq: f32[N, in], ‖X_n[:, j]‖² of each calibration sample n = 1..N in order.
    Returns ``sqrt(1/N Σ_n (2/n) ‖X_n[:, j]‖²)`` (the reference scales sample n's input by
    ``sqrt(2/n)`` before its running mean; equal to it up to float32 rounding).
    """
    s = jnp.asarray(per_sample_sumsq).astype(F32)  # [N, in]
    n = s.shape[0]
    if n == 0:
        raise ValueError("per_sample_sumsq needs at least one sample (shape [N, in], N >= 1)")
    weights = (2.0 / jnp.arange(1, n + 1, dtype=F32))[:, None]  # [N, 1]
    return jnp.sqrt(jnp.sum(weights * s, axis=0) / jnp.float32(n))
