"""Sparsity allocation ("top-up") methods: one signature, one registry (SPEC §4).

    allocation(job: PruneJob) -> Allocation

An allocation decides how much each layer (or row) is pruned; the base method's scores decide
which weights. `Allocation.refine` optionally rewrites each layer's mask after scoring (DSnoT).
NeuroAL registers itself here too (see `neuroal_jax.search`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from .config import ModelConfig
from .options import NoOptions, Options, Target, in_range, option, positive
from .pruning import (Distribution, Structure, block_distribution, dense_activation_norms,
                      uniform_distribution)
from .registry import Registry


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
    nm: bool = False  # works with N:M structure (which fixes every row's sparsity at N/M)

    def resolve(self, options: Options | dict | None, target: Target) -> Options:
        """The options this top-up runs with for `target` (from a dict or an options instance, defaults filled
        in); a ValueError if it cannot run with them."""
        if options is None or isinstance(options, dict):
            options = self.options.from_dict(options, self.name)
        if not isinstance(options, self.options):
            raise TypeError(f"top-up {self.name!r} takes {self.options.__name__}, got {type(options).__name__}")
        if target.structure.kind == "nm" and not self.nm:
            valid = ", ".join(t.name for _, t in TOPUPS.items() if t.nm)
            raise ValueError(f"top-up {self.name!r} does not work with structure {target.structure}, which fixes "
                             f"every row's sparsity; with N:M use one of: {valid}")
        return options.resolved(target)

    def __call__(self, job: PruneJob) -> Allocation:
        options = self.resolve(job.options, Target(job.method, job.sparsity, job.structure, len(job.windows)))
        return self.allocate(replace(job, options=options))


TOPUPS: Registry[TopUp] = Registry("top-up")


def register_topup(name: str, options: type[Options] = NoOptions, *, nm: bool = False, override: bool = False):
    """Decorator registering `allocate(job) -> Allocation` as top-up `name` with its options dataclass."""
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


def minmax_densities(values: np.ndarray, lam: float, sparsity: float) -> np.ndarray:
    """d = minmax(values) * 2λ, recentred so the mean density is 1 - s (float64, as the reference).
    Equal values (nothing to scale) give every entry the density 1 - s."""
    v = np.asarray(values, np.float64)
    span = v.max() - v.min()
    d = (v - v.min()) * (1.0 / span * lam * 2) if span > 0 else np.zeros_like(v)
    return d - np.mean(d) + (1 - sparsity)


@register_topup("uniform", nm=True)
def uniform(job: PruneJob) -> Allocation:
    return Allocation(uniform_distribution(job.cfg, job.sparsity))


def outlier_ratio(scores: list[np.ndarray], m: float) -> float:
    """Percent of pooled scores above m × their mean."""
    flat = np.concatenate([np.asarray(s, np.float32).ravel() for s in scores])
    return float(np.mean(flat > m * flat.mean(dtype=np.float32))) * 100


@dataclass(frozen=True)
class OWLOptions(Options):
    owl_m: float = option(5.0, "OWL: outlier threshold M (a Wanda score above M × the mean of its block is an "
                               "outlier)", check=positive, metavar="M")
    owl_lambda: float = option(0.08, "OWL: λ, the half-range of the block densities around 1 - sparsity",
                               check=in_range(0.0, 1.0), metavar="λ")


@register_topup("owl", OWLOptions)
def owl(job: PruneJob) -> Allocation:
    """OWL: blocks with more outlier Wanda scores (on the dense model's stream) are pruned less."""
    from .models import family_of
    m, lam = job.options.owl_m, job.options.owl_lambda
    norms = dense_activation_norms(job.cfg, job.params, job.windows, job.batch_size, job.progress)
    ratios = []
    for b, block in enumerate(job.params["blocks"]):
        scores = [np.abs(np.asarray(block[n]["weight"], np.float32)) * norms[f"{b}.{n}"][None, :]
                  for n in family_of(job.cfg).prunable]
        ratios.append(outlier_ratio(scores, m))
    block_sparsity = clip_sparsity(1 - minmax_densities(np.array(ratios), lam, job.sparsity))
    info = {"owl_outlier_ratios": {str(b): r for b, r in enumerate(ratios)},
            "owl_block_sparsity": {str(b): float(s) for b, s in enumerate(block_sparsity)},
            "owl_m": m, "owl_lambda": lam}
    if max(ratios) == min(ratios):
        info["owl_note"] = (f"every block has the same outlier ratio ({ratios[0]:g} %) at M = {m:g}, "
                            "so the allocation is uniform")
    return Allocation(block_distribution(job.cfg, block_sparsity), info)

from . import alphapruning, dsnot  # noqa: E402,F401  (register the "alphapruning" and "dsnot" top-ups)
