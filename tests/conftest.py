"""Shared fixtures: tiny random models built offline, and a whitespace tokenizer for data tests."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from neuroal_jax.config import ModelConfig  # noqa: E402


class WordTokenizer:
    """Deterministic stand-in for a HF tokenizer: one id per whitespace-separated word, BOS = 1."""

    def __call__(self, text, verbose=False):
        return {"input_ids": [1] + [2 + (sum(map(ord, w)) % 97) for w in text.split()]}


@pytest.fixture
def word_tokenizer():
    return WordTokenizer()


TINY_LLAMA = ModelConfig(family="llama", vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=256)


@pytest.fixture(scope="session")
def tiny_llama():
    """(config, params) of a 2-block GQA Llama with random weights."""
    from neuroal_jax.models import init_params
    return TINY_LLAMA, init_params(TINY_LLAMA, seed=0, scale=0.1)


@pytest.fixture(scope="session")
def deep_llama(tiny_llama):
    """(config, params) of a 4-block tiny Llama whose weights grow with depth: the block profiles (OWL's outlier
    ratios, DLP's scores, AlphaPruning's α) separate its blocks."""
    import dataclasses

    from neuroal_jax.models import family_of, init_params
    cfg = dataclasses.replace(TINY_LLAMA, num_layers=4)
    params = init_params(cfg, seed=3, scale=0.1)
    for b, block in enumerate(params["blocks"]):
        for name in family_of(cfg).prunable:
            block[name] = {**block[name], "weight": block[name]["weight"] * (1 + 0.4 * b)}
    return cfg, params


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_llama):
    """The tiny Llama exported as a HF folder (no tokenizer)."""
    from converters.hf import export_hf
    out = tmp_path_factory.mktemp("tiny") / "llama"
    export_hf(*tiny_llama, out)
    return out


@pytest.fixture(scope="session")
def tiny_tokens(tmp_path_factory):
    """A 1-D stream of 4096 random token ids saved as .npy."""
    path = tmp_path_factory.mktemp("tokens") / "stream.npy"
    np.save(path, np.random.default_rng(0).integers(0, 128, 4096).astype(np.int64))
    return path
