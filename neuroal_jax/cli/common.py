"""What every command shares: the parser with one-line errors, and each shared flag defined once (its name,
default, help and type), so that the same flag means the same thing in every command."""
from __future__ import annotations

import argparse
import ast

from ..config import DTYPES
from ..topups.options import comma_list

MODEL_HELP = ("a built-in name (smollm2-135m, gemma3-270m), a .gguf file, a local Hugging Face folder "
              "or a Hub id")
DATASET_HELP = "c4 | wikitext2 | ptb (Hub), pydoc (offline), text:PATH, tokens:PATH.npy"
WINDOWS_HELP = ("Calibration: NSAMPLES windows of SEQLEN tokens at random (seeded) starts in the text or in a 1-D "
                "tokens file; a 2-D tokens file [n, L] gives its first NSAMPLES rows, which must have L = SEQLEN. "
                "Evaluation: the text, or each row of a tokens file, is cut into non-overlapping windows of SEQLEN "
                "tokens; a sequence's last < SEQLEN tokens are not scored. Token ids must lie in [0, vocab_size).")
EVAL_WINDOWS_HELP = WINDOWS_HELP[WINDOWS_HELP.index("Evaluation:"):]
SEQLEN_DEFAULT = "min(2048, the model's context)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors in the CLI's format: `neuroal-jax: error: ...` (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"neuroal-jax: error: {message} (see '{self.prog} --help')\n")


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


# ---------------------------------------------------------------- the shared flags

def add_model(p, help: str = MODEL_HELP) -> None:
    p.add_argument("--model", required=True, help=help)


def add_method_and_sparsity(p) -> None:
    from ..pruning import methods
    p.add_argument("--method", required=True, choices=methods(),
                   help="base pruning score: magnitude |W|, wanda |W|·‖x‖, multiflow, or sparsegpt "
                        "(Hessian-based, also updates the kept weights)")
    p.add_argument("--sparsity", required=True, type=float, help="target fraction of weights set to zero, in [0, 1)")


def add_structure(p) -> None:
    p.add_argument("--structure", default="row",
                   help="mask granularity: row (per output row, default), layer, or N:M such as 2:4 "
                        "(then --sparsity must be N/M); with --top-up owl or neuroal a mixed N:M, a whole N per "
                        "block with mean N, which may be fractional (5.6:8 is 70%%)")


def add_output(p, *, required: bool = True, what: str = "output folder (written atomically)",
               resume: str | None = None) -> None:
    """--out, --force, and --resume with its command's help when the command resumes."""
    p.add_argument("--out", required=required, metavar="DIR", help=what)
    p.add_argument("--force", action="store_true",
                   help="replace --out if it exists and is an output of neuroal-jax (nothing else is deleted)")
    if resume:
        p.add_argument("--resume", action="store_true", help=resume)


def add_save_format(g) -> None:
    from converters.compressed import SAVE_FORMATS
    g.add_argument("--save-format", default="dense", choices=SAVE_FORMATS,
                   help="the model's weights: dense safetensors, or compressed (compressed-tensors' sparse-bitmask "
                        "format: the prunable layers' non-zero values and a bitmask; needs the compressed extra, "
                        "pip install 'neuroal-jax[compressed]'; transformers with compressed-tensors loads it) "
                        "(default: dense)")


def add_calibration(g, *, several: bool = False) -> None:
    """--calib, --nsamples and --seed (--seqlen: `add_seqlen`); `several`: a list of calibration sets, and no --seed
    (a sweep's --seeds takes several)."""
    g.add_argument("--calib", default="c4", metavar="SPEC[,SPEC...]" if several else "SPEC",
                   help=f"calibration data{', one or several (sensitivity)' if several else ''}: {DATASET_HELP} "
                        "(default: c4)")
    g.add_argument("--nsamples", type=int, default=128, help="calibration windows (default: 128; NeuroAL searches "
                                                             "on the first --search-samples of them)")
    if not several:
        g.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default: 0)")


def add_seqlen(g, what: str = "calibration and evaluation") -> None:
    g.add_argument("--seqlen", type=int, default=None,
                   help=f"tokens per window, {what}; at most the model's context (default: {SEQLEN_DEFAULT})")


def add_evaluation(g, *, required: bool = False, what: str = "perplexity test sets after pruning") -> None:
    """--eval, --eval-nsamples."""
    g.add_argument("--eval", type=comma_list, required=required, default=None, metavar="SPEC[,SPEC...]",
                   help=f"{what}: {DATASET_HELP}")
    g.add_argument("--eval-nsamples", type=int, default=None, metavar="N",
                   help="evaluate only the first N windows of each test set (default: all)")


def add_data(p, *, several: bool = False, eval_required: bool = False,
             eval_what: str = "perplexity test sets after pruning"):
    """The "data" group of a command that prunes and evaluates: calibration, --seqlen, evaluation, --batch-size and
    --quiet; returns the group."""
    g = p.add_argument_group("data", WINDOWS_HELP)
    add_calibration(g, several=several)
    add_seqlen(g)
    add_evaluation(g, required=eval_required, what=eval_what)
    add_batch_size(g)
    add_quiet(g)
    return g


def add_batch_size(g) -> None:
    g.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")


def add_quiet(g) -> None:
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_dtype(g, kept_float32: str = "statistics and scores") -> None:
    g.add_argument("--dtype", default="float32", choices=DTYPES,
                   help=f"weights and activations ({kept_float32} stay float32; default: float32)")


# ---------------------------------------------------------------- top-up options

def add_topup_options(parser, whose: str = "of the chosen top-up") -> None:
    """One --help group per top-up with options, generated from its options dataclass."""
    from ..topups import TOPUPS
    for name, topup in TOPUPS.items():
        if topup.options.option_fields():
            topup.options.add_flags(parser.add_argument_group(f"{name} options (--top-up {name})"))
    parser.add_argument("--option", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                        help=f"any option {whose} by its key (value parsed as a Python literal when possible); "
                             "repeatable")


def options_from_args(args) -> dict:
    """The chosen top-up's options given on the command line; a flag of another top-up is an error."""
    from ..errors import UsageError
    from ..topups import TOPUPS
    from ..topups.options import flag_of
    options = {}
    for name, topup in TOPUPS.items():
        given = topup.options.given_in(args)
        if name == args.top_up:
            options.update(given)
        elif given:
            raise UsageError(f"{flag_of(next(iter(given)))} is an option of --top-up {name}, not of --top-up "
                             f"{args.top_up}")
    options.update(dict(args.option or []))
    return options


def all_topup_options(args) -> dict:
    """Every top-up option given on the command line (for commands that run several top-ups)."""
    from ..topups import TOPUPS
    return {**{k: v for _, t in TOPUPS.items() for k, v in t.options.given_in(args).items()}, **dict(args.option)}
