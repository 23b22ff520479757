"""Perplexity (docs/algorithm.md §8): mean next-token NLL over non-overlapping windows, jitted and batched."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..models import block_contexts, block_output, embed, head_params, token_nll


def eval_batches(windows: np.ndarray, batch_size: int) -> list:
    """windows [n, seqlen] as int32 batches of `batch_size`; the last one is padded by repeating its last
    window when there is more than one batch (one compiled shape)."""
    windows = np.asarray(windows, dtype=np.int32)
    n = len(windows)
    batches = []
    for start in range(0, n, batch_size):
        batch = windows[start:start + batch_size]
        if len(batch) < batch_size and n > batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - len(batch), axis=0)])
        batches.append(jnp.asarray(batch))
    return batches


def perplexity_of_hidden(cfg: ModelConfig, head: dict, xs: list, batches: list, n: int) -> float:
    """exp(mean NLL) from the last block's outputs xs of `batches` (padding beyond the n real windows ignored)."""
    batch_size, seqlen = batches[0].shape
    total = 0.0
    for i, (x, tokens) in enumerate(zip(xs, batches)):
        real = min(batch_size, n - i * batch_size)
        total += float(np.asarray(token_nll(cfg, head, x, tokens))[:real].sum())
    return math.exp(total / (n * (seqlen - 1)))


def perplexity(cfg: ModelConfig, params: dict, windows: np.ndarray, batch_size: int = 8,
               progress: bool = True, desc: str = "perplexity") -> float:
    """exp(mean NLL) of windows [n, seqlen]; the last batch is padded and its padding ignored.

    Runs block by block over all batches (the same jitted ops as a whole forward, in another order),
    so `params["blocks"]` may be a lazy sequence that reads each block from disk once."""
    batches = eval_batches(windows, batch_size)
    xs = [embed(cfg, params, tokens) for tokens in batches]
    ctxs = block_contexts(cfg, batches[0].shape[1])
    for b in tqdm(range(cfg.num_layers), desc=desc, disable=not progress, leave=False):
        p = params["blocks"][b]
        xs = [block_output(cfg, p, x, ctxs[b]) for x in xs]
    return perplexity_of_hidden(cfg, head_params(params), xs, batches, len(windows))
