"""Peak host memory and time of a prune, whole model in memory vs block-streamed (`--stream`).

Writes a random-weight Llama-shaped checkpoint (default 30 blocks, hidden 1024, intermediate 2816,
vocab 8192: about 1.6 GB float32) to a scratch folder, then prunes it (wanda, uniform, random
calibration tokens) in a child process per mode and reads each child's peak RSS from `wait4`.
A child that only imports neuroal_jax gives the fixed cost of the runtime. The two outputs'
weights are compared tensor by tensor.

    .venv/bin/python scripts/bench_stream.py [--blocks 30 --hidden 1024 --intermediate 2816 --scratch DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_model(folder: Path, cfg) -> int:
    """A random checkpoint written block by block (the writer of the streamed path); returns bytes."""
    from converters.stream import ShardWriter
    from neuroal_jax.models import family_of

    rng = np.random.default_rng(0)
    shapes = family_of(cfg).param_shapes(cfg)
    folder.mkdir(parents=True)
    w = ShardWriter(folder, cfg)

    def leaf(shape, norm=False):
        a = rng.standard_normal(shape, dtype=np.float32)
        return (1 + 0.1 * a) if norm else 0.02 * a

    for b, block in enumerate(shapes["blocks"]):
        w.write_block(b, {m: {k: leaf(s, "norm" in m) for k, s in leaves.items()} for m, leaves in block.items()})
    w.write_top({top: {k: leaf(s, "norm" in top) for k, s in leaves.items()}
                 for top, leaves in shapes.items() if top != "blocks"})
    w.finish("float32")
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def run_child(argv: list[str], capture: bool = False) -> tuple:
    """(wall seconds, peak RSS bytes) of one child process, and with `capture` its last line of output."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out if capture else subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"child failed: {' '.join(argv)}\n{err.read().decode()[-3000:]}")
        out.seek(0)
        last = out.read().decode().strip().splitlines()[-1:] if capture else None
    rss = usage.ru_maxrss * 1024  # Linux reports KiB
    return (wall, rss, last[0] if last else "") if capture else (wall, rss)


def same_weights(a: Path, b: Path) -> bool:
    from converters import safetensors_io
    from converters.hf import weight_files

    def tensors(folder):
        out = {}
        for f in weight_files(folder):
            out.update(safetensors_io.load_file(f))
        return out

    ta, tb = tensors(a), tensors(b)
    return ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--nsamples", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=128)
    ap.add_argument("--scratch", default=None, help="scratch folder (default: a temporary one, removed after)")
    args = ap.parse_args()

    from neuroal_jax.config import ModelConfig
    cfg = ModelConfig(family="llama", vocab_size=args.vocab, hidden_size=args.hidden,
                      intermediate_size=args.intermediate, num_layers=args.blocks, num_heads=args.hidden // 64,
                      num_kv_heads=args.hidden // 64, head_dim=64, max_position_embeddings=4096,
                      tie_word_embeddings=False)
    scratch_ctx = tempfile.TemporaryDirectory() if args.scratch is None else None
    scratch = Path(args.scratch or scratch_ctx.name)
    model = scratch / "model"
    size = write_model(model, cfg)
    tokens = scratch / "tokens.npy"
    np.save(tokens, np.random.default_rng(1).integers(0, args.vocab, 64 * args.seqlen))

    def prune_cmd(out, *extra):
        return [sys.executable, "-m", "neuroal_jax.cli", "prune", "--model", str(model), "--method", "wanda",
                "--sparsity", "0.5", "--top-up", "uniform", "--calib", f"tokens:{tokens}",
                "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen), "--out", str(out), "--quiet",
                "--force", *extra]

    rows = [("runtime only (import neuroal_jax, jax)",
             run_child([sys.executable, "-c", "import jax, jax.numpy as j; import neuroal_jax.api; j.zeros(1)"]))]
    rows.append(("in memory", run_child(prune_cmd(scratch / "mem"))))
    rows.append(("streamed (--stream)", run_child(prune_cmd(scratch / "st", "--stream"))))
    identical = same_weights(scratch / "mem", scratch / "st")

    print(f"\nmodel: {args.blocks} blocks, hidden {args.hidden}, intermediate {args.intermediate}, "
          f"vocab {args.vocab}: {size / 1e9:.2f} GB float32 on disk; wanda 50 % uniform, "
          f"{args.nsamples} × {args.seqlen} calibration tokens\n")
    print("| run | wall (s) | peak RSS (GB) | peak RSS / model size |")
    print("|---|---|---|---|")
    for name, (wall, rss) in rows:
        print(f"| {name} | {wall:.1f} | {rss / 1e9:.2f} | {rss / size:.2f} |")
    print(f"\nstreamed / in-memory peak RSS: {rows[2][1][1] / rows[1][1][1]:.2f}; "
          f"time ratio {rows[2][1][0] / rows[1][1][0]:.2f}; weights identical: {identical}")
    if scratch_ctx is not None:
        scratch_ctx.cleanup()
    return 0 if identical else 1


if __name__ == "__main__":
    from neuroal_jax.runtime import reexec_with_hugepages

    reexec_with_hugepages()  # huge-page malloc, as the CLI runs
    raise SystemExit(main())
