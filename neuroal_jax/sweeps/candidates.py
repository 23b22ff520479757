"""The sweep's candidates and their alignments: one search pass per step, every metric read from it.

    block  the block step's λs (each the block profile scaled by λ; the paper's profile is depth-linear)
    row    the row step's λs, per-row schedules scaled from δ = aᴰ − aˢ of one block distribution
           (the block λ given, or the block search's pick under the first metric)
    grid   every (block λ, row λ): the row step's λs from δ of each block candidate
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..topups.neuroal.profiles import Profile
from ..topups.neuroal.schedules import block_candidates, row_distribution
from ..topups.neuroal.search import deltas_of, run_step
from .settings import SweepSettings


@dataclass
class Candidates:
    lambda_block: list  # [K] float
    lambda_row: list  # [K] float or None (block step)
    dists: list  # [K] Distribution
    alignment: dict  # {metric: float64[K]}, lower = better aligned
    base: dict  # how the row step's block distribution was chosen ({} for block and grid)
    seconds: float

    @property
    def lambdas(self) -> list[tuple]:
        return list(zip(self.lambda_block, self.lambda_row))


def search_candidates(cfg, params, windows: np.ndarray, sparsity: float, method: str, s: SweepSettings,
                      profile: Profile, progress: bool = True) -> Candidates:
    """Every candidate of step `s.step` (block distributions from `profile`) and its summed alignment under each of
    `s.metrics`, on `windows` (the search windows). The metrics share one pass: each reads the same dense and
    sparse activations."""
    t0 = time.perf_counter()
    kw = dict(metrics=s.metrics, lambda_chunk=s.lambda_chunk, dense_stream=s.dense_stream, progress=progress,
              mesh=s.mesh())
    row_lams = list(s.lambdas_row)

    def block_step():
        dists = block_candidates(cfg, sparsity, s.lambdas_block, profile)
        return run_step(cfg, params, windows, s.lambdas_block, dists, method, desc="sweep: block candidates", **kw)

    def done(lb, lr, dists, alignment, base=None):
        return Candidates(lb, lr, dists, alignment, base or {}, time.perf_counter() - t0)

    if s.step == "block":
        step = block_step()
        return done(list(s.lambdas_block), [None] * len(step.dists), step.dists, step.alignment)
    if s.step == "row":
        if s.lambda_block is not None:
            lb, how = s.lambda_block, "given"
            base_dist = block_candidates(cfg, sparsity, [lb], profile)[0]
            deltas = deltas_of(cfg, params, windows, base_dist, method, **{**kw, "desc": "sweep: δ at the block λ"})
        else:
            step = block_step()
            lb, how = step.best_lambda, f"block search ({step.metric})"
            base_dist, deltas = step.dists[step.choice], step.deltas[step.choice]
        dists = [row_distribution(cfg, base_dist, deltas, lam) for lam in row_lams]
        step = run_step(cfg, params, windows, row_lams, dists, method, desc="sweep: row candidates", **kw)
        return done([lb] * len(dists), row_lams, dists, step.alignment, {"lambda_block": lb, "lambda_block_from": how})
    block = block_step()
    pairs = [(i, lr) for i in range(len(block.dists)) for lr in row_lams]
    dists = [row_distribution(cfg, block.dists[i], block.deltas[i], lr) for i, lr in pairs]
    step = run_step(cfg, params, windows, [lr for _, lr in pairs], dists, method, desc="sweep: grid candidates",
                    **kw)
    return done([block.lambdas[i] for i, _ in pairs], [lr for _, lr in pairs], dists, step.alignment)
