"""Perplexity (docs/algorithm.md §8): mean next-token NLL over non-overlapping windows, jitted and batched."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..models import block_apply, block_contexts, embed, head_params, token_nll


def perplexity(cfg: ModelConfig, params: dict, windows: np.ndarray, batch_size: int = 8,
               progress: bool = True, desc: str = "perplexity") -> float:
    """exp(mean NLL) of windows [n, seqlen]; the last batch is padded and its padding ignored.

    Runs block by block over all batches (the same jitted ops as a whole forward, in another order),
    so `params["blocks"]` may be a lazy sequence that reads each block from disk once."""
    windows = np.asarray(windows, dtype=np.int32)
    n, seqlen = windows.shape
    batches = []
    for start in range(0, n, batch_size):
        batch = windows[start:start + batch_size]
        if len(batch) < batch_size and n > batch_size:  # keep one compiled shape
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - len(batch), axis=0)])
        batches.append(jnp.asarray(batch))
    xs = [embed(cfg, params, tokens) for tokens in batches]
    ctxs = block_contexts(cfg, seqlen)
    for b in tqdm(range(cfg.num_layers), desc=desc, disable=not progress, leave=False):
        p = params["blocks"][b]
        xs = [block_apply(cfg, p, x, ctxs[b])[0] for x in xs]
    head = head_params(params)
    total = 0.0
    for i, (x, tokens) in enumerate(zip(xs, batches)):
        real = min(batch_size, n - i * batch_size)
        total += float(np.asarray(token_nll(cfg, head, x, tokens))[:real].sum())
    return math.exp(total / (n * (seqlen - 1)))
