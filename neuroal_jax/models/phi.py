"""Phi-2 decoder blocks: one LayerNorm feeding parallel attention (partial RoPE) and MLP, biases everywhere."""
from __future__ import annotations

from ..config import ModelConfig
from . import layers as L
from .llama import attention_shapes, attention_sublayer, linear_shape, top_shapes
from .llama import contexts as llama_contexts
from .registry import NEXT_BLOCK, Family, register_family

PRUNABLE = (
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense", "mlp.fc1", "mlp.fc2",
)
CONSUMERS = {
    "self_attn.q_proj": "self_attn.dense",
    "self_attn.k_proj": "self_attn.dense",
    "self_attn.v_proj": "self_attn.dense",
    "self_attn.dense": "mlp.fc1",
    "mlp.fc1": "mlp.fc2",
    "mlp.fc2": NEXT_BLOCK,
}


def block(cfg: ModelConfig, p: dict, x, ctx):
    """x[B,T,H] -> attn(ln(x)) + mlp(ln(x)) + x (HF's summation order), inputs of every prunable layer."""
    h = L.layer_norm(x, p["input_layernorm"], cfg.norm_eps)
    a = attention_sublayer(cfg, p, h, ctx, cfg.head_dim**-0.5)  # [B,T,nh*D]; RoPE on the first rotary dims
    act = L.activation(cfg.hidden_act)(L.linear(h, p["mlp.fc1"]))  # [B,T,I]
    y = (L.linear(a, p["self_attn.dense"]) + L.linear(act, p["mlp.fc2"])) + x
    inputs = {
        "self_attn.q_proj": h, "self_attn.k_proj": h, "self_attn.v_proj": h, "self_attn.dense": a,
        "mlp.fc1": h, "mlp.fc2": act,
    }
    return y, inputs


def embed(cfg: ModelConfig, params: dict, tokens):
    return params["embed"]["weight"][tokens]


def final_hidden(cfg: ModelConfig, params: dict, x):
    return L.layer_norm(x, params["final_norm"], cfg.norm_eps)


def param_shapes(cfg: ModelConfig) -> dict:
    H, I = cfg.hidden_size, cfg.intermediate_size
    norm = {"weight": (H,), "bias": (H,)}
    blocks = {
        **attention_shapes(cfg, "self_attn.dense"),
        "mlp.fc1": linear_shape(I, H, cfg.mlp_bias),
        "mlp.fc2": linear_shape(H, I, cfg.mlp_bias),
        "input_layernorm": norm,
    }
    return top_shapes(cfg, blocks, norm)


register_family(Family(
    name="phi", block=block, embed=embed, final_hidden=final_hidden, contexts=llama_contexts,
    param_shapes=param_shapes, prunable=PRUNABLE, consumers=CONSUMERS,
    doc="Phi-2 / Phi-1.5 (PhiForCausalLM: parallel attention + MLP, partial rotary)",
))
