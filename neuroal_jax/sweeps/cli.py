"""`neuroal-jax sweep`: the command line of `neuroal_jax.sweeps.run.sweep`."""
from __future__ import annotations

import argparse

from .settings import SweepSettings


def add_cli(subparsers) -> None:
    from ..cli import DATASET_HELP, MODEL_HELP, WINDOWS_HELP, add_dtype_flag, add_run_flags
    from ..pruning import methods
    p = subparsers.add_parser(
        "sweep", help="every NeuroAL λ candidate: alignment under each metric and the final pruned model's "
                      "perplexity; picks, oracle, regret and rank correlation per metric",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score every λ candidate of a NeuroAL step under every requested alignment metric in one search "
                    "pass,\nthen prune the model with each candidate over all --nsamples calibration windows (as "
                    "`prune` does)\nand measure its held-out perplexity, all candidates in one pass over the blocks.\n"
                    "Per metric: its pick, the perplexity there, the oracle λ (lowest perplexity), the regret\n"
                    "ppl(pick) / ppl(oracle) - 1 and Spearman's ρ between the metric and perplexity.\n\n"
                    "Several --seeds, --search-samples or --calib sources repeat the search and the final pruning per\n"
                    "combination and add a sensitivity table (mean ± std over seeds); several --block-profile names\n"
                    "sweep each profile's λs and plot them side by side.",
        epilog="examples:\n"
               "  neuroal-jax sweep --model smollm2-135m --method wanda --sparsity 0.7 --step block \\\n"
               "      --calib pydoc --nsamples 32 --seqlen 256 --eval pydoc --out runs/sweep-block\n"
               "  neuroal-jax sweep ... --step row --lambda-block 0.1 --metrics neuron,cosine\n"
               "  neuroal-jax sweep ... --seeds 0,16,46 --search-samples 1,2,4,8,16 --outcomes picks\n"
               "  neuroal-jax sweep ... --block-profile linear,owl,dlp,alphapruning   (plots/profiles.png)\n\n"
               "outputs: --out/sweep.json, sweep.csv and plots/*.png, written atomically; --force replaces only\n"
               "an earlier output of neuroal-jax.")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--method", required=True, choices=methods(), help="base pruning score")
    p.add_argument("--sparsity", required=True, type=float, help="target fraction of weights set to zero, in [0, 1)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (written atomically)")
    p.add_argument("--force", action="store_true",
                   help="replace --out if it exists and is an output of neuroal-jax (nothing else is deleted)")
    g = p.add_argument_group("data", WINDOWS_HELP)
    g.add_argument("--calib", default="c4", metavar="SPEC[,SPEC...]",
                   help=f"calibration data, one or several (sensitivity): {DATASET_HELP} (default: c4)")
    g.add_argument("--nsamples", type=int, default=128, help="calibration windows of the final pruning (default: 128)")
    g.add_argument("--seqlen", type=int, default=2048, help="tokens per window (default: 2048)")
    g.add_argument("--eval", required=True, metavar="SPEC[,SPEC...]", help=f"perplexity test sets: {DATASET_HELP}")
    add_run_flags(g)
    add_dtype_flag(g)
    SweepSettings.add_flags(p.add_argument_group("candidates, metrics and sensitivity"))
    p.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from .run import sweep
    from .summary import format_sensitivity, format_summary
    result = sweep(args.model, method=args.method, sparsity=args.sparsity, calib=args.calib, nsamples=args.nsamples,
                   seqlen=args.seqlen, eval=args.eval, eval_nsamples=args.eval_nsamples, batch_size=args.batch_size,
                   dtype=args.dtype, out=args.out, force=args.force, progress=not args.quiet,
                   **SweepSettings.given_in(args))
    s = result["settings"]
    print(f"\n{s['model']}: {s['method']} at {s['sparsity']:.0%}, {s['step']} step, "
          f"{len(result['runs'][0]['candidates'])} candidates, final pruning on {s['nsamples']} × {s['seqlen']}")
    for run in result["runs"]:
        base = f", block λ {run['lambda_block']:g} ({run['lambda_block_from']})" if "lambda_block" in run else ""
        print(f"\ncalibration {run['calib']}, seed {run['seed']}, |Cλ| {run['search_samples']}, "
              f"{run['block_profile']} block profile{base}")
        print(format_summary(run, s["eval"]))
    if result["sensitivity"]:
        print("\nper calibration, block profile and |Cλ| (over seeds)\n" + format_sensitivity(result["sensitivity"],
                                                                                          s["eval"]))
    t = result["timings"]
    print("\ntimings: " + "  ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    print(f"wrote {args.out}/ (sweep.json, sweep.csv, plots/)")
    return 0
