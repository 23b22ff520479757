"""Block profiles: the per-block shape that NeuroAL's block step scales by λ (docs/algorithm.md §5).

    linear        v_b = b + 1, block 0 densest: the paper (and the reference's arithmetic, bit for bit)
    owl           OWL's outlier ratio of each block: more outliers → denser
    dlp           DLP's importance 1 - s_b / Σ s (s_b the block's mean Wanda score): larger scores → sparser
    alphapruning  minus AlphaPruning's mean ESD exponent α of each block: smaller α → denser

A profile gives one value per block, larger = denser. Every non-linear profile becomes block sparsities the
same way, the OWL/DLP mapping: densities min–max scaled to [0, 2λ], recentred on 1 - s, sparsities clipped as
the block schedule's (≤ 0 → 0.01, ≥ 1 → 0.99). So the OWL profile at λ is `--top-up owl --owl-lambda λ` and
the DLP profile at λ is `--top-up dlp --dlp-alpha λ` (default M and statistic); AlphaPruning's own mapping is
multiplicative and coincides with this one at λ = ε·s / (1 - ε + 2ε·mean(minmax α)). OWL and DLP read the
dense model's activations on every calibration window, as their top-ups do; AlphaPruning reads the weights.

A new profile is one function registered with `@register_profile(name, help)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from ...config import ModelConfig
from ...options import all_of, unique
from ...pruning.statistics import dense_activation_norms
from ...registry import Registry
from ..alphapruning import layer_alphas
from ..base import clip_sparsity, minmax_densities
from ..dlp import DLPOptions, block_importance
from ..owl import OWLOptions, block_outlier_ratios

LINEAR = "linear"


@dataclass
class ProfileInputs:
    """What a profile may read: the dense model and the calibration windows (activations computed once)."""
    cfg: ModelConfig
    params: dict
    windows: np.ndarray
    batch_size: int = 8
    progress: bool = True

    @cached_property
    def norms(self) -> dict:
        return dense_activation_norms(self.cfg, self.params, self.windows, self.batch_size, self.progress)


@dataclass(frozen=True)
class BlockProfile:
    values: Callable[[ProfileInputs], np.ndarray]  # one value per block, larger = denser
    help: str
    schedule: Callable[[np.ndarray, float, float], np.ndarray] | None = None  # (values, s, λ) → block sparsities


BLOCK_PROFILES: Registry[BlockProfile] = Registry("block profile")


def register_profile(name: str, help: str, schedule=None, *, override: bool = False):
    """Decorator registering `values(inputs: ProfileInputs) -> [blocks]` (larger = denser) as profile `name`."""
    def deco(fn):
        BLOCK_PROFILES.register(name, BlockProfile(fn, help, schedule), override=override)
        return fn
    return deco


def minmax_schedule(values: np.ndarray, sparsity: float, lam: float) -> np.ndarray:
    """Block sparsities: densities min–max(values) · 2λ recentred on 1 - s, clipped (OWL's and DLP's mapping)."""
    return clip_sparsity(1 - minmax_densities(values, lam, sparsity))


def block_schedule(num_blocks: int, sparsity: float, lam: float) -> np.ndarray:
    """The linear schedule: block 0 densest, mean density 1 - s; sparsity ≤ 0 → 0.01, ≥ 1 → 0.99 (the reference:
    densities of 1..L, sorted descending)."""
    d = minmax_densities(np.arange(1, num_blocks + 1), lam, sparsity)
    return clip_sparsity(1 - np.sort(d)[::-1])


@dataclass(frozen=True)
class Profile:
    """A profile's values for one model: what the block step's candidates are made of."""
    name: str
    values: np.ndarray

    def block_sparsity(self, sparsity: float, lam: float) -> np.ndarray:
        schedule = BLOCK_PROFILES[self.name].schedule or minmax_schedule
        return schedule(self.values, sparsity, lam)

    def info(self) -> dict:
        return {"block_profile": self.name, "block_profile_values": [float(v) for v in self.values]}


def block_profile(name: str, inputs: ProfileInputs) -> Profile:
    return Profile(name, np.asarray(BLOCK_PROFILES[name].values(inputs), np.float64))


def linear_profile(num_blocks: int) -> Profile:
    return Profile(LINEAR, np.arange(1, num_blocks + 1, dtype=np.float64))


def known_profile(name) -> str | None:
    """An options check: None, or why `name` is not a registered profile."""
    return None if name is None or name in BLOCK_PROFILES else \
        f"is not a registered block profile (valid: {', '.join(BLOCK_PROFILES)})"


# An options check of a list of profile names: None, or why one is unknown or one repeats.
known_profiles = all_of(lambda names: next(filter(None, map(known_profile, names or ())), None), unique)


# ---------------------------------------------------------------- the profiles

@register_profile(LINEAR, "block 0 densest, linearly sparser with depth (the paper)",
                  schedule=lambda values, s, lam: block_schedule(len(values), s, lam))
def _linear(inputs: ProfileInputs) -> np.ndarray:
    return linear_profile(inputs.cfg.num_layers).values


@register_profile("owl", "OWL's outlier ratios (default M): more outliers, denser")
def _owl(inputs: ProfileInputs) -> np.ndarray:
    return block_outlier_ratios(inputs.cfg, inputs.params, inputs.norms, OWLOptions().owl_m)


@register_profile("dlp", "DLP's importance (default statistic): larger mean |W|·‖X‖, sparser")
def _dlp(inputs: ProfileInputs) -> np.ndarray:
    return block_importance(inputs.cfg, inputs.params, inputs.norms, DLPOptions().dlp_statistic)[1]


@register_profile("alphapruning", "AlphaPruning's mean ESD α per block: smaller α, denser")
def _alphapruning(inputs: ProfileInputs) -> np.ndarray:
    return -layer_alphas(inputs.cfg, inputs.params)[2]
