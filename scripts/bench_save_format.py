"""Size on disk and write / read time of a pruned model saved dense vs compressed (sparse-bitmask).

    .venv-compressed/bin/python scripts/bench_save_format.py runs/smol-50 runs/smol-70

For each model folder (a prune output, or any model spec): export it with --save-format dense and compressed into
a temporary folder, and print the weights file's size, the ratio, the export and load seconds, and whether our
loader reads both back to the same weights. With --transformers, also load both folders with transformers and
compare the logits on one window. Needs the `compressed` extra (run it with .venv-compressed/bin/python).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters import load_model  # noqa: E402
from converters.hf import export_hf  # noqa: E402

FORMATS = ("dense", "compressed")


def measure(spec: str, root: Path, with_transformers: bool) -> dict:
    model = load_model(spec)
    zeros = [np.mean(np.asarray(p[m]["weight"]) == 0) for p in model.params["blocks"] for m in p
             if np.ndim(p[m].get("weight")) == 2]
    row = {"model": spec, "zeros": float(np.mean(zeros))}
    loaded = {}
    for fmt in FORMATS:
        t0 = time.perf_counter()
        folder = export_hf(model.config, model.params, root / fmt, save_format=fmt)
        row[f"{fmt}_write_s"] = time.perf_counter() - t0
        row[f"{fmt}_bytes"] = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        t0 = time.perf_counter()
        loaded[fmt] = load_model(folder, tokenizer=False).params
        row[f"{fmt}_read_s"] = time.perf_counter() - t0
    row["same_weights"] = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded["dense"]),
                                                                   jax.tree.leaves(loaded["compressed"])))
    if with_transformers:
        import torch
        import transformers
        tokens = torch.tensor(np.random.default_rng(0).integers(0, model.config.vocab_size, (1, 128)))
        logits = []
        for fmt in FORMATS:
            m = transformers.AutoModelForCausalLM.from_pretrained(str(root / fmt), torch_dtype=torch.float32)
            with torch.no_grad():
                logits.append(m(tokens).logits)
        row["transformers_same_logits"] = bool(torch.equal(*logits))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="model specs (prune output folders)")
    ap.add_argument("--transformers", action="store_true", help="also load both with transformers, compare logits")
    args = ap.parse_args()
    rows = []
    for spec in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(spec, Path(tmp), args.transformers))
    print("| model | zeros in prunable layers | dense (MB) | compressed (MB) | ratio | write dense / compressed (s) "
          "| read dense / compressed (s) | same weights | transformers same logits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['zeros']:.3f} | {r['dense_bytes'] / 1e6:.1f} | {r['compressed_bytes'] / 1e6:.1f} "
              f"| {r['dense_bytes'] / r['compressed_bytes']:.2f}× | {r['dense_write_s']:.1f} / "
              f"{r['compressed_write_s']:.1f} | {r['dense_read_s']:.1f} / {r['compressed_read_s']:.1f} "
              f"| {r['same_weights']} | {r.get('transformers_same_logits', 'not run')} |")


if __name__ == "__main__":
    main()
