"""The `neuroal-jax` command line: one module per command group over the library's entry points.

    prune (prune.py)   eval-ppl, eval-zeroshot (evaluate.py)   export (export.py)   compare (compare.py)
    sweep (sweep.py)   finetune (finetune.py)                   shared flags, each defined once: common.py

What users get wrong (`neuroal_jax.errors.UsageError`, an `OSError` such as a missing file, a missing optional
dependency) ends as one line `neuroal-jax: error: ...` with exit status 2; anything else is a bug and keeps its
traceback (exit status 1). NEUROAL_DEBUG=1 shows the traceback of every error. Our warnings print as one line
`neuroal-jax: warning: ...`. Ctrl-C, SIGTERM and SIGHUP stop the run cleanly (temporary folders removed; a --stream
run keeps its finished blocks for --resume) with exit status 128 + the signal number. The library never imports
this package.
"""
from __future__ import annotations

import os
import signal
import sys
import warnings

from ..errors import NeuroalWarning, UsageError
from ..runtime import handle_termination, received_signal, reexec_with_hugepages, signal_of
from . import compare, evaluate, export, finetune, prune, sweep
from .common import ArgumentParser

OURS = ("neuroal_jax", "converters", "pallas_kernels")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="neuroal-jax",
        description="NeuroAL in JAX: one-shot LLM pruning with adaptive block/row sparsity, "
                    "perplexity evaluation and export to Hugging Face PyTorch checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser)
    for group in (prune, evaluate, export, compare, sweep, finetune):
        group.add_cli(sub)
    return parser


def user_error(e: BaseException) -> str | None:
    """The one line for an error the user can fix (a bad input, a file, a missing optional package); None for a bug."""
    if isinstance(e, ModuleNotFoundError) and not isinstance(e, UsageError):
        top = (e.name or "").partition(".")[0]
        if not top or top in OURS:
            return None  # one of our own modules is missing: a broken install or a bug
        return f"this needs the Python package {top!r}, which is not installed (pip install {top})"
    if isinstance(e, (UsageError, OSError)):
        return " ".join(str(e).split()) or type(e).__name__
    return None


def _one_line_warnings(show):
    """A `warnings.showwarning` that prints our own warnings as one line in the CLI's format, others with `show`."""
    def showwarning(message, category, filename, lineno, file=None, line=None):
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


def stopped(args, signum: int, argv: list[str] | None, finished: bool = False) -> int:
    """Report a stop signal as one line and return (a real command line: exit with) 128 + its number."""
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    kept = " after the command had finished" if finished else f"; {kept_after_interrupt(args)}"
    print(f"neuroal-jax: {what}{kept}", file=sys.stderr)
    code = 128 + signum
    if argv is None:  # a real command line: XLA may still be running work of the interrupted call, and
        sys.stdout.flush(), sys.stderr.flush()  # tearing the interpreter down under it can crash
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a real command line: once, with huge-page malloc (neuroal_jax.runtime)
        reexec_with_hugepages(["-m", "neuroal_jax.cli", *sys.argv[1:]])
    args = build_parser().parse_args(argv)
    try:  # a real command line ends at once on a signal after the command (SIG_DFL): none is ever dropped
        with handle_termination(after=signal.SIG_DFL if argv is None else None), warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            code = args.func(args)
    except KeyboardInterrupt as e:
        return stopped(args, signal_of(e), argv)
    except Exception as e:
        if received_signal() is not None:  # an error the signal caused (a C extension's import "initialization
            return stopped(args, received_signal(), argv)  # failed", a library's cleanup): it is the termination
        line = user_error(e)
        if line is None or os.environ.get("NEUROAL_DEBUG"):
            raise
        print(f"neuroal-jax: error: {line}", file=sys.stderr)
        if argv is None:  # a real command line: the one line is all; threads a library left (orbax's reads of a
            sys.stdout.flush(), sys.stderr.flush()  # corrupt checkpoint) must not print while Python shuts down
            os._exit(2)
        return 2
    if received_signal() is not None:  # a library swallowed its exception, or it came as the handlers were put back
        return stopped(args, received_signal(), argv, finished=True)
    return code
