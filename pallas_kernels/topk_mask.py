"""Row-wise top-k keep mask as a Pallas (Triton) kernel — per-row k, exact ties, no sort.

``topk_mask(scores[..., R, C], keep[..., R])`` returns ``bool[..., R, C]`` where row r
keeps exactly ``keep[r]`` entries: the ``keep[r]`` highest scores, ties broken by column
index (``ties="low"``: the lower column is kept first, i.e. a stable descending sort;
``ties="high"``: the higher column is kept first). It is bit-for-bit the same mask as
the jnp reference :func:`neuroal_jax.pruning.masks.topk_keep_mask`.

Algorithm (one program = a block of ``block_rows`` rows x the whole padded row):

1. Scores (float32 / bfloat16) become order-preserving int32 keys from their bit
   patterns (:func:`ordered_int32_keys`; -0.0 gets the key of +0.0). Padding columns get
   ``INT32_MIN``, below every real key, so they are never kept.
2. Per row, the threshold ``t`` = the ``keep``-th largest key is built bit by bit,
   most significant bit first (32 steps): a candidate is accepted when
   ``count(keys >= candidate) >= keep``. Working in the "unsigned" order
   (``key ^ INT32_MIN``) means flipping one bit of the signed candidate per step, so
   there is no overflow.
3. Every key ``> t`` is kept. Among keys ``== t`` the first (ties="low") or last
   (ties="high") ``need = keep - count(keys > t)`` are kept: a second bitwise binary
   search over the column position finds the largest ``q`` with
   ``count(eq & pos < q) < need``; then ``eq & pos <= q`` holds exactly ``need`` entries.

Leading batch axes (lambda candidates, layers) are folded into rows.

Block shapes: Triton needs power-of-two block shapes, so columns are padded to the next
power of two and rows to a multiple of ``block_rows``. :func:`block_config` picks
``block_rows`` / ``num_warps`` from a small heuristic table aimed at the Llama widths
4096, 8192, 11008 (-> 16384) and 28672 (-> 32768) with about 16K elements per
program. The table is a heuristic, not yet tuned on a GPU: ``scripts/bench_topk.py`` measures it.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

try:  # Triton compiler params select the Triton lowering (not Mosaic GPU).
    from jax.experimental.pallas import triton as pltriton
except ImportError:  # pragma: no cover - very old / stripped jax
    pltriton = None

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
_TIES = ("low", "high")

# Interpret mode (CPU tests) runs each grid step as XLA ops: few large steps are faster.
_INTERPRET_MAX_BLOCK_ELEMS = 1 << 20
# GPU target: elements held by one program (keys + temporaries live in registers).
_GPU_BLOCK_ELEMS = 1 << 14
_GPU_MAX_BLOCK_ROWS = 32


def ordered_int32_keys(x: jax.Array) -> jax.Array:
    """Map float scores to int32 keys with the same order (``a < b <=> key(a) < key(b)``).

    Works on the bit patterns only (no float arithmetic), so denormals stay distinct
    even where the backend flushes them to zero in float ops. float32 is bitcast;
    bfloat16 is widened exactly by a 16-bit shift; other floats are first cast to
    float32. ``-0.0`` gets the key of ``+0.0`` (0). NaN is not supported. Usable both in
    plain jnp code and inside Pallas kernels.
    """
    if x.dtype == jnp.bfloat16:
        bits = lax.bitcast_convert_type(x, jnp.int16).astype(jnp.int32)
        bits = lax.shift_left(bits, jnp.int32(16))
    else:
        bits = lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    # Negative floats: larger magnitude must give a smaller key -> flip the 31 low bits.
    keys = jnp.where(bits < 0, bits ^ jnp.int32(INT32_MAX), bits)
    return jnp.where(bits == jnp.int32(INT32_MIN), jnp.int32(0), keys)  # -0.0 -> +0.0


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def _rows_with_little_padding(n_rows: int, cap: int) -> int:
    """Largest power-of-two block (<= cap) whose row padding is at most 12.5 %."""
    best, br = 1, 1
    while br <= cap and br < 2 * n_rows:
        if -(-n_rows // br) * br * 8 <= n_rows * 9:
            best = br
        br *= 2
    return best


def block_config(n_rows: int, n_cols: int, interpret: bool = False) -> tuple[int, int]:
    """Return ``(block_rows, num_warps)`` for a ``n_rows x n_cols`` problem.

    GPU (untuned heuristic, see module doc): about 16K elements per program; widths
    4096 -> 4 rows / 8 warps, 8192 -> 2 / 8, 11008 (16384) -> 1 / 8,
    28672 (32768) -> 1 / 16. Interpret mode: blocks of up to 1M elements.
    """
    padded_cols = _next_pow2(n_cols)
    if interpret:
        cap = max(1, _INTERPRET_MAX_BLOCK_ELEMS // padded_cols)
    else:
        cap = max(1, min(_GPU_MAX_BLOCK_ROWS, _GPU_BLOCK_ELEMS // padded_cols))
    cap = 1 << (cap.bit_length() - 1)  # power of two
    block_rows = _rows_with_little_padding(n_rows, cap)
    elems = block_rows * padded_cols
    num_warps = 4 if elems <= 4096 else (8 if elems <= 16384 else 16)
    return block_rows, num_warps


def _topk_kernel(scores_ref, keep_ref, out_ref, *, n_cols: int, ties: str):
    """One program: a (block_rows, padded_cols) tile; see the module docstring."""
    shape = scores_ref.shape
    padded_cols = shape[1]
    col_bits = padded_cols.bit_length() - 1  # padded_cols is a power of two

    col = lax.broadcasted_iota(jnp.int32, shape, 1)
    keys = ordered_int32_keys(scores_ref[...])
    keys = jnp.where(col < n_cols, keys, jnp.int32(INT32_MIN))  # padding: never kept
    keep = keep_ref[...]  # (block_rows, 1) int32

    # Step 2: threshold key t = keep-th largest key, one bit per step (MSB first).
    def threshold_step(i, t):
        cand = t ^ lax.shift_left(jnp.int32(1), jnp.int32(31) - i)
        cnt = jnp.sum((keys >= cand).astype(jnp.int32), axis=1, keepdims=True)
        return jnp.where(cnt >= keep, cand, t)

    t0 = jnp.full((shape[0], 1), INT32_MIN, jnp.int32)
    t = lax.fori_loop(0, 32, threshold_step, t0)

    # Step 3: everything above t, plus exactly `need` of the entries equal to t.
    above = keys > t
    eq = keys == t
    need = keep - jnp.sum(above.astype(jnp.int32), axis=1, keepdims=True)
    pos = col if ties == "low" else (padded_cols - 1) - col

    def tie_step(i, q):
        cand = q | lax.shift_left(jnp.int32(1), jnp.int32(col_bits - 1) - i)
        cnt = jnp.sum((eq & (pos < cand)).astype(jnp.int32), axis=1, keepdims=True)
        return jnp.where(cnt < need, cand, q)

    q = lax.fori_loop(0, col_bits, tie_step, jnp.zeros((shape[0], 1), jnp.int32))
    kept = above | (eq & (pos <= q) & (need > 0))
    out_ref[...] = kept.astype(out_ref.dtype)


def _check_args(scores, keep, ties):
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    if scores.ndim < 2:
        raise ValueError(f"scores must have shape [..., R, C], got shape {scores.shape}")
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise ValueError(f"scores must be a float array, got dtype {scores.dtype}")
    if keep.ndim < 1 or keep.shape[-1] != scores.shape[-2]:
        raise ValueError(
            f"keep must have shape [..., R] with R = scores.shape[-2] = {scores.shape[-2]}, "
            f"got keep shape {keep.shape} for scores shape {scores.shape}"
        )
    if not jnp.issubdtype(keep.dtype, jnp.integer):
        raise ValueError(f"keep must be an integer array, got dtype {keep.dtype}")


def topk_mask(
    scores: jax.Array,
    keep: jax.Array,
    ties: str = "low",
    interpret: bool = False,
    block_rows: int | None = None,
    num_warps: int | None = None,
) -> jax.Array:
    """Keep mask of the ``keep[..., r]`` highest scores of every row (Pallas kernel).

    Args:
      scores: ``[..., R, C]`` float32 or bfloat16.
      keep: ``[..., R]`` integer, ``0 <= keep <= C`` (values are clipped to that range).
        Leading axes of ``scores`` and ``keep`` broadcast against each other.
      ties: ``"low"`` (lower column kept first) or ``"high"`` (higher column first).
      interpret: run the kernel in Pallas interpret mode (CPU tests).
      block_rows / num_warps: override :func:`block_config` (block_rows: power of two).

    Returns:
      ``bool[..., R, C]``, True = kept.
    """
    scores = jnp.asarray(scores)
    keep = jnp.asarray(keep)
    _check_args(scores, keep, ties)
    batch = jnp.broadcast_shapes(scores.shape[:-2], keep.shape[:-1])
    n_rows, n_cols = scores.shape[-2], scores.shape[-1]
    scores = jnp.broadcast_to(scores, batch + (n_rows, n_cols))
    keep = jnp.broadcast_to(keep, batch + (n_rows,))
    total_rows = int(np.prod(batch, dtype=np.int64)) * n_rows
    if total_rows == 0 or n_cols == 0:
        return jnp.zeros(batch + (n_rows, n_cols), jnp.bool_)

    br, warps = block_config(total_rows, n_cols, interpret=interpret)
    if block_rows is not None:
        if block_rows < 1 or block_rows & (block_rows - 1):
            raise ValueError(f"block_rows must be a positive power of two, got {block_rows}")
        br = block_rows
    if num_warps is not None:
        warps = num_warps
    out = _topk_mask_2d(
        scores.reshape(total_rows, n_cols),
        keep.reshape(total_rows),
        ties=ties,
        interpret=bool(interpret),
        block_rows=br,
        num_warps=warps,
    )
    return out.reshape(batch + (n_rows, n_cols))


@functools.partial(
    jax.jit, static_argnames=("ties", "interpret", "block_rows", "num_warps")
)
def _topk_mask_2d(scores, keep, *, ties, interpret, block_rows, num_warps):
    n_rows, n_cols = scores.shape
    padded_cols = _next_pow2(n_cols)
    padded_rows = -(-n_rows // block_rows) * block_rows
    keep = jnp.clip(keep.astype(jnp.int32), 0, n_cols)
    if padded_rows != n_rows or padded_cols != n_cols:
        # Padding values are irrelevant: the kernel masks padded columns by index and
        # padded rows have keep = 0.
        scores = jnp.pad(scores, ((0, padded_rows - n_rows), (0, padded_cols - n_cols)))
        keep = jnp.pad(keep, (0, padded_rows - n_rows))
    keep = keep.reshape(padded_rows, 1)

    compiler_params = None
    if pltriton is not None and not interpret:
        compiler_params = pltriton.CompilerParams(num_warps=num_warps, num_stages=1)
    kernel = functools.partial(_topk_kernel, n_cols=n_cols, ties=ties)
    out = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((padded_rows, padded_cols), jnp.int8),
        grid=(padded_rows // block_rows,),
        in_specs=[
            pl.BlockSpec((block_rows, padded_cols), lambda i: (i, 0)),
            pl.BlockSpec((block_rows, 1), lambda i: (i, 0)),
        ],
        out_specs=pl.BlockSpec((block_rows, padded_cols), lambda i: (i, 0)),
        interpret=interpret,
        compiler_params=compiler_params,
        name="topk_mask",
    )(scores, keep)
    return out[:n_rows, :n_cols] != 0
