"""NeuroAL's candidates: the λ grids and the distribution each λ gives (docs/algorithm.md §5–6), on the host in
float64 as the reference.

    block step   a block profile scaled by λ (default: depth-linear), every layer of a block gets its sparsity
    row step     per-row sparsities from δ = aᴰ − aˢ of each row's consumer, min–max scaled to [0, 2λ]
"""
from __future__ import annotations

import numpy as np

from ...config import ModelConfig
from ...models import NEXT_BLOCK, consumer_map, family_of, layer_key, prunable_layers, split_key
from ...pruning.targets import Distribution, Structure
from ..base import block_allocation
from .profiles import Profile, linear_profile

BLOCK_LAMBDAS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.12, 0.15, 0.20, 0.25)
ROW_LAMBDAS = (0.00, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.12, 0.15, 0.20, 0.25)


def default_block_lambdas(sparsity: float) -> tuple[float, ...]:
    return BLOCK_LAMBDAS if sparsity < 0.8 else BLOCK_LAMBDAS[:-1]


# ---------------------------------------------------------------- the block step

def block_candidates(cfg: ModelConfig, sparsity: float, lambdas, profile: Profile | None = None,
                     structure: Structure = Structure()) -> list[Distribution]:
    """The block step's candidate distributions, one per λ, from a block profile (default: linear); with N:M
    structure each is a mixed allocation (whole N_b per block)."""
    profile = profile or linear_profile(cfg.num_layers)
    return [block_allocation(cfg, profile.block_sparsity(sparsity, lam), structure)[0] for lam in lambdas]


def distinct(lambdas, dists: list) -> tuple[tuple, list]:
    """The candidates whose distribution no earlier λ has (N:M rounds neighbouring λs to the same allocation)."""
    seen, keep = set(), []
    for i, d in enumerate(dists):
        key = tuple(sorted(d.items()))
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return tuple(lambdas[i] for i in keep), [dists[i] for i in keep]


# ---------------------------------------------------------------- the row step

def row_schedule(delta: np.ndarray, layer_sparsity: float, lam: float) -> np.ndarray:
    """Rows whose consumer lost more activation (larger δ) are pruned less; mean density 1 - s.
    The same min–max scaling as `minmax_densities`, but in the reference's row-step arithmetic (it divides by
    the span where its OWL and block-step code multiply by the reciprocal): per-row keep counts truncate, so the
    last float64 bit matters."""
    g = np.asarray(delta, np.float32).astype(np.float64)
    g = (g - g.min()) / (g.max() - g.min()) * lam * 2
    g -= np.mean(g) - (1 - layer_sparsity)
    return np.clip(1 - g, 0.01, 0.99)


def row_deltas(cfg: ModelConfig, deltas: dict) -> dict:
    """{key: δ for its rows or None (uniform rows)} via the family's consumer map (docs/algorithm.md §6); a fused
    layer's rows (`Family.row_tiles`) take its consumer's δ once per stacked part."""
    names, consumers, tiles = prunable_layers(cfg), consumer_map(cfg), family_of(cfg).row_tiles
    attn_out = consumers[names[0]]  # the attention output projection
    # grouped-query attention: k/v rows differ from o_proj's inputs, so q, k, v keep uniform rows
    gqa = cfg.num_kv_heads != cfg.num_heads
    uniform = {n for n in names if consumers.get(n) == attn_out} if gqa else set()
    out = {}
    for b in range(cfg.num_layers):
        for name in names:
            consumer = consumers.get(name)
            if b == cfg.num_layers - 1 or consumer is None or name in uniform:
                out[layer_key(b, name)] = None
            elif consumer == NEXT_BLOCK:
                out[layer_key(b, name)] = deltas[layer_key(b + 1, names[0])]
            else:
                out[layer_key(b, name)] = deltas[layer_key(b, consumer)]
            delta = out[layer_key(b, name)]
            if delta is not None and tiles.get(name, 1) > 1:  # a fused layer: δ once per stacked part
                out[layer_key(b, name)] = np.tile(np.asarray(delta), tiles[name])
    return out


def row_distribution(cfg: ModelConfig, base: Distribution, deltas: dict, lam: float) -> Distribution:
    """Per-row sparsity vectors for every layer (uniform rows where δ is absent, sums to 0 or is constant)."""
    dist = {}
    for key, delta in row_deltas(cfg, deltas).items():
        rows = _out_features(cfg, key)
        s = float(base[key])
        if delta is None or np.sum(delta, dtype=np.float32) == 0 or np.ptp(delta) == 0:
            dist[key] = np.full(rows, s, np.float64)
        else:
            dist[key] = row_schedule(delta, s, lam)
    return dist


def _out_features(cfg: ModelConfig, key: str) -> int:
    b, name = split_key(key)
    return family_of(cfg).param_shapes(cfg)["blocks"][b][name]["weight"][0]
