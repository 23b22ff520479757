"""Mask-preserving training, as pure functions: what is trained, the model it gives, the loss, the optimizer
and one jitted step.

The params split in two pytrees: `frozen` (the model as loaded, in its dtype) and `trainable` (float32):
    masked   {"blocks": [{layer: {"weight": W [out, in]}}], ...}   the prunable layers' weights
    lora     {"blocks": [{layer: {"A": [r, in], "B": [out, r]}}], ...}   adapters, B = 0 at the start
plus, with train=("linear", "norms"), every norm module's leaves under the same path as in the params.
`assemble` builds the params the forward uses: a masked layer is where(M, W, 0), a LoRA layer
where(M, W + α/r · B·A, W), so the pruned entries are exactly what they were (0) whatever is trained; and
the gradient and the optimizer's update of a masked weight are cut to M as well, so the trained weights
themselves never move at a pruned entry.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..config import ModelConfig
from ..models import family_of, head_params, prunable_layers, split_key, token_nll
from .settings import FinetuneSettings

F32 = jnp.float32


def is_norm(module: str) -> bool:
    return "norm" in module


# ---------------------------------------------------------------- the split

def block_masks(cfg: ModelConfig, masks: dict) -> list[dict]:
    """{"<b>.<layer>": bool [out, in]} -> [{layer: mask}] per block, on the device."""
    out = [{} for _ in range(cfg.num_layers)]
    for key, m in masks.items():
        b, layer = split_key(key)
        out[b][layer] = jnp.asarray(m, bool)
    return out


def init_trainable(cfg: ModelConfig, params: dict, s: FinetuneSettings) -> dict:
    """The float32 trainable tree of the module docstring; LoRA's A ~ N(0, 1/in) from `s.seed`, B = 0."""
    rng = np.random.default_rng(s.seed)
    blocks = []
    for p in params["blocks"]:
        t = {}
        for layer in prunable_layers(cfg):
            w = p[layer]["weight"]
            if s.mode == "masked":
                t[layer] = {"weight": jnp.asarray(w, F32)}
            else:
                out, inp = w.shape
                t[layer] = {"A": jnp.asarray(rng.standard_normal((s.lora_rank, inp)) / np.sqrt(inp), F32),
                            "B": jnp.zeros((out, s.lora_rank), F32)}
        if "norms" in s.train:
            t.update({m: jax.tree.map(lambda x: jnp.asarray(x, F32), v) for m, v in p.items() if is_norm(m)})
        blocks.append(t)
    trainable = {"blocks": blocks}
    if "norms" in s.train:
        trainable.update({k: jax.tree.map(lambda x: jnp.asarray(x, F32), v) for k, v in params.items()
                          if k != "blocks" and is_norm(k)})
    return trainable


def assemble(frozen: dict, trainable: dict, masks: list[dict], scale: float) -> dict:
    """The params the forward uses (the frozen dtype); pruned entries of every prunable layer are the frozen ones."""
    dtype = frozen["embed"]["weight"].dtype
    blocks = []
    for p, t, m in zip(frozen["blocks"], trainable["blocks"], masks):
        p = dict(p)
        for layer, leaves in t.items():
            if layer not in m:  # a norm module
                p[layer] = jax.tree.map(lambda x: x.astype(dtype), leaves)
            elif "weight" in leaves:
                p[layer] = {**p[layer], "weight": jnp.where(m[layer], leaves["weight"].astype(dtype), 0)}
            else:
                w = p[layer]["weight"]
                delta = scale * (leaves["B"] @ leaves["A"])
                p[layer] = {**p[layer], "weight": jnp.where(m[layer], (w.astype(F32) + delta).astype(dtype), w)}
        blocks.append(p)
    top = {k: jax.tree.map(lambda x: x.astype(dtype), v) for k, v in trainable.items() if k != "blocks"}
    return {**frozen, **top, "blocks": blocks}


def keep_masked(tree: dict, masks: list[dict]) -> dict:
    """Zero the entries of the trainable tree's masked weights (gradients, updates) where the mask is False."""
    blocks = [{layer: ({**leaves, "weight": jnp.where(m[layer], leaves["weight"], 0)}
                       if layer in m and "weight" in leaves else leaves) for layer, leaves in t.items()}
              for t, m in zip(tree["blocks"], masks)]
    return {**tree, "blocks": blocks}


# ---------------------------------------------------------------- loss and optimizer

def loss(cfg: ModelConfig, params: dict, tokens, ctxs: list[dict]):
    """Mean next-token NLL of windows [B, T]; every block is rematerialised in the backward pass
    (jax.checkpoint), so activation memory is one block's plus the block outputs. A mixture of experts runs
    every expert on every token here: its grouped dispatch's loops are not differentiable (models/moe.py)."""
    fam = family_of(cfg)
    cfg = cfg.replace(moe_dispatch="dense") if cfg.num_experts else cfg
    x = fam.embed(cfg, {k: v for k, v in params.items() if k != "blocks"}, tokens)
    for p, ctx in zip(params["blocks"], ctxs):
        x = jax.checkpoint(lambda p, x, ctx: fam.block(cfg, p, x, ctx)[0])(p, x, ctx)
    return token_nll(cfg, head_params(params), x, tokens).sum() / (tokens.shape[0] * (tokens.shape[1] - 1))


def optimizer(s: FinetuneSettings) -> optax.GradientTransformation:
    """AdamW on a warm-up + cosine schedule, global-norm clipping; K micro-batches per step (optax.MultiSteps).
    Weight decay applies to matrices only (not norms)."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, s.lr, s.warmup, max(s.steps, s.warmup + 1),
                                                  end_value=s.lr * s.min_lr_ratio)
    tx = optax.chain(optax.clip_by_global_norm(s.clip),
                     optax.adamw(schedule, weight_decay=s.weight_decay,
                                 mask=lambda t: jax.tree.map(lambda x: x.ndim == 2, t)))
    return optax.MultiSteps(tx, every_k_schedule=s.accumulate)


@partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2, 3))
def train_step(cfg: ModelConfig, s: FinetuneSettings, trainable: dict, opt_state, frozen: dict, masks: list[dict],
               ctxs: list[dict], tokens):
    """One micro-batch: (trainable, opt_state, loss). The trainable tree changes every `accumulate` calls."""
    scale = s.lora_alpha / s.lora_rank

    def objective(t):
        return loss(cfg, assemble(frozen, t, masks, scale), tokens, ctxs)

    value, grads = jax.value_and_grad(objective)(trainable)
    grads = keep_masked(grads, masks)
    updates, opt_state = optimizer(s).update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, keep_masked(updates, masks)), opt_state, value


def merged(frozen: dict, trainable: dict, masks: list[dict], s: FinetuneSettings) -> dict:
    """The trained model as plain params (LoRA merged), in the frozen dtype."""
    return jax.jit(assemble, static_argnums=3)(frozen, trainable, masks, s.lora_alpha / s.lora_rank)
