"""Exact pruning masks (docs/algorithm.md §3): row (one sparsity or per-row counts), layer and N:M granularity.

Convention: masks are boolean with ``True`` = weight KEPT. Scores have PyTorch layout
``(out, in)``; a row is an output neuron. Leading batch axes (lambda candidates, layers)
are allowed everywhere: ``scores[..., R, C]``.

Everything is built on one primitive, a row-wise top-k *keep* mask with a per-row k and
an exact tie rule:

- :func:`topk_keep_mask` — pure-jnp reference (threshold search on order-preserving int32
  keys, no sort; equals the argsort definition exactly).
- :func:`topk_mask` — dispatcher between that reference and the Pallas GPU kernel
  (``pallas_kernels.topk_mask``). ``impl="auto"`` uses the kernel on GPU backends and the
  reference elsewhere; the environment variable ``NEUROAL_TOPK_IMPL`` (``auto``,
  ``pallas``, ``jnp``) overrides the default when ``impl`` is not given.

Counts follow the reference implementation's float64 arithmetic with truncation
(``int(x)``), e.g. ``k = int(C * s)`` pruned per row, ``keep_r = int((1 - s_r) * C)``.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pallas_kernels.topk_mask import INT32_MIN, ordered_int32_keys

from ..errors import UsageError

__all__ = [
    "IMPLS",
    "TIES",
    "keep_from_row_sparsity",
    "prune_layer",
    "prune_nm",
    "prune_nm_rows",
    "resolve_impl",
    "topk_keep_mask",
    "topk_mask",
]

IMPLS = ("auto", "pallas", "jnp")
TIES = ("low", "high")
ENV_IMPL = "NEUROAL_TOPK_IMPL"


# --------------------------------------------------------------------------- validation
def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")


def _check_sparsity(sparsity: Any, name: str = "sparsity") -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= s < 1.0):  # also rejects NaN
        raise UsageError(f"{name} must be in [0, 1), got {sparsity!r}")
    return s


def _check_scores(scores: jax.Array) -> None:
    if scores.ndim < 2:
        raise ValueError(f"scores must have shape [..., R, C], got shape {scores.shape}")
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise ValueError(f"scores must be a float array, got dtype {scores.dtype}")


def _check_keep(keep: Any, scores: jax.Array) -> jax.Array:
    """Shape / dtype checks; value range [0, C] checked when keep is concrete."""
    n_rows, n_cols = scores.shape[-2:]
    if not _is_concrete(keep):
        keep_shape, keep_dtype = keep.shape, keep.dtype
    else:
        keep = np.asarray(keep)
        keep_shape, keep_dtype = keep.shape, keep.dtype
    if len(keep_shape) < 1 or keep_shape[-1] != n_rows:
        raise ValueError(
            f"keep must have shape [..., R] with R = scores.shape[-2] = {n_rows}, "
            f"got keep shape {tuple(keep_shape)} for scores shape {tuple(scores.shape)}"
        )
    try:
        jnp.broadcast_shapes(tuple(scores.shape[:-2]), tuple(keep_shape[:-1]))
    except ValueError:
        raise ValueError(
            f"leading axes of keep {tuple(keep_shape)} and scores {tuple(scores.shape)} "
            "do not broadcast"
        ) from None
    if not jnp.issubdtype(keep_dtype, jnp.integer):
        raise ValueError(f"keep must be an integer array, got dtype {keep_dtype}")
    if _is_concrete(keep) and keep.size:
        bad = (keep < 0) | (keep > n_cols)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"keep must be within [0, C] = [0, {n_cols}], got keep{list(idx)} = "
                f"{int(keep[idx])}"
            )
    return jnp.asarray(keep, jnp.int32)


def _broadcast_batch(scores: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
    batch = jnp.broadcast_shapes(scores.shape[:-2], keep.shape[:-1])
    scores = jnp.broadcast_to(scores, batch + scores.shape[-2:])
    keep = jnp.broadcast_to(keep, batch + keep.shape[-1:])
    return scores, keep


# ------------------------------------------------------------------- jnp reference
TILE_BYTES = 128 << 10  # one tile of rows' keys stays in the L2 cache for all 32 threshold steps


@functools.partial(jax.jit, static_argnames=("ties",))
def _topk_keep_mask_2d(scores: jax.Array, keep: jax.Array, ties: str) -> jax.Array:
    """Row-wise top-k keep mask of a 2-D ``scores[R, C]`` (no validation), tile by tile of rows.

    The threshold search reads every key 32 times; over the whole matrix at once each step streams it
    from memory, over a cache-sized tile of rows it does not (about 2× faster on CPU, same mask)."""
    R, C = scores.shape
    rows = min(R, max(8, TILE_BYTES // (4 * C)))
    n = -(-R // rows)
    pad = n * rows - R  # padded rows keep 0 and are dropped
    tiles = (jnp.pad(scores, ((0, pad), (0, 0))).reshape(n, rows, C), jnp.pad(keep, (0, pad)).reshape(n, rows))
    return lax.map(lambda t: _topk_rows(*t, ties), tiles).reshape(n * rows, C)[:R]


def _topk_rows(scores: jax.Array, keep: jax.Array, ties: str) -> jax.Array:
    """`_topk_keep_mask_2d` on one tile of rows."""
    n_cols = scores.shape[1]
    keys = ordered_int32_keys(scores)
    keep = jnp.clip(keep.astype(jnp.int32), 0, n_cols)[:, None]  # [R, 1]
    # XLA:CPU vectorises row sums of float32 several times better than of integers; exact while C ≤ 2^24.
    count_dtype = jnp.float32 if n_cols <= 2**24 else jnp.int32

    def count(x):  # bool [R, C] -> int32 [R, 1]
        return jnp.sum(x.astype(count_dtype), axis=1, keepdims=True).astype(jnp.int32)

    # Threshold t = keep-th largest key: build it bit by bit, MSB first. In the
    # unsigned order (key ^ INT32_MIN) each step sets one bit, which in the signed
    # representation is a flip of that bit; accept when count(keys >= cand) >= keep.
    # The search stops early once every row of the tile has exactly keep keys >= t: those
    # are then its top keep (no key lies between t and the exact threshold), which the
    # formula below returns unchanged. Rows that keep nothing are done from the start.
    def threshold_step(state):
        i, t, n_ge = state  # n_ge = count(keys >= t)
        cand = t ^ lax.shift_left(jnp.int32(1), jnp.int32(31) - i)
        n = count(keys >= cand)
        accept = n >= keep
        return i + 1, jnp.where(accept, cand, t), jnp.where(accept, n, n_ge)

    def searching(state):
        i, _, n_ge = state
        return (i < 32) & jnp.any((n_ge != keep) & (keep > 0))

    t0 = jnp.full_like(keep, INT32_MIN)
    _, t, _ = lax.while_loop(searching, threshold_step, (jnp.int32(0), t0, jnp.full_like(keep, n_cols)))

    above = (keys > t) & (keep > 0)
    eq = (keys == t) & (keep > 0)
    need = keep - count(above)

    def tie_rank():  # rank of each tied entry, counted from the side kept first (inclusive)
        rank = jnp.cumsum(eq.astype(count_dtype), axis=1).astype(jnp.int32)
        return rank if ties == "low" else rank[:, -1:] - rank + eq.astype(jnp.int32)

    # Only rows that keep part of their tied entries need ranks; the cumulative sum is skipped
    # when there is none (the common case for continuous scores).
    partial_ties = jnp.any(count(eq) > need)
    rank = lax.cond(partial_ties, tie_rank, lambda: jnp.zeros_like(keys))
    return above | (eq & (rank <= need))


def topk_keep_mask(scores: jax.Array, keep: jax.Array, ties: str = "low") -> jax.Array:
    """Keep exactly ``keep[..., r]`` highest scores of every row (pure-jnp reference).

    Args:
      scores: ``[..., R, C]`` float32 / bfloat16 (any float; compared as float32).
      keep: ``[..., R]`` integer counts in ``[0, C]`` (checked when concrete, clipped
        under tracing). Leading axes broadcast against those of ``scores``.
      ties: ``"low"`` — among equal scores the lower column index is kept first (a
        stable descending sort); ``"high"`` — the higher column index is kept first.
        ``-0.0`` and ``+0.0`` are equal. NaN is not supported.

    Returns:
      ``bool[..., R, C]``, True = kept. No sort: a 32-step per-row threshold search on
      order-preserving int32 keys plus a cumulative count over the tied entries.
    """
    _check_ties(ties)
    scores = jnp.asarray(scores)
    _check_scores(scores)
    keep = _check_keep(keep, scores)
    scores, keep = _broadcast_batch(scores, keep)
    shape = scores.shape
    if scores.size == 0:
        return jnp.zeros(shape, jnp.bool_)
    out = _topk_keep_mask_2d(scores.reshape(-1, shape[-1]), keep.reshape(-1), ties)
    return out.reshape(shape)


# -------------------------------------------------------------------------- dispatcher
def resolve_impl(impl: str | None = None) -> str:
    """Resolve ``impl`` (or ``$NEUROAL_TOPK_IMPL``, default ``"auto"``) to pallas|jnp."""
    source = "impl"
    if impl is None:
        impl = os.environ.get(ENV_IMPL, "auto").strip().lower() or "auto"
        source = f"environment variable {ENV_IMPL}"
    if impl not in IMPLS:
        raise UsageError(f"unknown top-k implementation {impl!r} (from {source}); "
                         f"valid choices: {', '.join(IMPLS)}")
    if impl == "auto":
        return "pallas" if jax.default_backend() == "gpu" else "jnp"
    return impl


def topk_mask(
    scores: jax.Array, keep: jax.Array, ties: str = "low", impl: str | None = None
) -> jax.Array:
    """Row-wise top-k keep mask, dispatched to the Pallas kernel or the jnp reference.

    Same contract as :func:`topk_keep_mask` (``scores[..., R, C]``, ``keep[..., R]``;
    leading axes are folded into rows). ``impl``: ``"auto"`` (Pallas on a GPU backend,
    jnp otherwise), ``"pallas"`` (runs in interpret mode when the backend is not a GPU)
    or ``"jnp"``; ``None`` reads ``$NEUROAL_TOPK_IMPL`` (default ``"auto"``). Both
    implementations return the identical mask.
    """
    choice = resolve_impl(impl)
    if choice == "jnp":
        return topk_keep_mask(scores, keep, ties)
    from pallas_kernels.topk_mask import topk_mask as pallas_topk_mask

    _check_ties(ties)
    scores = jnp.asarray(scores)
    _check_scores(scores)
    keep = _check_keep(keep, scores)
    interpret = jax.default_backend() != "gpu"
    return pallas_topk_mask(scores, keep, ties, interpret=interpret)


# ------------------------------------------------------------------------ granularities
def keep_from_row_sparsity(row_sparsity: Any, n_cols: int) -> np.ndarray:
    """Per-row keep counts ``int((1 - s_r) * C)`` in NumPy float64 (as the reference)."""
    s = np.asarray(row_sparsity, dtype=np.float64)
    if s.ndim < 1:
        raise ValueError(f"row_sparsity must have shape [..., R], got shape {s.shape}")
    bad = ~((s >= 0.0) & (s < 1.0))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"row_sparsity must be in [0, 1), got row_sparsity{list(idx)} = "
                         f"{float(s[idx])!r}")
    return ((1.0 - s) * n_cols).astype(np.int64).astype(np.int32)  # trunc == int()


def prune_layer(scores: jax.Array, sparsity: float) -> jax.Array:
    """Layer granularity: prune the ``int(R * C * sparsity)`` lowest of each matrix.

    The matrix is flattened row-major; ties as a stable ascending sort over the flat
    index (the earlier entry is pruned first). ``scores``: ``[..., R, C]``. Always uses
    the jnp reference (one very wide row does not suit the row-block kernel).
    """
    s = _check_sparsity(sparsity)
    scores = jnp.asarray(scores)
    _check_scores(scores)
    shape = scores.shape
    numel = shape[-2] * shape[-1]
    n_prune = int(numel * s)
    flat = scores.reshape(shape[:-2] + (1, numel))
    keep = np.full((1,), numel - n_prune, np.int32)
    return topk_keep_mask(flat, keep, ties="high").reshape(shape)


def prune_nm(scores: jax.Array, n: int, m: int) -> jax.Array:
    """N:M sparsity: in every group of ``m`` consecutive columns of a row prune ``n``.

    The ``n`` lowest scores of each group are pruned, ties as a stable ascending sort
    within the group (the earlier column is pruned first). Requires ``0 < n < m`` and
    ``C % m == 0``. ``scores``: ``[..., R, C]``.
    """
    if not (isinstance(n, (int, np.integer)) and isinstance(m, (int, np.integer))):
        raise ValueError(f"n and m must be integers, got n={n!r}, m={m!r}")
    if not (0 < n < m):
        raise ValueError(f"N:M sparsity needs 0 < n < m, got n={n}, m={m}")
    scores = jnp.asarray(scores)
    _check_scores(scores)
    n_cols = scores.shape[-1]
    if n_cols % m:
        raise ValueError(
            f"N:M sparsity needs the column count divisible by m: C={n_cols}, m={m}"
        )
    return _prune_nm(scores, int(n), int(m))


@functools.partial(jax.jit, static_argnames=("n", "m"))
def _prune_nm(scores: jax.Array, n: int, m: int) -> jax.Array:
    return (_nm_positions(scores, m) >= n).reshape(scores.shape)


def prune_nm_rows(scores: jax.Array, n_rows: jax.Array, m: int) -> jax.Array:
    """N:M with a number pruned per row: row r prunes ``n_rows[..., r]`` of every group of ``m`` (the same rule
    as `prune_nm`; a traced ``n_rows`` lets candidates with different N share one program). scores [..., R, C],
    n_rows int [..., R]."""
    return (_nm_positions(scores, m) >= jnp.asarray(n_rows)[..., None, None]).reshape(scores.shape)


def _nm_positions(scores: jax.Array, m: int) -> jax.Array:
    """Stable-ascending position of every entry in its group of m: #{j: g_j < g_i or (g_j == g_i and j < i)};
    the n entries at positions < n are pruned. [..., R, C] → [..., R, C/m, m]."""
    shape = scores.shape
    g = ordered_int32_keys(scores).reshape(shape[:-1] + (shape[-1] // m, m))
    gi, gj = g[..., :, None], g[..., None, :]
    idx = jnp.arange(m)
    earlier = idx[None, :] < idx[:, None]  # [i, j]: j < i
    return jnp.sum((gj < gi) | ((gj == gi) & earlier), axis=-1)
