"""What every command shares: the parser with one-line errors, and each shared flag defined once (its name,
default, help and type), so that the same flag means the same thing in every command."""
from __future__ import annotations

import argparse
import ast

from ..config import DTYPES

MODEL_HELP = ("a built-in name (smollm2-135m, gemma3-270m), a .gguf file, a local Hugging Face folder "
              "or a Hub id")
WINDOWS_HELP = ("Calibration: NSAMPLES windows of SEQLEN tokens at random (seeded) starts in the text or in a 1-D "
                "tokens file; a 2-D tokens file [n, L] gives its first NSAMPLES rows, which must have L = SEQLEN. "
                "Evaluation: the text, or each row of a tokens file, is cut into non-overlapping windows of SEQLEN "
                "tokens; a sequence's last < SEQLEN tokens are not scored. Token ids must lie in [0, vocab_size).")
EVAL_WINDOWS_HELP = WINDOWS_HELP[WINDOWS_HELP.index("Evaluation:"):]


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


def add_output(p, *, save_format: bool = True, resume: str | None = None, required: bool = True) -> None:
    """--out and --force (and --save-format) from `OutputSettings`; --resume with its command's help when the command
    resumes."""
    from ..runs import OutputSettings
    OutputSettings.add_flags(p, skip=() if save_format else ("save_format",), required=("out",) if required else ())
    if resume:
        p.add_argument("--resume", action="store_true", help=resume)


def add_data(p, *, skip: tuple[str, ...] = (), eval_required: bool = False):
    """The "data" group of a command that prunes and evaluates: the flags of `DataSettings` (less `skip`) and of
    `EvalSettings`, and --quiet; returns the group."""
    from ..runs import DataSettings
    g = p.add_argument_group("data", WINDOWS_HELP)
    DataSettings.add_flags(g, skip=skip)
    add_evaluation(g, required=eval_required)
    add_quiet(g)
    return g


def add_evaluation(g, *, required: bool = False) -> None:
    """--eval and --eval-nsamples (`EvalSettings`)."""
    from ..runs import EvalSettings
    EvalSettings.add_flags(g, required=("eval",) if required else ())


def run_keywords(args, data: tuple[str, ...] | None = None) -> dict:
    """The API keywords of the run settings given on the command line (data, evaluation, output; --quiet): the
    others keep the API's defaults, which are the settings' own. `data`: the `DataSettings` flags the command has,
    when not all (another options class may own the others' names)."""
    from ..runs import DataSettings, EvalSettings, OutputSettings
    given = {k: v for k, v in DataSettings.given_in(args).items() if data is None or k in data}
    return {**given, **EvalSettings.given_in(args), **OutputSettings.given_in(args),
            "progress": not getattr(args, "quiet", False)}


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
    from ..options import flag_of
    from ..topups import TOPUPS
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
