"""Model zoo: pure forward functions over params pytrees, one registry entry per family.

    logits = forward(cfg, params, tokens)            # [B, T, V]
    y, inputs = block_apply(cfg, params["blocks"][b], x, ctx)  # inputs: {layer: [B, T, in]}
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..config import ModelConfig
from ..errors import UsageError
from . import gemma2, gemma3, llama, moe, opt, phi, phi3, qwen3  # noqa: F401  (registers the families)
from .registry import (
    FAMILIES,
    NEXT_BLOCK,
    ROUTED,
    Family,
    consumer_map,
    family_of,
    get_family,
    layer_key,
    prunable_layers,
    register_family,
    split_key,
)

__all__ = [
    "FAMILIES", "NEXT_BLOCK", "ROUTED", "Family", "consumer_map", "family_of", "get_family", "layer_key",
    "prunable_layers", "register_family", "split_key",
    "block_apply", "block_contexts", "block_output", "embed", "final_hidden_states", "forward", "head_params",
    "hidden_to_logits",
    "token_nll", "init_params", "validate_params",
]


@partial(jax.jit, static_argnums=0)
def block_apply(cfg: ModelConfig, p: dict, x, ctx):
    """One decoder block: (output [B,T,H], {prunable layer: its input [B,T,in]})."""
    return family_of(cfg).block(cfg, p, x, ctx)


@partial(jax.jit, static_argnums=0)
def block_output(cfg: ModelConfig, p: dict, x, ctx):
    """One decoder block's output [B,T,H] alone: XLA then skips, and never holds, the layer inputs (a mixture of
    experts' would be one [B,T,in] per expert layer)."""
    return family_of(cfg).block(cfg, p, x, ctx)[0]


@partial(jax.jit, static_argnums=0)
def _embed(cfg: ModelConfig, top: dict, tokens):
    return family_of(cfg).embed(cfg, top, tokens)


def embed(cfg: ModelConfig, params: dict, tokens):
    """Token embeddings [B, T, H]; only the top-level params are passed in (blocks may be lazy)."""
    return _embed(cfg, {k: v for k, v in params.items() if k != "blocks"}, tokens)


def block_contexts(cfg: ModelConfig, seqlen: int) -> list[dict]:
    """Per-block constants (rope tables, attention masks) for windows of `seqlen` tokens."""
    return family_of(cfg).contexts(cfg, cfg.check_seqlen(seqlen))


def head_params(params: dict) -> dict:
    """The params the LM head needs (final norm, head, and the embedding when tied)."""
    return {k: params[k] for k in ("embed", "final_norm", "lm_head") if k in params}


@partial(jax.jit, static_argnums=0)
def hidden_to_logits(cfg: ModelConfig, head: dict, x):
    """Final norm + LM head (tied to the embedding when the config says so), float32 logits."""
    fam = family_of(cfg)
    h = fam.final_hidden(cfg, head, x)
    w = head["embed"]["weight"] if cfg.tie_word_embeddings else head["lm_head"]["weight"]
    logits = jnp.einsum("...h,vh->...v", h, w, preferred_element_type=jnp.float32)
    if "lm_head" in head and "bias" in head["lm_head"]:
        logits = logits + head["lm_head"]["bias"].astype(jnp.float32)
    if cfg.final_logit_softcapping is not None:
        c = cfg.final_logit_softcapping
        logits = jnp.tanh(logits / c) * c
    return logits


@partial(jax.jit, static_argnums=0)
def token_nll(cfg: ModelConfig, head: dict, x, tokens):
    """Per-window sums [B] of next-token negative log-likelihoods (float32)."""
    logits = hidden_to_logits(cfg, head, x)[:, :-1]
    targets = tokens[:, 1:]
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(logz - picked, axis=-1)


def final_hidden_states(cfg: ModelConfig, params: dict, tokens, ctxs: list[dict] | None = None):
    """Output [B, T, H] of the last block (before the final norm)."""
    tokens = jnp.asarray(tokens)
    x = embed(cfg, params, tokens)
    for p, ctx in zip(params["blocks"], ctxs or block_contexts(cfg, tokens.shape[-1])):
        x = block_output(cfg, p, x, ctx)
    return x


def forward(cfg: ModelConfig, params: dict, tokens):
    """Logits [B, T, V] (float32) of token windows [B, T]."""
    return hidden_to_logits(cfg, head_params(params), final_hidden_states(cfg, params, tokens))


# ---------------------------------------------------------------- shapes, init, validation

def _is_shape(x) -> bool:
    return isinstance(x, tuple) and all(isinstance(i, int) for i in x)


def init_params(cfg: ModelConfig, seed: int = 0, scale: float = 0.02, dtype=np.float32) -> dict:
    """Random params with the family's shapes (norm weights around 1), for tests and benchmarks."""
    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        name = jax.tree_util.keystr(path)
        if "norm" in name and len(shape) == 1:
            base = 1.0 - family_of(cfg).norm_offset
            return (base + 0.1 * rng.standard_normal(shape)).astype(dtype)
        return (scale * rng.standard_normal(shape)).astype(dtype)

    return jax.tree_util.tree_map_with_path(leaf, family_of(cfg).param_shapes(cfg), is_leaf=_is_shape)


def validate_params(cfg: ModelConfig, params: dict, source: str = "params") -> None:
    """Raise a ValueError naming every missing, unexpected or mis-shaped weight."""
    expected = {jax.tree_util.keystr(k): v for k, v in
                jax.tree_util.tree_flatten_with_path(family_of(cfg).param_shapes(cfg), is_leaf=_is_shape)[0]}
    got = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    problems = [f"missing {k} {v}" for k, v in expected.items() if k not in got]
    problems += [f"unexpected {k} {v}" for k, v in got.items() if k not in expected]
    problems += [f"{k} has shape {got[k]}, expected {v}" for k, v in expected.items()
                 if k in got and got[k] != v]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... ({len(problems)} problems)" if len(problems) > 8 else "")
        raise UsageError(f"{source} do not match a {cfg.family} model: {shown}")
