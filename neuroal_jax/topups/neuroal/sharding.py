"""Past one device: a `Mesh` that shards NeuroAL's λ candidates (and optionally the weights' rows).

The search's per-block function is already vmapped over a leading λ axis; sharding that axis over the
mesh's "lambda" devices lets XLA (GSPMD) run each device's candidates locally, with no code of ours
in between. With a "model" axis > 1, every 2-D weight is also split by rows (its out features), which
keeps the per-row top-k of the masks local to a device.

    mesh = make_mesh(devices=8)                     # 8 devices, all on the λ axis
    mesh = make_mesh(devices=8, model_parallel=2)   # 4 λ groups × 2-way row-split weights

Multi-host: call `neuroal_jax.distributed.initialize_distributed()` (or `neuroal-jax ... --distributed`) in every
process first; `jax.devices()` then lists every host's devices and the same mesh code spans them.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ...errors import UsageError

LAMBDA, MODEL = "lambda", "model"


def make_mesh(devices: int | None = None, model_parallel: int = 1) -> Mesh:
    """A (lambda, model) mesh over the first `devices` devices (all of them when None)."""
    available = jax.devices()
    n = len(available) if devices is None else int(devices)
    if not 1 <= n <= len(available):
        raise UsageError(f"devices must be between 1 and the {len(available)} available "
                         f"({available[0].platform}), got {devices}")
    if model_parallel < 1 or n % model_parallel:
        raise UsageError(f"model_parallel must divide the {n} devices, got {model_parallel}")
    grid = np.array(available[:n]).reshape(n // model_parallel, model_parallel)
    return Mesh(grid, (LAMBDA, MODEL))


def lambda_devices(mesh: Mesh | None) -> int:
    return 1 if mesh is None else mesh.shape[LAMBDA]


def padded_width(chunk: int, mesh: Mesh | None) -> int:
    """Candidates per compiled call: a multiple of the λ devices with at least 2 per device (XLA
    specialises batches of 1, which rounds differently; ≥ 2 keeps every chunking bit-identical)."""
    d = lambda_devices(mesh)
    per_device = max(2, -(-chunk // d))
    return per_device * d


def shard_candidates(tree, mesh: Mesh | None):
    """Place arrays with a leading candidate axis across the λ devices."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, P(LAMBDA)))


def shard_params(tree, mesh: Mesh | None):
    """Replicate a block's params over the mesh; 2-D weights split by rows when the model axis > 1."""
    if mesh is None:
        return tree
    m = mesh.shape[MODEL]

    def place(x):
        rows_split = m > 1 and np.ndim(x) == 2 and np.shape(x)[0] % m == 0
        return jax.device_put(x, NamedSharding(mesh, P(MODEL, None) if rows_split else P()))

    return jax.tree_util.tree_map(place, tree)


def replicate(tree, mesh: Mesh | None):
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, P()))


def to_host(x) -> np.ndarray:
    """A (possibly multi-host) array as one NumPy array on every process."""
    if jax.process_count() > 1 and not getattr(x, "is_fully_addressable", True):
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
