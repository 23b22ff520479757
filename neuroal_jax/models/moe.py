"""Mixture-of-experts decoder blocks: Mixtral, Qwen3-MoE and Qwen2-MoE (Llama-style attention, then a routed MLP).

Each expert's projections are linear layers of their own under the Hub's module names, so each is a prunable layer:

    mixtral     block_sparse_moe.gate [E, H] (router), block_sparse_moe.experts.<e>.w1 / w3 / w2 (gate / up / down)
    qwen3_moe   mlp.gate [E, H] (router), mlp.experts.<e>.gate_proj / up_proj / down_proj; q/k RMSNorm per head
    qwen2_moe   as qwen3_moe (q/k/v bias, no q/k norm) plus mlp.shared_expert.{gate,up,down}_proj on every token,
                scaled by sigmoid(mlp.shared_expert_gate [1, H])

Routing as transformers 5.25: router logits in the model dtype, softmax in float32, top-k, renormalised to sum 1
(mixtral always, qwen when norm_topk_prob); qwen casts the weights back to the model dtype, mixtral keeps float32.
A token's output is the weighted sum over its top-k experts, added in expert order as transformers does.

Dispatch (`cfg.moe_dispatch`): "grouped" runs each expert on its own tokens only, TILE rows at a time (tokens
sorted by expert; a `while` loop per expert whose trip count is its token count), so an expert layer costs its
routed tokens; "dense" runs every expert on every token (the readable baseline; differentiable, which the
grouped loop is not, so fine-tuning uses it). Both give the statistics the down projection's input on the tokens
they need: the routed ones, or every token with `moe_statistics="all"` or when none is routed (the fallback).
The block also returns, under `ROUTED`, each expert layer's routed tokens, which the statistics use
(docs/algorithm.md "Mixture of experts"). Routers are never pruned.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..config import ModelConfig
from . import layers as L
from .llama import (
    attention_shapes,
    attention_sublayer,
    contexts,
    embed,
    final_hidden,
    linear_shape,
    qk_rms_norm,
    top_shapes,
)
from .registry import NEXT_BLOCK, ROUTED, Family, register_family

ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
#: family -> (the MoE module, expert gate / up / down projection names)
NAMES = {
    "mixtral": ("block_sparse_moe", "w1", "w3", "w2"),
    "qwen3_moe": ("mlp", "gate_proj", "up_proj", "down_proj"),
    "qwen2_moe": ("mlp", "gate_proj", "up_proj", "down_proj"),
}
SHARED = "mlp.shared_expert"  # qwen2_moe
#: Rows of one expert matmul in the grouped dispatch.
TILE = 64
#: The values of `ModelConfig.moe_dispatch`.
DISPATCHES = ("grouped", "dense")


def router(cfg: ModelConfig) -> str:
    return f"{NAMES[cfg.family][0]}.gate"


def dense_layers(cfg: ModelConfig) -> tuple[str, ...]:
    """The linear modules of a block that are never pruned: the router, and qwen2_moe's shared-expert gate."""
    return (router(cfg),) + (("mlp.shared_expert_gate",) if cfg.shared_expert_intermediate_size else ())


def expert_layers(cfg: ModelConfig, e: int) -> tuple[str, str, str]:
    """Expert e's (gate, up, down) module names, e.g. "mlp.experts.5.gate_proj"."""
    moe, *projs = NAMES[cfg.family]
    return tuple(f"{moe}.experts.{e}.{proj}" for proj in projs)


def shared_layers(cfg: ModelConfig) -> tuple[str, ...]:
    """The shared expert's (gate, up, down) module names, or () without one."""
    if not cfg.shared_expert_intermediate_size:
        return ()
    return tuple(f"{SHARED}.{proj}" for proj in ("gate_proj", "up_proj", "down_proj"))


def layout(cfg: ModelConfig) -> tuple[tuple[str, ...], dict[str, str]]:
    """(prunable modules, consumer map): attention, then every expert's gate/up/down, then the shared expert's.
    o_proj's rows feed the router and every expert over different tokens: they get the shared expert's gate_proj
    δ (which sees every token) where there is one, and uniform rows (no consumer) otherwise."""
    q, k, v, o = ATTENTION
    consumers = {q: o, k: o, v: o}
    shared = shared_layers(cfg)
    groups = [expert_layers(cfg, e) for e in range(cfg.num_experts)] + ([shared] if shared else [])
    for gate, up, down in groups:
        consumers.update({gate: down, up: down, down: NEXT_BLOCK})
    if shared:
        consumers[o] = shared[0]
    return ATTENTION + tuple(n for g in groups for n in g), consumers


def gated(cfg: ModelConfig, p: dict, h, gate: str, up: str, down: str):
    """down(act(gate(h)) * up(h)); returns (out, down's input)."""
    act = L.activation(cfg.hidden_act)(L.linear(h, p[gate])) * L.linear(h, p[up])
    return L.linear(act, p[down]), act


def route(cfg: ModelConfig, p: dict, h):
    """Routing of h [B,T,H]: (weights [B,T,E], zero outside each token's top-k; routed bool[B,T,E])."""
    logits = L.linear(h, p[router(cfg)])  # [B,T,E] in the model dtype
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    top, idx = jax.lax.top_k(probs, cfg.num_experts_per_tok)  # [B,T,k]
    if cfg.norm_topk_prob:  # mixtral: always (its table sets it)
        top = top / jnp.sum(top, axis=-1, keepdims=True)
    if cfg.family != "mixtral":
        top = top.astype(h.dtype)
    onehot = jax.nn.one_hot(idx, cfg.num_experts, dtype=top.dtype)  # [B,T,k,E]
    return jnp.einsum("btk,btke->bte", top, onehot), jnp.any(onehot > 0, axis=2)


def dense_experts(cfg: ModelConfig, p: dict, h, weights, routed):
    """Every expert on every token of h [N,H]: (out [N,H], [expert e's down-projection input [N,I]])."""
    out, acts = jnp.zeros_like(h), []
    for e in range(cfg.num_experts):
        y, act = gated(cfg, p, h, *expert_layers(cfg, e))
        y = (y * weights[:, e:e + 1]).astype(h.dtype)
        out = out + jnp.where(routed[:, e:e + 1], y, jnp.zeros((), h.dtype))
        acts.append(act)
    return out, acts


def grouped_experts(cfg: ModelConfig, p: dict, h, weights, routed):
    """Each expert on its own tokens of h [N,H], TILE at a time: (out [N,H], [expert e's down input [N,I]], zero
    on the tokens it did not compute). An expert's rows are its routed tokens, or every token when the statistics
    need them (moe_statistics "all", or no token routed to it)."""
    N, k = h.shape[0], cfg.num_experts_per_tok
    # token ids grouped by expert, in token order within an expert: [N·k], then TILE padding ids N
    order = jnp.argsort(~routed.T.reshape(-1), stable=True)[:N * k] % N
    grouped = jnp.concatenate([order, jnp.full((TILE,), N, order.dtype)])
    counts = jnp.sum(routed, axis=0, dtype=jnp.int32)  # [E]
    starts = jnp.cumsum(counts) - counts
    every = cfg.moe_statistics == "all"
    out, acts = jnp.zeros_like(h), []
    for e in range(cfg.num_experts):
        gate, up, down = expert_layers(cfg, e)
        mine = jnp.logical_and(counts[e] > 0, not every)  # rows from `grouped`, else every token
        rows = jnp.where(mine, counts[e], N)

        def tile(i, carry, e=e, mine=mine, rows=rows):
            out, act_all = carry
            j = i * TILE + jnp.arange(TILE)
            tok = jnp.where(mine, jax.lax.dynamic_slice(grouped, (starts[e] + i * TILE,), (TILE,)), j)
            tok = jnp.where(j < rows, tok, N)  # N: a padding row, dropped below
            x = h.at[tok].get(mode="fill", fill_value=0)  # [TILE, H]
            y, act = gated(cfg, p, x, gate, up, down)
            w = weights.at[tok, e].get(mode="fill", fill_value=0)
            keep = routed.at[tok, e].get(mode="fill", fill_value=False)
            y = jnp.where(keep[:, None], (y * w[:, None]).astype(h.dtype), jnp.zeros((), h.dtype))
            return out.at[tok].add(y, mode="drop"), act_all.at[tok].set(act, mode="drop")

        act0 = jnp.zeros((N, cfg.moe_intermediate_size), h.dtype)
        out, act = jax.lax.fori_loop(0, (rows + TILE - 1) // TILE, tile, (out, act0))
        acts.append(act)
    return out, acts


def moe_mlp(cfg: ModelConfig, p: dict, h):
    """The routed MLP on h [B,T,H]: (out [B,T,H], {expert layer: input [B,T,in]}, {expert layer: routed bool[B,T]})."""
    if cfg.moe_dispatch not in DISPATCHES:
        raise ValueError(f"moe_dispatch must be one of {list(DISPATCHES)}, got {cfg.moe_dispatch!r}")
    B, T, H = h.shape
    weights, routed = route(cfg, p, h)
    experts = grouped_experts if cfg.moe_dispatch == "grouped" else dense_experts
    flat, acts = experts(cfg, p, h.reshape(B * T, H), weights.reshape(B * T, -1), routed.reshape(B * T, -1))
    out, inputs, masks = flat.reshape(B, T, H), {}, {}
    for e, act in enumerate(acts):
        gate, up, down = expert_layers(cfg, e)
        inputs.update({gate: h, up: h, down: act.reshape(B, T, -1)})
        masks.update({gate: routed[..., e], up: routed[..., e], down: routed[..., e]})
    if shared_layers(cfg):
        gate, up, down = shared_layers(cfg)
        s, act = gated(cfg, p, h, gate, up, down)
        out = out + jax.nn.sigmoid(L.linear(h, p["mlp.shared_expert_gate"])) * s
        inputs.update({gate: h, up: h, down: act})
    return out, inputs, masks


def block(cfg: ModelConfig, p: dict, x, ctx):
    h = L.rms_norm(x, p["input_layernorm"]["weight"], cfg.norm_eps)
    qk_norm = qk_rms_norm(cfg, p) if cfg.family == "qwen3_moe" else None  # per head, before RoPE
    a = attention_sublayer(cfg, p, h, ctx, cfg.head_dim**-0.5, qk_norm=qk_norm)
    x = x + L.linear(a, p["self_attn.o_proj"])
    h2 = L.rms_norm(x, p["post_attention_layernorm"]["weight"], cfg.norm_eps)
    m, mlp_inputs, routed = moe_mlp(cfg, p, h2)
    inputs = {"self_attn.q_proj": h, "self_attn.k_proj": h, "self_attn.v_proj": h, "self_attn.o_proj": a,
              **mlp_inputs, ROUTED: routed}
    return x + m, inputs


def param_shapes(cfg: ModelConfig) -> dict:
    H, E, I = cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size
    blocks = {**attention_shapes(cfg), router(cfg): {"weight": (E, H)},
              "input_layernorm": {"weight": (H,)}, "post_attention_layernorm": {"weight": (H,)}}
    if cfg.family == "qwen3_moe":
        blocks.update({f"self_attn.{n}": {"weight": (cfg.head_dim,)} for n in ("q_norm", "k_norm")})
    for e in range(E):
        gate, up, down = expert_layers(cfg, e)
        blocks.update({gate: linear_shape(I, H, False), up: linear_shape(I, H, False), down: linear_shape(H, I, False)})
    if shared_layers(cfg):
        S = cfg.shared_expert_intermediate_size
        gate, up, down = shared_layers(cfg)
        blocks.update({gate: linear_shape(S, H, False), up: linear_shape(S, H, False), down: linear_shape(H, S, False),
                       "mlp.shared_expert_gate": {"weight": (1, H)}})
    return top_shapes(cfg, blocks, {"weight": (H,)})


for _name, _doc in [
    ("mixtral", "Mixtral (MixtralForCausalLM): top-k routed experts w1/w3/w2, sliding-window attention"),
    ("qwen3_moe", "Qwen3-MoE (Qwen3MoeForCausalLM): routed experts, q/k RMSNorm"),
    ("qwen2_moe", "Qwen2-MoE (Qwen2MoeForCausalLM): routed experts plus a sigmoid-gated shared expert, q/k/v bias"),
]:
    register_family(Family(
        name=_name, block=block, embed=embed, final_hidden=final_hidden, contexts=contexts,
        param_shapes=param_shapes, layout=layout, doc=_doc,
    ))
