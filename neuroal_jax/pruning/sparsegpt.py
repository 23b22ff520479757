"""SparseGPT (OBS one-shot pruning with weight reconstruction) in JAX (docs/algorithm.md §2).

Semantics follow the reference SparseGPT ``fasterprune`` (IST-DASLab/sparsegpt, as vendored by
Wanda and NeuroAL), all in float32:

1. dead input columns (``diag(H) == 0``) get ``H[j, j] = 1`` and ``W[:, j] = 0``;
2. damping ``percdamp * mean(diag(H))`` is added to the diagonal;
3. ``Hinv`` is the *upper* Cholesky factor ``U`` of ``H⁻¹`` (``Uᵀ U = H⁻¹``);
4. columns are processed in blocks of ``blocksize``. Unstructured: at the start of each block
   (after the lazy updates of earlier blocks), the saliency ``W1² / diag(Hinv1)²`` of the whole
   ``(out × block)`` slab is sorted and every entry ``<=`` the element at index
   ``int(numel * sparsity)`` is pruned — so a block prunes *at least* ``int(numel*s) + 1``
   entries (more on ties), and even ``sparsity = 0`` prunes the slab's minimum. N:M: at every
   ``m``-th column of a block, in each row the ``n`` smallest saliencies of the next ``m``
   columns — computed on the weights *as updated so far* — are pruned (ties: lower column first);
   ``sparsity`` is ignored;
5. column by column inside a block: ``q = w`` with pruned entries zeroed,
   ``err = (w - q) / Hinv[i, i]``, ``W1[:, i:] -= err ⊗ Hinv[i, i:]``; after the block the
   remaining columns get the lazy update ``W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]``.

Public API
----------
- :func:`sparsegpt_prune` — validated, user-facing; returns ``(W_new, mask)`` with
  ``mask`` True = kept. Retries the Cholesky with 10× damping (up to ``max_tries``) and warns
  naming the damping used; raises ValueError if every try fails.
- :func:`sparsegpt_core` — the pure, jit/vmap-able computation (thresholds given as ranks so
  several sparsities can share one compilation); also returns the damping used and a success flag.
- :func:`inverse_hessian_factor` — dead-column fix, damping with retries, upper Cholesky of H⁻¹.
- :func:`block_threshold_ranks` — the reference's ``int(numel * sparsity)`` per block (float64).
"""
from __future__ import annotations

import functools
import numbers
import warnings

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "block_threshold_ranks",
    "inverse_hessian_factor",
    "sparsegpt_core",
    "sparsegpt_prune",
]

F32 = jnp.float32
HIGHEST = lax.Precision.HIGHEST
DEFAULT_MAX_TRIES = 4  # percdamp, 10×, 100×, 1000×


# --------------------------------------------------------------------------- validation

def _validate(W_shape, H_shape, sparsity, prune_n, prune_m, blocksize, percdamp, max_tries) -> None:
    if len(W_shape) != 2:
        raise ValueError(f"W must be 2-D (out, in), got shape {tuple(W_shape)}")
    cols = W_shape[1]
    if tuple(H_shape) != (cols, cols):
        raise ValueError(f"H must have shape ({cols}, {cols}) to match W {tuple(W_shape)}, got {tuple(H_shape)}")
    if not isinstance(sparsity, numbers.Real) or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be a float in [0, 1), got {sparsity!r}")
    if not isinstance(blocksize, numbers.Integral) or blocksize < 1:
        raise ValueError(f"blocksize must be a positive int, got {blocksize!r}")
    if (not isinstance(prune_n, numbers.Integral) or not isinstance(prune_m, numbers.Integral)
            or prune_n < 0 or prune_m < 0):
        raise ValueError(f"prune_n and prune_m must be non-negative ints, got {prune_n!r}:{prune_m!r}")
    if prune_n or prune_m:
        if not 0 < prune_n < prune_m:
            raise ValueError(f"N:M sparsity needs 0 < n < m, got {prune_n}:{prune_m}")
        if cols % prune_m:
            raise ValueError(f"N:M sparsity needs in ({cols}) divisible by m ({prune_m})")
        if blocksize % prune_m:
            raise ValueError(f"N:M sparsity needs blocksize ({blocksize}) divisible by m ({prune_m})")
    if not isinstance(percdamp, numbers.Real) or not float(percdamp) > 0.0:
        raise ValueError(f"percdamp must be a positive float, got {percdamp!r}")
    if not isinstance(max_tries, numbers.Integral) or max_tries < 1:
        raise ValueError(f"max_tries must be a positive int, got {max_tries!r}")


def block_threshold_ranks(rows: int, cols: int, sparsity: float, blocksize: int = 128) -> tuple[int, int]:
    """Reference threshold ranks ``(k_block, k_last)`` = ``int(numel * sparsity)`` (float64).

    ``k_block`` is for a full ``rows × blocksize`` slab, ``k_last`` for the final partial slab
    of ``cols % blocksize`` columns (0 if there is none; a layer narrower than ``blocksize``
    is a single partial slab). Entries ``<=`` the k-th smallest
    (0-based) saliency of a slab are pruned. Clamped to ``numel - 1``.
    """
    def rank(width: int) -> int:
        numel = rows * width
        return 0 if numel == 0 else min(int(numel * float(sparsity)), numel - 1)

    return rank(blocksize), rank(cols % blocksize)


# --------------------------------------------------------------------------- H⁻¹ factor

def _upper_chol_of_inverse(H: jax.Array) -> jax.Array:
    """U upper-triangular with Uᵀ U = H⁻¹ (f32[in, in]); NaNs if H is not positive definite.

    As the reference: L = chol(H); H⁻¹ = (L Lᵀ)⁻¹ via two triangular solves; U = chol(H⁻¹)ᵀ.
    """
    n = H.shape[0]
    L = jnp.linalg.cholesky(H)  # [in, in] lower
    Hi = jax.scipy.linalg.cho_solve((L, True), jnp.eye(n, dtype=H.dtype))  # H⁻¹
    return jnp.triu(jnp.linalg.cholesky(Hi).T)  # exact zeros below the diagonal


@functools.partial(jax.jit, static_argnames=("max_tries",))
def inverse_hessian_factor(H: jax.Array, percdamp=0.01, max_tries: int = DEFAULT_MAX_TRIES):
    """Dead-column fix, damping and upper Cholesky factor of H⁻¹, retrying with 10× damping.

    H: f32[in, in]. Returns ``(Hinv, dead, percdamp_used, ok)``:
    Hinv f32[in, in] upper triangular (NaN if every try failed), dead bool[in] (diag(H) == 0),
    percdamp_used f32[] (``percdamp * 10**t`` of the first try that gave a finite factor),
    ok bool[]. Tries ``t = 0 .. max_tries-1`` in a ``lax.while_loop`` (jit/vmap friendly).
    """
    H = jnp.asarray(H).astype(F32)
    n = H.shape[0]
    idx = jnp.arange(n)
    diag = jnp.diagonal(H)
    dead = diag == 0
    H = H.at[idx, idx].set(jnp.where(dead, jnp.ones_like(diag), diag))
    mean_diag = jnp.mean(jnp.diagonal(H))
    factors = jnp.asarray(percdamp, F32) * (10.0 ** jnp.arange(max_tries)).astype(F32)  # [tries]

    def attempt(t):
        U = _upper_chol_of_inverse(H.at[idx, idx].add(factors[t] * mean_diag))
        return U, jnp.all(jnp.isfinite(U))

    U0, ok0 = attempt(0)

    def cond(state):
        t, _, ok = state
        return jnp.logical_and(jnp.logical_not(ok), t < max_tries - 1)

    def body(state):
        t, _, _ = state
        U, ok = attempt(t + 1)
        return t + 1, U, ok

    t, U, ok = lax.while_loop(cond, body, (jnp.int32(0), U0, ok0))
    return U, dead, factors[t], ok


# --------------------------------------------------------------------------- OBS sweep

def _nm_group_mask(group: jax.Array, d: jax.Array, prune_n: int) -> jax.Array:
    """bool[out, m] True = pruned: in each row the ``prune_n`` smallest ``group² / d²``.

    group: f32[out, m] current weights; d: f32[m] diag(Hinv) of those columns.
    Ties: the lower column is pruned first (stable ascending ranks).
    """
    sal = group ** 2 / d[None, :] ** 2  # [out, m]
    order = jnp.argsort(sal, axis=1, stable=True)  # [out, m] ascending
    rank = jnp.argsort(order, axis=1, stable=True)  # rank of every column within its row
    return rank < prune_n


def _obs_block(W, keep, Hinv, i1, width: int, kth, prune_n: int, prune_m: int):
    """Prune columns [i1, i1 + width) of W and apply the lazy update to the later columns.

    W: f32[out, in] (columns >= i1 already carry every earlier block's update);
    keep: bool[out, in] mask so far; Hinv: f32[in, in] upper; i1: traced int32 block start;
    width: static block width; kth: traced int32 threshold rank (unstructured only).
    Returns (W, keep) with columns [i1, i1 + width) final.
    """
    rows, cols = W.shape
    W1 = lax.dynamic_slice(W, (0, i1), (rows, width))  # [out, w]
    H1 = lax.dynamic_slice(Hinv, (i1, i1), (width, width))  # [w, w] upper
    d1 = jnp.diagonal(H1)  # [w]

    if prune_n == 0:
        sal = W1 ** 2 / d1[None, :] ** 2  # [out, w]
        thresh = jnp.sort(sal.reshape(-1))[kth]
        pruned0 = sal <= thresh  # [out, w] True = pruned
    else:
        pruned0 = jnp.zeros((rows, width), bool)

    def column(i, carry):
        W1, Q1, E1, pruned = carry
        if prune_n:  # N:M mask of the group starting at column i (only when i % m == 0)
            g0 = i - i % prune_m
            grp = lax.dynamic_slice(W1, (0, g0), (rows, prune_m))
            dg = lax.dynamic_slice(d1, (g0,), (prune_m,))
            cur = lax.dynamic_slice(pruned, (0, g0), (rows, prune_m))
            new = jnp.where(i % prune_m == 0, cur | _nm_group_mask(grp, dg, prune_n), cur)
            pruned = lax.dynamic_update_slice(pruned, new, (0, g0))
        w = lax.dynamic_index_in_dim(W1, i, axis=1, keepdims=False)  # [out]
        p = lax.dynamic_index_in_dim(pruned, i, axis=1, keepdims=False)  # [out]
        hrow = lax.dynamic_index_in_dim(H1, i, axis=0, keepdims=False)  # [w], zeros before i
        q = jnp.where(p, jnp.zeros_like(w), w)
        err = (w - q) / hrow[i]  # [out]
        W1 = W1 - err[:, None] * hrow[None, :]  # only columns >= i change (hrow[:i] == 0)
        Q1 = lax.dynamic_update_index_in_dim(Q1, q, i, axis=1)
        E1 = lax.dynamic_update_index_in_dim(E1, err, i, axis=1)
        return W1, Q1, E1, pruned

    zeros = jnp.zeros_like(W1)
    _, Q1, E1, pruned = lax.fori_loop(0, width, column, (W1, zeros, zeros, pruned0))

    # Lazy batch update of the columns after the block: W[:, i2:] -= E1 @ Hinv[i1:i2, i2:].
    # Rows of Hinv are taken full width with the columns before i2 zeroed (static shapes).
    Hrows = lax.dynamic_slice(Hinv, (i1, 0), (width, cols))  # [w, in]
    Hrows = jnp.where(jnp.arange(cols)[None, :] >= i1 + width, Hrows, 0.0)
    W = W - jnp.matmul(E1, Hrows, precision=HIGHEST)
    W = lax.dynamic_update_slice(W, Q1, (0, i1))
    keep = lax.dynamic_update_slice(keep, jnp.logical_not(pruned), (0, i1))
    return W, keep


@functools.partial(jax.jit, static_argnames=("prune_n", "prune_m", "blocksize", "max_tries"))
def sparsegpt_core(W: jax.Array, H: jax.Array, k_block, k_last, percdamp=0.01, *, prune_n: int = 0,
                   prune_m: int = 0, blocksize: int = 128, max_tries: int = DEFAULT_MAX_TRIES):
    """Pure SparseGPT: ``(W_new f32[out, in], keep bool[out, in], percdamp_used f32[], ok bool[])``.

    W: f32[out, in]; H: f32[in, in] (2/N Σ XᵀX); k_block / k_last: int32 threshold ranks of a full
    and of the final partial block (see :func:`block_threshold_ranks`; ignored for N:M);
    percdamp: traced float. No validation and no warnings here (see :func:`sparsegpt_prune`);
    if ``ok`` is False the result is NaN. vmap over (W, H, k_block, k_last) works.
    """
    Hinv, dead, used, ok = inverse_hessian_factor(H, percdamp, max_tries)
    W = jnp.where(dead[None, :], 0.0, jnp.asarray(W).astype(F32))  # [out, in]
    rows, cols = W.shape
    nfull, rem = divmod(cols, blocksize)
    keep = jnp.ones((rows, cols), bool)
    k_block = jnp.asarray(k_block, jnp.int32)
    k_last = jnp.asarray(k_last, jnp.int32)

    if nfull:
        def full_block(b, carry):
            return _obs_block(*carry, Hinv, b * blocksize, blocksize, k_block, prune_n, prune_m)

        W, keep = lax.fori_loop(0, nfull, full_block, (W, keep))
    if rem:
        W, keep = _obs_block(W, keep, Hinv, jnp.int32(nfull * blocksize), rem, k_last, prune_n, prune_m)
    return W, keep, used, ok


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def sparsegpt_prune(W: jax.Array, H: jax.Array, sparsity: float, prune_n: int = 0, prune_m: int = 0,
                    blocksize: int = 128, percdamp: float = 0.01, max_tries: int = DEFAULT_MAX_TRIES):
    """SparseGPT one layer: ``(W_new f32[out, in], mask bool[out, in])``, mask True = kept.

    W: f32[out, in] (PyTorch layout); H: f32[in, in] = 2/N Σ_n X_nᵀ X_n; sparsity in [0, 1)
    (unstructured; ignored when ``prune_n`` > 0, then N:M with ``prune_n`` of every ``prune_m``
    pruned per row). If the Cholesky of the damped H fails, damping is retried at 10×, 100×, …
    (``max_tries`` tries in all) with a warning naming the damping used; ValueError if all fail.
    Under an outer ``jit`` (traced W/H) the retries still run but cannot warn or raise.
    """
    W = jnp.asarray(W)
    H = jnp.asarray(H)
    _validate(W.shape, H.shape, sparsity, prune_n, prune_m, blocksize, percdamp, max_tries)
    prune_n, prune_m, blocksize, max_tries = int(prune_n), int(prune_m), int(blocksize), int(max_tries)
    k_block, k_last = block_threshold_ranks(W.shape[0], W.shape[1], float(sparsity), blocksize)
    W_new, keep, used, ok = sparsegpt_core(W, H, k_block, k_last, float(percdamp), prune_n=prune_n,
                                           prune_m=prune_m, blocksize=blocksize, max_tries=max_tries)
    if _is_concrete(used, ok):
        if not bool(ok):
            raise ValueError(
                f"SparseGPT: Cholesky of the damped Hessian failed for percdamp={percdamp} and "
                f"{max_tries - 1} retries up to percdamp={percdamp * 10 ** (max_tries - 1):g}; "
                "H is not positive definite even with damping (check the calibration statistics)")
        if float(used) != float(jnp.float32(percdamp)):
            warnings.warn(
                f"SparseGPT: Cholesky of the damped Hessian failed with percdamp={percdamp}; "
                f"used percdamp={float(used):g} (damping = percdamp * mean(diag H))", RuntimeWarning,
                stacklevel=2)
    return W_new, keep
