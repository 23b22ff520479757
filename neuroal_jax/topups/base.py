"""What every top-up is: a function `allocate(job: PruneJob) -> Allocation` with a typed options dataclass,
registered once in `TOPUPS` (docs/algorithm.md §4).

An allocation decides how much each layer (or row) is pruned; the base method's scores decide which
weights. `Allocation.refine` optionally rewrites each layer's mask after scoring (DSnoT).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..config import ModelConfig
from ..errors import UsageError
from ..options import NoOptions, Options, Target
from ..pruning.targets import Distribution, Structure, block_distribution, nm_allocation
from ..registry import Registry


@dataclass(frozen=True)
class PruneJob:
    """Everything an allocation may look at."""
    cfg: ModelConfig
    params: dict
    windows: np.ndarray  # calibration windows [n, seqlen]
    sparsity: float
    method: str
    structure: Structure = Structure()
    options: Options | dict | None = None  # the top-up's options: its TopUp.options instance (a dict or None is
    #                                        resolved by calling the TopUp, defaults filled in)
    batch_size: int = 8
    progress: bool = True


@dataclass
class Allocation:
    dist: Distribution
    info: dict = field(default_factory=dict)  # goes into report.json
    refine: Callable | None = None  # (key, W, mask, stats: BlockStats, target) -> mask


@dataclass(frozen=True)
class TopUp:
    """A registered top-up: its allocation function and its options class."""
    name: str
    allocate: Callable[[PruneJob], Allocation]
    options: type[Options] = NoOptions
    nm: str | None = None  # N:M structure: "uniform" (N/M in every row) or "mixed" (a whole N_b per block)

    def resolve(self, options: Options | dict | None, target: Target) -> Options:
        """The options this top-up runs with for `target` (from a dict or an options instance, defaults filled
        in); a ValueError if it cannot run with them."""
        if options is None or isinstance(options, dict):
            options = self.options.from_dict(options, f"top-up {self.name!r}")
        if not isinstance(options, self.options):
            raise TypeError(f"top-up {self.name!r} takes {self.options.__name__}, got {type(options).__name__}")
        if target.structure.kind == "nm" and not self.nm:
            valid = ", ".join(t.name for _, t in TOPUPS.items() if t.nm)
            raise UsageError(f"top-up {self.name!r} does not work with structure {target.structure}, which fixes "
                             f"every row's sparsity; with N:M use one of: {valid}")
        if target.structure.mixed and self.nm != "mixed":
            valid = ", ".join(t.name for _, t in TOPUPS.items() if t.nm == "mixed")
            raise UsageError(f"structure {target.structure} has a fractional mean N, which only a mixed allocation (a "
                             f"whole N per block) meets; top-up {self.name!r} is uniform, use one of: {valid}")
        return options.resolved(target)

    def __call__(self, job: PruneJob) -> Allocation:
        options = self.resolve(job.options, Target(job.method, job.sparsity, job.structure, len(job.windows)))
        return self.allocate(replace(job, options=options))


TOPUPS: Registry[TopUp] = Registry("top-up")


def register_topup(name: str, options: type[Options] = NoOptions, *, nm: str | None = None, override: bool = False):
    """Decorator registering `allocate(job) -> Allocation` as top-up `name` with its options dataclass; `nm`: how it
    works with N:M structure, if it does ("uniform" or "mixed", see TopUp)."""
    def deco(fn):
        TOPUPS.register(name, TopUp(name, fn, options, nm), override=override)
        return fn
    return deco


def get_topup(name: str) -> TopUp:
    return TOPUPS[name]


def clip_sparsity(s: np.ndarray) -> np.ndarray:
    """The reference's guard: sparsity <= 0 → 0.01 and >= 1 → 0.99."""
    s = np.asarray(s, np.float64).copy()
    s[s <= 0] = 0.01
    s[s >= 1] = 0.99
    return s


def block_allocation(cfg: ModelConfig, block_sparsity, structure: Structure) -> tuple[Distribution, dict]:
    """(distribution, report info) of per-block sparsities; with N:M structure a mixed allocation: the whole N_b
    per block nearest M · s_b with the target mean (`nm_allocation`), every layer of block b at N_b / M."""
    if structure.kind != "nm":
        return block_distribution(cfg, block_sparsity), {}
    n = nm_allocation(block_sparsity, structure)
    return block_distribution(cfg, n / structure.m), {"nm_block_n": {str(b): int(v) for b, v in enumerate(n)}}


def minmax_densities(values: np.ndarray, lam: float, sparsity: float) -> np.ndarray:
    """d = minmax(values) * 2λ, recentred so the mean density is 1 - s (float64, as the reference).
    Equal values (nothing to scale) give every entry the density 1 - s."""
    v = np.asarray(values, np.float64)
    span = v.max() - v.min()
    d = (v - v.min()) * (1.0 / span * lam * 2) if span > 0 else np.zeros_like(v)
    return d - np.mean(d) + (1 - sparsity)
