"""`neuroal-jax compare`: the command line of `neuroal_jax.comparison.compare` (the README's main job)."""
from __future__ import annotations

import argparse

from .common import (
    add_data,
    add_dtype,
    add_method_and_sparsity,
    add_model,
    add_output,
    add_structure,
    add_topup_options,
    all_topup_options,
    run_keywords,
)


def add_cli(sub) -> None:
    p = sub.add_parser(
        "compare", help="dense vs several top-ups on one model: a perplexity table and plots",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load a model once, prune it with each --top-ups entry (same method, sparsity, structure and\n"
                    "calibration), evaluate the dense and every pruned model's perplexity on --eval and print one\n"
                    "table. This is the README's main job. Each top-up option flag goes to the top-ups in --top-ups\n"
                    "that take it (--block-profile owl: to neuroal). With --out: per-top-up folders (as prune's\n"
                    "--out), summary.json and comparison.png.",
        epilog="example:\n  neuroal-jax compare --model smollm2-135m --method wanda --sparsity 0.7 \\\n"
               "      --top-ups uniform,owl,neuroal --calib pydoc --nsamples 32 --seqlen 256 --eval pydoc \\\n"
               "      --out runs/main")
    add_model(p)
    add_method_and_sparsity(p)
    p.add_argument("--top-ups", default="uniform,owl,neuroal", help="comma-separated (default: uniform,owl,neuroal)")
    add_structure(p)
    add_output(p, required=False)
    add_data(p, eval_required=True)
    add_dtype(p.add_argument_group("precision"))
    add_topup_options(p, "of any top-up in --top-ups")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..comparison import compare, format_table
    result = compare(args.model, method=args.method, sparsity=args.sparsity, top_ups=args.top_ups,
                     structure=args.structure, options=all_topup_options(args), dtype=args.dtype, **run_keywords(args))
    summary = result.report
    s = summary["settings"]
    structure = "" if s["structure"] == "row" else f" ({s['structure']})"
    print(f"\n{s['model']}: {s['method']} at {s['target_sparsity']:.0%}{structure}, calibration {s['calib']} "
          f"{s['nsamples']} × {s['seqlen']}\n")
    print(format_table(summary))
    if result.out:
        print(f"\nwrote {result.out}/ (per top-up: pruned HF checkpoint, masks, report.json, plots; "
              "summary.json, comparison.png)")
    return 0
