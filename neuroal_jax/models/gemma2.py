"""Gemma 2 decoder blocks: Gemma 3's block without the q/k norms (scaled embedding, (1 + w) RMSNorms, sandwich
norms, query_pre_attn_scalar, gated GELU-tanh MLP), attention-logit and final-logit soft-capping, and alternating
sliding/full attention layers that share one RoPE."""
from __future__ import annotations

from ..config import ModelConfig
from . import gemma3
from . import layers as L
from .llama import CONSUMERS, PRUNABLE, attention_shapes, gated_mlp_shapes, top_shapes
from .registry import Family, register_family

#: Gemma2Config's default: even layers sliding, odd layers full.
SLIDING_PATTERN = 2


def block(cfg: ModelConfig, p: dict, x, ctx):
    return gemma3.block(cfg, p, x, ctx, qk_norms=False)


def layer_types(cfg: ModelConfig) -> tuple[str, ...]:
    return cfg.layer_types if cfg.layer_types is not None else gemma3.default_layer_types(cfg.num_layers,
                                                                                          SLIDING_PATTERN)


def contexts(cfg: ModelConfig, seqlen: int):
    def rope(kind):
        return L.rope_tables(seqlen, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling_dict)

    return L.typed_contexts(layer_types(cfg), seqlen, cfg.sliding_window, rope)


def param_shapes(cfg: ModelConfig) -> dict:
    H = cfg.hidden_size
    blocks = {**attention_shapes(cfg), **gated_mlp_shapes(cfg), **{n: {"weight": (H,)} for n in gemma3.BLOCK_NORMS}}
    return top_shapes(cfg, blocks, {"weight": (H,)})


register_family(Family(
    name="gemma2", block=block, embed=gemma3.embed, final_hidden=gemma3.final_hidden, contexts=contexts,
    param_shapes=param_shapes, prunable=PRUNABLE, consumers=CONSUMERS, norm_offset=1.0,
    doc="Gemma 2 (Gemma2ForCausalLM: soft-capping, alternating sliding/full attention, sandwich norms)",
))
