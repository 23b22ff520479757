#!/usr/bin/env python
"""Where one block's time goes: the NeuroAL search block and the sequential pruning pass, per op.

Traces one block with the JAX profiler and attributes every executed XLA op (its own time, nested ops
subtracted) to a category read from the compiled HLO (each fusion's ops carry the jnp call they come from):

- linear matmuls  a fusion with a `...i,oi->...o` dot (the prunable layers; XLA fuses the activation,
                  the products and the statistics' sums of squares into them)
- attention       the q·k and p·v products, the softmax, the causal mask
- masks           the top-k threshold search and the tie ranks (`pruning.masks`)
- other           norms, rotary embedding, transposes and copies, statistics not fused into a matmul

Also prints the matmul FLOPs and the achieved rate next to one jitted float32 matmul of the same shape
measured in the same process. Numbers move by ±10 % between runs on a shared 2-core machine.

    .venv/bin/python scripts/profile_block.py                      # SmolLM2-135M, block 5, 14 λ, 8 × 256
    .venv/bin/python scripts/profile_block.py --candidates 15 --block 20 --top 30
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CATEGORIES = (
    ("linear matmuls", ("...i,oi->...o",)),
    ("attention", ("bhqd,bhkd", "bhqk,bhkd", "bqhgd,bkhd", "bhgqk,bkhd", "softmax", "attention")),
    ("masks", ("_topk_keep_mask", "_topk_rows", "topk_mask")),
)


def op_names(hlo: str) -> dict[str, str]:
    """{instruction name: the jnp call paths of it and, for a fusion, of every op inside}."""
    fused = {}
    for m in re.finditer(r"^%?(fused_computation[\w.\-]*|[\w.\-]*_computation[\w.\-]*) .*?\{\n(.*?)\n\}", hlo,
                         re.S | re.M):
        fused[m.group(1)] = " ".join(re.findall(r'op_name="([^"]+)"', m.group(2)))
    names = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*)$", hlo, re.M):
        line = m.group(2)
        paths = re.findall(r'op_name="([^"]+)"', line)
        for call in re.findall(r"calls=%([\w.\-]+)", line):
            paths.append(fused.get(call, ""))
        names[m.group(1)] = " ".join(paths)
    return names


def category(paths: str) -> str:
    for name, keys in CATEGORIES:
        if any(k in paths for k in keys):
            return name
    return "other"


def self_times(trace_file: Path) -> dict[str, float]:
    """{op name: seconds} of every XLA op event, minus the ops nested in it (a loop's body)."""
    events = [e for e in json.load(gzip.open(trace_file))["traceEvents"]
              if e.get("ph") == "X" and not e["name"].startswith(("$", "Thunk", "Slinky"))]
    out = collections.Counter()
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[(e["pid"], e["tid"])].append(e)
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # open events: [end, name]
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                stack.pop()
            if stack:
                out[stack[-1][1]] -= e["dur"]
            out[e["name"]] += e["dur"]
            stack.append([e["ts"] + e["dur"], e["name"]])
    return {k: v / 1e6 for k, v in out.items()}


def profile(fn, args, label: str, top: int) -> tuple[float, dict]:
    """Wall seconds of one traced call and {category: seconds}; prints the top ops."""
    import jax

    jax.block_until_ready(fn(*args))  # compile
    names = op_names(fn.lower(*args).compile().as_text())
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            wall = time.perf_counter() - t0
        times = self_times(next(Path(tmp).rglob("*.trace.json.gz")))
    cats = collections.Counter()
    for op, s in times.items():
        cats[category(names.get(op, op))] += s
    busy = sum(times.values())
    print(f"\n{label}: {wall * 1e3:.0f} ms wall (traced); ops busy {busy * 1e3:.0f} ms")
    for name, s in cats.most_common():
        print(f"  {name:<16}{s * 1e3:>9.0f} ms {s / busy:>6.1%}")
    print(f"  top {top} ops:")
    for op, s in sorted(times.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {s * 1e3:>8.1f} ms  {category(names.get(op, op)):<15} {op:<28} {names.get(op, '')[-70:]}")
    return wall, cats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=14, help="λ candidates of the search block (default 14)")
    ap.add_argument("--nsamples", type=int, default=8, help="search windows (default 8)")
    ap.add_argument("--prune-nsamples", type=int, default=32, help="pruning pass windows (default 32)")
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--top", type=int, default=12, help="ops listed per profile")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    from converters import load_model
    from neuroal_jax.evaluation.data import calibration_windows
    from neuroal_jax.models import block_apply, block_contexts, embed, prunable_layers
    from neuroal_jax.pruning.statistics import block_stats
    from neuroal_jax.pruning.targets import keep_and_ties
    from neuroal_jax.topups.neuroal.candidates import candidate_loop
    from neuroal_jax.topups.neuroal.kernel import candidates_block
    from neuroal_jax.topups.neuroal.schedules import block_candidates
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_reference import matmul_rate, search_matmul_flops

    model = load_model(args.model)
    cfg, params, b = model.config, model.params, args.block
    p = params["blocks"][b]
    ctx = block_contexts(cfg, args.seqlen)[b]
    windows = calibration_windows("pydoc", model.tokenizer, args.prune_nsamples, args.seqlen, seed=0)
    x = embed(cfg, params, jnp.asarray(windows[:args.nsamples]))
    K = args.candidates
    lams = np.linspace(0.01, 0.25, K)
    dists = block_candidates(cfg, 0.7, lams)
    keeps = {n: jnp.asarray(np.stack([keep_and_ties(d[f"{b}.{n}"], p[n]["weight"].shape)[0] for d in dists]))
             for n in prunable_layers(cfg)}
    step = jax.jit(lambda p, xs, ctx, keeps: candidates_block(cfg, "wanda", "low", ("neuron",), p, xs + 0, ctx,
                                                              keeps, loop=candidate_loop(None)))
    xs = jnp.broadcast_to(x, (K, *x.shape))
    rate = matmul_rate("float32", args.nsamples * args.seqlen, cfg.hidden_size, cfg.intermediate_size)
    wall, _ = profile(step, (p, xs, ctx, keeps), f"search block {b}, {K} candidates × {args.nsamples} × "
                      f"{args.seqlen}", args.top)
    flops = search_matmul_flops(cfg, K, args.nsamples, args.seqlen) / cfg.num_layers
    print(f"  matmul work {flops / 1e9:.0f} GFLOP: {flops / wall / 1e9:.0f} GFLOP/s traced "
          f"({flops / wall / 1e9 / rate:.0%} of one [{args.nsamples * args.seqlen}, {cfg.hidden_size}] × "
          f"[{cfg.hidden_size}, {cfg.intermediate_size}] matmul: {rate:.0f} GFLOP/s)")

    # the sequential pass: statistics of the dense block, masks, pruned block forward (8 windows per call)
    xp = embed(cfg, params, jnp.asarray(windows[:8]))
    stats = jax.jit(lambda p, x, ctx: block_stats(cfg, p, x, ctx, False, False))
    profile(stats, (p, xp, ctx), f"pruning pass block {b}: statistics, one batch of 8 × {args.seqlen}", args.top)
    forward = jax.jit(lambda p, x, ctx: block_apply(cfg, p, x, ctx)[0])
    profile(forward, (p, xp, ctx), f"pruning pass block {b}: forward, one batch of 8 × {args.seqlen}", args.top)
    return 0


if __name__ == "__main__":
    from neuroal_jax.runtime import reexec_with_hugepages

    reexec_with_hugepages()
    sys.exit(main())
