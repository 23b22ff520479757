"""`neuroal-jax prune`: the command line of `neuroal_jax.api.prune` (and of `--distributed` runs)."""
from __future__ import annotations

import argparse

from ..runtime import DEFAULT_COORDINATOR_TIMEOUT
from .common import (
    add_data,
    add_dtype,
    add_method_and_sparsity,
    add_model,
    add_output,
    add_structure,
    add_topup_options,
    options_from_args,
    run_keywords,
)

DISTRIBUTED_FLAGS = (("--coordinator", "coordinator"), ("--num-processes", "num_processes"),
                     ("--process-id", "process_id"), ("--coordinator-timeout", "coordinator_timeout"))


def add_cli(sub) -> None:
    from ..topups import TOPUPS

    topups = list(TOPUPS)
    p = sub.add_parser(
        "prune", help="prune a model one-shot (base method + sparsity top-up), evaluate and export it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prune every linear layer of the transformer blocks, block by block on the pruned model's own "
                    "activations.\nThe base method scores weights; the top-up decides how much each "
                    "block / layer / row is pruned.\n\nThe output folder holds the pruned model as a Hugging Face "
                    "PyTorch checkpoint (config.json,\nmodel.safetensors, tokenizer), masks/ (orbax: masks and "
                    "sparsity targets; read with\nneuroal_jax.load_masks), report.json and plots/*.png.",
        epilog="example:\n  neuroal-jax prune --model smollm2-135m --method wanda --sparsity 0.5 --top-up owl \\\n"
               "      --calib pydoc --nsamples 32 --seqlen 256 --eval pydoc --out runs/smol-wanda-owl\n\n"
               "outputs: --out is built in a temporary folder next to it and renamed at the end. --force replaces\n"
               "an existing --out only if neuroal-jax wrote it and it holds nothing else; an --out that holds an\n"
               "input, the current folder or one above it is refused. Ctrl-C / SIGTERM leave nothing behind\n"
               "(a --stream run keeps its finished blocks for --resume).")
    add_model(p)
    add_method_and_sparsity(p)
    p.add_argument("--top-up", required=True, choices=topups,
                   help="sparsity allocation: " + ", ".join(topups) + " (uniform = every layer at --sparsity)")
    add_structure(p)
    add_output(p, resume="continue an interrupted --stream run of the same settings and inputs (implies --stream)")
    add_data(p)
    g = p.add_argument_group("scale: precision, memory, interrupted runs, several hosts")
    add_dtype(g)
    g.add_argument("--stream", action="store_true",
                   help="read the model and write --out one block at a time (peak memory about one block plus "
                        "activations) with a resume point after every block")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize first (multi-host; run the same command on every host); "
                        "needs --coordinator, --num-processes and --process-id unless a cluster environment (SLURM, "
                        "Open MPI, Cloud TPU, Kubernetes) provides them")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="only with --distributed: process 0's address, the "
                   "same on every process (default: auto-detected on SLURM / Open MPI / TPU / Kubernetes)")
    g.add_argument("--num-processes", type=int, metavar="N", help="only with --distributed: number of processes")
    g.add_argument("--process-id", type=int, metavar="I", help="only with --distributed: this process's index, "
                   "from 0 to N-1 (process 0 is the coordinator)")
    g.add_argument("--coordinator-timeout", type=float, default=None, metavar="SECONDS",
                   help="only with --distributed: give up when the coordinator (or, for process 0, every other "
                        f"process) has not answered within this time (default: {DEFAULT_COORDINATOR_TIMEOUT:g})")
    add_topup_options(p)
    p.set_defaults(func=run)


def start_distributed(args) -> None:
    """With --distributed, join the other processes (before any JAX computation); its flags without it are an error."""
    from ..errors import UsageError
    given = [flag for flag, dest in DISTRIBUTED_FLAGS if getattr(args, dest) is not None]
    if given and not args.distributed:
        raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} only valid with --distributed "
                         f"(a multi-process run): add --distributed, or drop {' '.join(given)}")
    if args.distributed:  # its checks come first: nothing connects on bad values
        from ..distributed import initialize_distributed
        timeout = DEFAULT_COORDINATOR_TIMEOUT if args.coordinator_timeout is None else args.coordinator_timeout
        initialize_distributed(args.coordinator, args.num_processes, args.process_id, timeout)


def run(args) -> int:
    from ..api import prune
    from ..outputs.report import format_summary

    options = options_from_args(args)
    start_distributed(args)
    result = prune(args.model, method=args.method, sparsity=args.sparsity, top_up=args.top_up,
                   structure=args.structure, options=options, dtype=args.dtype, stream=args.stream,
                   resume=args.resume, **run_keywords(args))
    print(format_summary(result.report))
    if result.out is None:
        import jax
        print(f"\nprocess {jax.process_index()} of {jax.process_count()}: the same result as process 0, which "
              "writes --out")
    else:
        print(f"\nwrote {result.out} (Hugging Face checkpoint, masks/, report.json, plots/)")
    return 0
