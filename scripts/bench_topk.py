#!/usr/bin/env python
"""Benchmark row-wise top-k keep masks (per-row k) in JAX.

Implementations timed (all jitted, median wall time per call, inputs already on device):

- ``argsort``   : stable argsort of -scores + scatter of ``position < keep`` (baseline)
- ``top_k``     : ``lax.top_k`` with k = max(keep) (host value) + scatter of the first keep[r]
- ``threshold`` : the pure-jnp threshold search ``neuroal_jax.pruning.masks.topk_keep_mask``
- ``pallas``    : the Pallas kernel ``pallas_kernels.topk_mask`` (GPU backends only)

Cases: Llama-7B/70B-like layer shapes, batch 1 and 14 (lambda candidates), plus the
"NeuroAL row step for one 7B block": q,k,v,o (4096x4096), gate, up (11008x4096) and down
(4096x11008), each with 15 lambda candidates and per-row keep counts.

On a CPU backend the default is ``--quick``: every dimension divided by ``--scale``
(16) so the run finishes in about a minute or two. Use ``--full`` to force full sizes.

Examples::

    python scripts/bench_topk.py              # quick on CPU, full on GPU
    python scripts/bench_topk.py --full --reps 10
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from neuroal_jax.pruning.masks import topk_keep_mask  # noqa: E402
from pallas_kernels.topk_mask import topk_mask as pallas_topk_mask  # noqa: E402

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (8192, 28672), (28672, 8192)]
BATCHES = [1, 14]
LLAMA7B_BLOCK = {
    "q": (4096, 4096), "k": (4096, 4096), "v": (4096, 4096), "o": (4096, 4096),
    "gate": (11008, 4096), "up": (11008, 4096), "down": (4096, 11008),
}
N_LAMBDA_ROW = 15


# ----------------------------------------------------------------- implementations
def _scatter_first(order: jax.Array, keep: jax.Array, n_cols: int) -> jax.Array:
    """Mask with True at order[r, :keep[r]] (order: [R, K] column indices)."""
    rows = jnp.arange(order.shape[0])[:, None]
    first = jnp.arange(order.shape[1])[None, :] < keep[:, None]
    return jnp.zeros((order.shape[0], n_cols), jnp.bool_).at[rows, order].set(first)


@jax.jit
def argsort_mask(scores: jax.Array, keep: jax.Array) -> jax.Array:
    flat = scores.reshape(-1, scores.shape[-1]).astype(jnp.float32)
    order = jnp.argsort(-flat, axis=-1, stable=True)
    return _scatter_first(order, keep.reshape(-1), flat.shape[-1]).reshape(scores.shape)


@functools.partial(jax.jit, static_argnames=("k_max",))
def topk_based_mask(scores: jax.Array, keep: jax.Array, k_max: int) -> jax.Array:
    flat = scores.reshape(-1, scores.shape[-1]).astype(jnp.float32)
    _, idx = lax.top_k(flat, k_max)  # ties: lower index first, like ties="low"
    return _scatter_first(idx, keep.reshape(-1), flat.shape[-1]).reshape(scores.shape)


@jax.jit
def _threshold(scores, keep):
    return topk_keep_mask(scores, keep, "low")


@jax.jit
def _pallas(scores, keep):
    return pallas_topk_mask(scores, keep, "low")


# ------------------------------------------------------------------------- timing
def time_call(fn, *args, reps: int) -> float:
    """Median milliseconds per call (after one warm-up / compile call)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def make_inputs(rng, batch, rows, cols):
    scores = jax.random.normal(jax.random.PRNGKey(int(rng.integers(1 << 30))),
                               (batch, rows, cols), jnp.float32)
    # per-row keep as in the NeuroAL row step: sparsity in [0.3, 0.7]
    keep = ((1.0 - rng.uniform(0.3, 0.7, size=(batch, rows))) * cols).astype(np.int32)
    return scores, jnp.asarray(keep), int(keep.max())


def bench_case(impls, scores, keep, k_max, reps):
    out = {}
    for name in impls:
        if name == "argsort":
            out[name] = time_call(argsort_mask, scores, keep, reps=reps)
        elif name == "top_k":
            out[name] = time_call(topk_based_mask, scores, keep, k_max, reps=reps)
        elif name == "threshold":
            out[name] = time_call(_threshold, scores, keep, reps=reps)
        elif name == "pallas":
            out[name] = time_call(_pallas, scores, keep, reps=reps)
    return out


def check_equal(impls, scores, keep, k_max):
    """All implementations must give the same mask (they all keep ties='low')."""
    ref = np.asarray(argsort_mask(scores, keep))
    fns = {"top_k": lambda: topk_based_mask(scores, keep, k_max),
           "threshold": lambda: _threshold(scores, keep),
           "pallas": lambda: _pallas(scores, keep)}
    for name in impls:
        if name in fns and not np.array_equal(np.asarray(fns[name]()), ref):
            raise AssertionError(f"{name} mask differs from the argsort mask")


# --------------------------------------------------------------------------- main
def fmt_row(label, times, impls):
    base = times.get("argsort")
    cells = []
    for name in impls:
        t = times.get(name)
        if t is None:
            cells.append(f"{'n/a':>22}")
        else:
            ratio = f"({t / base:.2f}x)" if base else ""
            cells.append(f"{t:13.2f} {ratio:>8}")
    return f"{label:<30}" + "".join(cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="divide every dimension by --scale (default on CPU)")
    mode.add_argument("--full", action="store_true",
                      help="full Llama shapes (default on GPU)")
    parser.add_argument("--scale", type=int, default=16,
                        help="dimension divisor for --quick (default 16)")
    parser.add_argument("--reps", type=int, default=3, help="timed calls per case")
    parser.add_argument("--batches", type=int, nargs="+", default=BATCHES,
                        help="leading batch sizes (default 1 14)")
    parser.add_argument("--impls", nargs="+",
                        default=["argsort", "top_k", "threshold", "pallas"],
                        choices=["argsort", "top_k", "threshold", "pallas"])
    parser.add_argument("--no-block", action="store_true",
                        help="skip the NeuroAL 7B-block row-step case")
    parser.add_argument("--check", action="store_true",
                        help="verify all implementations agree on each case")
    args = parser.parse_args(argv)

    backend = jax.default_backend()
    on_gpu = backend == "gpu"
    quick = args.quick or (not args.full and not on_gpu)
    div = args.scale if quick else 1
    impls = [i for i in args.impls if i != "pallas" or on_gpu]
    rng = np.random.default_rng(0)

    print(f"backend={backend} devices={jax.devices()} quick={quick} scale=1/{div} "
          f"reps={args.reps}")
    if "pallas" in args.impls and not on_gpu:
        print("pallas: skipped (no GPU backend; interpret mode is not a benchmark)")
    header = f"{'case (batch x rows x cols)':<30}" + "".join(
        f"{name + ' ms (ratio)':>22}" for name in impls)
    print(header)
    print("-" * len(header))

    for rows, cols in SHAPES:
        r, c = max(1, rows // div), max(1, cols // div)
        for batch in args.batches:
            scores, keep, k_max = make_inputs(rng, batch, r, c)
            if args.check:
                check_equal(impls, scores, keep, k_max)
            times = bench_case(impls, scores, keep, k_max, args.reps)
            print(fmt_row(f"{batch} x {r} x {c}", times, impls), flush=True)
            del scores, keep

    if not args.no_block:
        total = dict.fromkeys(impls, 0.0)
        for name, (rows, cols) in LLAMA7B_BLOCK.items():
            r, c = max(1, rows // div), max(1, cols // div)
            scores, keep, k_max = make_inputs(rng, N_LAMBDA_ROW, r, c)
            times = bench_case(impls, scores, keep, k_max, args.reps)
            for k, v in times.items():
                total[k] += v
            del scores, keep
        label = f"7B block row step ({N_LAMBDA_ROW} lam)"
        print(fmt_row(label, total, impls), flush=True)


if __name__ == "__main__":
    from neuroal_jax.runtime import reexec_with_hugepages

    reexec_with_hugepages()  # huge-page malloc, as the CLI runs
    main()
