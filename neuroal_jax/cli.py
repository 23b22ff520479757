"""The `neuroal-jax` command line."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

MODEL_HELP = ("a built-in name (smollm2-135m, gemma3-270m), a .gguf file, a local Hugging Face folder "
              "or a Hub id")
DATASET_HELP = "c4 | wikitext2 | ptb (Hub), pydoc (offline), text:PATH, tokens:PATH.npy"


def _write_json(path: str, obj: dict) -> None:
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def default_seqlen(cfg, seqlen: int | None) -> int:
    return seqlen if seqlen is not None else min(2048, cfg.max_position_embeddings)


# ---------------------------------------------------------------- commands

def cmd_eval_ppl(args) -> int:
    from converters import load_model

    from .data import eval_windows
    from .evaluation import perplexity

    model = load_model(args.model)
    seqlen = default_seqlen(model.config, args.seqlen)
    windows = eval_windows(args.dataset, model.tokenizer, seqlen, args.nsamples)
    t0 = time.perf_counter()
    ppl = perplexity(model.config, model.params, windows, batch_size=args.batch_size)
    result = {"model": args.model, "dataset": args.dataset, "seqlen": seqlen, "windows": int(len(windows)),
              "perplexity": ppl, "seconds": round(time.perf_counter() - t0, 3)}
    print(f"{args.model}  {args.dataset}  {len(windows)} × {seqlen} tokens  perplexity {ppl:.4f}")
    if args.json:
        _write_json(args.json, result)
    return 0


def cmd_export(args) -> int:
    from converters import export_hf, load_model

    model = load_model(args.model)
    out = export_hf(model.config, model.params, args.out, tokenizer=model.tokenizer, force=args.force)
    print(f"wrote {out} (Hugging Face {model.config.family} checkpoint, float32 safetensors)")
    return 0


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuroal-jax",
        description="NeuroAL in JAX: one-shot LLM pruning with adaptive block/row sparsity, "
                    "perplexity evaluation and export to Hugging Face PyTorch checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("eval-ppl", help="perplexity of a model on a dataset (SPEC §8 protocol)",
                       description="Tokenize the test text as one sequence, cut it into non-overlapping "
                                   "windows of --seqlen tokens and report exp(mean next-token NLL).")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--dataset", default="pydoc", help=f"test set: {DATASET_HELP} (default: pydoc held-out text)")
    p.add_argument("--seqlen", type=int, default=None, help="window length (default: min(2048, context length))")
    p.add_argument("--nsamples", type=int, default=None, help="evaluate only the first N windows (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    p.set_defaults(func=cmd_eval_ppl)

    p = sub.add_parser("export", help="write a model as a Hugging Face PyTorch checkpoint folder",
                       description="Convert a model (GGUF, HF folder, built-in) to a folder that "
                                   "transformers' AutoModelForCausalLM.from_pretrained loads.")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_export)
    return parser


EXPECTED_ERRORS = (ValueError, FileNotFoundError, FileExistsError, ImportError, ConnectionError, KeyError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EXPECTED_ERRORS as e:
        if os.environ.get("NEUROAL_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"neuroal-jax: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
