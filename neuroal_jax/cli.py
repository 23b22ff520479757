"""The `neuroal-jax` command line: a thin layer over `neuroal_jax.api` and friends.

Commands: prune, eval-ppl, eval-zeroshot, export, compare, sweep, finetune.

Every top-up's flags come from its options dataclass (`neuroal_jax.topups.options`): the flag, type, default,
help and checks are written there once. `--option KEY=VALUE` passes any option of the chosen top-up
(e.g. of a top-up registered by a plugin).

Expected errors (bad input, missing files, unreachable Hub) end as one line
`neuroal-jax: error: ...` with exit status 2; NEUROAL_DEBUG=1 shows the traceback instead.
Ctrl-C, SIGTERM and SIGHUP stop the run cleanly (temporary folders removed; a --stream run keeps its
finished blocks for --resume) with exit status 128 + the signal number.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
import warnings

from .config import DTYPES
from .runtime import DEFAULT_COORDINATOR_TIMEOUT, Interrupted, handle_termination, reexec_with_hugepages

MODEL_HELP = ("a built-in name (smollm2-135m, gemma3-270m), a .gguf file, a local Hugging Face folder "
              "or a Hub id")
DATASET_HELP = "c4 | wikitext2 | ptb (Hub), pydoc (offline), text:PATH, tokens:PATH.npy"
WINDOWS_HELP = ("Calibration: NSAMPLES windows of SEQLEN tokens at random (seeded) starts in the text or in a 1-D "
                "tokens file; a 2-D tokens file [n, L] gives its first NSAMPLES rows, which must have L = SEQLEN. "
                "Evaluation: the text, or each row of a tokens file, is cut into non-overlapping windows of SEQLEN "
                "tokens; a sequence's last < SEQLEN tokens are not scored. Token ids must lie in [0, vocab_size).")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors in the CLI's format: `neuroal-jax: error: ...` (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"neuroal-jax: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------- argument types

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

def add_topup_options(parser: argparse.ArgumentParser, whose: str = "of the chosen top-up") -> None:
    """One --help group per top-up with options, generated from its options dataclass."""
    from .topups import TOPUPS
    for name, topup in TOPUPS.items():
        if topup.options.option_fields():
            topup.options.add_flags(parser.add_argument_group(f"{name} options (--top-up {name})"))
    parser.add_argument("--option", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                        help=f"any option {whose} by its key (value parsed as a Python literal when possible); "
                             "repeatable")


def options_from_args(args) -> dict:
    """The chosen top-up's options given on the command line; a flag of another top-up is an error."""
    from .topups import TOPUPS
    options = {}
    for name, topup in TOPUPS.items():
        given = topup.options.given_in(args)
        if name == args.top_up:
            options.update(given)
        elif given:
            from .topups.options import flag_of
            flag = flag_of(next(iter(given)))
            raise ValueError(f"{flag} is an option of --top-up {name}, not of --top-up {args.top_up}")
    options.update(dict(args.option or []))
    return options


# ---------------------------------------------------------------- commands

def cmd_prune(args) -> int:
    from .api import prune
    from .outputs.report import format_summary

    options = options_from_args(args)
    if args.distributed:
        from .topups.neuroal.sharding import initialize_distributed
        initialize_distributed(args.coordinator, args.num_processes, args.process_id, args.coordinator_timeout)
    result = prune(args.model, method=args.method, sparsity=args.sparsity, top_up=args.top_up,
                   structure=args.structure, calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen,
                   seed=args.seed, out=args.out, eval=args.eval or (), eval_nsamples=args.eval_nsamples,
                   force=args.force, options=options, batch_size=args.batch_size, progress=not args.quiet,
                   dtype=args.dtype, stream=args.stream, resume=args.resume, save_format=args.save_format)
    print(format_summary(result.report))
    if result.out is None:
        import jax
        print(f"\nprocess {jax.process_index()} of {jax.process_count()}: the same result as process 0, which "
              f"writes {args.out}")
    else:
        print(f"\nwrote {result.out} (Hugging Face checkpoint, masks/, report.json, plots/)")
    return 0


def cmd_eval_ppl(args) -> int:
    from converters import load_model

    from .api import check_dtype, default_seqlen, positive_int
    from .evaluation.data import eval_windows, parse_spec
    from .evaluation.perplexity import perplexity
    from .outputs.files import check_json_out, write_result_json

    dtype = check_dtype(args.dtype)
    spec = parse_spec(args.dataset)
    for flag, value, low in (("--nsamples", args.nsamples, 1), ("--seqlen", args.seqlen, 2),
                             ("--batch-size", args.batch_size, 1)):
        if value is not None:
            positive_int(flag, value, low)
    check_json_out(args.json)
    model = load_model(args.model, dtype=dtype)
    seqlen = model.config.check_seqlen(default_seqlen(model.config, args.seqlen))
    windows = eval_windows(spec, model.tokenizer, seqlen, args.nsamples, model.config.vocab_size)
    t0 = time.perf_counter()
    ppl = perplexity(model.config, model.params, windows, batch_size=args.batch_size, progress=not args.quiet)
    result = {"model": args.model, "dataset": args.dataset, "seqlen": seqlen, "windows": int(len(windows)),
              "perplexity": ppl, "seconds": round(time.perf_counter() - t0, 3)}
    print(f"{args.model}  {args.dataset}  {len(windows)} × {seqlen} tokens  perplexity {ppl:.4f}")
    if args.json:
        write_result_json(args.json, result)
    return 0


def cmd_export(args) -> int:
    from converters import export_hf, load_model
    from converters.compressed import check_save_format

    from .api import model_inputs
    from .outputs.files import check_out, output_lock
    check_save_format(args.save_format)
    out = check_out(args.out, args.force, model_inputs(args.model))
    with output_lock(out):  # from the start: a second run on --out is refused at once
        model = load_model(args.model)
        out = export_hf(model.config, model.params, out, tokenizer=model.tokenizer, force=args.force,
                        save_format=args.save_format)
    print(f"wrote {out} (Hugging Face {model.config.family} checkpoint, float32 safetensors"
          + (", prunable layers sparse-bitmask compressed)" if args.save_format == "compressed" else ")"))
    return 0


# ---------------------------------------------------------------- parser

def add_run_flags(group) -> None:
    """--eval-nsamples, --batch-size, --quiet: shared by the commands that prune and evaluate."""
    group.add_argument("--eval-nsamples", type=int, default=None, metavar="N",
                       help="evaluate only the first N windows of each test set (default: all)")
    group.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def add_save_format_flag(group) -> None:
    from converters.compressed import SAVE_FORMATS
    group.add_argument("--save-format", default="dense", choices=SAVE_FORMATS,
                       help="the model's weights: dense safetensors, or compressed (compressed-tensors' sparse-bitmask "
                            "format: the prunable layers' non-zero values and a bitmask; needs the compressed extra, "
                            "pip install 'neuroal-jax[compressed]'; transformers with compressed-tensors loads it) "
                            "(default: dense)")


def add_dtype_flag(group, kept_float32: str = "statistics and scores") -> None:
    group.add_argument("--dtype", default="float32", choices=DTYPES,
                       help=f"weights and activations ({kept_float32} stay float32; default: float32)")


def _add_prune(sub) -> None:
    from .pruning import methods
    from .topups import TOPUPS

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
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--method", required=True, choices=methods(),
                   help="base pruning score: magnitude |W|, wanda |W|·‖x‖, multiflow, or sparsegpt "
                        "(Hessian-based, also updates the kept weights)")
    p.add_argument("--sparsity", required=True, type=float, help="target fraction of weights set to zero, in [0, 1)")
    p.add_argument("--top-up", required=True, choices=topups,
                   help="sparsity allocation: " + ", ".join(topups) + " (uniform = every layer at --sparsity)")
    p.add_argument("--structure", default="row",
                   help="mask granularity: row (per output row, default), layer, or N:M such as 2:4 "
                        "(then --sparsity must be N/M); with --top-up owl or neuroal a mixed N:M, a whole N per "
                        "block with mean N, which may be fractional (5.6:8 is 70%%)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (written atomically)")
    p.add_argument("--force", action="store_true",
                   help="replace --out if it exists and is an output of neuroal-jax (nothing else is deleted)")
    add_save_format_flag(p)
    g = p.add_argument_group("data", WINDOWS_HELP)
    g.add_argument("--calib", default="c4", help=f"calibration data: {DATASET_HELP} (default: c4)")
    g.add_argument("--nsamples", type=int, default=128, help="calibration windows (default: 128; NeuroAL searches "
                                                             "on the first --search-samples of them)")
    g.add_argument("--seqlen", type=int, default=2048,
                   help="tokens per window, calibration and evaluation; at most the model's context (default: 2048)")
    g.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default: 0)")
    g.add_argument("--eval", type=lambda s: [v.strip() for v in s.split(",") if v.strip()], default=None,
                   metavar="SPEC[,SPEC...]", help=f"perplexity test sets after pruning: {DATASET_HELP}")
    add_run_flags(g)
    g = p.add_argument_group("scale: precision, memory, interrupted runs, several hosts")
    add_dtype_flag(g)
    g.add_argument("--stream", action="store_true",
                   help="read the model and write --out one block at a time (peak memory about one block plus "
                        "activations) with a resume point after every block")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted --stream run of the same settings and inputs (implies --stream)")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize first (multi-host; run the same command on every host)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="with --distributed: process 0's address "
                   "(default: auto-detected on SLURM / Open MPI / TPU)")
    g.add_argument("--num-processes", type=int, metavar="N", help="with --distributed: number of processes")
    g.add_argument("--process-id", type=int, metavar="I", help="with --distributed: this process's index")
    g.add_argument("--coordinator-timeout", type=float, default=DEFAULT_COORDINATOR_TIMEOUT, metavar="SECONDS",
                   help="with --distributed: give up when the coordinator (or, for process 0, every other process) "
                        f"has not answered within this time (default: {DEFAULT_COORDINATOR_TIMEOUT:g})")
    add_topup_options(p)
    p.set_defaults(func=cmd_prune)


def _add_eval_ppl(sub) -> None:
    p = sub.add_parser("eval-ppl", help="perplexity of a model on a dataset (reference protocol)",
                       description="Tokenize the test text as one sequence, cut it into non-overlapping "
                                   "windows of --seqlen tokens and report exp(mean next-token NLL). A tokens "
                                   "file's rows are sequences too: each is cut into windows; a sequence's last "
                                   "< --seqlen tokens are not scored. Token ids must lie in [0, vocab_size).")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--dataset", default="pydoc", help=f"test set: {DATASET_HELP} (default: pydoc held-out text)")
    p.add_argument("--seqlen", type=int, default=None, help="window length (default: min(2048, context length))")
    p.add_argument("--nsamples", type=int, default=None, help="evaluate only the first N windows (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="weights and activations (default: float32)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON (an existing file is replaced "
                                                  "only if neuroal-jax wrote it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval_ppl)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a model as a Hugging Face PyTorch checkpoint folder",
                       description="Convert a model (GGUF, HF folder, built-in) to a folder that "
                                   "transformers' AutoModelForCausalLM.from_pretrained loads.")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--force", action="store_true",
                   help="replace --out if it exists and is an output of neuroal-jax (nothing else is deleted)")
    add_save_format_flag(p)
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="neuroal-jax",
        description="NeuroAL in JAX: one-shot LLM pruning with adaptive block/row sparsity, "
                    "perplexity evaluation and export to Hugging Face PyTorch checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    _add_prune(sub)
    _add_eval_ppl(sub)
    from .evaluation.zeroshot import add_cli as add_zeroshot
    add_zeroshot(sub)
    _add_export(sub)
    from .comparison import add_cli as add_compare
    add_compare(sub)
    from .sweeps.cli import add_cli as add_sweep
    add_sweep(sub)
    from .recovery.cli import add_cli as add_finetune
    add_finetune(sub)
    return parser


EXPECTED_ERRORS = (ValueError, OSError, ImportError, ConnectionError, KeyError, NotImplementedError)


def one_line(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else e
    return " ".join(str(msg).split()) or type(e).__name__


def _one_line_warnings(show):
    """A `warnings.showwarning` that prints our own warnings as one line in the CLI's format, others with `show`."""
    def showwarning(message, category, filename, lineno, file=None, line=None):
        from .errors import NeuroalWarning
        if issubclass(category, NeuroalWarning):
            print(f"neuroal-jax: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)
    return showwarning


def kept_after_interrupt(args) -> str:
    """What an interrupted command leaves for --resume."""
    if args.command == "finetune":
        return "its last checkpoint (if any) is kept: rerun with --resume to continue"
    if getattr(args, "stream", False) or getattr(args, "resume", False):
        return "the finished blocks are kept: rerun with --resume to continue"
    return "nothing was written"


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a real command line: once, with huge-page malloc (neuroal_jax.runtime)
        reexec_with_hugepages(["-m", "neuroal_jax.cli", *sys.argv[1:]])
    args = build_parser().parse_args(argv)
    with handle_termination(), warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        try:
            return args.func(args)
        except EXPECTED_ERRORS as e:
            if os.environ.get("NEUROAL_DEBUG"):
                raise
            print(f"neuroal-jax: error: {one_line(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as e:
            what = "terminated" if isinstance(e, Interrupted) else "interrupted"
            print(f"neuroal-jax: {what}; {kept_after_interrupt(args)}", file=sys.stderr)
            code = 128 + (e.signum if isinstance(e, Interrupted) else 2)
            if argv is None:  # a real command line: XLA may still be running work of the interrupted call, and
                sys.stdout.flush(), sys.stderr.flush()  # tearing the interpreter down under it can crash
                os._exit(code)
            return code


if __name__ == "__main__":
    sys.exit(main())
