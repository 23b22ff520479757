"""Llama-style decoder blocks: Llama-1/2/3, SmolLM2, Mistral, Qwen2 (pre-RMSNorm, RoPE, GQA, gated MLP)."""
from __future__ import annotations

from ..config import ModelConfig
from . import layers as L
from .registry import NEXT_BLOCK, Family, register_family

PRUNABLE = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
)
CONSUMERS = {
    "self_attn.q_proj": "self_attn.o_proj",
    "self_attn.k_proj": "self_attn.o_proj",
    "self_attn.v_proj": "self_attn.o_proj",
    "self_attn.o_proj": "mlp.gate_proj",
    "mlp.gate_proj": "mlp.down_proj",
    "mlp.up_proj": "mlp.down_proj",
    "mlp.down_proj": NEXT_BLOCK,
}


def attention_sublayer(cfg: ModelConfig, p: dict, h, ctx, scale: float, qk_norm=None):
    """q/k/v projections, optional per-head q/k norm, RoPE, attention. Returns attn [B, T, heads*D]."""
    q, k, v = (L.linear(h, p[f"self_attn.{n}_proj"]) for n in "qkv")
    return attend(cfg, q, k, v, ctx, scale, qk_norm)


def attend(cfg: ModelConfig, q, k, v, ctx, scale: float, qk_norm=None):
    """Projected q [B,T,heads*D], k/v [B,T,kv*D] -> optional per-head q/k norm, RoPE, attention [B,T,heads*D]."""
    q = L.split_heads(q, cfg.num_heads, cfg.head_dim)
    k = L.split_heads(k, cfg.num_kv_heads, cfg.head_dim)
    v = L.split_heads(v, cfg.num_kv_heads, cfg.head_dim)
    if qk_norm is not None:
        q, k = qk_norm(q, k)
    q = L.apply_rope(q, ctx["cos"], ctx["sin"])
    k = L.apply_rope(k, ctx["cos"], ctx["sin"])
    out = L.attention(q, k, v, ctx["mask"], scale, cfg.attn_logit_softcapping)
    return L.merge_heads(out)


def gated_mlp(cfg: ModelConfig, p: dict, h):
    """down(act(gate(h)) * up(h)); returns (out, down's input)."""
    act = L.activation(cfg.hidden_act)(L.linear(h, p["mlp.gate_proj"])) * L.linear(h, p["mlp.up_proj"])
    return L.linear(act, p["mlp.down_proj"]), act


def qk_rms_norm(cfg: ModelConfig, p: dict):
    """Qwen3's per-head RMSNorm of q and k over head_dim (self_attn.q_norm / k_norm), before RoPE."""
    def norm(q, k):
        return (L.rms_norm(q, p["self_attn.q_norm"]["weight"], cfg.norm_eps),
                L.rms_norm(k, p["self_attn.k_norm"]["weight"], cfg.norm_eps))
    return norm


def block(cfg: ModelConfig, p: dict, x, ctx, qk_norm=None):
    """Pre-norm attention and gated MLP; `qk_norm` (e.g. `qk_rms_norm(cfg, p)`) normalises q/k per head."""
    h = L.rms_norm(x, p["input_layernorm"]["weight"], cfg.norm_eps)
    a = attention_sublayer(cfg, p, h, ctx, cfg.head_dim**-0.5, qk_norm=qk_norm)
    x = x + L.linear(a, p["self_attn.o_proj"])
    h2 = L.rms_norm(x, p["post_attention_layernorm"]["weight"], cfg.norm_eps)
    m, act = gated_mlp(cfg, p, h2)
    inputs = {
        "self_attn.q_proj": h, "self_attn.k_proj": h, "self_attn.v_proj": h, "self_attn.o_proj": a,
        "mlp.gate_proj": h2, "mlp.up_proj": h2, "mlp.down_proj": act,
    }
    return x + m, inputs


def embed(cfg: ModelConfig, params: dict, tokens):
    return params["embed"]["weight"][tokens]


def final_hidden(cfg: ModelConfig, params: dict, x):
    return L.rms_norm(x, params["final_norm"]["weight"], cfg.norm_eps)


def contexts(cfg: ModelConfig, seqlen: int):
    cos, sin = L.rope_tables(seqlen, L.rotary_dim(cfg), cfg.rope_theta, cfg.rope_scaling_dict)
    ctx = {"cos": cos, "sin": sin, "mask": L.causal_mask(seqlen, cfg.sliding_window)}
    return [ctx] * cfg.num_layers


def linear_shape(out: int, inp: int, bias: bool) -> dict:
    return {"weight": (out, inp), **({"bias": (out,)} if bias else {})}


def attention_shapes(cfg: ModelConfig, o_name: str = "self_attn.o_proj") -> dict:
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return {
        "self_attn.q_proj": linear_shape(q, cfg.hidden_size, cfg.attention_bias),
        "self_attn.k_proj": linear_shape(kv, cfg.hidden_size, cfg.attention_bias),
        "self_attn.v_proj": linear_shape(kv, cfg.hidden_size, cfg.attention_bias),
        o_name: linear_shape(cfg.hidden_size, q, cfg.o_bias),
    }


def gated_mlp_shapes(cfg: ModelConfig) -> dict:
    H, I, b = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
    return {
        "mlp.gate_proj": linear_shape(I, H, b),
        "mlp.up_proj": linear_shape(I, H, b),
        "mlp.down_proj": linear_shape(H, I, b),
    }


def top_shapes(cfg: ModelConfig, blocks: dict, final_norm: dict) -> dict:
    shapes = {
        "embed": {"weight": (cfg.vocab_size, cfg.hidden_size)},
        "blocks": [blocks] * cfg.num_layers,
        "final_norm": final_norm,
    }
    if not cfg.tie_word_embeddings:
        shapes["lm_head"] = linear_shape(cfg.vocab_size, cfg.hidden_size, cfg.lm_head_bias)
    return shapes


def param_shapes(cfg: ModelConfig) -> dict:
    H = cfg.hidden_size
    norms = {"input_layernorm": {"weight": (H,)}, "post_attention_layernorm": {"weight": (H,)}}
    return top_shapes(cfg, {**attention_shapes(cfg), **gated_mlp_shapes(cfg), **norms}, {"weight": (H,)})


for _name, _doc in [
    ("llama", "Llama-1/2/3, SmolLM2 and other LlamaForCausalLM checkpoints"),
    ("mistral", "Mistral (sliding-window attention)"),
    ("qwen2", "Qwen2 / Qwen2.5 (q/k/v bias)"),
]:
    register_family(Family(
        name=_name, block=block, embed=embed, final_hidden=final_hidden, contexts=contexts,
        param_shapes=param_shapes, prunable=PRUNABLE, consumers=CONSUMERS, doc=_doc,
    ))
