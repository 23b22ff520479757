"""Qwen3 decoder blocks: Llama's pre-RMSNorm block with a per-head RMSNorm of q and k (over head_dim, before
RoPE), head_dim from the config, q/k/v/o bias only where attention_bias says so, and optional per-layer sliding
windows (config.layer_types)."""
from __future__ import annotations

from ..config import ModelConfig
from . import layers as L
from . import llama
from .registry import Family, register_family


def block(cfg: ModelConfig, p: dict, x, ctx):
    return llama.block(cfg, p, x, ctx, qk_norm=llama.qk_rms_norm(cfg, p))


def contexts(cfg: ModelConfig, seqlen: int):
    """One ctx per block: the layers of type "sliding_attention" see the last `sliding_window` keys."""
    types = cfg.layer_types if cfg.layer_types is not None else (L.FULL,) * cfg.num_layers

    def rope(kind):
        return L.rope_tables(seqlen, L.rotary_dim(cfg), cfg.rope_theta, cfg.rope_scaling_dict)

    return L.typed_contexts(types, seqlen, cfg.sliding_window, rope)


def param_shapes(cfg: ModelConfig) -> dict:
    shapes = llama.param_shapes(cfg)
    D = cfg.head_dim
    norms = {"self_attn.q_norm": {"weight": (D,)}, "self_attn.k_norm": {"weight": (D,)}}
    return {**shapes, "blocks": [{**b, **norms} for b in shapes["blocks"]]}


register_family(Family(
    name="qwen3", block=block, embed=llama.embed, final_hidden=llama.final_hidden, contexts=contexts,
    param_shapes=param_shapes, prunable=llama.PRUNABLE, consumers=llama.CONSUMERS,
    doc="Qwen3 (Qwen3ForCausalLM: q/k RMSNorm per head, optional per-layer sliding windows)",
))
