"""Perplexity (SPEC §8): mean next-token NLL over non-overlapping windows, jitted and batched."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .config import ModelConfig
from .models import block_contexts, final_hidden_states, head_params, token_nll


def perplexity(cfg: ModelConfig, params: dict, windows: np.ndarray, batch_size: int = 8,
               progress: bool = True, desc: str = "perplexity") -> float:
    """exp(mean NLL) of windows [n, seqlen]; the last batch is padded and its padding ignored."""
    windows = np.asarray(windows, dtype=np.int32)
    n, seqlen = windows.shape
    ctxs, head = block_contexts(cfg, seqlen), head_params(params)
    total = 0.0
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
        batch = windows[start:start + batch_size]
        real = len(batch)
        if real < batch_size and n > batch_size:  # keep one compiled shape
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - real, axis=0)])
        tokens = jnp.asarray(batch)
        per_window = np.asarray(token_nll(cfg, head, final_hidden_states(cfg, params, tokens, ctxs), tokens))
        total += float(per_window[:real].sum())
    return math.exp(total / (n * (seqlen - 1)))
