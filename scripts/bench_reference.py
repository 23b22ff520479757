"""Benchmark: the reference PyTorch NeuroAL search (eliacunegatti/NeuroAL) on CPU vs our `neuroal_search`.

Both sides search the same model (float32), the same calibration windows, method and sparsity, both steps
(block λ grid, then row λ grid on the chosen block distribution), each in its own subprocess of this venv on
this host. Only the search is timed (not model loading). Prints seconds per step and in total for each side,
the ratio reference / ours, the λs each chose, the alignment value of every candidate on both sides and the
largest difference between the two final per-row sparsity distributions.

    git clone https://github.com/eliacunegatti/NeuroAL /work/ref/NeuroAL      # the reference, outside this repo
    .venv/bin/python scripts/bench_reference.py                    # SmolLM2-135M, wanda 70%, 8 × 256 pydoc tokens
    .venv/bin/python scripts/bench_reference.py --nsamples 2 --seqlen 64 --lambdas-block 0.05,0.1 --lambdas-row 0,0.1

How. The main process loads `--model` with `converters.load_model`, builds the windows once with
`calibration_windows(--calib, tokenizer, nsamples, seqlen, seed=0)` (saved as .npy) and exports the model as a
float32 HF folder (`converters.hf.export_hf`), all in a temporary folder. Then:

- ours: `neuroal_search(cfg, params, windows, sparsity, method, SearchSettings(neuroal_step="both",
  search_samples=nsamples, lambdas_block=..., lambdas_row=...), progress=False)`; seconds are the
  search's own `block.seconds` / `row.seconds` (JIT compilation included, as in every real run);
- reference: the HF folder loaded with `AutoModelForCausalLM.from_pretrained(dtype=float32)`, then its
  driver `sparsity_distribution.get_neuroal_sparsity_distribution(args, model, tokenizer, "cpu", layers)`
  called as its `main.py` calls it, with `torch.set_num_threads(--threads)`. That driver runs, per λ, its
  `lib.neuroal.get_neuroal_block` / `get_neuroal_row` (sample-by-sample layer forwards with Wanda hooks,
  `lib.utils.get_forward`, masks by `lib.utils.compute_mask`), and builds candidates with
  `get_distribution_block` / `get_distribution_row`. Its block step is timed from the call until its first
  `get_distribution_row` call, the row step from there to the return.

Both subprocesses are pinned (sched_setaffinity) to the first --threads CPUs when --threads is below the
number available, and inherit the huge-page malloc setting of `reexec_with_hugepages`.

What is patched in the reference, at run time only (its files are imported from --reference, never edited):

- `mask_gen_cuda`, its compiled CUDA extension (ops/mask_gen, used by `compute_mask(..., "neuron", ...)`
  in the row step), is replaced by a module with a CPU `mask_gen_forward(mask, sorted_index, top_k)`.
  The kernel starts from mask = ones and, for row n and rank g < top_k[n], sets mask[n, sorted_index[n, g]]
  = 0 (one CUDA block per (row, rank); only rows < mask.size(0) exist, so extra top_k entries are unused).
  The CPU version scatters `rank >= top_k[n]` into mask along sorted_index: sorted_index is a per-row
  permutation (the reference's own stable descending torch.sort), so every entry is written exactly once
  with the kernel's value; ties are decided by that same sort, which is unchanged.
- `weightwatcher` (imported at the top of sparsity_distribution.py, used only by its AlphaPruning path) and,
  when not installed, `datasets` (imported by lib/data.py) are empty stand-in modules.
- `sparsity_distribution.get_loaders` returns our windows as its C4 loader's list of (input_ids [1, T],
  target) pairs instead of downloading C4; `model.seqlen` is set to --seqlen (its `get_llm` sets 2048).
- The driver sets `args.nsamples = 8` itself; the harness's args object keeps --nsamples (ignores that
  assignment), a no-op at the default 8. `args.model_type` is "mistral" for grouped-query attention models
  (SmolLM2-135M: 9 query, 3 key/value heads) and "llama" otherwise: the reference keeps uniform rows for
  q/k/v only on its Mistral path, which is what we do for every GQA model (docs/algorithm.md); on its Llama
  path k/v would receive o_proj's 576-long row vector for 192 rows.
- transformers 5 no longer computes rotary embeddings inside the attention: the decoder layer needs
  `position_embeddings`, which the reference's layer-by-layer calls do not pass. A forward pre-hook on each
  decoder layer computes them from the `position_ids` the reference passes (`model.model.rotary_emb`), as the
  attention did in the transformers versions the reference was written for. Nothing else needs changing: the
  layer now returns a tensor [1, T, H], and the reference's `[0]` then picks the sample, as before.
- Smoke runs with --lambdas-block / --lambdas-row: the driver walks its own full grids; for λs not asked
  for, its candidate builder returns an empty distribution and its evaluation is skipped (alignment +inf,
  never chosen). Without these flags nothing is skipped. The driver's grids are checked against ours.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

DEFAULT_REFERENCE = "/work/ref/NeuroAL"
SIDES = ("ours", "reference")


# ---------------------------------------------------------------- shared

def parse_lambdas(text: str | None) -> tuple[float, ...] | None:
    return None if not text else tuple(float(v) for v in text.split(","))


def pin_threads(threads: int) -> None:
    """Restrict this process to the first `threads` CPUs it may use (before any thread pool starts)."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])


def available_cpus() -> int:
    return len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- ours

def matmul_rate(dtype: str = "float32", rows: int = 8192, inner: int = 576, cols: int = 1536,
                repeats: int = 5) -> float:
    """GFLOP/s of one jitted matmul [rows, inner] × [inner, cols] (the search's MLP shape) with `dtype` inputs,
    best of `repeats`: the rate the search's matmuls could reach at best on this host."""
    import jax
    import jax.numpy as jnp

    a, b = jnp.ones((rows, inner), dtype), jnp.ones((inner, cols), dtype)
    f = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))  # as models.layers.linear
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * rows * inner * cols / best / 1e9


def search_matmul_flops(cfg, candidates: int, windows: int, seqlen: int) -> float:
    """Matmul FLOPs of one step over `candidates`: per candidate and block, the dense pass without its
    last projection (its output is unused; XLA drops it) plus the sparse pass, each with the causal
    attention products as computed (`models.layers.attention`: query chunks against the keys up to them)."""
    from neuroal_jax.models import family_of
    from neuroal_jax.models.layers import query_chunks

    fam = family_of(cfg)
    shapes = fam.param_shapes(cfg)["blocks"][0]
    linear = [2 * np.prod(shapes[n]["weight"]) for n in fam.prunable]  # FLOPs per token
    chunks = query_chunks(seqlen)
    c = seqlen // chunks
    pairs = c * c * chunks * (chunks + 1) / 2  # (query, key) pairs computed per window
    attention = 2 * 2 * pairs * cfg.num_heads * cfg.head_dim  # q·k and p·v, per window
    per_pass = windows * (seqlen * sum(linear) + attention)
    dense = per_pass - windows * seqlen * linear[-1]
    return candidates * cfg.num_layers * (dense + per_pass)


def run_ours(args) -> dict:
    from converters import load_model
    from neuroal_jax.runs import check_dtype
    from neuroal_jax.topups.neuroal import SearchSettings, neuroal_search

    model = load_model(args.model, dtype=check_dtype(args.dtype))
    windows = np.load(Path(args.work) / "windows.npy")
    settings = SearchSettings(neuroal_step="both", search_samples=args.nsamples,
                              lambdas_block=parse_lambdas(args.lambdas_block),
                              lambdas_row=parse_lambdas(args.lambdas_row))
    rate = matmul_rate(args.dtype)
    r = neuroal_search(model.config, model.params, windows, args.sparsity, args.method, settings, progress=False)
    flops = sum(search_matmul_flops(model.config, len(step.lambdas), len(windows), windows.shape[1])
                for step in (r.block, r.row))
    np.savez(Path(args.work) / "dist_ours.npz", **{k: np.asarray(v, np.float64) for k, v in r.dist.items()})
    return {"block_seconds": r.block.seconds, "row_seconds": r.row.seconds,
            "lambda_block": r.block.best_lambda, "lambda_row": r.row.best_lambda,
            "matmul_tflop": flops / 1e12, "matmul_rate": rate,
            "block": dict(zip(map(float, r.block.lambdas), r.block.totals.tolist())),
            "row": dict(zip(map(float, r.row.lambdas), r.row.totals.tolist()))}


# ---------------------------------------------------------------- reference: stand-ins and patches

def cpu_mask_gen_forward(mask, sorted_index, top_k):
    """CPU twin of the reference's CUDA `mask_gen_forward`: mask[n, sorted_index[n, g]] = 0 where g < top_k[n]."""
    import torch

    rows, cols = mask.shape
    pruned = torch.arange(cols, device=mask.device).unsqueeze(0) >= top_k[:rows].unsqueeze(1)
    mask.scatter_(1, sorted_index, pruned.to(mask.dtype))
    return [mask]


def install_stand_ins() -> None:
    """Modules the reference imports that a CPU run cannot or need not have."""
    sys.modules["mask_gen_cuda"] = types.ModuleType("mask_gen_cuda")
    sys.modules["mask_gen_cuda"].mask_gen_forward = cpu_mask_gen_forward
    for name, attrs in (("weightwatcher", {}), ("datasets", {"load_dataset": None})):
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
            sys.modules[name].__dict__.update(attrs)


class ReferenceArgs:
    """The reference's argparse namespace; `nsamples` stays what the harness set."""

    def __init__(self, nsamples: int, **fields):
        self.__dict__.update(fields)
        self._nsamples = nsamples

    nsamples = property(lambda self: self._nsamples, lambda self, value: None)


class Candidate(dict):
    """A reference distribution tagged with its λ (a dict to the reference)."""

    def __init__(self, dist: dict, lam: float):
        super().__init__(dist)
        self.lam = lam


class Probe:
    """Wraps the driver's candidate builders and evaluators: records the grids it walks, every alignment
    total, and when the row step starts; skips λs outside the requested subsets."""

    def __init__(self, sd, block_subset, row_subset):
        self.sd, self.subset = sd, {"block": block_subset, "row": row_subset}
        self.grid = {"block": [], "row": []}
        self.totals = {"block": {}, "row": {}}
        self.row_start = None
        build_block, build_row = sd.get_distribution_block, sd.get_distribution_row
        eval_block, eval_row = sd.get_neuroal_block, sd.get_neuroal_row

        def get_distribution_block(values, layer_name, sparsity_ratio, lam):
            return self.build("block", lam, lambda: build_block(values, layer_name, sparsity_ratio, lam))

        def get_distribution_row(args, model, dist_base, lam, alignment, *rest):
            if self.row_start is None:
                self.row_start = time.perf_counter()
            return self.build("row", lam, lambda: build_row(args, model, dist_base, lam, alignment, *rest))

        def get_neuroal_block(args, model, data, dist, device):
            skipped = (float("inf"), {}, None)  # never the minimum; its δ is never read
            return self.evaluate("block", dist, skipped, lambda: eval_block(args, model, data, dist, device))

        def get_neuroal_row(args, model, data, dist, device):
            return self.evaluate("row", dist, (float("inf"), {}), lambda: eval_row(args, model, data, dist, device))

        sd.get_distribution_block, sd.get_distribution_row = get_distribution_block, get_distribution_row
        sd.get_neuroal_block, sd.get_neuroal_row = get_neuroal_block, get_neuroal_row

    def wanted(self, step, lam) -> bool:
        return self.subset[step] is None or any(np.isclose(lam, v) for v in self.subset[step])

    def build(self, step, lam, make):
        self.grid[step].append(float(lam))
        return Candidate(make() if self.wanted(step, lam) else {}, float(lam))

    def evaluate(self, step, dist, skipped, run):
        if not self.wanted(step, dist.lam):
            return skipped
        out = run()
        self.totals[step][dist.lam] = float(out[0])
        return out


def add_rotary_hooks(model) -> None:
    """transformers 5 decoder layers take `position_embeddings`; compute them from `position_ids` per call."""
    import torch

    rotary = model.model.rotary_emb

    def hook(module, args, kwargs):
        if kwargs.get("position_embeddings") is None:
            x = args[0] if args else kwargs["hidden_states"]
            pos = kwargs.get("position_ids")
            pos = torch.arange(x.shape[1], device=x.device).unsqueeze(0) if pos is None else pos
            kwargs["position_embeddings"] = rotary(x, pos)
        return args, kwargs

    for layer in model.model.layers:
        layer.register_forward_pre_hook(hook, with_kwargs=True)


def reference_model_type(hf_config) -> str:
    if hf_config.model_type not in ("llama", "mistral", "qwen2"):
        raise SystemExit(f"the harness drives the reference's Llama/Mistral path only, not {hf_config.model_type}")
    gqa = hf_config.num_key_value_heads != hf_config.num_attention_heads
    return "mistral" if gqa else "llama"


# ---------------------------------------------------------------- reference: the run

def run_reference(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    install_stand_ins()
    sys.path.insert(0, str(Path(args.reference).resolve()))
    import sparsity_distribution as sd
    from transformers import AutoModelForCausalLM

    work = Path(args.work)
    model = AutoModelForCausalLM.from_pretrained(work / "hf", dtype=torch.float32).eval()
    model.seqlen = args.seqlen
    add_rotary_hooks(model)
    windows = torch.from_numpy(np.load(work / "windows.npy").astype(np.int64))
    loader = [(w.unsqueeze(0), w.unsqueeze(0).clone()) for w in windows]
    sd.get_loaders = lambda name, nsamples, seed, seqlen, tokenizer: (loader[:nsamples], None)
    probe = Probe(sd, parse_lambdas(args.lambdas_block), parse_lambdas(args.lambdas_row))
    ref_args = ReferenceArgs(args.nsamples, model_type=reference_model_type(model.config), neuroal_step="both",
                             prune_method=args.method, sparsity_ratio=args.sparsity, seed=0)
    t0 = time.perf_counter()
    dist, _, lam_block, lam_row = sd.get_neuroal_sparsity_distribution(
        ref_args, model, None, torch.device("cpu"), model.model.layers)
    t1 = time.perf_counter()
    np.savez(work / "dist_reference.npz", **{f"{k.rsplit('-', 1)[1]}.{k.rsplit('-', 1)[0]}": np.asarray(v, np.float64)
                                             for k, v in dist.items()})
    return {"block_seconds": probe.row_start - t0, "row_seconds": t1 - probe.row_start,
            "lambda_block": lam_block, "lambda_row": lam_row, "model_type": ref_args.model_type,
            "grid_block": probe.grid["block"], "grid_row": probe.grid["row"],
            "block": probe.totals["block"], "row": probe.totals["row"]}


# ---------------------------------------------------------------- main process

def prepare(args, work: Path) -> None:
    """Windows (.npy) and the float32 HF export of the model, once for both sides."""
    from converters import export_hf, load_model
    from neuroal_jax.evaluation.data import calibration_windows

    model = load_model(args.model)
    windows = calibration_windows(args.calib, model.tokenizer, args.nsamples, args.seqlen, seed=0)
    np.save(work / "windows.npy", np.asarray(windows, np.int32))
    export_hf(model.config, model.params, work / "hf")


def run_side(side: str, args, work: Path) -> dict:
    flags = ["--side", side, "--work", str(work)]
    for name in ("model", "dtype", "method", "sparsity", "nsamples", "seqlen", "threads", "reference",
                 "lambdas_block", "lambdas_row"):
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    proc = subprocess.run([sys.executable, __file__, *flags], check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-6000:])
        raise SystemExit(f"{side} side failed (exit {proc.returncode})")
    return {"side": side, **json.loads(proc.stdout.strip().splitlines()[-1])}


def dist_difference(work: Path) -> float:
    """Largest |Δ sparsity| over every row of every layer between the two final distributions. On its
    Mistral path the reference gives q/k/v a vector as long as o_proj's input; a layer uses its first `rows`."""
    ours, ref = np.load(work / "dist_ours.npz"), np.load(work / "dist_reference.npz")
    if set(ours.files) != set(ref.files):
        return float("nan")
    diff = 0.0
    for key in ours.files:
        a, b = np.atleast_1d(ours[key]), np.atleast_1d(ref[key])
        rows = a.size if a.size > 1 else b.size
        diff = max(diff, float(np.max(np.abs(np.broadcast_to(a, rows) - b[:rows]))))
    return diff


def print_report(args, rows: dict, work: Path) -> None:
    print(f"\nNeuroAL search, both steps: {args.model} ({args.dtype} ours, float32 reference), "
          f"{args.method} {args.sparsity:.0%}, {args.nsamples} × {args.seqlen} tokens, {args.threads} CPU thread(s)\n")
    print(f"{'side':<11}{'block s':>10}{'row s':>10}{'total s':>10}{'λ block':>9}{'λ row':>7}")
    for side, r in rows.items():
        print(f"{side:<11}{r['block_seconds']:>10.2f}{r['row_seconds']:>10.2f}"
              f"{r['block_seconds'] + r['row_seconds']:>10.2f}{r['lambda_block']:>9.2f}{r['lambda_row']:>7.2f}")
    if len(rows) == 2:
        ref, ours = rows["reference"], rows["ours"]
        ratios = [ref[k] / ours[k] for k in ("block_seconds", "row_seconds")]
        total = (ref["block_seconds"] + ref["row_seconds"]) / (ours["block_seconds"] + ours["row_seconds"])
        print(f"{'ref / ours':<11}{ratios[0]:>9.2f}×{ratios[1]:>9.2f}×{total:>9.2f}×")
        print_alignments(ref, ours)
    if "ours" in rows:
        ours = rows["ours"]
        achieved = ours["matmul_tflop"] * 1e3 / (ours["block_seconds"] + ours["row_seconds"])
        print(f"\nours: {ours['matmul_tflop']:.1f} TFLOP of matmuls at {achieved:.1f} GFLOP/s = "
              f"{achieved / ours['matmul_rate']:.0%} of one {args.dtype} matmul [8192, 576] × [576, 1536] measured "
              f"in the same process ({ours['matmul_rate']:.1f} GFLOP/s)")
    if len(rows) == 2:
        same = ref["lambda_block"] == ours["lambda_block"] and ref["lambda_row"] == ours["lambda_row"]
        print(f"\nsame λs: {same}; largest |Δ sparsity| between the final per-row distributions: "
              f"{dist_difference(work):.1e}")
    if "reference" in rows:
        check_grids(rows["reference"], args.sparsity)


def print_alignments(ref: dict, ours: dict) -> None:
    print(f"\n{'step':<6}{'λ':>6}{'reference':>16}{'ours':>16}{'rel. diff':>11}")
    for step in ("block", "row"):
        theirs = {float(k): v for k, v in ref[step].items()}
        for lam, v in ours[step].items():
            lam = float(lam)
            r = theirs.get(lam, float("nan"))
            print(f"{step:<6}{lam:>6.2f}{r:>16.9e}{v:>16.9e}{abs(r - v) / abs(r):>11.1e}")


def check_grids(ref: dict, sparsity: float) -> None:
    from neuroal_jax.topups.neuroal.schedules import ROW_LAMBDAS, default_block_lambdas

    same = tuple(np.round(ref[key], 6).tolist() == np.round(grid, 6).tolist()
                 for key, grid in (("grid_block", default_block_lambdas(sparsity)), ("grid_row", ROW_LAMBDAS)))
    print(f"reference λ grids equal ours (block, row): {same}; reference model type: {ref['model_type']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="model spec for converters.load_model (Llama family)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="our side's weights (the reference runs in float32)")
    ap.add_argument("--method", default="wanda", choices=["wanda", "magnitude"])
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--calib", default="pydoc", help="calibration source for calibration_windows (default pydoc)")
    ap.add_argument("--nsamples", type=int, default=8, help="search windows (default 8)")
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--threads", type=int, default=available_cpus(),
                    help="CPU threads for each side (default: all this process may use)")
    ap.add_argument("--lambdas-block", help="comma list, a subset of the block grid (default: the full grid)")
    ap.add_argument("--lambdas-row", help="comma list, a subset of the row grid (default: the full grid)")
    ap.add_argument("--sides", default="ours,reference", help="which sides to run, comma list (default both)")
    ap.add_argument("--reference", default=DEFAULT_REFERENCE,
                    help="a checkout of https://github.com/eliacunegatti/NeuroAL (default %(default)s)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        pin_threads(args.threads)
        print(json.dumps((run_ours if args.side == "ours" else run_reference)(args)))
        return 0
    sides = [s for s in args.sides.split(",") if s]
    if not set(sides) <= set(SIDES):
        ap.error(f"--sides takes {', '.join(SIDES)}")
    if "reference" in sides and not (Path(args.reference) / "sparsity_distribution.py").exists():
        ap.error(f"no NeuroAL checkout at {args.reference}: git clone https://github.com/eliacunegatti/NeuroAL")
    with tempfile.TemporaryDirectory(prefix="bench_reference_") as tmp:
        work = Path(tmp)
        prepare(args, work)
        rows = {side: run_side(side, args, work) for side in sides}
        print_report(args, rows, work)
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items()
                                                            if k not in ("side", "work")}, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    from neuroal_jax.runtime import reexec_with_hugepages

    reexec_with_hugepages()  # huge-page malloc, as the CLI runs (the subprocesses inherit it)
    sys.exit(main())
