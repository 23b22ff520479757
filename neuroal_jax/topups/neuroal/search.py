"""NeuroAL: adaptive λ search for block- and row-wise sparsity (docs/algorithm.md §5–6), vectorised over λ.

Every candidate of a step is evaluated in one pass over the blocks: the stream carries a leading
λ axis [K, N, T, H], and one jitted function per block computes, for all candidates at once (vmapped on
accelerators and meshes, one after another in `lax.map` on a CPU), the dense activations on the
candidate's own sparse stream, the masks (engine mask functions, per-row counts from the candidate's
distribution), the sparse activations, the next stream and each layer's alignment. Nothing returns to
the host until every block is dispatched. `lambda_chunk` evaluates K candidates at a time when memory
demands (same results).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ...config import ModelConfig
from ...models import NEXT_BLOCK, block_contexts, embed, family_of
from ...pruning import masks as M
from ...pruning.scores import LayerStats, get_score
from ...pruning.sparsegpt import block_threshold_ranks, sparsegpt_core
from ...pruning.statistics import block_stats
from ...pruning.targets import (Distribution, Structure, block_distribution, check_method, keep_and_ties,
                                layer_keys)
from ..base import Allocation, PruneJob, block_allocation, register_topup
from ..options import Options, Target, all_of, at_least, in_range, option, unique
from .alignment import METRICS, get_metric
from .profiles import (BLOCK_PROFILES, LINEAR, Profile, ProfileInputs, block_profile, known_profile,
                       linear_profile)
from .sharding import (lambda_devices, make_mesh, padded_width, replicate, shard_candidates, shard_params,
                       to_host)

BLOCK_LAMBDAS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.12, 0.15, 0.20, 0.25)
ROW_LAMBDAS = (0.00, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.12, 0.15, 0.20, 0.25)
STEPS = ("block", "row", "both")
DEFAULT_SEARCH_SAMPLES = 8
DENSE_STREAMS = ("candidate", "model")
F32 = jnp.float32


def default_block_lambdas(sparsity: float) -> tuple[float, ...]:
    return BLOCK_LAMBDAS if sparsity < 0.8 else BLOCK_LAMBDAS[:-1]


# ---------------------------------------------------------------- schedules (host, float64 as the reference)

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
    """{key: δ for its rows or None (uniform rows)} via the family's consumer map (docs/algorithm.md §6)."""
    fam = family_of(cfg)
    attn_out = fam.consumers[fam.prunable[0]]  # the attention output projection
    # grouped-query attention: k/v rows differ from o_proj's inputs, so q, k, v keep uniform rows
    uniform = {n for n in fam.prunable if fam.consumers.get(n) == attn_out} if cfg.num_kv_heads != cfg.num_heads else set()
    out = {}
    for b in range(cfg.num_layers):
        for name in fam.prunable:
            consumer = fam.consumers.get(name)
            if b == cfg.num_layers - 1 or consumer is None or name in uniform:
                out[f"{b}.{name}"] = None
            elif consumer == NEXT_BLOCK:
                out[f"{b}.{name}"] = deltas[f"{b + 1}.{fam.prunable[0]}"]
            else:
                out[f"{b}.{name}"] = deltas[f"{b}.{consumer}"]
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
    b, name = key.split(".", 1)
    return family_of(cfg).param_shapes(cfg)["blocks"][int(b)][name]["weight"][0]


# ---------------------------------------------------------------- one block, all candidates

def running_mean_sq(per_sample_sumsq):
    """[N, in] per-sample Σ_t x² → Σ_n ‖X_n[:, j]‖² / N as the reference's float32 running mean."""
    sq = jnp.square(jnp.sqrt(per_sample_sumsq.astype(F32)))
    n = sq.shape[0]
    mult = jnp.asarray(np.array([i / (i + 1) for i in range(n)], np.float32))
    div = jnp.asarray(np.arange(1, n + 1, dtype=np.float32))

    def step(acc, xs):
        m, d, row = xs
        return acc * m + row / d, None

    acc, _ = jax.lax.scan(step, jnp.zeros(sq.shape[1], F32), (mult, div, sq))
    return acc


def _norms(sumsq: dict) -> dict:
    return {k: jnp.sqrt(running_mean_sq(v)) for k, v in sumsq.items()}


def layer_targets(method: str, target, shape, structure: Structure = Structure()) -> tuple[np.ndarray, object]:
    """What one candidate's layer needs on device and the mask rule (static): per-row keep counts and tie rule;
    with N:M the number pruned per group for every row and ("nm", M); for SparseGPT its slab threshold ranks
    (k_block, k_last)."""
    if structure.kind == "nm":
        return np.full(shape[0], structure.group_pruned(target), np.int32), ("nm", structure.m)
    if method != "sparsegpt":
        return keep_and_ties(target, shape)
    if np.ndim(target) != 0:
        raise ValueError("sparsegpt takes one sparsity per layer (block step only)")
    return np.asarray(block_threshold_ranks(*shape, float(target)), np.int32), "sparsegpt"


def _mask(scores, k, rule):
    """The kept entries of scores [..., out, in]: N:M with k pruned per group of every row, or the top-k rows."""
    if isinstance(rule, tuple):
        return M.prune_nm_rows(scores, k, rule[1])
    return M.topk_mask(scores, k, ties=rule)


def _dense_pass(cfg, method, p, x, ctx):
    """Dense block on one candidate's stream x [N, T, H]: (aᴰ {layer: [in]}, SparseGPT Hessians or {})."""
    _, sumsq, xtx = block_stats(cfg, p, x, ctx, method == "sparsegpt")
    return _norms(sumsq), {k: (2.0 / x.shape[0]) * v for k, v in xtx.items()}


def _sparse_weights(method, rule, p, keep, a_dense, hessian, batched):
    """Pruned weights of every prunable layer. batched: a_dense/keep/hessian carry a leading candidate
    axis [K, ...]; the masks are then built in one call over all candidates (rows folded), outside any
    vmap, so the mask function's data-dependent shortcuts stay shortcuts."""
    out = {}
    for name, k in keep.items():
        W = p[name]["weight"]
        if method == "sparsegpt":
            core = lambda h, kk: sparsegpt_core(W.astype(F32), h, kk[0], kk[1])[0].astype(W.dtype)
            out[name] = (jax.vmap(core) if batched else core)(hessian[name], k)
            continue
        score = lambda a: get_score(method)(W, LayerStats(act_norm=a, hessian=None))
        scores = (jax.vmap(score) if batched else score)(a_dense[name])
        out[name] = jnp.where(_mask(scores, k, rule), W, jnp.zeros((), W.dtype))
    return out


def _sparse_pass(cfg, metrics, p, weights, x, ctx, a_dense):
    """Sparse block on one candidate's stream: (next stream, aˢ, {metric: per-layer alignment}). Every metric
    reads the same aᴰ and aˢ: adding a metric adds no pass."""
    sparse = {**p, **{name: {**p[name], "weight": w} for name, w in weights.items()}}
    y, sumsq, _ = block_stats(cfg, sparse, x, ctx, False)
    a_sparse = _norms(sumsq)
    return y, a_sparse, {m: {k: get_metric(m)(a_dense[k], a_sparse[k]) for k in weights} for m in metrics}


def candidate_block(cfg, method, rule, metrics, p, x, ctx, keep, a_dense_given=None):
    """One candidate, one block: (next stream, aᴰ, aˢ, {metric: per-layer alignment}). metrics: a tuple of
    registered names; rule: the mask rule of `layer_targets`; x [N, T, H]; keep {layer: [out]} (N:M: the number
    pruned per group of every row; SparseGPT: {layer: [k_block, k_last]}, with the Hessian from the dense block on
    this stream).
    `candidates_block` does the same for all candidates at once; this is the one-at-a-time baseline."""
    a_dense, hessian = _dense_pass(cfg, method, p, x, ctx)
    a_dense = a_dense if a_dense_given is None else a_dense_given
    weights = _sparse_weights(method, rule, p, keep, a_dense, hessian, batched=False)
    y, a_sparse, align = _sparse_pass(cfg, metrics, p, weights, x, ctx, a_dense)
    return y, a_dense, a_sparse, align


def over_candidates(loop: str):
    """f(*args) over the leading candidate axis of every argument: `vmap` (one batched program, what fills a
    GPU) or `map` (`lax.map`, one candidate at a time: its activations stay in the CPU's caches and its
    matmuls keep their best shape; 10–20 % faster on the build machine's CPU)."""
    if loop == "vmap":
        return lambda f, *args: jax.vmap(f)(*args)
    return lambda f, *args: jax.lax.map(lambda a: f(*a), args)


def candidate_loop(mesh) -> str:
    """`map` on one CPU device, `vmap` on accelerators and when the candidates are sharded over a mesh."""
    return "map" if mesh is None and jax.default_backend() == "cpu" else "vmap"


@partial(jax.jit, static_argnums=(0, 1, 2, 3), static_argnames="loop", donate_argnums=5)
def candidates_block(cfg, method, rule, metrics, p, xs, ctx, keeps, a_dense_given=None, loop="vmap"):
    """All candidates of one block at once, the same three phases as `candidate_block`: the dense
    pass over the streams xs [K, N, T, H] (donated: the next streams take their place), the masks
    of all candidates in one call per layer, the sparse pass over streams and weights; `loop` says how the
    passes go over the candidates (`over_candidates`).
    Returns (next streams [K, N, T, H], δ = aᴰ − aˢ {layer: [K, in]}, {metric: {layer: [K]}})."""
    over = over_candidates(loop)
    a_dense, hessian = over(lambda x: _dense_pass(cfg, method, p, x, ctx), xs)
    if a_dense_given is not None:
        a_dense = jax.tree.map(lambda v: jnp.broadcast_to(v, (xs.shape[0], *v.shape)), a_dense_given)
    weights = _sparse_weights(method, rule, p, keeps, a_dense, hessian, batched=True)
    y, a_sparse, align = over(lambda w, x, a: _sparse_pass(cfg, metrics, p, w, x, ctx, a), weights, xs, a_dense)
    return y, {k: a_dense[k] - a_sparse[k] for k in a_sparse}, align


@partial(jax.jit, static_argnums=0)
def _dense_step(cfg, p, x, ctx):
    y, sumsq, _ = block_stats(cfg, p, x, ctx, False)
    return y, _norms(sumsq)


# ---------------------------------------------------------------- evaluating a set of candidates

@dataclass
class StepResult:
    lambdas: tuple
    dists: list  # one Distribution per candidate
    alignment: dict  # {metric: [K] summed alignment}
    per_layer: dict  # {metric: {key: [K]}} alignment per layer
    deltas: list  # per candidate {key: δ = aᴰ − aˢ [in]}
    metric: str  # the metric whose argmin is the choice
    seconds: float = 0.0
    chunk: int = 0  # candidates run at a time
    choice: int = field(init=False)

    def __post_init__(self):
        self.choice = pick(self.alignment[self.metric])

    @property
    def totals(self) -> np.ndarray:
        return self.alignment[self.metric]

    @property
    def best_lambda(self) -> float:
        return float(self.lambdas[self.choice])


def pick(totals) -> int:
    """The candidate a metric chooses: the lowest summed alignment, the first on ties."""
    return int(np.argmin(totals))


def evaluate_candidates(cfg: ModelConfig, params: dict, windows: np.ndarray, dists: list, method: str,
                        metrics: tuple[str, ...] = ("neuron",), lambda_chunk: int | str | None = None,
                        dense_stream: str = "candidate", progress: bool = True, desc: str = "NeuroAL candidates",
                        mesh=None, structure: Structure = Structure()):
    """Alignment of every candidate distribution under every metric, block by block on each candidate's
    sparse stream (one pass, whatever the number of metrics).

    mesh: a `sharding.make_mesh` mesh; the candidate axis is sharded over its λ devices.
    structure: row (the distributions' sparsities per layer or row) or N:M (whole N per group from each layer's).
    Returns (totals {metric: [K]}, per-layer alignment {metric: {key: [K]}}, deltas [K × {key: δ}]).
    """
    K = len(dists)
    chunk = resolve_chunk(lambda_chunk, K, cfg, *np.shape(windows), params["embed"]["weight"].dtype.itemsize, mesh)
    # Every chunk is padded (repeating its last candidate) to one width, a multiple of the λ devices
    # with at least 2 per device: one compiled program for all chunks, and XLA's size-1
    # specialisation (different rounding) never kicks in, so any lambda_chunk or device count gives
    # the same results.
    width = padded_width(chunk, mesh)
    fam = family_of(cfg)
    metrics = tuple(metrics)
    windows = jnp.asarray(np.asarray(windows, np.int32))
    ctxs = replicate(block_contexts(cfg, windows.shape[1]), mesh)
    x0 = replicate(embed(cfg, params, windows), mesh)
    chunks = [list(range(i, min(i + chunk, K))) for i in range(0, K, chunk)]
    padded = [c + [c[-1]] * (width - len(c)) for c in chunks]
    streams = [shard_candidates(jnp.broadcast_to(x0, (width, *x0.shape)), mesh) for _ in chunks]
    dense_x = x0
    loop = candidate_loop(mesh)
    results = []  # (block, chunk, δ, alignments) on device: read back once every block is dispatched
    for b in tqdm(range(cfg.num_layers), desc=desc, disable=not progress, leave=False):
        p, ctx = shard_params(params["blocks"][b], mesh), ctxs[b]
        a_dense_given = None
        if dense_stream == "model":
            dense_x, a_dense_given = _dense_step(cfg, p, dense_x, ctx)
        targets = {name: [layer_targets(method, dists[i][f"{b}.{name}"], p[name]["weight"].shape, structure)
                          for i in range(K)] for name in fam.prunable}
        rules = {r for v in targets.values() for _, r in v}
        if len(rules) != 1:
            raise ValueError("candidates of one step must all be scalar or all be per-row distributions")
        rule = rules.pop()
        for c in range(len(chunks)):
            keeps = shard_candidates({name: np.stack([v[i][0] for i in padded[c]]) for name, v in targets.items()},
                                     mesh)
            streams[c], delta, align = candidates_block(cfg, method, rule, metrics, p, streams[c], ctx, keeps,
                                                        a_dense_given, loop=loop)
            results.append((b, c, delta, align))
        # one block ahead of the device, no more: the progress bar stays true and the queue short
        jax.block_until_ready([r[2] for r in results if r[0] == b - 1])
    per_layer = {m: {k: np.zeros(K) for k in layer_keys(cfg)} for m in metrics}
    deltas = [dict() for _ in range(K)]
    for b, c, delta, align in results:
        idx = chunks[c]
        for name in fam.prunable:
            for m in metrics:
                per_layer[m][f"{b}.{name}"][idx] = to_host(align[m][name]).astype(np.float64)[:len(idx)]
            d = to_host(delta[name])
            for j, i in enumerate(idx):
                deltas[i][f"{b}.{name}"] = d[j]
    totals = {m: np.array([sum(layers[k][i] for k in layers) for i in range(K)]) for m, layers in per_layer.items()}
    return totals, per_layer, deltas


def deltas_of(cfg, params, windows, dist: Distribution, method: str, **kw) -> dict:
    """δ = aᴰ − aˢ per layer {key: [in]} of one distribution: what the row step scales."""
    return evaluate_candidates(cfg, params, windows, [dist], method, **kw)[2][0]


def run_step(cfg, params, windows, lambdas, dists, method, metrics=("neuron",), **kw) -> StepResult:
    """Evaluate one step's candidates under `metrics`; the first metric makes the choice."""
    t0 = time.perf_counter()
    kw["lambda_chunk"] = resolve_chunk(kw.get("lambda_chunk"), len(dists), cfg, *np.shape(windows),
                                       params["embed"]["weight"].dtype.itemsize, kw.get("mesh"))
    totals, per_layer, deltas = evaluate_candidates(cfg, params, windows, dists, method, metrics, **kw)
    return StepResult(tuple(lambdas), dists, totals, per_layer, deltas, metrics[0], time.perf_counter() - t0,
                      kw["lambda_chunk"])


# ---------------------------------------------------------------- the search

def _known_metric(name) -> str | None:
    return None if name in METRICS else f"is not a registered alignment metric (valid: {', '.join(METRICS)})"


LAMBDA_CHECK = all_of(in_range(0.0, 1.0, high_open=True), unique)


# One definition per option that the sweep (neuroal_jax.sweeps) shares with the search.

def lambdas_option(step: str, grid: tuple[float, ...], note: str = ""):
    return option(None, f"NeuroAL: {step}-step λ values in [0, 1), comma-separated (default: "
                  + ",".join(f"{v:g}" for v in grid) + note + ")", check=LAMBDA_CHECK, metavar="L1,L2,...")


AUTO = "auto"


def parse_chunk(value) -> int | str:
    """--lambda-chunk: "auto" (None too) or a positive integer (an integer string on the command line)."""
    if value is None or value == AUTO:
        return AUTO
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"expected {AUTO} or an integer >= 1")
    return int(value)


def _chunk_error(value) -> str | None:
    try:
        parse_chunk(value)
    except ValueError:
        return f"must be >= 1 or {AUTO}"
    return None


def lambda_chunk_option():
    return option(AUTO, "NeuroAL: evaluate this many λ candidates at a time; auto: as many as fit in 70 % of the "
                        "free memory of the device (host RAM on a CPU) by an estimate of each candidate's bytes",
                  parse=parse_chunk, check=_chunk_error, metavar="K|auto")


#: The share of the free memory that --lambda-chunk auto plans to fill.
MEMORY_SHARE = 0.7


def candidate_bytes(cfg: ModelConfig, windows: int, seqlen: int, itemsize: int, vmapped: bool) -> tuple[int, int]:
    """(bytes per candidate, bytes shared by the candidates) of one block step of the search, an upper estimate:
    each candidate's activation stream (in and out) lives across blocks; the block's work (the pruned weights and
    their masks, the prunable layers' inputs in float32, one query chunk of attention scores) is per candidate when
    the candidates are vmapped, and one candidate's at a time when they are looped (lax.map, on a CPU)."""
    from ...models.layers import query_chunks
    shapes = family_of(cfg).param_shapes(cfg)["blocks"][0]
    weights = sum(int(np.prod(shapes[n]["weight"])) for n in family_of(cfg).prunable)
    tokens = windows * seqlen
    stream = 2 * tokens * cfg.hidden_size * itemsize
    inputs = 4 * tokens * sum(shapes[n]["weight"][1] for n in family_of(cfg).prunable)
    scores = 4 * windows * cfg.num_heads * seqlen * -(-seqlen // query_chunks(seqlen))
    work = weights * (itemsize + 1) + inputs + scores
    return (stream + work, work) if vmapped else (stream, work)


def resolve_chunk(lambda_chunk, candidates: int, cfg: ModelConfig, windows: int, seqlen: int, itemsize: int,
                  mesh=None) -> int:
    """The candidates run at a time: `lambda_chunk` (at most all), or for "auto" (and None) as many as the estimate
    (`candidate_bytes`) fits in MEMORY_SHARE of the free memory of one device, at least 1."""
    from ...runtime import free_memory
    if lambda_chunk not in (None, AUTO):
        return min(int(lambda_chunk), candidates)
    free = free_memory()
    if free is None:
        return candidates
    per, shared = candidate_bytes(cfg, windows, seqlen, itemsize, candidate_loop(mesh) == "vmap")
    fits = int((MEMORY_SHARE * free - shared) // per) * lambda_devices(mesh)
    return max(1, min(candidates, fits))


def dense_stream_option():
    return option("candidate", "NeuroAL: dense activations on each candidate's sparse stream (candidate: the "
                               "reference code) or on the dense model's stream (model: the paper's Algorithm 1)",
                  choices=DENSE_STREAMS)


def devices_option():
    return option(None, "NeuroAL: shard the λ candidates over the first N devices (default: one device)",
                  check=at_least(1), metavar="N")


def check_search_samples(values, nsamples: int) -> None:
    for v in values:
        if v > nsamples:
            raise ValueError(f"option search_samples (--search-samples) must be at most the number of calibration "
                             f"windows ({nsamples}), got {v}")


@dataclass(frozen=True)
class SearchSettings(Options):
    """NeuroAL's options (the top-up's `--neuroal-*` flags)."""
    neuroal_step: str | None = option(None, "NeuroAL: which λ search to run (default: both; block with N:M "
                                            "structure, which fixes the rows)", choices=STEPS)
    block_profile: str | None = option(None, "NeuroAL: the block step's per-block profile that λ scales (default: "
                                             f"{LINEAR}, the paper): "
                                             + "; ".join(f"{n}: {p.help}" for n, p in BLOCK_PROFILES.items()),
                                       check=known_profile, metavar="NAME")
    lambdas_block: tuple[float, ...] | None = lambdas_option("block", BLOCK_LAMBDAS, "; without 0.25 when sparsity >= 0.8")
    lambdas_row: tuple[float, ...] | None = lambdas_option("row", ROW_LAMBDAS)
    search_samples: int | None = option(
        None, "NeuroAL: the λ search runs on the first N calibration windows (default: 8, or --nsamples if fewer)",
        check=at_least(1), metavar="N")
    alignment: str = option("neuron", "NeuroAL: alignment metric, a name in the metric registry",
                            check=_known_metric, metavar="NAME")
    lambda_chunk: int | str = lambda_chunk_option()
    dense_stream: str = dense_stream_option()
    devices: int | None = devices_option()
    model_parallel: int = option(1, "NeuroAL: also split every weight's rows over M of those devices (M divides N)",
                                 check=at_least(1), metavar="M")

    def mesh(self):
        return None if self.devices is None and self.model_parallel == 1 else make_mesh(self.devices, self.model_parallel)

    def complete(self, target: Target) -> "SearchSettings":
        """The step, the block profile, the λ grids and the number of search windows made explicit."""
        step = self.neuroal_step or ("block" if target.structure.kind == "nm" else "both")
        return replace(self, neuroal_step=step,
                       block_profile=self.block_profile or (None if step == "row" else LINEAR),
                       lambdas_block=self.lambdas_block or default_block_lambdas(target.sparsity),
                       lambdas_row=self.lambdas_row or ROW_LAMBDAS,
                       search_samples=self.search_samples or min(DEFAULT_SEARCH_SAMPLES, target.nsamples))

    def validate(self, target: Target) -> None:
        if target.method == "sparsegpt" and self.neuroal_step != "block":
            raise ValueError("sparsegpt supports only the NeuroAL block step (--neuroal-step block)")
        if self.block_profile is not None and self.neuroal_step == "row":
            raise ValueError(f"option block_profile (--block-profile) shapes the block step, which --neuroal-step row "
                             f"skips; got --block-profile {self.block_profile} (valid with --neuroal-step block or "
                             "both)")
        if target.structure.kind == "layer":
            raise ValueError(f"NeuroAL allocates per-row or mixed N:M sparsities; structure {target.structure} is not "
                             "supported (valid: row, N:M)")
        if target.structure.kind == "nm":
            if self.neuroal_step != "block":
                raise ValueError(f"structure {target.structure} fixes N:M in every row, so NeuroAL has only its block "
                                 f"step; got --neuroal-step {self.neuroal_step} (valid: block)")
            if target.method == "sparsegpt":
                raise ValueError(f"NeuroAL's search with sparsegpt supports unstructured sparsity only, got structure "
                                 f"{target.structure}")
        self.mesh()  # the device counts exist
        check_search_samples([self.search_samples], target.nsamples)


@dataclass
class SearchResult:
    dist: Distribution
    block: StepResult | None
    row: StepResult | None
    seconds: float
    profile: Profile | None = None  # the block step's profile

    def info(self) -> dict:
        def curve(step):  # one record per candidate: λ exactly as searched
            return None if step is None else [{"lambda": float(l), "alignment": float(v)}
                                              for l, v in zip(step.lambdas, step.totals)]

        def layers(step):
            return None if step is None else {k: float(v[step.choice])
                                              for k, v in step.per_layer[step.metric].items()}

        return {
            "lambda_block": None if self.block is None else self.block.best_lambda,
            "lambda_row": None if self.row is None else self.row.best_lambda,
            "alignment_block": curve(self.block), "alignment_row": curve(self.row),
            "alignment_layers_block": layers(self.block), "alignment_layers_row": layers(self.row),
            "search_seconds": self.seconds,
            "lambda_chunk_block": None if self.block is None else self.block.chunk,
            "lambda_chunk_row": None if self.row is None else self.row.chunk,
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
        profile = block_profile(settings.block_profile, ProfileInputs(cfg, params, windows, batch_size, progress))
        lams, dists = distinct(settings.lambdas_block,
                               block_candidates(cfg, sparsity, settings.lambdas_block, profile, structure))
        block = run_step(cfg, params, win, lams, dists, method, desc="NeuroAL block step", **kw)
        dist, deltas = block.dists[block.choice], block.deltas[block.choice]
    if settings.neuroal_step in ("row", "both"):
        if block is None:  # δ of the uniform distribution (the reference's λ = 0 block schedule)
            dist = block_candidates(cfg, sparsity, [0.0])[0] if cfg.num_layers > 1 else block_distribution(cfg, [sparsity])
            deltas = deltas_of(cfg, params, win, dist, method, **{**kw, "desc": "uniform δ"})
        lams = settings.lambdas_row
        dists = [row_distribution(cfg, dist, deltas, l) for l in lams]
        row = run_step(cfg, params, win, lams, dists, method, desc="NeuroAL row step", **kw)
        dist = row.dists[row.choice]
    return SearchResult(dist, block, row, time.perf_counter() - t0, profile)


@register_topup("neuroal", SearchSettings, nm="mixed")
def neuroal(job: PruneJob) -> Allocation:
    result = neuroal_search(job.cfg, job.params, job.windows, job.sparsity, job.method, job.options, job.progress,
                            job.structure, job.batch_size)
    first = family_of(job.cfg).prunable[0]
    nm = {} if job.structure.kind != "nm" else {"nm_block_n": {
        str(b): job.structure.group_pruned(result.dist[f"{b}.{first}"]) for b in range(job.cfg.num_layers)}}
    return Allocation(result.dist, {**result.info(), **nm, "neuroal_step": job.options.neuroal_step,
                                    "alignment_metric": job.options.alignment,
                                    "dense_stream": job.options.dense_stream,
                                    "search_samples": job.options.search_samples})
