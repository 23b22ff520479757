"""Phi-3 / Phi-3.5 / Phi-4 decoder blocks (Phi3ForCausalLM): Llama's pre-RMSNorm block with fused projections,
each ONE prunable layer under its HF module name:

    self_attn.qkv_proj   rows [q (heads·D); k (kv·D); v (kv·D)]
    mlp.gate_up_proj     rows [gate (I); up (I)], down_proj's input = up · act(gate)

Partial rotary embeddings (partial_rotary_factor), RoPE "default" or "longrope" (short/long factors chosen by the
window length, tables scaled by the attention factor), one sliding window for every layer, no biases.
"""
from __future__ import annotations

from ..config import ModelConfig
from . import layers as L
from . import llama
from .registry import NEXT_BLOCK, Family, register_family

QKV, O, GATE_UP, DOWN = "self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"
#: Forward order (HF registers o_proj before qkv_proj; the first layer must be the one reading the block input).
PRUNABLE = (QKV, O, GATE_UP, DOWN)
CONSUMERS = {QKV: O, O: GATE_UP, GATE_UP: DOWN, DOWN: NEXT_BLOCK}
#: q, k and v rows each line up with o_proj's input columns (with as many kv as query heads); gate and up rows
#: with down_proj's.
ROW_TILES = {QKV: 3, GATE_UP: 2}


def block(cfg: ModelConfig, p: dict, x, ctx):
    eps, I = cfg.norm_eps, cfg.intermediate_size
    nq, nkv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    h = L.rms_norm(x, p["input_layernorm"]["weight"], eps)
    qkv = L.linear(h, p[QKV])
    a = llama.attend(cfg, qkv[..., :nq], qkv[..., nq:nq + nkv], qkv[..., nq + nkv:], ctx, cfg.head_dim**-0.5)
    x = x + L.linear(a, p[O])
    h2 = L.rms_norm(x, p["post_attention_layernorm"]["weight"], eps)
    gate_up = L.linear(h2, p[GATE_UP])
    act = gate_up[..., I:] * L.activation(cfg.hidden_act)(gate_up[..., :I])
    inputs = {QKV: h, O: a, GATE_UP: h2, DOWN: act}
    return x + L.linear(act, p[DOWN]), inputs


def contexts(cfg: ModelConfig, seqlen: int):
    scaling = cfg.rope_scaling_dict
    if scaling is None or scaling.get("rope_type") != "longrope":
        return llama.contexts(cfg, seqlen)
    cos, sin = L.longrope_tables(seqlen, L.rotary_dim(cfg), cfg.rope_theta, scaling, cfg.max_position_embeddings)
    return [{"cos": cos, "sin": sin, "mask": L.causal_mask(seqlen, cfg.sliding_window)}] * cfg.num_layers


def param_shapes(cfg: ModelConfig) -> dict:
    H, I = cfg.hidden_size, cfg.intermediate_size
    nq, nkv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    blocks = {
        QKV: {"weight": (nq + 2 * nkv, H)}, O: {"weight": (H, nq)},
        GATE_UP: {"weight": (2 * I, H)}, DOWN: {"weight": (H, I)},
        "input_layernorm": {"weight": (H,)}, "post_attention_layernorm": {"weight": (H,)},
    }
    return llama.top_shapes(cfg, blocks, {"weight": (H,)})


register_family(Family(
    name="phi3", block=block, embed=llama.embed, final_hidden=llama.final_hidden, contexts=contexts,
    param_shapes=param_shapes, prunable=PRUNABLE, consumers=CONSUMERS, row_tiles=ROW_TILES,
    doc="Phi-3, Phi-3.5 and Phi-4 (Phi3ForCausalLM: fused qkv_proj and gate_up_proj, partial rotary, LongRoPE)",
))
