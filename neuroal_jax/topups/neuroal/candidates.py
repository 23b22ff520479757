"""Evaluating a set of candidate distributions: every candidate in one pass over the blocks (docs/algorithm.md §5).

The stream carries a leading candidate axis [K, N, T, H]; per block, one call of the kernel (`kernel.py`)
computes, for all candidates at once (vmapped on accelerators and meshes, one after another in `lax.map` on a
CPU), the dense activations on the candidate's own sparse stream, the masks, the sparse activations, the next
stream and each layer's alignment. Nothing returns to the host until every block is dispatched. Output metrics
(`output_metrics.py`) read the candidates' final streams once, after the last block, next to the dense model's.
`lambda_chunk` evaluates K candidates at a time when memory demands (same results); `resolve_chunk` sizes it
from an estimate of each candidate's bytes. With a mesh (`sharding.py`) the candidate axis is sharded over
its λ devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ...config import ModelConfig
from ...models import block_contexts, block_output, embed, family_of, head_params, layer_key, prunable_layers
from ...pruning.targets import Structure, layer_keys
from .kernel import candidates_block, dense_step, layer_targets
from .output_metrics import output_alignment, output_bytes, split_metrics, token_chunk
from .sharding import lambda_devices, padded_width, replicate, shard_candidates, shard_params, to_host

#: --lambda-chunk's "as many as fit".
AUTO = "auto"
#: The share of the free memory that --lambda-chunk auto plans to fill.
MEMORY_SHARE = 0.7


# ---------------------------------------------------------------- how many at a time

def candidate_loop(mesh) -> str:
    """`map` on one CPU device, `vmap` on accelerators and when the candidates are sharded over a mesh."""
    return "map" if mesh is None and jax.default_backend() == "cpu" else "vmap"


def candidate_bytes(cfg: ModelConfig, windows: int, seqlen: int, itemsize: int, vmapped: bool,
                    outputs: bool = False) -> tuple[int, int]:
    """(bytes per candidate, bytes shared by the candidates) of one block step of the search, an upper estimate:
    each candidate's activation stream (in and out) lives across blocks; the block's work (the pruned weights and
    their masks, the prunable layers' inputs in float32, one query chunk of attention scores) is per candidate when
    the candidates are vmapped, and one candidate's at a time when they are looped (lax.map, on a CPU).
    outputs: an output metric is asked for; its pass after the last block (`output_metrics.output_bytes`: token
    chunks of logits) may need more than a block's work, and the dense model's final stream is carried along."""
    from ...models.layers import query_chunks
    shapes = family_of(cfg).param_shapes(cfg)["blocks"][0]
    weights = sum(int(np.prod(shapes[n]["weight"])) for n in prunable_layers(cfg))
    tokens = windows * seqlen
    stream = 2 * tokens * cfg.hidden_size * itemsize
    inputs = 4 * tokens * sum(shapes[n]["weight"][1] for n in prunable_layers(cfg))
    scores = 4 * windows * cfg.num_heads * seqlen * -(-seqlen // query_chunks(seqlen))
    work = weights * (itemsize + 1) + inputs + scores
    per, shared = (stream + work, work) if vmapped else (stream, work)
    if outputs:
        out_per, out_shared = output_bytes(cfg, windows, seqlen, itemsize, vmapped)
        dense = tokens * cfg.hidden_size * itemsize
        per, shared = (max(per, stream + out_per), max(shared, out_shared) + dense)
    return per, shared


def resolve_chunk(lambda_chunk, candidates: int, cfg: ModelConfig, windows: int, seqlen: int, itemsize: int,
                  mesh=None, outputs: bool = False) -> int:
    """The candidates run at a time: `lambda_chunk` (at most all), or for "auto" (and None) as many as the estimate
    (`candidate_bytes`, with the output pass when `outputs`) fits in MEMORY_SHARE of the free memory of one device,
    at least 1."""
    from ...runtime import free_memory
    if lambda_chunk not in (None, AUTO):
        return min(int(lambda_chunk), candidates)
    free = free_memory()
    if free is None:
        return candidates
    per, shared = candidate_bytes(cfg, windows, seqlen, itemsize, candidate_loop(mesh) == "vmap", outputs)
    fits = int((MEMORY_SHARE * free - shared) // per) * lambda_devices(mesh)
    return max(1, min(candidates, fits))


# ---------------------------------------------------------------- every candidate, block by block

def evaluate_candidates(cfg: ModelConfig, params: dict, windows: np.ndarray, dists: list, method: str,
                        metrics: tuple[str, ...] = ("neuron",), lambda_chunk: int | str | None = None,
                        dense_stream: str = "candidate", progress: bool = True, desc: str = "NeuroAL candidates",
                        mesh=None, structure: Structure = Structure(), token_chunk_size: int | None = None):
    """Alignment of every candidate distribution under every metric, block by block on each candidate's
    sparse stream (one pass, whatever the number of metrics).

    metrics: alignment metrics (per layer, summed) and output metrics (`output_metrics.py`: after the last block,
    from the final streams, next to the dense model's; their tokens `token_chunk_size` at a time, default
    `output_metrics.token_chunk`).
    mesh: a `sharding.make_mesh` mesh; the candidate axis is sharded over its λ devices.
    structure: row (the distributions' sparsities per layer or row) or N:M (whole N per group from each layer's).
    Returns (totals {metric: [K]}, per-layer alignment {alignment metric: {key: [K]}} (none for an output metric),
    deltas [K × {key: δ}]).
    """
    K = len(dists)
    layer_metrics, out_metrics = split_metrics(metrics)
    chunk = resolve_chunk(lambda_chunk, K, cfg, *np.shape(windows), params["embed"]["weight"].dtype.itemsize, mesh,
                          bool(out_metrics))
    # Every chunk is padded (repeating its last candidate) to one width, a multiple of the λ devices
    # with at least 2 per device: one compiled program for all chunks, and XLA's size-1
    # specialisation (different rounding) never kicks in, so any lambda_chunk or device count gives
    # the same results.
    width = padded_width(chunk, mesh)
    metrics = tuple(metrics)
    windows = jnp.asarray(np.asarray(windows, np.int32))
    ctxs = replicate(block_contexts(cfg, windows.shape[1]), mesh)
    x0 = replicate(embed(cfg, params, windows), mesh)
    chunks = [list(range(i, min(i + chunk, K))) for i in range(0, K, chunk)]
    padded = [c + [c[-1]] * (width - len(c)) for c in chunks]
    streams = [shard_candidates(jnp.broadcast_to(x0, (width, *x0.shape)), mesh) for _ in chunks]
    dense_x = x0
    loop = candidate_loop(mesh)
    results = []  # (block, chunk, δ, alignments) on device: read back once every block is dispatched
    for b in tqdm(range(cfg.num_layers), desc=desc, disable=not progress, leave=False):
        p, ctx = shard_params(params["blocks"][b], mesh), ctxs[b]
        a_dense_given = None
        if dense_stream == "model":
            dense_x, a_dense_given = dense_step(cfg, p, dense_x, ctx)
        elif out_metrics:  # the dense model's own stream, for its logits after the last block
            dense_x = block_output(cfg, p, dense_x, ctx)
        targets = {name: [layer_targets(method, dists[i][layer_key(b, name)], p[name]["weight"].shape, structure)
                          for i in range(K)] for name in prunable_layers(cfg)}
        rules = {r for v in targets.values() for _, r in v}
        if len(rules) != 1:
            raise ValueError("candidates of one step must all be scalar or all be per-row distributions")
        rule = rules.pop()
        for c in range(len(chunks)):
            keeps = shard_candidates({name: np.stack([v[i][0] for i in padded[c]]) for name, v in targets.items()},
                                     mesh)
            streams[c], delta, align = candidates_block(cfg, method, rule, layer_metrics, p, streams[c], ctx, keeps,
                                                        a_dense_given, loop=loop)
            results.append((b, c, delta, align))
        # one block ahead of the device, no more: the progress bar stays true and the queue short
        jax.block_until_ready([r[2] for r in results if r[0] == b - 1])
    outputs = []  # per chunk {output metric: [width]}
    if out_metrics:
        head, tokens = replicate(head_params(params), mesh), replicate(windows, mesh)
        size = token_chunk_size or token_chunk(cfg.vocab_size, windows.shape[0] * (windows.shape[1] - 1))
        outputs = [output_alignment(cfg, out_metrics, head, streams[c], dense_x, tokens, chunk=size, loop=loop)
                   for c in range(len(chunks))]
    per_layer = {m: {k: np.zeros(K) for k in layer_keys(cfg)} for m in layer_metrics}
    deltas = [dict() for _ in range(K)]
    for b, c, delta, align in results:
        idx = chunks[c]
        for name in prunable_layers(cfg):
            key = layer_key(b, name)
            for m in layer_metrics:
                per_layer[m][key][idx] = to_host(align[m][name]).astype(np.float64)[:len(idx)]
            d = to_host(delta[name])
            for j, i in enumerate(idx):
                deltas[i][key] = d[j]
    totals = {m: np.array([sum(layers[k][i] for k in layers) for i in range(K)]) for m, layers in per_layer.items()}
    for m in out_metrics:
        totals[m] = np.concatenate([to_host(o[m]).astype(np.float64)[:len(idx)] for o, idx in zip(outputs, chunks)])
    return {m: totals[m] for m in metrics}, per_layer, deltas
