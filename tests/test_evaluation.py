import math

import numpy as np

from neuroal_jax.evaluation.perplexity import perplexity
from neuroal_jax.models import forward


def _reference_ppl(cfg, params, windows):
    """The reference protocol in NumPy: mean over windows of the mean shifted cross-entropy."""
    nlls = []
    for w in windows:
        logits = np.asarray(forward(cfg, params, w[None]))[0, :-1].astype(np.float64)
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        nlls.append(np.mean(logz - logits[np.arange(len(w) - 1), w[1:]]) * len(w))
    return math.exp(sum(nlls) / (len(windows) * windows.shape[1]))


def test_perplexity_matches_reference_protocol(tiny_llama):
    cfg, params = tiny_llama
    windows = np.random.default_rng(1).integers(0, cfg.vocab_size, (5, 32)).astype(np.int32)
    want = _reference_ppl(cfg, params, windows)
    # batch 2 over 5 windows: the padded last batch must not change the value
    for bs in (1, 2, 8):
        assert abs(perplexity(cfg, params, windows, batch_size=bs, progress=False) - want) / want < 1e-5
