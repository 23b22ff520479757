"""OPT decoder blocks (pre-LayerNorm, learned positions with HF's offset 2, ReLU MLP, tied head)."""
from __future__ import annotations

from ..config import ModelConfig
from . import layers as L
from .llama import linear_shape, top_shapes
from .registry import NEXT_BLOCK, Family, register_family

#: HF's OPTLearnedPositionalEmbedding looks up row position + 2 (rows 0, 1 are never used unpadded).
POSITION_OFFSET = 2

#: Module registration order inside OPTDecoderLayer (what the reference's find_layers yields).
PRUNABLE = (
    "self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj", "self_attn.out_proj", "fc1", "fc2",
)
CONSUMERS = {
    "self_attn.k_proj": "self_attn.out_proj",
    "self_attn.v_proj": "self_attn.out_proj",
    "self_attn.q_proj": "self_attn.out_proj",
    "self_attn.out_proj": "fc1",
    "fc1": "fc2",
    "fc2": NEXT_BLOCK,
}


def self_attention(cfg: ModelConfig, p: dict, h, mask):
    """Multi-head attention without RoPE; q is scaled after its projection, as HF does.

    h[B,T,H] -> merged heads [B,T,H] (the input of out_proj).
    """
    q = L.linear(h, p["self_attn.q_proj"]) * cfg.head_dim**-0.5
    q = L.split_heads(q, cfg.num_heads, cfg.head_dim)  # [B,T,nh,D]
    k = L.split_heads(L.linear(h, p["self_attn.k_proj"]), cfg.num_kv_heads, cfg.head_dim)
    v = L.split_heads(L.linear(h, p["self_attn.v_proj"]), cfg.num_kv_heads, cfg.head_dim)
    return L.merge_heads(L.attention(q, k, v, mask, 1.0))


def block(cfg: ModelConfig, p: dict, x, ctx):
    """x[B,T,H] -> (x + attn(ln(x)), then + fc2(act(fc1(ln(.))))), inputs of every prunable layer."""
    h = L.layer_norm(x, p["self_attn_layer_norm"], cfg.norm_eps)
    a = self_attention(cfg, p, h, ctx["mask"])  # [B,T,H]
    x = x + L.linear(a, p["self_attn.out_proj"])
    h2 = L.layer_norm(x, p["final_layer_norm"], cfg.norm_eps)
    act = L.activation(cfg.hidden_act)(L.linear(h2, p["fc1"]))  # [B,T,I]
    inputs = {
        "self_attn.k_proj": h, "self_attn.v_proj": h, "self_attn.q_proj": h,
        "self_attn.out_proj": a, "fc1": h2, "fc2": act,
    }
    return x + L.linear(act, p["fc2"]), inputs


def embed(cfg: ModelConfig, params: dict, tokens):
    """Token plus learned position embeddings for unpadded windows: tokens[B,T] -> [B,T,H]."""
    cfg.check_seqlen(tokens.shape[-1])  # static under jit
    positions = params["positions"]["weight"][POSITION_OFFSET:POSITION_OFFSET + tokens.shape[-1]]  # [T,H]
    return params["embed"]["weight"][tokens] + positions


def final_hidden(cfg: ModelConfig, params: dict, x):
    return L.layer_norm(x, params["final_norm"], cfg.norm_eps)


def contexts(cfg: ModelConfig, seqlen: int):
    ctx = {"mask": L.causal_mask(seqlen)}
    return [ctx] * cfg.num_layers


def param_shapes(cfg: ModelConfig) -> dict:
    H, I, D = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads * cfg.head_dim
    norm = {"weight": (H,), "bias": (H,)}
    blocks = {
        "self_attn.k_proj": linear_shape(D, H, cfg.attention_bias),
        "self_attn.v_proj": linear_shape(D, H, cfg.attention_bias),
        "self_attn.q_proj": linear_shape(D, H, cfg.attention_bias),
        "self_attn.out_proj": linear_shape(H, D, cfg.o_bias),
        "fc1": linear_shape(I, H, cfg.mlp_bias),
        "fc2": linear_shape(H, I, cfg.mlp_bias),
        "self_attn_layer_norm": norm,
        "final_layer_norm": norm,
    }
    shapes = top_shapes(cfg, blocks, norm)
    shapes["positions"] = {"weight": (cfg.max_position_embeddings + POSITION_OFFSET, H)}
    return shapes


register_family(Family(
    name="opt", block=block, embed=embed, final_hidden=final_hidden, contexts=contexts,
    param_shapes=param_shapes, prunable=PRUNABLE, consumers=CONSUMERS,
    doc="OPT (OPTForCausalLM, pre-LN; not OPT-350m's projected embeddings)",
))
