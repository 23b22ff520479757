"""Benchmark: the NeuroAL search (both steps) picking λ by an output metric vs by the neuron alignment.

Each metric runs in its own subprocess (so peak RSS is its own) on the same model, calibration windows and
settings; `--alignment output_kl` adds, per candidate, the final norm and LM head over the search windows in token
chunks (and one dense pass), the neuron alignment none of that. Prints the time, peak RSS and λs side by side
and their ratio to the first metric (issue 26's target: ≤ 1.3× the time, peak RSS within ±10 %).

    .venv/bin/python scripts/bench_output_metrics.py                  # SmolLM2-135M, wanda 70 %, 8 × 256 pydoc
    .venv/bin/python scripts/bench_output_metrics.py --metrics neuron,output_kl,output_nll --lambda-chunk 4
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def run_metric(args) -> dict:
    from converters import load_model
    from neuroal_jax.evaluation.data import calibration_windows
    from neuroal_jax.topups.neuroal import SearchSettings, neuroal_search
    from neuroal_jax.topups.neuroal.output_metrics import OUTPUT_METRICS, token_chunk

    model = load_model(args.model)
    windows = calibration_windows(args.calib, model.tokenizer, args.nsamples, args.seqlen, seed=0)
    settings = SearchSettings(neuroal_step="both", search_samples=args.nsamples, alignment=args.metric,
                              lambda_chunk=args.lambda_chunk or "auto")
    t0 = time.perf_counter()
    r = neuroal_search(model.config, model.params, windows, args.sparsity, args.method, settings, progress=False)
    seconds = time.perf_counter() - t0
    chunk = token_chunk(model.config.vocab_size, args.nsamples * (args.seqlen - 1))
    return {"metric": args.metric, "seconds": seconds, "block_seconds": r.block.seconds,
            "row_seconds": r.row.seconds, "lambda_block": r.block.best_lambda, "lambda_row": r.row.best_lambda,
            "lambda_chunk": [r.block.chunk, r.row.chunk], "candidates": [len(r.block.lambdas), len(r.row.lambdas)],
            "token_chunk": chunk if args.metric in OUTPUT_METRICS else None,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--method", default="wanda")
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--calib", default="pydoc")
    ap.add_argument("--nsamples", type=int, default=8, help="search windows (default 8)")
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--lambda-chunk", type=int, default=None, help="candidates per pass (default: auto)")
    ap.add_argument("--metrics", default="neuron,output_kl", help="the first is the baseline of the ratios")
    ap.add_argument("--metric", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.metric:
        print(json.dumps(run_metric(args)))
        return 0
    rows = []
    for metric in args.metrics.split(","):
        cmd = [sys.executable, __file__, "--metric", metric, "--model", args.model, "--method", args.method,
               "--sparsity", str(args.sparsity), "--calib", args.calib, "--nsamples", str(args.nsamples),
               "--seqlen", str(args.seqlen)] + (["--lambda-chunk", str(args.lambda_chunk)] if args.lambda_chunk else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ}).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]
    print(f"\nNeuroAL search, both steps: {args.model}, {args.method} {args.sparsity:.0%}, {args.nsamples} × "
          f"{args.seqlen} tokens, λ chunk {base['lambda_chunk']} of {base['candidates']} candidates "
          f"({os.cpu_count()} CPU threads)\n")
    head = (f"{'--alignment':<13}{'total s':>9}{'block s':>9}{'row s':>9}{'× time':>8}{'peak RSS GB':>13}"
            f"{'× RSS':>7}{'λ block':>9}{'λ row':>7}{'token chunk':>13}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['metric']:<13}{r['seconds']:>9.1f}{r['block_seconds']:>9.1f}{r['row_seconds']:>9.1f}"
              f"{r['seconds'] / base['seconds']:>8.2f}{r['peak_rss_gb']:>13.2f}"
              f"{r['peak_rss_gb'] / base['peak_rss_gb']:>7.2f}{r['lambda_block']:>9.2f}{r['lambda_row']:>7.2f}"
              f"{'-' if r['token_chunk'] is None else r['token_chunk']:>13}")
    print("\n(target for an output metric: × time ≤ 1.30, × RSS within 0.90–1.10; times include compilation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
