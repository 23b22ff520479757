"""What each candidate produces: the final pruning over all calibration windows and held-out perplexity,
for K candidates in one pass over the blocks.

At block b, for every candidate k of the chunk: statistics of the dense block on k's calibration stream,
block b pruned with k's distribution, then k's calibration stream and evaluation streams advance
through the pruned block, which is then dropped. Memory holds one block's K pruned copies (one at a
time) and K streams, never K models. Every step is the very function `prune` and `perplexity` use
(`pruning.sequential.prune_on_stream` / `advance`, `evaluation.perplexity`), on the same shapes, so a
candidate's numbers are those of `prune` with that distribution alone, to the bit.

`lambda_chunk` runs K candidates at a time (memory: chunk × streams); `devices` places candidate k on
device k mod N, so N devices work on N candidates at once.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import jax
import numpy as np
from tqdm.auto import tqdm

from ..evaluation.perplexity import eval_batches, perplexity_of_hidden
from ..models import block_contexts, embed, head_params
from ..pruning.sequential import advance, prune_on_stream
from ..pruning.statistics import embed_batches
from ..pruning.targets import Distribution, Structure, layer_sparsities, summarize_sparsity
from ..topups.neuroal.candidates import resolve_chunk


@dataclass
class Outcome:
    perplexity: dict  # {eval spec: perplexity}
    sparsity: float  # achieved, over the prunable layers
    block_sparsity: dict  # {"<b>": achieved sparsity}


def dist_digest(dist: Distribution) -> str:
    """A digest of a distribution's targets (per-layer floats or per-row float64 vectors), to reuse outcomes."""
    h = hashlib.sha256()
    for k in sorted(dist):
        h.update(k.encode() + np.ascontiguousarray(np.asarray(dist[k], np.float64)).tobytes())
    return h.hexdigest()[:16]


def final_outcomes(cfg, params: dict, windows: np.ndarray, dists: list, method: str, test_sets: dict,
                   batch_size: int = 8, lambda_chunk: int | str | None = None, devices: int | None = None,
                   progress: bool = True) -> list[Outcome]:
    """The Outcome of each distribution: `prune` with it over `windows` [n, seqlen], then perplexity on each of
    `test_sets` ({spec: windows}); candidates run `lambda_chunk` at a time, spread over the first `devices`."""
    K = len(dists)
    streams = len(windows) + sum(len(w) for w in test_sets.values())  # every candidate's calibration and test streams
    chunk = resolve_chunk(lambda_chunk, K, cfg, streams, np.shape(windows)[1], params["embed"]["weight"].dtype.itemsize)
    devs = jax.devices()[:devices] if devices else [None]
    ctxs = block_contexts(cfg, np.shape(windows)[1])
    calib = embed_batches(cfg, params, windows, batch_size)
    evals = {s: eval_batches(w, batch_size) for s, w in test_sets.items()}
    eval_x = {s: [embed(cfg, params, t) for t in batches] for s, batches in evals.items()}
    starts = range(0, K, chunk)
    bar = tqdm(total=len(starts) * cfg.num_layers, desc=f"sweep: final pruning + eval ({K} candidates)",
               disable=not progress, leave=False)
    out = []
    for start in starts:
        ids = list(range(start, min(start + chunk, K)))
        dev = {k: devs[k % len(devs)] for k in ids}
        xs = {k: _put(calib, dev[k]) for k in ids}
        ev = {k: _put(eval_x, dev[k]) for k in ids}
        layer = {k: ({}, {}) for k in ids}
        for b in range(cfg.num_layers):
            p = params["blocks"][b]
            on = {d: _put(p, d) for d in set(dev.values())}
            for k in ids:
                p_new, masks = prune_on_stream(cfg, b, on[dev[k]], xs[k], ctxs[b], dists[k], method, Structure())
                xs[k] = advance(cfg, p_new, xs[k], ctxs[b])
                ev[k] = {s: advance(cfg, p_new, x, ctxs[b]) for s, x in ev[k].items()}
                frac, sizes = layer_sparsities(masks)
                layer[k][0].update(frac), layer[k][1].update(sizes)
            bar.update()
        heads = {d: _put(head_params(params), d) for d in set(dev.values())}
        for k in ids:
            summary = summarize_sparsity(cfg, *layer[k])
            ppl = {s: perplexity_of_hidden(cfg, heads[dev[k]], ev[k][s], evals[s], len(test_sets[s]))
                   for s in test_sets}
            out.append(Outcome(ppl, summary["sparsity"], summary["block_sparsity"]))
    bar.close()
    return out


def _put(tree, device):
    return tree if device is None else jax.device_put(tree, device)
