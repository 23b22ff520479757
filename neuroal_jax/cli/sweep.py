"""`neuroal-jax sweep`: the command line of `neuroal_jax.sweeps.run.sweep`."""
from __future__ import annotations

import argparse

from .common import add_data, add_dtype, add_method_and_sparsity, add_model, add_output, run_keywords


def add_cli(sub) -> None:
    from ..sweeps.settings import SweepSettings
    p = sub.add_parser(
        "sweep", help="every NeuroAL λ candidate: alignment under each metric and the final pruned model's "
                      "perplexity; picks, oracle, regret and rank correlation per metric",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score every λ candidate of a NeuroAL step under every requested alignment metric in one search "
                    "pass,\nthen prune the model with each candidate over all --nsamples calibration windows (as "
                    "`prune` does)\nand measure its perplexity on --eval, all candidates in one pass over the blocks.\n"
                    "Per metric: its pick, the perplexity there, the oracle λ (lowest perplexity), the regret\n"
                    "ppl(pick) / ppl(oracle) - 1 and Spearman's ρ between the metric and perplexity.\n\n"
                    "Several --seeds, --search-samples or --calib sets (comma-separated) repeat the search and the\n"
                    "final pruning per combination and add a sensitivity table (mean ± std over seeds); several\n"
                    "--block-profile names sweep each profile's λs and plot them side by side.",
        epilog="examples:\n"
               "  neuroal-jax sweep --model smollm2-135m --method wanda --sparsity 0.7 --step block \\\n"
               "      --calib pydoc --nsamples 32 --seqlen 256 --eval pydoc --out runs/sweep-block\n"
               "  neuroal-jax sweep ... --step row --lambda-block 0.1 --metrics neuron,cosine\n"
               "  neuroal-jax sweep ... --seeds 0,16,46 --search-samples 1,2,4,8,16 --outcomes picks\n"
               "  neuroal-jax sweep ... --block-profile linear,owl,dlp,alphapruning   (plots/profiles.png)\n\n"
               "outputs: --out/sweep.json, sweep.csv and plots/*.png, written atomically; --force replaces only\n"
               "an earlier output of neuroal-jax.")
    add_model(p)
    add_method_and_sparsity(p)
    add_output(p, save_format=False)
    add_dtype(add_data(p, skip=("seed",), eval_required=True))
    SweepSettings.add_flags(p.add_argument_group("candidates, metrics and sensitivity"))
    p.set_defaults(func=run)


def run(args) -> int:
    from ..sweeps.run import sweep
    from ..sweeps.settings import SweepSettings
    from ..sweeps.summary import format_sensitivity, format_summary
    done = sweep(args.model, method=args.method, sparsity=args.sparsity, dtype=args.dtype, **run_keywords(args),
                 **SweepSettings.given_in(args))
    result = done.report
    s = result["settings"]
    print(f"\n{s['model']}: {s['method']} at {s['sparsity']:.0%}, {s['step']} step, "
          f"{len(result['runs'][0]['candidates'])} candidates, final pruning on {s['nsamples']} × {s['seqlen']}")
    for one in result["runs"]:
        base = f", block λ {one['lambda_block']:g} ({one['lambda_block_from']})" if "lambda_block" in one else ""
        print(f"\ncalibration {one['calib']}, seed {one['seed']}, |Cλ| {one['search_samples']}, "
              f"{one['block_profile']} block profile{base}")
        print(format_summary(one, s["eval"]))
    for pool in result["profiles"]:
        print(f"\nacross block profiles ({', '.join(pool['block_profiles'])}, pooled): calibration {pool['calib']}, "
              f"seed {pool['seed']}, |Cλ| {pool['search_samples']}")
        print(format_summary(pool, s["eval"]))
    if result["sensitivity"]:
        print("\nper calibration, block profile and |Cλ| (over seeds)\n" + format_sensitivity(result["sensitivity"],
                                                                                          s["eval"]))
    t = result["timings"]
    print("\ntimings: " + "  ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    print(f"wrote {done.out}/ (sweep.json, sweep.csv, plots/)")
    return 0
