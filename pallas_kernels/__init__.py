"""Pallas GPU kernels for neuroal_jax.

`topk_mask` is a row-wise top-k *mask* kernel (per-row k, exact tie rules, no sort).
Use :func:`neuroal_jax.pruning.masks.topk_mask` as the public entry point: it dispatches
between this kernel and the pure-jnp reference.
"""
from pallas_kernels.topk_mask import (
    INT32_MIN,
    block_config,
    ordered_int32_keys,
    topk_mask,
)

__all__ = ["INT32_MIN", "block_config", "ordered_int32_keys", "topk_mask"]
