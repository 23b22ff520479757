"""Benchmark: one `neuroal-jax sweep` over K block λs vs K separate `neuroal-jax prune` runs, one per λ
(`--top-up neuroal --neuroal-step block --lambdas-block λ`), as a user would run them by hand.

Both sides are fresh CLI processes with the same model, calibration, evaluation set and settings; each
process's wall time and peak RSS are measured (os.wait4). The sweep's perplexity for each λ must equal the
separate run's (same functions on the same shapes). Prints a table and the ratio.

    .venv/bin/python scripts/bench_sweep.py      # SmolLM2-135M, wanda 70 %, 4 λs, 8 × 256 pydoc tokens
    .venv/bin/python scripts/bench_sweep.py --lambdas 0.02,0.05,0.08,0.12,0.2 --nsamples 16
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS GB) of one command in a fresh process; its output is discarded unless it fails."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status):
            log.seek(0)
            raise SystemExit(f"failed: {' '.join(cmd)}\n{log.read().decode()[-2000:]}")
    return time.perf_counter() - t0, usage.ru_maxrss / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--method", default="wanda")
    ap.add_argument("--sparsity", default="0.7")
    ap.add_argument("--lambdas", default="0.02,0.05,0.1,0.2", help="the K block λs")
    ap.add_argument("--calib", default="pydoc")
    ap.add_argument("--eval", default="pydoc")
    ap.add_argument("--nsamples", default="8")
    ap.add_argument("--seqlen", default="256")
    args = ap.parse_args()
    cli = [sys.executable, "-m", "neuroal_jax.cli"]
    common = ["--model", args.model, "--method", args.method, "--sparsity", args.sparsity, "--calib", args.calib,
              "--nsamples", args.nsamples, "--seqlen", args.seqlen, "--eval", args.eval, "--quiet"]
    lambdas = args.lambdas.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        sweep_s, sweep_gb = timed([*cli, "sweep", *common, "--step", "block", "--lambdas-block", args.lambdas,
                                   "--out", f"{tmp}/sweep"])
        runs = [timed([*cli, "prune", *common, "--top-up", "neuroal", "--neuroal-step", "block", "--lambdas-block", lam,
                       "--out", f"{tmp}/prune-{i}"]) for i, lam in enumerate(lambdas)]
        swept = json.loads(Path(f"{tmp}/sweep/sweep.json").read_text())["runs"][0]["candidates"]
        alone = [json.loads(Path(f"{tmp}/prune-{i}/report.json").read_text())["perplexity"]
                 for i in range(len(lambdas))]
    same = all(c["perplexity"] == p for c, p in zip(swept, alone))
    sep_s, sep_gb = sum(s for s, _ in runs), max(g for _, g in runs)
    print(f"\nλ sweep vs separate prune runs: {args.model}, {args.method} {float(args.sparsity):.0%}, K = "
          f"{len(lambdas)} block λs, {args.nsamples} × {args.seqlen} calibration tokens, eval {args.eval} "
          f"({os.cpu_count()} CPU threads)\n")
    print(f"{'run':<34}{'seconds':>9}{'peak RSS GB':>13}")
    print(f"{'neuroal-jax sweep (one process)':<34}{sweep_s:>9.1f}{sweep_gb:>13.2f}")
    print(f"{f'{len(lambdas)} × neuroal-jax prune (one each)':<34}{sep_s:>9.1f}{sep_gb:>13.2f}")
    print(f"\nspeed-up {sep_s / sweep_s:.2f}×; every λ's perplexity identical in both: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
