"""The `neuroal-jax` command line: a thin layer over `neuroal_jax.api` and friends.

Commands: prune, eval-ppl, eval-zeroshot, export, compare.

Top-up options are registered generically. Each module in `api.TOPUP_MODULES` may expose

    add_cli_options(group: argparse._ArgumentGroup) -> None     # add its flags to `prune`
    options_from_args(args: argparse.Namespace) -> dict          # -> PruneJob.options entries

and the CLI calls them. For a module without these hooks the CLI's fallback flags below
(`FALLBACK_OPTIONS`, keyed by module) are used, so a module that adds its own hooks later
replaces them without touching this file. `--option KEY=VALUE` passes anything else.

Expected errors (bad input, missing files, unreachable Hub) end as one line
`neuroal-jax: error: ...` with exit status 2; NEUROAL_DEBUG=1 shows the traceback instead.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from dataclasses import dataclass

from .config import DTYPES
from .runtime import reexec_with_hugepages

MODEL_HELP = ("a built-in name (smollm2-135m, gemma3-270m), a .gguf file, a local Hugging Face folder "
              "or a Hub id")
DATASET_HELP = "c4 | wikitext2 | ptb (Hub), pydoc (offline), text:PATH, tokens:PATH.npy"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors in the CLI's format: `neuroal-jax: error: ...` (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"neuroal-jax: error: {message} (see '{self.prog} --help')\n")


def default_seqlen(cfg, seqlen: int | None) -> int:
    return seqlen if seqlen is not None else min(2048, cfg.max_position_embeddings)


# ---------------------------------------------------------------- argument types

def float_list(text: str) -> tuple[float, ...]:
    """"0.01,0.02,0.05" -> (0.01, 0.02, 0.05)."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def key_value(text: str) -> tuple[str, object]:
    """"owl_m=7" -> ("owl_m", 7): the value is a Python literal if it parses as one, else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return key.strip(), parsed


# ---------------------------------------------------------------- top-up options

@dataclass(frozen=True)
class Option:
    """One CLI flag whose value goes into PruneJob.options[key] (omitted when not given)."""
    flag: str
    key: str
    help: str
    type: object = float
    choices: tuple | None = None
    metavar: str | None = None

    def add(self, group) -> None:
        group.add_argument(self.flag, dest=f"topup_{self.key}", type=self.type, default=None, choices=self.choices,
                           metavar=self.metavar, help=self.help)


#: Titles of the --help groups of each top-up module's flags.
GROUP_TITLES = {"neuroal_jax.allocation": "OWL options (--top-up owl)",
                "neuroal_jax.alphapruning": "AlphaPruning options (--top-up alphapruning)",
                "neuroal_jax.dsnot": "DSnoT options (--top-up dsnot)",
                "neuroal_jax.search": "NeuroAL options (--top-up neuroal)"}

#: Fallback flags per top-up module, used while that module has no `add_cli_options` of its own.
FALLBACK_OPTIONS: dict[str, tuple[Option, ...]] = {
    "neuroal_jax.allocation": (
        Option("--owl-m", "owl_m", "OWL: outlier threshold M (score > M × mean) (default: 5)", metavar="M"),
        Option("--owl-lambda", "owl_lambda", "OWL: λ, the half-range of block densities (default: 0.08)",
               metavar="λ"),
    ),
    "neuroal_jax.alphapruning": (
        Option("--alpha-epsilon", "alpha_epsilon",
               "AlphaPruning: ε, block sparsities span [1-ε, 1+ε] × s before rescaling (default: 0.3)",
               metavar="ε"),
    ),
    "neuroal_jax.dsnot": (
        Option("--dsnot-max-cycles", "dsnot_max_cycles", "DSnoT: at most this many prune-and-regrow cycles "
               "(default: 50)", type=int, metavar="N"),
        Option("--dsnot-threshold", "dsnot_threshold", "DSnoT: a row stops once its reconstruction error is at "
               "most this (default: 0.1)", metavar="T"),
        Option("--dsnot-var-power", "dsnot_var_power", "DSnoT: power of the input variance in the regrow order "
               "(default: 1)", metavar="P"),
        Option("--dsnot-skip", "dsnot_skip", "DSnoT: layers left unrefined: mlp (reference), self_attn or none "
               "(default: mlp)", type=str, choices=("mlp", "self_attn", "none")),
    ),
    # ---- NeuroAL options (SPEC §5–6): the keys `neuroal_jax.search.neuroal` reads from PruneJob.options.
    # Move them into `neuroal_jax.search.add_cli_options` / `options_from_args` to own them there; these
    # fallbacks then step aside automatically.
    "neuroal_jax.search": (
        Option("--neuroal-step", "neuroal_step", "NeuroAL: which λ search to run (default: both)", type=str,
               choices=("block", "row", "both")),
        Option("--lambdas-block", "lambdas_block",
               "NeuroAL: block-step λ values, comma-separated (default: 0.01..0.10,0.12,0.15,0.20,0.25; "
               "without 0.25 when s >= 0.8)", type=float_list, metavar="L1,L2,..."),
        Option("--lambdas-row", "lambdas_row",
               "NeuroAL: row-step λ values, comma-separated (default: 0.00..0.10,0.12,0.15,0.20,0.25)",
               type=float_list, metavar="L1,L2,..."),
        Option("--search-samples", "search_samples",
               "NeuroAL: calibration windows used by the λ search, the first N (default: 8)", type=int, metavar="N"),
        Option("--alignment", "alignment", "NeuroAL: alignment metric name from the registry (default: neuron)",
               type=str, metavar="NAME"),
        Option("--lambda-chunk", "lambda_chunk",
               "NeuroAL: evaluate this many λ candidates at a time to save memory (default: all)", type=int,
               metavar="K"),
        Option("--dense-stream", "dense_stream",
               "NeuroAL: dense activations on each candidate's sparse stream (reference, default) or on "
               "the dense model's stream (paper's Algorithm 1)", type=str, choices=("candidate", "model")),
        Option("--devices", "devices", "NeuroAL: shard the λ candidates over the first N devices "
               "(default: one device)", type=int, metavar="N"),
        Option("--model-parallel", "model_parallel", "NeuroAL: also split every weight's rows over M of those "
               "devices (M divides N; default: 1)", type=int, metavar="M"),
    ),
}


def _module_name(module) -> str:
    return getattr(module, "__name__", str(module))


def add_topup_options(parser: argparse.ArgumentParser, modules: list) -> None:
    """Add every top-up's flags to the prune parser: the module's own hook, else the fallbacks."""
    own = {_module_name(m): m for m in modules if hasattr(m, "add_cli_options")}
    def title(name):
        return GROUP_TITLES.get(name, f"{name.rsplit('.', 1)[-1]} options")

    for name, module in own.items():
        module.add_cli_options(parser.add_argument_group(title(name)))
    for name, options in FALLBACK_OPTIONS.items():
        if name not in own:
            group = parser.add_argument_group(title(name))
            for opt in options:
                opt.add(group)
    parser.add_argument("--option", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                        help="any other top-up option, passed as PruneJob.options[KEY] (value parsed as a "
                             "Python literal when possible); repeatable")


def options_from_args(args, modules: list) -> dict:
    """PruneJob.options from the parsed flags (only the ones given)."""
    options: dict = {}
    own = {_module_name(m): m for m in modules if hasattr(m, "options_from_args")}
    for name, module in own.items():
        options.update({k: v for k, v in module.options_from_args(args).items() if v is not None})
    for name, opts in FALLBACK_OPTIONS.items():
        if name not in own:
            for opt in opts:
                value = getattr(args, f"topup_{opt.key}", None)
                if value is not None:
                    options[opt.key] = list(value) if isinstance(value, tuple) else value
    options.update(dict(args.option or []))
    return options


# ---------------------------------------------------------------- commands

def cmd_prune(args) -> int:
    from .api import load_topup_modules, prune
    from .report import format_summary

    options = options_from_args(args, load_topup_modules())
    if args.distributed:
        from .sharding import initialize_distributed
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    result = prune(args.model, method=args.method, sparsity=args.sparsity, top_up=args.top_up,
                   structure=args.structure, calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen,
                   seed=args.seed, out=args.out, eval=args.eval or (), eval_nsamples=args.eval_nsamples,
                   force=args.force, options=options, batch_size=args.batch_size, progress=not args.quiet,
                   dtype=args.dtype, stream=args.stream, resume=args.resume)
    print(format_summary(result.report))
    print(f"\nwrote {result.out} (Hugging Face checkpoint, masks/, report.json, plots/)")
    return 0


def cmd_eval_ppl(args) -> int:
    from converters import load_model

    from .data import eval_windows
    from .evaluation import perplexity
    from .report import write_json

    from .api import check_dtype
    model = load_model(args.model, dtype=check_dtype(args.dtype))
    seqlen = default_seqlen(model.config, args.seqlen)
    if seqlen > model.config.max_position_embeddings:
        raise ValueError(f"seqlen {seqlen} exceeds the model's context length "
                         f"{model.config.max_position_embeddings}; pass a smaller --seqlen")
    windows = eval_windows(args.dataset, model.tokenizer, seqlen, args.nsamples)
    t0 = time.perf_counter()
    ppl = perplexity(model.config, model.params, windows, batch_size=args.batch_size, progress=not args.quiet)
    result = {"model": args.model, "dataset": args.dataset, "seqlen": seqlen, "windows": int(len(windows)),
              "perplexity": ppl, "seconds": round(time.perf_counter() - t0, 3)}
    print(f"{args.model}  {args.dataset}  {len(windows)} × {seqlen} tokens  perplexity {ppl:.4f}")
    if args.json:
        write_json(args.json, result)
    return 0


def cmd_export(args) -> int:
    from converters import export_hf, load_model

    model = load_model(args.model)
    out = export_hf(model.config, model.params, args.out, tokenizer=model.tokenizer, force=args.force)
    print(f"wrote {out} (Hugging Face {model.config.family} checkpoint, float32 safetensors)")
    return 0


# ---------------------------------------------------------------- parser

def _add_prune(sub) -> None:
    from .api import available_topups, load_topup_modules
    from .pruning import METHODS

    modules = load_topup_modules()
    topups = available_topups()
    p = sub.add_parser(
        "prune", help="prune a model one-shot (base method + sparsity top-up), evaluate and export it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prune every linear layer of the transformer blocks, block by block on the pruned model's own "
                    "activations.\nThe base method scores weights; the top-up decides how much each "
                    "block / layer / row is pruned.\n\nThe output folder holds the pruned model as a Hugging Face "
                    "PyTorch checkpoint (config.json,\nmodel.safetensors, tokenizer), masks/ (orbax: masks and "
                    "sparsity targets; read with\nneuroal_jax.load_masks), report.json and plots/*.png.",
        epilog="example:\n  neuroal-jax prune --model smollm2-135m --method wanda --sparsity 0.5 --top-up owl \\\n"
               "      --calib pydoc --nsamples 32 --seqlen 256 --eval pydoc --out runs/smol-wanda-owl")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--method", required=True, choices=METHODS,
                   help="base pruning score: magnitude |W|, wanda |W|·‖x‖, multiflow, or sparsegpt "
                        "(Hessian-based, also updates the kept weights)")
    p.add_argument("--sparsity", required=True, type=float, help="target fraction of weights set to zero, in [0, 1)")
    p.add_argument("--top-up", required=True, choices=topups,
                   help="sparsity allocation: " + ", ".join(topups) + " (uniform = every layer at --sparsity)")
    p.add_argument("--structure", default="row",
                   help="mask granularity: row (per output row, default), layer, or N:M such as 2:4 "
                        "(then --sparsity must be N/M)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (written atomically)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    g = p.add_argument_group("data")
    g.add_argument("--calib", default="c4", help=f"calibration data: {DATASET_HELP} (default: c4)")
    g.add_argument("--nsamples", type=int, default=128, help="calibration windows (default: 128)")
    g.add_argument("--seqlen", type=int, default=2048,
                   help="tokens per window, calibration and evaluation; at most the model's context (default: 2048)")
    g.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default: 0)")
    g.add_argument("--eval", type=lambda s: [v.strip() for v in s.split(",") if v.strip()], default=None,
                   metavar="SPEC[,SPEC...]", help=f"perplexity test sets after pruning: {DATASET_HELP}")
    g.add_argument("--eval-nsamples", type=int, default=None, metavar="N",
                   help="evaluate only the first N windows of each test set (default: all)")
    g.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("scale: precision, memory, interrupted runs, several hosts")
    g.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="weights and activations (statistics and scores stay float32; default: float32)")
    g.add_argument("--stream", action="store_true",
                   help="read the model and write --out one block at a time (peak memory about one block plus "
                        "activations) with a resume point after every block")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted --stream run of the same settings (implies --stream)")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize first (multi-host; run the same command on every host)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="with --distributed: process 0's address "
                   "(default: auto-detected on SLURM / Open MPI / TPU)")
    g.add_argument("--num-processes", type=int, metavar="N", help="with --distributed: number of processes")
    g.add_argument("--process-id", type=int, metavar="I", help="with --distributed: this process's index")
    add_topup_options(p, modules)
    p.set_defaults(func=cmd_prune)


def _add_eval_ppl(sub) -> None:
    p = sub.add_parser("eval-ppl", help="perplexity of a model on a dataset (reference protocol)",
                       description="Tokenize the test text as one sequence, cut it into non-overlapping "
                                   "windows of --seqlen tokens and report exp(mean next-token NLL).")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--dataset", default="pydoc", help=f"test set: {DATASET_HELP} (default: pydoc held-out text)")
    p.add_argument("--seqlen", type=int, default=None, help="window length (default: min(2048, context length))")
    p.add_argument("--nsamples", type=int, default=None, help="evaluate only the first N windows (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="weights and activations (default: float32)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval_ppl)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a model as a Hugging Face PyTorch checkpoint folder",
                       description="Convert a model (GGUF, HF folder, built-in) to a folder that "
                                   "transformers' AutoModelForCausalLM.from_pretrained loads.")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="neuroal-jax",
        description="NeuroAL in JAX: one-shot LLM pruning with adaptive block/row sparsity, "
                    "perplexity evaluation and export to Hugging Face PyTorch checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    _add_prune(sub)
    _add_eval_ppl(sub)
    try:  # written separately; absent until then
        from .zeroshot import add_cli as add_zeroshot
    except ImportError:
        add_zeroshot = None
    if add_zeroshot is not None:
        add_zeroshot(sub)
    _add_export(sub)
    from .compare import add_cli as add_compare
    add_compare(sub)
    return parser


EXPECTED_ERRORS = (ValueError, OSError, ImportError, ConnectionError, KeyError, NotImplementedError)


def one_line(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    return " ".join(str(msg).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a real command line: once, with huge-page malloc (neuroal_jax.runtime)
        reexec_with_hugepages(["-m", "neuroal_jax.cli", *sys.argv[1:]])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EXPECTED_ERRORS as e:
        if os.environ.get("NEUROAL_DEBUG"):
            raise
        print(f"neuroal-jax: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = getattr(args, "stream", False) or getattr(args, "resume", False)
        print("neuroal-jax: interrupted" + ("; the finished blocks are kept: rerun with --resume to continue"
                                            if resumable else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
