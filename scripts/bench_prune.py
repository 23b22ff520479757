#!/usr/bin/env python
"""Benchmark the full sequential Wanda pass: neuroal_jax vs a plain PyTorch implementation.

Both prune the same model with the same calibration windows (default: SmolLM2-135M, `pydoc`
calibration, 32 windows × 256 tokens, sparsity 0.5, uniform, per-row masks) in one run:

- ours: `neuroal_jax.pruning.sequential_prune` (jitted blocks, batched windows); timed cold (first
  call, compilation included) and warm (second call).
- torch: eager PyTorch as the Wanda/NeuroAL repositories do it. transformers' LlamaForCausalLM is
  loaded from our exported float32 folder; a catcher module grabs the inputs of block 0; then per
  block: forward hooks on its linear layers accumulate the running mean of squared input norms while
  the *dense* block runs over every window (one at a time), scores |W| * sqrt(mean), per-row
  masks from a stable `torch.sort` (the floor(in * s) lowest pruned), weights zeroed, and the
  *pruned* block runs again to give the next block's input.

The script compares the masks, per block, and prints both times and the ratios. The first blocks agree
exactly; deeper blocks differ in a growing number of near-tie entries, because the two
implementations sum in different orders and each block's small difference changes the next block's
input stream (on SmolLM2-135M, 32 x 256: 0 differences in blocks 0-3, 0.2% of all entries overall).

    python scripts/bench_prune.py                      # the default case above
    python scripts/bench_prune.py --nsamples 8 --seqlen 128 --json bench.json
    python scripts/bench_prune.py --single-thread      # one core each (a busy, shared machine)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---------------------------------------------------------------- ours

def ours(cfg, params, windows, sparsity: float, batch_size: int) -> tuple[float, dict]:
    """(seconds, masks) of one full sequential Wanda pass in neuroal_jax."""
    import jax

    from neuroal_jax.pruning import Structure, sequential_prune, uniform_distribution
    dist = uniform_distribution(cfg, sparsity)
    t0 = time.perf_counter()
    pruned, masks = sequential_prune(cfg, params, windows, dist, "wanda", Structure(), batch_size, progress=False)
    jax.block_until_ready((pruned, masks))
    return time.perf_counter() - t0, {k: np.asarray(m) for k, m in masks.items()}


# ---------------------------------------------------------------- plain PyTorch (reference style)

PRUNABLE = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class _Caught(Exception):
    pass


def torch_block_inputs(model, windows):
    """Hidden states entering block 0 for every window, and the keyword arguments the model passes
    to its blocks (attention mask, position embeddings...), via a module that replaces block 0."""
    import torch
    layers = model.model.layers
    first = layers[0]
    inputs, kwargs = [], {}

    class Catcher(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attention_type = getattr(first, "attention_type", "full_attention")

        def forward(self, hidden_states, *args, **kw):
            inputs.append(hidden_states)
            kwargs.update(kw)
            raise _Caught

    layers[0] = Catcher()
    try:
        for row in windows:
            try:
                model(torch.as_tensor(row[None, :], dtype=torch.long), use_cache=False)
            except _Caught:
                pass
    finally:
        layers[0] = first
    return inputs, kwargs


def torch_wanda(model, windows, sparsity: float) -> dict:
    """Sequential Wanda in eager PyTorch; returns {"<block>.<module>": bool kept mask}."""
    import torch
    masks = {}
    with torch.no_grad():
        inps, kw = torch_block_inputs(model, windows)
        kw = {k: v for k, v in kw.items() if k not in ("past_key_values", "past_key_value", "use_cache")}
        for b, layer in enumerate(model.model.layers):
            linears = {name: layer.get_submodule(name) for name in PRUNABLE}
            sq = {name: torch.zeros(m.in_features) for name, m in linears.items()}
            count = {name: 0 for name in linears}

            def hook(name):
                def add_batch(module, args, output):
                    x = args[0].reshape(-1, args[0].shape[-1]).t().float()  # [in, tokens]
                    n = args[0].shape[0]
                    sq[name] *= count[name] / (count[name] + n)
                    count[name] += n
                    sq[name] += torch.norm(x, p=2, dim=1) ** 2 / count[name]
                return add_batch

            handles = [m.register_forward_hook(hook(name)) for name, m in linears.items()]
            for x in inps:  # dense block: statistics
                layer(x, **kw)
            for h in handles:
                h.remove()
            for name, m in linears.items():
                W = m.weight.data
                metric = W.abs() * torch.sqrt(sq[name].reshape(1, -1))
                pruned = torch.zeros_like(W, dtype=torch.bool)
                order = torch.sort(metric, dim=-1, stable=True)[1]
                pruned.scatter_(1, order[:, :int(W.shape[1] * sparsity)], True)
                W[pruned] = 0
                masks[f"{b}.{name}"] = (~pruned).numpy()
            outs = []
            for x in inps:  # pruned block: the next block's input
                y = layer(x, **kw)
                outs.append(y[0] if isinstance(y, tuple) else y)
            inps = outs
    return masks


def run_torch(folder: str, windows, sparsity: float, threads: int) -> tuple[float, dict]:
    import torch
    from transformers import LlamaForCausalLM
    torch.set_num_threads(threads)
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").eval()
    model.config.use_cache = False
    t0 = time.perf_counter()
    masks = torch_wanda(model, windows, sparsity)
    return time.perf_counter() - t0, masks


# ---------------------------------------------------------------- main

def compare(a: dict, b: dict) -> tuple[int, int, dict]:
    """(differing entries, total entries, {block: differing entries}) of two mask dicts with the same keys."""
    if a.keys() != b.keys():
        raise SystemExit(f"mask keys differ: {sorted(set(a) ^ set(b))[:5]}")
    per_block: dict[int, int] = {}
    for k in a:
        b_ = int(k.split(".", 1)[0])
        per_block[b_] = per_block.get(b_, 0) + int(np.count_nonzero(a[k] != b[k]))
    return sum(per_block.values()), sum(int(a[k].size) for k in a), per_block


def table(rows: list[tuple[str, float]], ref: float) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'implementation':<{width}} | time (s) | speed-up vs torch |",
             f"|{'-' * (width + 2)}|---------:|------------------:|"]
    lines += [f"| {name:<{width}} | {t:8.2f} | {ref / t:17.2f}x |" for name, t in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Prints a table of wall times and the count of differing mask entries.")
    p.add_argument("--model", default="smollm2-135m", help="model spec for converters.load_model (a Llama-family "
                                                           "model; default: smollm2-135m)")
    p.add_argument("--calib", default="pydoc", help="calibration data spec (default: pydoc)")
    p.add_argument("--nsamples", type=int, default=32, help="calibration windows (default: 32)")
    p.add_argument("--seqlen", type=int, default=256, help="tokens per window (default: 256)")
    p.add_argument("--sparsity", type=float, default=0.5, help="uniform sparsity (default: 0.5)")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default: 0)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per jitted forward in ours (default: 8)")
    p.add_argument("--threads", default=str(os.cpu_count()), metavar="N[,N...]",
                   help="torch intra-op thread counts to try; the fastest is the reference (default: all cores). "
                        "On a busy machine OpenMP with every core can be slower than 1 thread: try 1,2")
    p.add_argument("--single-thread", action="store_true",
                   help="one core each: XLA without its Eigen thread pool and torch with 1 thread (a per-core "
                        "comparison that stays meaningful on a machine shared with other jobs)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.single_thread:
        if "jax" in sys.modules:
            raise SystemExit("--single-thread must be set before jax is imported")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
        args.threads = "1"

    import jax

    from converters import load_model
    from converters.hf import export_hf
    from neuroal_jax.evaluation.data import calibration_windows

    model = load_model(args.model)
    if model.config.family != "llama":
        raise SystemExit(f"the PyTorch side uses LlamaForCausalLM; {args.model} is a {model.config.family} model")
    windows = calibration_windows(args.calib, model.tokenizer, args.nsamples, args.seqlen, args.seed)
    print(f"{args.model}: {model.config.num_layers} blocks, hidden {model.config.hidden_size}; calibration "
          f"{args.calib} {args.nsamples} × {args.seqlen}; wanda, sparsity {args.sparsity}, uniform, row masks; "
          f"jax {jax.__version__} ({jax.default_backend()}), {os.cpu_count()} CPU cores"
          + (", single-thread" if args.single_thread else ""), flush=True)

    cold, masks_ours = ours(model.config, model.params, windows, args.sparsity, args.batch_size)
    print(f"neuroal_jax, cold: {cold:.2f} s", flush=True)
    warm, masks_warm = ours(model.config, model.params, windows, args.sparsity, args.batch_size)
    print(f"neuroal_jax, warm: {warm:.2f} s", flush=True)
    assert compare(masks_ours, masks_warm)[0] == 0, "our pass is not deterministic"
    torch_times = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "model")
        export_hf(model.config, model.params, folder)
        for threads in (int(t) for t in args.threads.split(",")):
            torch_times[threads], masks_torch = run_torch(folder, windows, args.sparsity, threads)
            print(f"torch, {threads} thread(s): {torch_times[threads]:.2f} s", flush=True)
    t_torch = min(torch_times.values())
    best = min(torch_times, key=torch_times.get)

    diff, total, per_block = compare(masks_ours, masks_torch)
    rows = [(f"torch eager (hooks, one window at a time, {best} thread(s))", t_torch),
            ("neuroal_jax, cold (compilation included)", cold),
            ("neuroal_jax, warm", warm)]
    print()
    print(table(rows, t_torch))
    print(f"\nmask entries differing (ours vs torch): {diff} of {total} ({diff / total:.2e})")
    print("per block: " + " ".join(f"{b}:{n}" for b, n in per_block.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "calib": args.calib, "nsamples": args.nsamples, "seqlen": args.seqlen,
                       "sparsity": args.sparsity, "single_thread": args.single_thread,
                       "torch_seconds_by_threads": torch_times,
                       "seconds": {"torch": t_torch, "ours_cold": cold, "ours_warm": warm},
                       "speedup_cold": t_torch / cold, "speedup_warm": t_torch / warm,
                       "mask_diff": diff, "mask_total": total, "mask_diff_per_block": per_block}, f, indent=2)
    return 0


if __name__ == "__main__":
    from neuroal_jax.runtime import reexec_with_hugepages

    reexec_with_hugepages()  # huge-page malloc, as the CLI runs
    sys.exit(main())
