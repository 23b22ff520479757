#!/usr/bin/env python
"""Forward-pass throughput: our jitted JAX model vs transformers' PyTorch model, on CPU, side by side.

Both run the same weights (the PyTorch model is built from our params with `config_to_hf` /
`tensors_from_params`) in float32 on all cores, on the same random token windows. JAX is timed after
a warm-up call whose extra time is reported as compile time; each row prints seconds per forward,
tokens/s and the ratio to PyTorch. Also prints the max |logit| difference between the two.

    python scripts/bench_forward.py                       # SmolLM2-135M, batch 8 x 256
    python scripts/bench_forward.py --batch 1 --seqlen 1024 --iters 5 --model gemma3-270m
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="converters.load_model spec")
    p.add_argument("--batch", type=int, default=8, help="windows per forward")
    p.add_argument("--seqlen", type=int, default=256, help="tokens per window")
    p.add_argument("--iters", type=int, default=3, help="timed forwards per implementation")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (JAX/XLA uses all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-torch", action="store_true", help="time JAX only")
    p.add_argument("--skip-per-block", action="store_true",
                   help="skip neuroal_jax.models.forward (one jitted call per block); time only the whole-model jit")
    return p.parse_args(argv)


def timed(fn, iters: int) -> tuple[float, float]:
    """(compile seconds = first call - fastest later call, median seconds of `iters` later calls).

    fn must block until its result is ready."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return max(first - min(times), 0.0), float(np.median(times))


def jax_runners(cfg, params, tokens, per_block: bool) -> dict:
    """name -> zero-argument callable returning numpy logits."""
    import jax

    from neuroal_jax.models import forward

    runners = {}
    if per_block:
        runners["JAX models.forward (jit per block)"] = lambda: np.asarray(forward(cfg, params, tokens))
    whole = jax.jit(lambda p, t: forward(cfg, p, t))
    runners["JAX whole-model jit"] = lambda: np.asarray(whole(params, tokens))
    return runners


def torch_model(cfg, params, threads: int):
    """transformers' PyTorch model holding our weights (float32, eval mode)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from converters.hf import config_to_hf, tensors_from_params

    torch.set_num_threads(threads)
    hf = config_to_hf(cfg)
    config = AutoConfig.for_model(**{k: v for k, v in hf.items() if k != "torch_dtype"})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in tensors_from_params(cfg, params).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and cfg.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"PyTorch model does not match our params: missing {missing}, unexpected {unexpected}")
    if cfg.tie_word_embeddings:
        model.tie_weights()
    return model


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    from converters import load_model

    t0 = time.perf_counter()
    loaded = load_model(args.model, tokenizer=False)
    cfg, params = loaded.config, loaded.params
    print(f"model {args.model}: {cfg.family}, {cfg.num_layers} blocks, hidden {cfg.hidden_size}, "
          f"vocab {cfg.vocab_size} (loaded in {time.perf_counter() - t0:.1f} s)")
    print(f"batch {args.batch} x {args.seqlen} tokens, float32, {os.cpu_count()} CPU cores, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")
    tokens = np.random.default_rng(args.seed).integers(0, cfg.vocab_size, (args.batch, args.seqlen)).astype(np.int32)
    n_tokens = args.batch * args.seqlen

    rows, outputs = [], {}
    for name, run in jax_runners(cfg, params, tokens, not args.skip_per_block).items():
        compile_s, step = timed(lambda: outputs.__setitem__(name, run()), args.iters)
        rows.append((name, compile_s, step))

    torch_step = None
    if not args.skip_torch:
        import torch
        model = torch_model(cfg, params, args.threads)
        ids = torch.as_tensor(tokens, dtype=torch.long)

        def run_torch():
            with torch.inference_mode():
                outputs["torch"] = model(ids).logits.numpy()

        _, torch_step = timed(run_torch, args.iters)
        rows.append((f"PyTorch eager ({model.config._attn_implementation}, {args.threads} threads)",
                     None, torch_step))

    print()
    print(f"{'implementation':<44} {'compile s':>10} {'s/forward':>10} {'tokens/s':>10} {'JAX/PyTorch':>12}")
    for name, compile_s, step in rows:
        ratio = f"{torch_step / step:.2f}x" if torch_step and not name.startswith("PyTorch") else ""
        comp = f"{compile_s:.2f}" if compile_s is not None else "-"
        print(f"{name:<44} {comp:>10} {step:>10.3f} {n_tokens / step:>10.0f} {ratio:>12}")
    if "torch" in outputs:
        for name in outputs:
            if name != "torch":
                diff = np.abs(outputs[name] - outputs["torch"]).max()
                print(f"max |logit diff| {name} vs PyTorch: {diff:.2e} (max |logit| "
                      f"{np.abs(outputs['torch']).max():.1f})")
    return 0


if __name__ == "__main__":
    from neuroal_jax.runtime import reexec_with_hugepages

    reexec_with_hugepages()  # huge-page malloc, as the CLI runs
    sys.exit(main())
