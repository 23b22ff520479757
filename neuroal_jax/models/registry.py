"""The model-family registry.

A family is a handful of pure functions over a params pytree plus the static facts the
pruning code needs: the ordered prunable linear layers of a block (HF module names) and the
consumer map of docs/algorithm.md §6 (whose input columns give each layer's rows their δ). A prunable
layer is named everywhere by its key "<block>.<module>" (`layer_key`, `split_key`).

Params pytree (weights in PyTorch (out, in) layout):
    {"embed": {"weight": [V, H]}, "positions": {...} (OPT only),
     "blocks": [ {"<HF module name inside the block>": {"weight": ..., "bias": ...}, ...} ],
     "final_norm": {"weight": ..., "bias"?: ...}, "lm_head": {...} (absent when tied)}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..config import ModelConfig
from ..registry import Registry

#: Marker in a consumer map: the rows are consumed by the *next* block's first prunable layer.
NEXT_BLOCK = "<next block>"
#: Key in a block's `inputs` of a mixture-of-experts block: {expert layer: bool[B, T] tokens routed to it}; the
#: statistics (pruning/statistics.py) read each expert layer's input over those tokens only.
ROUTED = "<routed>"

BlockFn = Callable  # (cfg, block_params, x[B,T,H], ctx) -> (y[B,T,H], {layer: input[B,T,in]} (+ ROUTED for MoE))


@dataclass(frozen=True)
class Family:
    name: str
    block: BlockFn
    embed: Callable  # (cfg, params, tokens[B,T]) -> x[B,T,H]
    final_hidden: Callable  # (cfg, params, x) -> normed x
    contexts: Callable  # (cfg, seqlen) -> [ctx for each block] (rope tables, masks)
    param_shapes: Callable  # cfg -> pytree of shape tuples (the expected params)
    prunable: tuple[str, ...] = ()
    consumers: dict[str, str] = field(default_factory=dict)
    doc: str = ""
    #: cfg -> (prunable, consumers), for families whose layers depend on the config (one set per expert);
    #: None: the static `prunable` and `consumers` above.
    layout: Callable | None = None
    #: Fused layers: {module: k} when its rows are k stacked parts, each lined up with its consumer's input
    #: columns (Phi-3's gate_up_proj: 2, qkv_proj: 3); row i of part j takes the δ of column i (docs/algorithm.md §6).
    row_tiles: dict[str, int] = field(default_factory=dict)
    #: Norm weights are stored as w - norm_offset (Gemma's RMSNorm computes x · (1 + w)): random init centres them
    #: at 1 - norm_offset.
    norm_offset: float = 0.0


FAMILIES: Registry[Family] = Registry("model family")


def register_family(family: Family, override: bool = False) -> Family:
    return FAMILIES.register(family.name, family, override=override)


def get_family(name: str) -> Family:
    return FAMILIES[name]


def family_of(cfg: ModelConfig) -> Family:
    return get_family(cfg.family)


def prunable_layers(cfg: ModelConfig) -> tuple[str, ...]:
    """The ordered prunable module names of every block of `cfg`'s model."""
    fam = family_of(cfg)
    return fam.layout(cfg)[0] if fam.layout is not None else fam.prunable


def consumer_map(cfg: ModelConfig) -> dict[str, str]:
    """{prunable module: the module whose input columns are its rows} (docs/algorithm.md §6)."""
    fam = family_of(cfg)
    return fam.layout(cfg)[1] if fam.layout is not None else fam.consumers


# ---------------------------------------------------------------- layer keys

def layer_key(block: int, module: str) -> str:
    """The key of one prunable layer in distributions, masks and reports: "<block>.<module>", e.g. "3.mlp.down_proj"."""
    return f"{block}.{module}"


def split_key(key: str) -> tuple[int, str]:
    """(block, module) of a `layer_key`; a block key "<block>" gives (block, "")."""
    block, _, module = str(key).partition(".")
    return int(block), module
