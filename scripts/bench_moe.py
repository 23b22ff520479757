"""Mixture of experts: peak host memory of a streamed prune, and NeuroAL's search time per block against dense
models of equal total and of equal active parameters.

Writes three random-weight checkpoints to a scratch folder (the streamed writer, block by block):
    moe           Qwen3-MoE shaped like a scaled-down Qwen3-30B-A3B (default 8 blocks, hidden 1024, 48 experts of
                  width 384, top-3: the 1/16 of experts per token of the real model; about 2.1 GB float32)
    dense-total   Qwen3 with the same blocks and an MLP of width experts × 384 (equal total parameters)
    dense-active  Qwen3 with an MLP of width top-k × 384 (equal active parameters per token)
then, one child process per run (peak RSS from `wait4`):
    stream        neuroal-jax prune --stream (wanda, uniform) of the MoE: peak RSS vs the checkpoint's size
    search        prune --top-up neuroal --neuroal-step block with K block λs on each model: the allocation
                  phase (the search) per block, compilation included
    kernel        one block of that search once compiled (`candidates_block`, K candidates one after another),
                  split into its dense pass, masks and sparse pass, and its compile time: the steady state

    .venv/bin/python scripts/bench_moe.py [--blocks 8 --experts 48 --top-k 3 --scratch DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench_stream import run_child, write_model


def configs(args):
    from neuroal_jax.config import ModelConfig
    H, heads, kv = args.hidden, args.hidden // 64, max(1, args.hidden // 256)
    common = dict(vocab_size=args.vocab, hidden_size=H, num_layers=args.blocks, num_heads=heads, num_kv_heads=kv,
                  head_dim=64, max_position_embeddings=4096, rope_theta=1e6, tie_word_embeddings=False)
    moe = ModelConfig(family="qwen3_moe", intermediate_size=args.expert_width, num_experts=args.experts,
                      num_experts_per_tok=args.top_k, moe_intermediate_size=args.expert_width, **common)
    return {"moe": moe,
            "dense-total": ModelConfig(family="qwen3", intermediate_size=args.experts * args.expert_width, **common),
            "dense-active": ModelConfig(family="qwen3", intermediate_size=args.top_k * args.expert_width, **common)}


def child_prune(argv: list[str]) -> None:
    """In the child: one prune through the API; prints its report's timings as JSON."""
    import numpy as np

    from neuroal_jax.api import prune
    folder, out, mode, nsamples, seqlen, lambdas = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5]
    tokens = Path(out).parent / f"{Path(out).name}-tokens.npy"
    np.save(tokens, np.random.default_rng(0).integers(0, 1000, (nsamples, seqlen)))
    kw = dict(method="wanda", sparsity=0.5, calib=f"tokens:{tokens}", nsamples=nsamples, seqlen=seqlen,
              batch_size=nsamples, progress=False, out=out)
    if mode == "stream":
        result = prune(folder, top_up="uniform", stream=True, **kw)
    else:
        result = prune(folder, top_up="neuroal", options={"neuroal_step": "block", "search_samples": nsamples,
                                                          "lambdas_block": tuple(map(float, lambdas.split(",")))},
                       **kw)
    print(json.dumps(result.report["timings"]))


def child_kernel(argv: list[str]) -> None:
    """In the child: the compiled search kernel on one random block of the named model; prints JSON seconds."""
    import time

    import jax
    import numpy as np

    from neuroal_jax.models import block_contexts, init_params, prunable_layers
    from neuroal_jax.topups.neuroal import kernel as kn
    args = parse(argv[1:])
    cfg = configs(args)[argv[0]].replace(num_layers=1)
    p, ctx = init_params(cfg)["blocks"][0], block_contexts(cfg, args.seqlen)[0]
    lambdas = [float(v) for v in args.lambdas.split(",")]
    keeps = {n: np.stack([kn.layer_targets("wanda", 0.5 + lam / 2, p[n]["weight"].shape)[0] for lam in lambdas])
             for n in prunable_layers(cfg)}
    _, rule = kn.layer_targets("wanda", 0.5, p[prunable_layers(cfg)[0]]["weight"].shape)
    streams = lambda: jax.random.normal(jax.random.key(0), (len(lambdas), args.nsamples, args.seqlen, cfg.hidden_size))
    over = kn.over_candidates("map")
    phases = {
        "dense pass": jax.jit(lambda xs: over(lambda x: kn._dense_pass(cfg, "wanda", p, x, ctx), xs)[0]),
        "masks": jax.jit(lambda a: kn._sparse_weights("wanda", rule, p, keeps, a, {}, batched=True)),
        "sparse pass": jax.jit(lambda w, xs, a: over(lambda w, x, a: kn._sparse_pass(cfg, ("neuron",), p, w, x, ctx, a),
                                                     w, xs, a)[0]),
    }

    def timed(f, *a):
        t0 = time.perf_counter()
        out = jax.block_until_ready(f(*a))
        return out, time.perf_counter() - t0

    t0 = time.perf_counter()
    jax.block_until_ready(kn.candidates_block(cfg, "wanda", rule, ("neuron",), p, streams(), ctx, keeps, loop="map"))
    first = time.perf_counter() - t0
    _, block = timed(lambda: kn.candidates_block(cfg, "wanda", rule, ("neuron",), p, streams(), ctx, keeps, loop="map"))
    out = {"compile": first - block, "block": block}
    xs = streams()
    a_dense, out["dense pass"] = timed(phases["dense pass"], xs)  # each phase: a warm-up call, then the timed one
    a_dense, out["dense pass"] = timed(phases["dense pass"], xs)
    weights, out["masks"] = timed(phases["masks"], a_dense)
    weights, out["masks"] = timed(phases["masks"], a_dense)
    _, out["sparse pass"] = timed(phases["sparse pass"], weights, xs, a_dense)
    _, out["sparse pass"] = timed(phases["sparse pass"], weights, xs, a_dense)
    print(json.dumps(out))


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--experts", type=int, default=48)
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--expert-width", type=int, default=384)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--nsamples", type=int, default=8)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--lambdas", default="0.0,0.04,0.08,0.12", help="block λs of the search (K candidates)")
    ap.add_argument("--runs", default="stream,search,kernel")
    ap.add_argument("--scratch", default=None, help="scratch folder (default: a temporary one, removed after)")
    return ap.parse_args(argv)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child_prune(sys.argv[2:])
    if sys.argv[1:2] == ["--child-kernel"]:
        return child_kernel(sys.argv[2:])
    args = parse()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench-moe-"))
    runs = args.runs.split(",")
    rows = []
    try:
        sizes = {}
        for name, cfg in configs(args).items():
            if name != "moe" and "search" not in runs:
                continue
            folder = scratch / name
            if not folder.exists():
                sizes[name] = write_model(folder, cfg)
            else:
                sizes[name] = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        base = run_child([sys.executable, "-c", "import neuroal_jax.api, converters, jax; jax.numpy.zeros(1)"])[1]
        child = [sys.executable, __file__, "--child"]
        if "stream" in runs:
            wall, rss = run_child(child + [str(scratch / "moe"), str(scratch / "out-stream"), "stream",
                                           str(args.nsamples), str(args.seqlen), args.lambdas])
            rows.append(("moe", "prune --stream (wanda, uniform)", wall, rss, None))
            shutil.rmtree(scratch / "out-stream", ignore_errors=True)
        if "search" in runs:
            for name in ("moe", "dense-total", "dense-active"):
                out = scratch / f"out-{name}"
                wall, rss, timings = run_child(child + [str(scratch / name), str(out), "search", str(args.nsamples),
                                                        str(args.seqlen), args.lambdas], capture=True)
                rows.append((name, "neuroal block search", wall, rss, json.loads(timings)["allocation"] / args.blocks))
                shutil.rmtree(out, ignore_errors=True)
        K = len(args.lambdas.split(","))
        print(f"\n{args.blocks} blocks, hidden {args.hidden}, {args.experts} experts × {args.expert_width}, top-"
              f"{args.top_k}; {args.nsamples} × {args.seqlen} tokens; {K} block λs; runtime alone {base / 2**30:.2f} "
              "GiB RSS\n")
        print(f"{'model':<13}{'GB on disk':>11}  {'run':<32}{'wall s':>8}{'peak RSS GiB':>14}{'RSS / size':>11}"
              f"{'search s/block':>16}")
        for name, run, wall, rss, per_block in rows:
            print(f"{name:<13}{sizes[name] / 1e9:>11.2f}  {run:<32}{wall:>8.1f}{rss / 2**30:>14.2f}"
                  f"{rss / sizes[name]:>11.2f}{'' if per_block is None else f'{per_block:.2f}':>16}")
        kernel = []
        if "kernel" in runs:
            for name in ("moe", "dense-total", "dense-active"):
                _, _, line = run_child([sys.executable, __file__, "--child-kernel", name, *sys.argv[1:]],
                                       capture=True)
                kernel.append((name, json.loads(line)))
            phases = ("dense pass", "masks", "sparse pass", "block", "compile")
            print(f"\nthe search kernel, one block, {K} candidates, compiled (s):\n")
            print(f"{'model':<13}" + "".join(f"{p:>13}" for p in phases) + f"{'block / moe':>13}")
            for name, t in kernel:
                print(f"{name:<13}" + "".join(f"{t[p]:>13.2f}" for p in phases)
                      + f"{t['block'] / kernel[0][1]['block']:>13.2f}")
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
