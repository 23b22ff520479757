"""Reproduce the README's results table: perplexity on held-out pydoc after pruning a model with
magnitude / wanda / multiflow at 50 / 60 / 70 % and uniform / OWL / DLP / NeuroAL (both steps).

    .venv/bin/python scripts/reproduce_results.py --model smollm2-135m --out results/smollm2.json
    .venv/bin/python scripts/reproduce_results.py --top-ups dlp --methods wanda,multiflow   # add a column

Calibration: `pydoc` (calibration split), --nsamples × --seqlen; evaluation: held-out `pydoc` windows
of --seqlen tokens. Prints a markdown table and writes every row (with chosen λs and timings) as JSON.
The JSON keeps every (method, sparsity, top-up) already measured: a rerun, or one with more top-ups,
runs only what is missing.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from converters import load_model
from neuroal_jax.comparison import compare
from neuroal_jax.outputs.files import write_json


def markdown(results: dict, top_ups: list[str]) -> str:
    lines = ["| method | sparsity | dense | " + " | ".join(top_ups) + " | NeuroAL λ (block, row) |",
             "|---|---|---|" + "---|" * len(top_ups) + "---|"]
    for r in results["runs"]:
        rows = {x["top_up"]: x for x in r["rows"]}
        ppl = {k: v["perplexity"][results["eval"]] for k, v in rows.items()}
        best = min((ppl[t] for t in top_ups if t in ppl), default=None)
        cells = ["-" if t not in ppl else f"**{ppl[t]:.2f}**" if ppl[t] == best else f"{ppl[t]:.2f}" for t in top_ups]
        lam = rows.get("neuroal", {})
        lams = f"{lam.get('lambda_block')}, {lam.get('lambda_row')}" if lam else "-"
        lines.append(f"| {r['method']} | {r['sparsity']:.0%} | {ppl['dense']:.2f} | " + " | ".join(cells)
                     + f" | {lams} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="built-in name, .gguf, HF folder or Hub id")
    ap.add_argument("--methods", default="magnitude,wanda,multiflow", help="comma-separated scores")
    ap.add_argument("--sparsities", default="0.5,0.6,0.7", help="comma-separated target sparsities")
    ap.add_argument("--top-ups", default="uniform,owl,dlp,neuroal",
                    help="comma-separated top-ups (dense is always added)")
    ap.add_argument("--nsamples", type=int, default=32, help="calibration windows")
    ap.add_argument("--seqlen", type=int, default=256, help="tokens per window")
    ap.add_argument("--eval", default="pydoc", help="evaluation dataset (held-out split)")
    ap.add_argument("--out", default="results/results.json",
                    help="JSON file with every row; rows already in it (same model and settings) are kept and "
                         "not run again, so an interrupted run continues")
    args = ap.parse_args()

    model = load_model(args.model)
    top_ups = args.top_ups.split(",")
    results = {"model": args.model, "eval": args.eval, "nsamples": args.nsamples, "seqlen": args.seqlen,
               "machine": f"{platform.machine()} {platform.processor()}".strip(), "runs": []}
    if Path(args.out).exists():
        old = json.loads(Path(args.out).read_text())
        changed = [k for k in ("model", "eval", "nsamples", "seqlen") if old.get(k) != results[k]]
        if changed:
            raise SystemExit(f"{args.out} holds results with other settings ({', '.join(changed)}); "
                             "pass another --out")
        results["runs"] = old["runs"]
    runs = {(r["method"], r["sparsity"]): r for r in results["runs"]}
    t0 = time.perf_counter()
    for method in args.methods.split(","):
        for s in (float(x) for x in args.sparsities.split(",")):
            run = runs.get((method, s))
            missing = [t for t in top_ups if run is None or t not in {x["top_up"] for x in run["rows"]}]
            if not missing:
                continue
            summary = compare(model, method=method, sparsity=s, top_ups=missing, calib="pydoc", eval=[args.eval],
                              nsamples=args.nsamples, seqlen=args.seqlen, progress=False).report
            if run is None:
                run = runs[(method, s)] = {"method": method, "sparsity": s, "rows": summary["rows"]}
                results["runs"].append(run)
            else:
                run["rows"] += [x for x in summary["rows"] if x["top_up"] != "dense"]
            print(f"[{time.perf_counter() - t0:7.0f} s] {method} {s:.0%}: " + ", ".join(
                f"{r['top_up']} {r['perplexity'][args.eval]:.2f}" for r in summary["rows"]), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            write_json(args.out, results)
    print()
    print(markdown(results, top_ups))
    return 0


if __name__ == "__main__":
    from neuroal_jax.runtime import reexec_with_hugepages

    reexec_with_hugepages()  # huge-page malloc, as the CLI runs
    raise SystemExit(main())
