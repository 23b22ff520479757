"""NeuroAL's search: choose block λ and/or row λ by neuron alignment (docs/algorithm.md §5–6).

    block step   candidates: a block profile (default: depth-linear) scaled by each λ of the block grid;
                 the candidate whose pruned model's activations stay best aligned with the dense ones wins
    row step     from the block step's choice and its δ = aᴰ − aˢ: per-row sparsities scaled by each λ of the
                 row grid; the best-aligned candidate wins again

Read the parts in this order, each builds on the ones before:

    schedules.py    the candidates: λ grids, block distributions, row distributions from δ
    kernel.py       one block, every candidate: dense pass, masks, sparse pass, alignment (jitted)
    candidates.py   evaluating a set of candidates block by block (chunking, sharding over devices)
    settings.py     the options (SearchSettings) and their checks
    search.py       this driver: one step, the two steps in order, the registered top-up
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ...config import ModelConfig
from ...errors import AllocationWarning
from ...models import layer_key, prunable_layers
from ...options import Target
from ...pruning.methods import check_method
from ...pruning.targets import Distribution, Structure, block_distribution
from ..base import Allocation, PruneJob, register_topup
from .candidates import evaluate_candidates, resolve_chunk
from .output_metrics import split_metrics
from .picks import margin, near_tie, pick, runner_up
from .profiles import Profile, ProfileInputs, block_profile
from .schedules import block_candidates, distinct, row_distribution
from .settings import SearchSettings

# ---------------------------------------------------------------- one step: every candidate, the best one

@dataclass
class StepResult:
    lambdas: tuple
    dists: list  # one Distribution per candidate
    alignment: dict  # {metric: [K] summed alignment}
    per_layer: dict  # {alignment metric: {key: [K]}} alignment per layer (none for an output metric)
    deltas: list  # per candidate {key: δ = aᴰ − aˢ [in]}
    metric: str  # the metric whose argmin is the choice
    seconds: float = 0.0
    chunk: int = 0  # candidates run at a time
    profiles: tuple = ()  # block step with several block profiles: each candidate's profile
    choice: int = field(init=False)

    def __post_init__(self):
        self.choice = pick(self.alignment[self.metric])

    @property
    def totals(self) -> np.ndarray:
        return self.alignment[self.metric]

    @property
    def best_lambda(self) -> float:
        return float(self.lambdas[self.choice])

    def label(self, i: int) -> str:
        """"λ 0.1", or "owl λ 0.1" with several profiles."""
        return (f"{self.profiles[i]} " if self.profiles else "") + f"λ {self.lambdas[i]:g}"

    def decisiveness(self) -> dict:
        """The pick's margin to the runner-up, the runner-up's λ (and profile) and whether it is a near-tie."""
        second, gap = runner_up(self.totals), margin(self.totals)
        out = {"margin": gap, "runner_up": None if second is None else float(self.lambdas[second]),
               "near_tie": near_tie(gap)}
        if self.profiles and second is not None:
            out["runner_up_profile"] = self.profiles[second]
        return out

    def near_tie_note(self, step: str) -> str | None:
        d = self.decisiveness()
        if not d["near_tie"]:
            return None
        return (f"NeuroAL's {step} step picked {self.label(self.choice)} by {self.metric}, a near-tie: "
                f"{self.label(runner_up(self.totals))} is within {d['margin']:.2%} of it; another CPU's rounding or "
                "other calibration windows may pick it instead (docs/selection.md, Margins)")


def run_step(cfg, params, windows, lambdas, dists, method, metrics=("neuron",), **kw) -> StepResult:
    """Evaluate one step's candidates under `metrics`; the first metric makes the choice."""
    t0 = time.perf_counter()
    kw["lambda_chunk"] = resolve_chunk(kw.get("lambda_chunk"), len(dists), cfg, *np.shape(windows),
                                       params["embed"]["weight"].dtype.itemsize, kw.get("mesh"),
                                       bool(split_metrics(metrics)[1]))
    totals, per_layer, deltas = evaluate_candidates(cfg, params, windows, dists, method, metrics, **kw)
    return StepResult(tuple(lambdas), dists, totals, per_layer, deltas, metrics[0], time.perf_counter() - t0,
                      kw["lambda_chunk"])


def deltas_of(cfg, params, windows, dist: Distribution, method: str, **kw) -> dict:
    """δ = aᴰ − aˢ per layer {key: [in]} of one distribution: what the row step scales (output metrics, which it
    does not need, left out)."""
    kw["metrics"] = split_metrics(kw.get("metrics", ("neuron",)))[0]
    return evaluate_candidates(cfg, params, windows, [dist], method, **kw)[2][0]


# ---------------------------------------------------------------- the two steps

@dataclass
class SearchResult:
    dist: Distribution
    block: StepResult | None
    row: StepResult | None
    seconds: float
    profile: Profile | None = None  # the block step's profile

    def info(self) -> dict:
        def curve(step):  # one record per candidate: λ exactly as searched (and its profile, when several)
            if step is None:
                return None
            return [{**({"block_profile": step.profiles[i]} if step.profiles else {}), "lambda": float(lam),
                     "alignment": float(v)} for i, (lam, v) in enumerate(zip(step.lambdas, step.totals))]

        def layers(step):  # none for an output metric: one value per candidate
            if step is None or step.metric not in step.per_layer:
                return None
            return {k: float(v[step.choice]) for k, v in step.per_layer[step.metric].items()}

        def decisiveness(step, name):
            return {f"{k}_{name}": v for k, v in ({} if step is None else step.decisiveness()).items()}

        return {
            "lambda_block": None if self.block is None else self.block.best_lambda,
            "lambda_row": None if self.row is None else self.row.best_lambda,
            "alignment_block": curve(self.block), "alignment_row": curve(self.row),
            "alignment_layers_block": layers(self.block), "alignment_layers_row": layers(self.row),
            "search_seconds": self.seconds,
            "lambda_chunk_block": None if self.block is None else self.block.chunk,
            "lambda_chunk_row": None if self.row is None else self.row.chunk,
            **decisiveness(self.block, "block"), **decisiveness(self.row, "row"),
            **({} if self.profile is None else self.profile.info()),
        }


def neuroal_search(cfg: ModelConfig, params: dict, windows: np.ndarray, sparsity: float, method: str,
                   settings: SearchSettings = SearchSettings(), progress: bool = True,
                   structure: Structure = Structure(), batch_size: int = 8) -> SearchResult:
    """Choose block λ and/or row λ on the first `search_samples` windows (docs/algorithm.md §5–6). A block profile
    other than linear reads the dense model on all `windows` (in batches of `batch_size`), as its top-up does.
    With N:M structure, the block step's candidates are mixed N:M allocations, one per distinct allocation."""
    check_method(method)
    settings = settings.resolved(Target(method, sparsity, structure, len(windows)))
    t0 = time.perf_counter()
    win = np.asarray(windows)[:settings.search_samples]
    kw = dict(metrics=(settings.alignment,), lambda_chunk=settings.lambda_chunk,
              dense_stream=settings.dense_stream, progress=progress, mesh=settings.mesh(), structure=structure)
    block = row = profile = None
    if settings.neuroal_step in ("block", "both"):
        block, profile = block_step(cfg, params, windows, win, sparsity, method, settings, structure, batch_size,
                                    progress, kw)
        dist, deltas = block.dists[block.choice], block.deltas[block.choice]
    if settings.neuroal_step in ("row", "both"):
        if block is None:  # δ of the uniform distribution (the reference's λ = 0 block schedule)
            dist = (block_candidates(cfg, sparsity, [0.0])[0] if cfg.num_layers > 1
                    else block_distribution(cfg, [sparsity]))
            deltas = deltas_of(cfg, params, win, dist, method, **{**kw, "desc": "uniform δ"})
        lams = settings.lambdas_row
        dists = [row_distribution(cfg, dist, deltas, lam) for lam in lams]
        row = run_step(cfg, params, win, lams, dists, method, desc="NeuroAL row step", **kw)
        dist = row.dists[row.choice]
    return SearchResult(dist, block, row, time.perf_counter() - t0, profile)


def block_step(cfg, params, windows, win, sparsity, method, settings, structure, batch_size, progress,
               kw) -> tuple[StepResult, Profile]:
    """The block step over every profile's λ candidates, pooled (a distribution two profiles share is scored once);
    (its result, the chosen candidate's profile). Profiles read the dense model on all `windows`, once."""
    inputs = ProfileInputs(cfg, params, windows, batch_size, progress)
    profiles = {name: block_profile(name, inputs) for name in settings.block_profile}
    pooled = [((name, lam), d) for name, p in profiles.items() for lam, d in
              zip(settings.lambdas_block, block_candidates(cfg, sparsity, settings.lambdas_block, p, structure))]
    labels, dists = distinct([lab for lab, _ in pooled], [d for _, d in pooled])
    step = run_step(cfg, params, win, [lam for _, lam in labels], dists, method, desc="NeuroAL block step", **kw)
    if len(profiles) > 1:
        step.profiles = tuple(name for name, _ in labels)
    return step, profiles[labels[step.choice][0]]


@register_topup("neuroal", SearchSettings, nm="mixed")
def neuroal(job: PruneJob) -> Allocation:
    result = neuroal_search(job.cfg, job.params, job.windows, job.sparsity, job.method, job.options, job.progress,
                            job.structure, job.batch_size)
    for step, name in ((result.block, "block"), (result.row, "row")):
        note = step and step.near_tie_note(name)
        if note:
            warnings.warn(note, AllocationWarning, stacklevel=2)
    first = prunable_layers(job.cfg)[0]
    nm = {} if job.structure.kind != "nm" else {"nm_block_n": {
        str(b): job.structure.group_pruned(result.dist[layer_key(b, first)]) for b in range(job.cfg.num_layers)}}
    return Allocation(result.dist, {**result.info(), **nm, "neuroal_step": job.options.neuroal_step,
                                    "alignment_metric": job.options.alignment,
                                    **({"block_profiles": list(job.options.block_profile)}
                                       if len(job.options.block_profile or ()) > 1 else {}),
                                    "dense_stream": job.options.dense_stream,
                                    "search_samples": job.options.search_samples})
