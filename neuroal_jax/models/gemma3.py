"""Gemma 3 text decoder blocks: scaled embedding, (1 + w) RMSNorms, q/k norms, sandwich norms,
per-layer sliding/full attention with their own RoPE bases, gated GELU-tanh MLP."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..config import ModelConfig
from . import layers as L
from .llama import CONSUMERS, PRUNABLE, attention_shapes, attention_sublayer, gated_mlp, gated_mlp_shapes, top_shapes
from .registry import Family, register_family

SLIDING, FULL = L.SLIDING, L.FULL
#: Gemma3TextConfig defaults for fields a hand-built ModelConfig may leave as None.
#: Gemma3TextConfig's defaults when a config leaves them out.
DEFAULT_QUERY_PRE_ATTN_SCALAR, DEFAULT_LOCAL_BASE, SLIDING_PATTERN = 256, 10000.0, 6
BLOCK_NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
               "post_feedforward_layernorm")


def norm(x, p: dict, eps: float):
    """Gemma RMSNorm: x / rms(x) * (1 + w), in float32."""
    return L.rms_norm(x, p["weight"], eps, offset=1.0)


def attn_scale(cfg: ModelConfig) -> float:
    """Attention logit scale query_pre_attn_scalar ** -0.5 (not head_dim ** -0.5)."""
    scalar = cfg.query_pre_attn_scalar
    return float(DEFAULT_QUERY_PRE_ATTN_SCALAR if scalar is None else scalar) ** -0.5


def block(cfg: ModelConfig, p: dict, x, ctx, qk_norms: bool = True):
    """x[B,T,H] -> sandwich-normed attention and MLP residuals, inputs of every prunable layer; `qk_norms`:
    Gemma 3's per-head q/k norms (Gemma 2 has none)."""
    eps = cfg.norm_eps

    def qk_norm(q, k):  # per head, over head_dim, before RoPE
        return norm(q, p["self_attn.q_norm"], eps), norm(k, p["self_attn.k_norm"], eps)

    h = norm(x, p["input_layernorm"], eps)
    a = attention_sublayer(cfg, p, h, ctx, attn_scale(cfg), qk_norm=qk_norm if qk_norms else None)  # [B,T,nh*D]
    x = x + norm(L.linear(a, p["self_attn.o_proj"]), p["post_attention_layernorm"], eps)
    h2 = norm(x, p["pre_feedforward_layernorm"], eps)
    m, act = gated_mlp(cfg, p, h2)
    inputs = {
        "self_attn.q_proj": h, "self_attn.k_proj": h, "self_attn.v_proj": h, "self_attn.o_proj": a,
        "mlp.gate_proj": h2, "mlp.up_proj": h2, "mlp.down_proj": act,
    }
    return x + norm(m, p["post_feedforward_layernorm"], eps), inputs


def embed(cfg: ModelConfig, params: dict, tokens):
    """Embedding times sqrt(H); HF keeps the scale as a float32 tensor cast to the weight's dtype."""
    w = params["embed"]["weight"]
    factor = jnp.asarray(np.float32(cfg.hidden_size**0.5)).astype(w.dtype)
    return w[tokens] * factor


def final_hidden(cfg: ModelConfig, params: dict, x):
    return norm(x, params["final_norm"], cfg.norm_eps)


def default_layer_types(num_layers: int, pattern: int = SLIDING_PATTERN) -> tuple[str, ...]:
    """HF's default: every `pattern`-th layer full attention, the others sliding."""
    return tuple(FULL if (i + 1) % pattern == 0 else SLIDING for i in range(num_layers))


def layer_types(cfg: ModelConfig) -> tuple[str, ...]:
    """The config's per-layer types, or HF's default pattern."""
    return cfg.layer_types if cfg.layer_types is not None else default_layer_types(cfg.num_layers)


def contexts(cfg: ModelConfig, seqlen: int):
    """One ctx per block: sliding layers (key j visible iff i - window < j <= i) rotate with the local base and
    no scaling, full layers with rope_theta and rope_scaling; the two variants are shared by reference."""
    local_base = DEFAULT_LOCAL_BASE if cfg.rope_local_base_freq is None else cfg.rope_local_base_freq

    def rope(kind):
        if kind == SLIDING:
            return L.rope_tables(seqlen, cfg.head_dim, local_base, None)
        return L.rope_tables(seqlen, cfg.head_dim, cfg.rope_theta, cfg.rope_scaling_dict)

    return L.typed_contexts(layer_types(cfg), seqlen, cfg.sliding_window, rope)


def param_shapes(cfg: ModelConfig) -> dict:
    H, D = cfg.hidden_size, cfg.head_dim
    blocks = {
        **attention_shapes(cfg),
        "self_attn.q_norm": {"weight": (D,)},
        "self_attn.k_norm": {"weight": (D,)},
        **gated_mlp_shapes(cfg),
        **{n: {"weight": (H,)} for n in BLOCK_NORMS},
    }
    return top_shapes(cfg, blocks, {"weight": (H,)})


register_family(Family(
    name="gemma3", block=block, embed=embed, final_hidden=final_hidden, contexts=contexts,
    param_shapes=param_shapes, prunable=PRUNABLE, consumers=CONSUMERS, norm_offset=1.0,
    doc="Gemma 3 text models (Gemma3ForCausalLM, model_type gemma3_text)",
))
