"""Benchmark: NeuroAL search (both steps) vectorised over λ vs a sequential per-λ loop of the same code.

Each mode runs in its own subprocess (so peak RSS is its own); both use the same model, calibration
windows and settings, and must choose the same λs. Prints a table with time, peak memory and ratio.

    .venv/bin/python scripts/bench_search.py                 # SmolLM2-135M, wanda 70%, 8 × 256 pydoc tokens
    .venv/bin/python scripts/bench_search.py --model path/to/hf-or.gguf --seqlen 512
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def evaluate_one_by_one(cfg, params, windows, dists, method):
    """(totals [K], δ per candidate): each candidate alone, block by block, with the un-vmapped
    `search.candidate_block` (what the reference does, minus its sample-by-sample loop)."""
    import jax
    import jax.numpy as jnp

    from neuroal_jax.models import block_contexts, embed, prunable_layers
    from neuroal_jax.pruning import keep_and_ties
    from neuroal_jax.topups.neuroal.kernel import candidate_block

    single = jax.jit(candidate_block, static_argnums=(0, 1, 2, 3))
    windows = jnp.asarray(np.asarray(windows, np.int32))
    ctxs = block_contexts(cfg, windows.shape[1])
    x0 = embed(cfg, params, windows)
    totals, deltas = np.zeros(len(dists)), []
    for i, dist in enumerate(dists):
        x, delta = x0, {}
        for b in range(cfg.num_layers):
            p = params["blocks"][b]
            kt = {n: keep_and_ties(dist[f"{b}.{n}"], p[n]["weight"].shape) for n in prunable_layers(cfg)}
            ties = next(iter(kt.values()))[1]
            x, a_d, a_s, align = single(cfg, method, ties, ("neuron",), p, x, ctxs[b],
                                        {n: jnp.asarray(k) for n, (k, _) in kt.items()})
            totals[i] += sum(float(align["neuron"][n]) for n in prunable_layers(cfg))
            delta.update({f"{b}.{n}": np.asarray(a_d[n] - a_s[n]) for n in prunable_layers(cfg)})
        deltas.append(delta)
    return totals, deltas


def search_one_by_one(cfg, params, windows, sparsity, method) -> dict:
    """Both steps with every candidate evaluated alone (the same schedules and choices as neuroal_search)."""
    from neuroal_jax.pruning import block_distribution
    from neuroal_jax.topups.neuroal.profiles import block_schedule
    from neuroal_jax.topups.neuroal.schedules import ROW_LAMBDAS, default_block_lambdas, row_distribution

    out, t0 = {}, time.perf_counter()
    lams = default_block_lambdas(sparsity)
    dists = [block_distribution(cfg, block_schedule(cfg.num_layers, sparsity, lam)) for lam in lams]
    totals, deltas = evaluate_one_by_one(cfg, params, windows, dists, method)
    best = int(np.argmin(totals))
    out.update(block_seconds=time.perf_counter() - t0, lambda_block=lams[best], block_totals=totals.tolist())
    t1 = time.perf_counter()
    rows = [row_distribution(cfg, dists[best], deltas[best], lam) for lam in ROW_LAMBDAS]
    totals, _ = evaluate_one_by_one(cfg, params, windows, rows, method)
    out.update(row_seconds=time.perf_counter() - t1, lambda_row=ROW_LAMBDAS[int(np.argmin(totals))],
               row_totals=totals.tolist())
    return out


def run_mode(args) -> dict:
    from converters import load_model
    from neuroal_jax.evaluation.data import calibration_windows
    from neuroal_jax.topups.neuroal import SearchSettings, neuroal_search

    model = load_model(args.model)
    windows = calibration_windows(args.calib, model.tokenizer, args.nsamples, args.seqlen, seed=0)
    t0 = time.perf_counter()
    if args.mode == "sequential":
        row = search_one_by_one(model.config, model.params, windows, args.sparsity, args.method)
    else:
        settings = SearchSettings(neuroal_step="both", search_samples=args.nsamples, lambda_chunk=args.lambda_chunk)
        r = neuroal_search(model.config, model.params, windows, args.sparsity, args.method, settings, progress=False)
        row = {"block_seconds": r.block.seconds, "row_seconds": r.row.seconds, "lambda_block": r.block.best_lambda,
               "lambda_row": r.row.best_lambda, "block_totals": r.block.totals.tolist(),
               "row_totals": r.row.totals.tolist()}
    return {"mode": args.mode, "seconds": time.perf_counter() - t0, **row,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--method", default="wanda")
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--calib", default="pydoc")
    ap.add_argument("--nsamples", type=int, default=8, help="search windows (default 8)")
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--lambda-chunk", type=int, default=None, help="vectorised mode: candidates per pass")
    ap.add_argument("--modes", default="vectorised,sequential")
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return 0
    rows = []
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--mode", mode, "--model", args.model, "--method", args.method,
               "--sparsity", str(args.sparsity), "--calib", args.calib, "--nsamples", str(args.nsamples),
               "--seqlen", str(args.seqlen)] + (["--lambda-chunk", str(args.lambda_chunk)] if args.lambda_chunk else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ}).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"\nNeuroAL search, both steps: {args.model}, {args.method} {args.sparsity:.0%}, "
          f"{args.nsamples} × {args.seqlen} tokens ({os.cpu_count()} CPU threads)\n")
    print(f"{'mode':<12}{'total s':>9}{'block s':>9}{'row s':>9}{'peak RSS GB':>13}{'λ block':>9}{'λ row':>7}")
    for r in rows:
        print(f"{r['mode']:<12}{r['seconds']:>9.1f}{r['block_seconds']:>9.1f}{r['row_seconds']:>9.1f}"
              f"{r['peak_rss_gb']:>13.2f}{r['lambda_block']:>9.2f}{r['lambda_row']:>7.2f}")
    if len(rows) == 2:
        a, b = rows
        diff = max(np.max(np.abs(np.subtract(a[k], b[k])) / np.abs(b[k])) for k in ("block_totals", "row_totals"))
        same = a["lambda_block"] == b["lambda_block"] and a["lambda_row"] == b["lambda_row"]
        print(f"\nspeed-up {b['seconds'] / a['seconds']:.2f}× ({a['mode']} vs {b['mode']}); "
              f"same choices: {same}; max relative difference of alignment values: {diff:.1e}")
    return 0


if __name__ == "__main__":
    from neuroal_jax.runtime import reexec_with_hugepages

    reexec_with_hugepages()  # huge-page malloc, as the CLI runs
    sys.exit(main())
