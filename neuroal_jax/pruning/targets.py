"""What to prune and what was pruned: sparsity targets, mask structure, achieved sparsity.

A `Distribution` is {"<block>.<module name>": s} with s a float (one sparsity for the layer) or a float64
vector [out] (one sparsity per row, NeuroAL's row step). Keep counts follow the reference's float64 rules
(docs/algorithm.md §3): a scalar s prunes int(in · s) weights of every row; a row vector keeps
int((1 - s_r) · in) of row r.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ModelConfig
from ..errors import UsageError
from ..models import layer_key, prunable_layers, split_key
from . import masks as M

Distribution = dict  # {"<block>.<module>": float | np.ndarray[out]}


@dataclass(frozen=True)
class Structure:
    """Mask granularity: "row" (default), "layer", or N:M ("2:4" prunes 2 of every 4). N may be fractional
    ("5.6:8"): the parameter-weighted mean of a mixed N:M allocation, whole N_b per block (mixed top-ups only)."""
    kind: str = "row"
    n: float = 0
    m: int = 0

    @classmethod
    def parse(cls, spec: str | None) -> "Structure":
        if spec in (None, "", "row", "unstructured"):
            return cls()
        if spec == "layer":
            return cls("layer")
        try:
            n_text, m_text = spec.split(":")
            n, m = float(n_text), int(m_text)
        except ValueError:
            raise UsageError(f"unknown structure {spec!r}; valid: row, layer, N:M (e.g. 2:4, 4:8, or a mean N for "
                             "a mixed allocation, e.g. 5.6:8)") from None
        if not 0 < n < m:
            raise UsageError(f"N:M structure needs 0 < N < M, got {spec!r}")
        return cls("nm", int(n) if n.is_integer() else n, m)

    @property
    def mixed(self) -> bool:
        """A fractional mean N: only a mixed allocation (whole N_b per block) meets it."""
        return self.kind == "nm" and not float(self.n).is_integer()

    def __str__(self) -> str:
        return f"{self.n:g}:{self.m}" if self.kind == "nm" else self.kind

    def group_pruned(self, target) -> int:
        """N:M: the whole number of weights pruned in every group of M of a layer whose sparsity is `target`."""
        n = float(target) * self.m
        if abs(n - round(n)) > 1e-6 or not 0 < round(n) < self.m:
            raise UsageError(f"structure {self}: layer sparsity {float(target):g} is not a whole N of {self.m} "
                             f"with 0 < N < {self.m}")
        return int(round(n))


def check_sparsity(s: float) -> float:
    if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)) or not 0.0 <= float(s) < 1.0:
        raise UsageError(f"sparsity must be in [0, 1), got {s!r}")
    return float(s)


def layer_keys(cfg: ModelConfig) -> list[str]:
    """All prunable layers, in order: "<block>.<module name>"."""
    return [layer_key(b, name) for b in range(cfg.num_layers) for name in prunable_layers(cfg)]


def prunable_weights(cfg: ModelConfig, blocks) -> dict:
    """{"<block>.<module name>": blocks[b][module]["weight"]} of every prunable layer (arrays, or the shape tuples
    of a family's param_shapes)."""
    return {layer_key(b, name): blocks[b][name]["weight"] for b in range(cfg.num_layers)
            for name in prunable_layers(cfg)}


def uniform_distribution(cfg: ModelConfig, sparsity: float) -> Distribution:
    return {k: float(sparsity) for k in layer_keys(cfg)}


def block_distribution(cfg: ModelConfig, block_sparsity) -> Distribution:
    """Every layer of block b gets block_sparsity[b]."""
    return {layer_key(b, n): float(block_sparsity[b]) for b in range(cfg.num_layers) for n in prunable_layers(cfg)}


def check_nm_mean(structure: Structure, num_blocks: int) -> int:
    """Σ_b N_b of a mixed N:M allocation over `num_blocks` blocks of equal size: the mean N times the blocks,
    which must be whole (a ValueError naming the valid means otherwise)."""
    total = structure.n * num_blocks
    top = (structure.m - 1) * num_blocks
    if abs(total - round(total)) > 1e-6 or not num_blocks <= round(total) <= top:
        raise UsageError(f"structure {structure}: a mean N of {structure.n:g} over {num_blocks} blocks needs "
                         f"Σ N_b = {total:g}, not a whole number from {num_blocks} to {top} (valid: N:{structure.m} "
                         f"with N a multiple of 1/{num_blocks} from 1 to {structure.m - 1}, "
                         f"e.g. {_near_means(structure, num_blocks)})")
    return int(round(total))


def _near_means(structure: Structure, num_blocks: int) -> str:
    lo = max(1.0, np.floor(structure.n * num_blocks) / num_blocks)
    hi = min(structure.m - 1.0, np.ceil(structure.n * num_blocks) / num_blocks)
    return " or ".join(dict.fromkeys(f"{v:g}:{structure.m}" for v in (lo, hi)))


def nm_allocation(block_sparsity, structure: Structure) -> np.ndarray:
    """Whole N_b in [1, M-1] per block (blocks of equal size) closest to M · s_b with Σ N_b = mean N · blocks:
    the floors, then one unit at a time to the block furthest below its target (or from the one furthest
    above it), the first block on ties. A uniform target gives N everywhere."""
    x = np.asarray(block_sparsity, np.float64) * structure.m
    total = check_nm_mean(structure, len(x))
    n = np.clip(np.floor(x + 1e-9), 1, structure.m - 1).astype(np.int64)
    while n.sum() != total:
        step = 1 if n.sum() < total else -1
        room = (n < structure.m - 1) if step > 0 else (n > 1)
        gap = np.where(room, (x - n) * step, -np.inf)
        n[int(np.argmax(gap))] += step
    return n


def keep_and_ties(target, shape) -> tuple[np.ndarray, str]:
    """Per-row keep counts and tie rule of a sparsity target (docs/algorithm.md §3, float64 on host)."""
    out, inp = shape
    if np.ndim(target) == 0:
        return np.full(out, inp - int(inp * float(target)), np.int32), "high"
    vec = np.asarray(target, np.float64)
    if vec.shape != (out,):
        raise UsageError(f"per-row sparsity has shape {vec.shape}, expected ({out},)")
    return M.keep_from_row_sparsity(vec, inp), "low"



# ---------------------------------------------------------------- achieved sparsity

def layer_sparsities(masks: dict) -> tuple[dict, dict]:
    """({key: fraction pruned}, {key: number of weights}) of some layers' masks."""
    return ({k: 1.0 - float(np.mean(np.asarray(m))) for k, m in masks.items()},
            {k: int(np.size(m)) for k, m in masks.items()})


def summarize_sparsity(cfg: ModelConfig, layer: dict, sizes: dict) -> dict:
    """Achieved sparsity: overall (over prunable layers), per layer and per block."""
    blocks = {}
    for b in range(cfg.num_layers):
        ks = [k for k in layer if split_key(k)[0] == b]
        total = sum(sizes[k] for k in ks)
        blocks[str(b)] = sum(layer[k] * sizes[k] for k in ks) / total if total else 0.0
    overall = sum(layer[k] * sizes[k] for k in layer) / max(1, sum(sizes.values()))
    return {"sparsity": overall, "layer_sparsity": layer, "block_sparsity": blocks}


def sparsity_summary(cfg: ModelConfig, masks: dict) -> dict:
    return summarize_sparsity(cfg, *layer_sparsities(masks))
