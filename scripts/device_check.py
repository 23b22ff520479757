"""One prepared check for a machine with an NVIDIA GPU and CUDA JAX: run it once, read OUT/device_check.md.

    python -u scripts/device_check.py OUT            # on the GPU machine (under 8 minutes on one H100/H200)
    python -u scripts/device_check.py OUT --smoke    # every part at toy scale on a CPU (CI runs this)

Parts (each writes its result to OUT/device_check.json and OUT/device_check.md as soon as it ends, so a timeout
still leaves what ran; a part that cannot run says why):
  a. kernel  the Pallas top-k kernel, compiled (interpret mode with --smoke), equals the jnp threshold search on
             random scores, heavy ties, ±0, keep ∈ {0, 1, C, random}, odd shapes, bfloat16 and batched candidates;
  b. topk    scripts/bench_topk.py at full Llama-7B/70B shapes: Pallas vs the jnp search vs argsort;
  c. search  the NeuroAL search (both steps, wanda 70 %) on a Llama-2-7B-shaped model with random weights built on
             the device (32 blocks, hidden 4096, intermediate 11008, 32 heads, 8 × 2048 tokens, bfloat16 weights,
             float32 statistics): seconds per step, peak device memory, the λ chunk --lambda-chunk auto chose;
             then the same with --dense-stream model;
  d. sweep   the block-step sweep (neuroal_jax.sweep, outcomes "picks") on the same model.
No torch, no Hub, no download: the weights are random and the tokens are random ids.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from neuroal_jax.config import ModelConfig  # noqa: E402

LLAMA2_7B = ModelConfig(family="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
                        num_heads=32, num_kv_heads=32, head_dim=128, max_position_embeddings=4096, norm_eps=1e-5)
TOY = ModelConfig(family="llama", vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                  num_kv_heads=4, head_dim=16, max_position_embeddings=256, norm_eps=1e-5)


def log(*args) -> None:
    print(*args, flush=True)


# ---------------------------------------------------------------- parts

def part_kernel(smoke: bool) -> dict:
    from neuroal_jax.pruning.masks import topk_keep_mask
    from pallas_kernels.topk_mask import topk_mask
    if not smoke and jax.default_backend() != "gpu":
        return {"status": "skipped",
                "why": f"no GPU backend ({jax.default_backend()}); the compiled kernel is GPU-only"}
    rng = np.random.default_rng(0)
    zeros = np.array([0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45], np.float32)
    shapes = [(100, 300), (37, 1001)] + ([] if smoke else [(4096, 4096), (11008, 4096), (4096, 11008)])
    cases = []
    for rows, cols in shapes:
        for kind, scores in (("normal", rng.standard_normal((rows, cols))), ("ties", rng.integers(-3, 4, (rows, cols))),
                             ("zeros", rng.choice(zeros, (rows, cols)))):
            for keeps in ("random", "extremes"):
                keep = (rng.integers(0, cols + 1, rows) if keeps == "random"
                        else np.resize(np.array([0, 1, cols]), rows)).astype(np.int32)
                cases.append((f"{rows}x{cols} {kind} keep {keeps}", scores.astype(np.float32), keep))
    batched = rng.integers(-3, 4, (14, 24, 70)).astype(np.float32)
    cases.append(("14x24x70 batched ties", batched, rng.integers(0, 71, (14, 24)).astype(np.int32)))
    cases.append(("64x200 bfloat16", jnp.asarray(rng.standard_normal((64, 200)), jnp.bfloat16),
                  rng.integers(0, 201, 64).astype(np.int32)))
    failed = []
    for name, scores, keep in cases:
        for ties in ("low", "high"):
            got = np.asarray(topk_mask(scores, keep, ties, interpret=smoke))
            if not np.array_equal(got, np.asarray(topk_keep_mask(jnp.asarray(scores), keep, ties))):
                failed.append(f"{name} ties={ties}")
    return {"status": "ok" if not failed else "FAILED", "cases": 2 * len(cases), "mismatches": failed,
            "mode": "interpret" if smoke else "compiled"}


def part_topk(smoke: bool) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_topk
    argv = (["--quick", "--scale", "64", "--reps", "1", "--batches", "2", "--no-block"] if smoke
            else ["--full", "--check"])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        bench_topk.main(argv)
    log(buf.getvalue())
    return {"status": "ok", "argv": argv, "table": buf.getvalue()}


def random_model(cfg: ModelConfig, dtype):
    """Random params built on the device, leaf by leaf (norms around 1)."""
    from neuroal_jax.models import family_of
    shapes = family_of(cfg).param_shapes(cfg)
    leaves, tree = jax.tree_util.tree_flatten(shapes, is_leaf=lambda x: isinstance(x, tuple) and
                                              all(isinstance(i, int) for i in x))
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    made = [(1.0 + 0.1 * jax.random.normal(k, s) if len(s) == 1 else 0.02 * jax.random.normal(k, s)).astype(dtype)
            for k, s in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(tree, made)


def peak_device_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def part_search(cfg: ModelConfig, params, windows, dense_stream: str) -> dict:
    from neuroal_jax.topups.neuroal.search import SearchSettings, neuroal_search
    t0 = time.perf_counter()
    r = neuroal_search(cfg, params, windows, 0.7, "wanda", SearchSettings(neuroal_step="both",
                                                                          dense_stream=dense_stream), progress=False)
    info = r.info()
    return {"status": "ok", "dense_stream": dense_stream, "seconds_total": time.perf_counter() - t0,
            "seconds_block_step": r.block.seconds, "seconds_row_step": r.row.seconds,
            "lambda_block": info["lambda_block"], "lambda_row": info["lambda_row"],
            "lambda_chunk_block": info["lambda_chunk_block"], "lambda_chunk_row": info["lambda_chunk_row"],
            "peak_device_bytes": peak_device_bytes()}


def part_sweep(cfg: ModelConfig, params, windows, out: Path) -> dict:
    import neuroal_jax as nj
    np.save(out / "tokens.npy", np.asarray(windows).reshape(-1))
    t0 = time.perf_counter()
    result = nj.sweep((cfg, params), method="wanda", sparsity=0.7, step="block", calib=f"tokens:{out / 'tokens.npy'}",
                      nsamples=len(windows), seqlen=windows.shape[1], eval=f"tokens:{out / 'tokens.npy'}",
                      eval_nsamples=2, outcomes="picks", dtype="bfloat16", progress=False)
    return {"status": "ok", "seconds": time.perf_counter() - t0, "timings": result.report["timings"],
            "peak_device_bytes": peak_device_bytes()}


# ---------------------------------------------------------------- the run

def write(out: Path, results: dict) -> None:
    (out / "device_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    lines = [f"# device check: {results['device']}", "",
             f"JAX {results['jax']}, {'smoke (toy scale)' if results['smoke'] else 'full scale'}",
             "", "| part | status | figures |", "|---|---|---|"]
    for name, r in results["parts"].items():
        figures = {k: v for k, v in r.items() if k not in ("status", "table", "why", "traceback")}
        lines.append(f"| {name} | {r['status']}{' (' + r['why'] + ')' if 'why' in r else ''} | "
                     + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
                     + " |")
    (out / "device_check.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for device_check.json and device_check.md (created)")
    ap.add_argument("--smoke", action="store_true", help="every part at toy scale (CPU, interpret-mode kernel)")
    ap.add_argument("--parts", default="kernel,topk,search,sweep", help="comma-separated subset of the parts")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    dev = jax.devices()[0]
    results = {"device": f"{dev.platform}: {getattr(dev, 'device_kind', dev)}", "jax": jax.__version__,
               "smoke": args.smoke, "parts": {}}
    cfg = TOY if args.smoke else LLAMA2_7B
    n, T = (2, 32) if args.smoke else (8, 2048)
    model = {}

    def the_model():
        if not model:
            model["params"] = random_model(cfg, jnp.bfloat16)
            model["windows"] = np.random.default_rng(0).integers(0, cfg.vocab_size, (n, T)).astype(np.int32)
        return cfg, model["params"], model["windows"]

    parts = {"kernel": lambda: part_kernel(args.smoke), "topk": lambda: part_topk(args.smoke),
             "search": lambda: part_search(*the_model(), "candidate"),
             "search_dense_model": lambda: part_search(*the_model(), "model"),
             "sweep": lambda: part_sweep(*the_model(), args.out)}
    wanted = set(args.parts.split(",")) | ({"search_dense_model"} if "search" in args.parts.split(",") else set())
    for name, run in parts.items():
        if name not in wanted:
            continue
        log(f"== {name}")
        t0 = time.perf_counter()
        try:
            results["parts"][name] = {**run(), "wall_s": time.perf_counter() - t0}
        except Exception as e:  # a part that fails is recorded, and the next one runs
            results["parts"][name] = {"status": "error", "why": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}",
                                      "traceback": traceback.format_exc()}
        log(json.dumps({k: v for k, v in results["parts"][name].items() if k not in ("table", "traceback")},
                       default=str))
        write(args.out, results)
    return 0 if all(r["status"] in ("ok", "skipped") for r in results["parts"].values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # peak memory means what the check used
    sys.exit(main())
