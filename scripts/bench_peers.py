#!/usr/bin/env python
"""Benchmark our sequential pruning pass against llm-compressor's `oneshot`, side by side.

Both sides prune the same model (default: SmolLM2-135M, float32) with the same calibration windows
(default: `pydoc`, 32 windows × 256 tokens) and the same number of CPU threads, each in a fresh
process; the pruned weights come back to this process, which evaluates both with OUR perplexity code
on the same evaluation windows (default: the first 28 `pydoc` test windows of 256 tokens, as in
results/). Cases (default: both):

- wanda:     Wanda, 70 % uniform, per-row (unstructured) masks.
             ours: `sequential_prune(..., "wanda", Structure())`;
             peer: `WandaPruningModifier(sparsity=0.7, mask_structure="0:0")`.
- sparsegpt: SparseGPT, 50 % uniform, unstructured, OBS weight updates.
             ours: `sequential_prune(..., "sparsegpt", Structure())`;
             peer: `SparseGPTModifier(sparsity=0.5, mask_structure="0:0", block_size, dampening_frac)` with
             block size and damping read from `neuroal_jax.pruning.sparsegpt.sparsegpt_prune`'s defaults
             (128 columns, 0.01 × mean diag H).

The peer's modifiers target the decoder layers (`targets` and `sequential_targets` = the model's decoder
layer class, e.g. LlamaDecoderLayer), so it prunes exactly the 7 linear layers of every block (q, k, v, o,
gate, up, down) and never lm_head (llm-compressor's default target, "Linear", would also prune the
head, i.e. the tied embedding); its sequential pipeline runs the pruned block to feed the next one, as
ours does. It gets the windows pre-tokenized as a `datasets.Dataset` (input_ids, attention_mask),
unshuffled, `batch_size` windows per forward (default: the same 8 as ours).

Timing: ours is the pruning pass only (model loading excluded), cold (first call: XLA compilation
included) and warm (a second call in the same process; `--no-warm` skips it). The peer is the
`oneshot(...)` call only (model loading excluded; its dataset preparation, graph tracing and hooks
included). The ratio is peer seconds / our COLD seconds (> 1: we are faster), since the peer's time
also includes its own warm-up. Both workers get the same thread count: OMP/MKL/OpenBLAS env vars,
`torch.set_num_threads` in the peer, and, with fewer threads than available cores, a CPU affinity
mask for both (XLA's thread pool follows the affinity; one thread also turns Eigen's pool off).

The table also gives each side's sparsity over the prunable weights (exact zeros in the 7 linear
layers of every block), the fraction of those entries whose zero pattern differs between the two,
and how many other tensors each side changed (should be 0).

llm-compressor runs in its own virtualenv (its torch must not meet ours). Create it with

    python -m venv V && V/bin/pip install torch==2.13.0 &&
        V/bin/pip install llmcompressor==0.14.0.1 -c <(echo torch==2.13.0)

and pass `--peer-python V/bin/python` (or set LLMC_PYTHON; default /work/venvs/llmc/bin/python). This
script runs itself in that interpreter with a hidden `--peer-worker` flag; in that mode it imports only
numpy, torch, transformers, datasets, safetensors and llmcompressor.

Not offered: OWL (llm-compressor's `sparsity_profile="owl"`) crashes in llmcompressor 0.14.0.1 with
`ValueError: Cannot invoke event before initializing` from `_infer_owl_layer_sparsity`.

    .venv/bin/python scripts/bench_peers.py                          # both cases, the defaults above
    .venv/bin/python scripts/bench_peers.py --cases wanda --threads 1 --json peers.json
    .venv/bin/python scripts/bench_peers.py --nsamples 2 --seqlen 64 --eval-nsamples 2   # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CASES = {"wanda": 0.7, "sparsegpt": 0.5}  # case (= our method name) → uniform sparsity
PRUNABLE = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
DEFAULT_PEER_PYTHON = "/work/venvs/llmc/bin/python"
PEER_VENV_RECIPE = ("python -m venv V && V/bin/pip install torch==2.13.0 && "
                    "V/bin/pip install llmcompressor==0.14.0.1 -c <(echo torch==2.13.0)")
WEIGHTS = "model.safetensors"
RESULT = "result.json"


# ---------------------------------------------------------------- shared by both workers

def write_result(out: Path, **values) -> None:
    (out / RESULT).write_text(json.dumps(values, indent=2))


def is_prunable(name: str) -> bool:
    """An HF tensor name of one of the 7 Llama linear weights of a block."""
    return ".layers." in name and name.endswith(".weight") and any(f".{m}." in name for m in PRUNABLE)


# ---------------------------------------------------------------- ours (run in our venv)

def ours_worker(args) -> None:
    """Prune the exported dense folder with neuroal_jax; write the pruned folder and the times."""
    import jax

    from converters import load_model
    from converters.hf import export_hf
    from neuroal_jax.pruning import Structure, sequential_prune, uniform_distribution

    work, out = Path(args.work), Path(args.out)
    model = load_model(work / "dense", tokenizer=False)
    cfg, windows = model.config, np.load(work / "calib.npy")
    dist = uniform_distribution(cfg, args.sparsity)

    def one_pass():
        t0 = time.perf_counter()
        pruned, masks = sequential_prune(cfg, model.params, windows, dist, args.ours_worker, Structure(),
                                         batch_size=args.batch_size, progress=False)
        jax.block_until_ready((pruned, masks))
        return time.perf_counter() - t0, pruned

    cold, pruned = one_pass()
    warm = one_pass()[0] if args.warm else None
    export_hf(cfg, pruned, out / "model")
    write_result(out, seconds_cold=cold, seconds_warm=warm, jax=jax.__version__, backend=jax.default_backend())


# ---------------------------------------------------------------- peer (run in llm-compressor's venv)

def peer_modifier(case: str, sparsity: float, layer_class: str, block_size: int, dampening: float):
    """The llm-compressor modifier doing what our `case` does: uniform, unstructured, decoder-layer targets."""
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    common = {"sparsity": sparsity, "mask_structure": "0:0", "targets": [layer_class]}
    if case == "wanda":
        return WandaPruningModifier(**common)
    return SparseGPTModifier(**common, block_size=block_size, dampening_frac=dampening)


def calibration_dataset(windows: np.ndarray):
    from datasets import Dataset
    return Dataset.from_dict({"input_ids": windows.tolist(), "attention_mask": np.ones_like(windows).tolist()})


def save_like(model, dense_folder: Path, out: Path) -> None:
    """The pruned model's tensors under the dense export's names (tied head omitted as there), plain
    dense safetensors with the same config.json, so our loader reads it as it reads the input."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(dense_folder / WEIGHTS), framework="pt") as f:
        names = list(f.keys())
    state = model.state_dict()
    missing = [n for n in names if n not in state]
    if missing:
        raise SystemExit(f"pruned model lacks tensors of the export: {missing[:5]}")
    out.mkdir(parents=True)
    save_file({n: state[n].detach().to("cpu").contiguous() for n in names}, str(out / WEIGHTS))
    shutil.copy(dense_folder / "config.json", out / "config.json")


def peer_worker(args) -> None:
    """Prune the exported dense folder with llm-compressor's oneshot; write the pruned folder and the time."""
    import llmcompressor
    import torch
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    work, out = Path(args.work), Path(args.out)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(work / "dense"), dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    windows = np.load(work / "calib.npy")
    dataset = calibration_dataset(windows)
    layer_class = type(model.model.layers[0]).__name__
    modifier = peer_modifier(args.peer_worker, args.sparsity, layer_class, args.block_size, args.dampening)
    t0 = time.perf_counter()
    oneshot(model=model, dataset=dataset, recipe=modifier, num_calibration_samples=len(windows),
            max_seq_length=windows.shape[1], shuffle_calibration_samples=False, batch_size=args.batch_size,
            pipeline="sequential", sequential_targets=[layer_class])
    seconds = time.perf_counter() - t0
    save_like(model, work / "dense", out / "model")
    write_result(out, seconds=seconds, load_seconds=load_s, modifier=repr(modifier), layer_class=layer_class,
                 torch=torch.__version__, torch_threads=torch.get_num_threads(),
                 llmcompressor=llmcompressor.__version__)


# ---------------------------------------------------------------- main (our venv)

def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    return env


def run_worker(python: str, flag: str, case: str, out: Path, args, verbose: bool) -> dict:
    """Run this script as a worker in a fresh process; its result.json. Shows its output if it fails."""
    cmd = [python, str(Path(__file__).resolve()), flag, case, "--work", args.work, "--out", str(out),
           "--sparsity", str(CASES[case]), "--threads", str(args.threads), "--batch-size", str(args.batch_size),
           "--block-size", str(args.block_size), "--dampening", str(args.dampening)]
    if args.no_warm:
        cmd.append("--no-warm")
    out.mkdir(parents=True)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = (lambda: os.sched_setaffinity(0, cpus[:args.threads])) if args.threads < len(cpus) else None
    try:
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO, env=worker_env(args.threads),
                              preexec_fn=pin)
    except subprocess.CalledProcessError as e:
        sys.stderr.write(e.stdout[-4000:] + e.stderr[-8000:])
        raise SystemExit(f"{flag} {case} failed (exit {e.returncode}): {' '.join(cmd)}") from None
    if verbose:
        sys.stderr.write(proc.stdout + proc.stderr)
    return json.loads((out / RESULT).read_text())


def zero_patterns(folder: Path) -> tuple[dict, dict]:
    """({prunable name: bool zeros}, {other name: array}) of a pruned folder's tensors."""
    from converters.safetensors_io import load_file
    tensors = load_file(folder / WEIGHTS)
    return ({n: t == 0 for n, t in tensors.items() if is_prunable(n)},
            {n: t for n, t in tensors.items() if not is_prunable(n)})


def compare_sides(dense: Path, ours: Path, peer: Path) -> dict:
    """Sparsities of both sides, the fraction of differing zero-pattern entries, tensors changed outside."""
    _, others = zero_patterns(dense)
    z_ours, o_ours = zero_patterns(ours)
    z_peer, o_peer = zero_patterns(peer)
    if z_ours.keys() != z_peer.keys() or len(z_ours) == 0:
        raise SystemExit(f"prunable tensors differ: {sorted(set(z_ours) ^ set(z_peer))[:5]}")
    total = sum(z.size for z in z_ours.values())
    per_block: dict[int, list[int]] = {}  # block → [differing entries, entries]
    for n in z_ours:
        counts = per_block.setdefault(int(n.split(".layers.", 1)[1].split(".", 1)[0]), [0, 0])
        counts[0] += int(np.count_nonzero(z_ours[n] != z_peer[n]))
        counts[1] += z_ours[n].size

    def changed(tensors: dict) -> int:
        return sum(int(not np.array_equal(tensors[n], others[n])) for n in others)

    return {"prunable_layers": len(z_ours), "prunable_entries": total,
            "sparsity_ours": sum(int(z.sum()) for z in z_ours.values()) / total,
            "sparsity_peer": sum(int(z.sum()) for z in z_peer.values()) / total,
            "mask_diff": sum(d for d, _ in per_block.values()) / total,
            "mask_diff_per_block": {b: d / n for b, (d, n) in sorted(per_block.items())},
            "other_tensors_changed_ours": changed(o_ours), "other_tensors_changed_peer": changed(o_peer)}


def folder_perplexity(folder: Path, windows: np.ndarray, batch_size: int) -> float:
    from converters import load_model
    from neuroal_jax.evaluation.perplexity import perplexity
    m = load_model(folder, tokenizer=False)
    return perplexity(m.config, m.params, windows, batch_size=batch_size, progress=False)


def run_case(case: str, args, eval_ids: np.ndarray) -> dict:
    work = Path(args.work)
    ours = run_worker(sys.executable, "--ours-worker", case, work / f"ours-{case}", args, args.verbose)
    print(f"{case}: ours {ours['seconds_cold']:.2f} s cold"
          + (f", {ours['seconds_warm']:.2f} s warm" if ours["seconds_warm"] is not None else ""), flush=True)
    peer = run_worker(args.peer_python, "--peer-worker", case, work / f"peer-{case}", args, args.verbose)
    print(f"{case}: llm-compressor {peer['seconds']:.2f} s ({peer['modifier']})", flush=True)
    row = {"case": case, "sparsity": CASES[case], "seconds_ours_cold": ours["seconds_cold"],
           "seconds_ours_warm": ours["seconds_warm"], "seconds_peer": peer["seconds"],
           "ratio_peer_over_ours_cold": peer["seconds"] / ours["seconds_cold"],
           "ppl_ours": folder_perplexity(work / f"ours-{case}" / "model", eval_ids, args.batch_size),
           "ppl_peer": folder_perplexity(work / f"peer-{case}" / "model", eval_ids, args.batch_size),
           **compare_sides(work / "dense", work / f"ours-{case}" / "model", work / f"peer-{case}" / "model"),
           "peer_modifier": peer["modifier"], "peer_load_seconds": peer["load_seconds"],
           "peer_torch_threads": peer["torch_threads"], "versions": {"jax": ours["jax"], "torch": peer["torch"],
                                                                   "llmcompressor": peer["llmcompressor"]}}
    row["ppl_diff_pct"] = 100 * (row["ppl_peer"] - row["ppl_ours"]) / row["ppl_ours"]
    return row


def table(rows: list[dict]) -> str:
    head = ("| case | ours cold (s) | ours warm (s) | llm-compressor (s) | ratio peer / ours cold | ppl ours | "
            "ppl peer | Δppl peer vs ours | sparsity ours | sparsity peer | masks differ |")
    lines = [head, "|" + "|".join("---:" if i else "---" for i in range(head.count("|") - 1)) + "|"]
    for r in rows:
        warm = "–" if r["seconds_ours_warm"] is None else f"{r['seconds_ours_warm']:.2f}"
        lines.append(f"| {r['case']} {r['sparsity']:.0%} | {r['seconds_ours_cold']:.2f} | {warm} | "
                     f"{r['seconds_peer']:.2f} | {r['ratio_peer_over_ours_cold']:.2f}x | {r['ppl_ours']:.3f} | "
                     f"{r['ppl_peer']:.3f} | {r['ppl_diff_pct']:+.2f} % | {r['sparsity_ours']:.4f} | "
                     f"{r['sparsity_peer']:.4f} | {r['mask_diff']:.2e} |")
    return "\n".join(lines)


def default_sparsegpt_settings() -> tuple[int, float]:
    """(block size, damping fraction) our SparseGPT uses (sparsegpt_prune's defaults, as prune_block calls it)."""
    import inspect

    from neuroal_jax.pruning.sparsegpt import sparsegpt_prune
    params = inspect.signature(sparsegpt_prune).parameters
    return params["blocksize"].default, params["percdamp"].default


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring for details.")
    p.add_argument("--model", default="smollm2-135m",
                   help="model spec for converters.load_model, a Llama-family model (default: smollm2-135m)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)} (default: both)")
    p.add_argument("--calib", default="pydoc", help="calibration data spec (default: pydoc)")
    p.add_argument("--eval", default="pydoc", help="evaluation data spec (default: pydoc, its test split)")
    p.add_argument("--nsamples", type=int, default=32, help="calibration windows (default: 32)")
    p.add_argument("--seqlen", type=int, default=256,
                   help="tokens per window, calibration and evaluation (default: 256)")
    p.add_argument("--eval-nsamples", type=int, default=28, help="evaluation windows (default: 28)")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default: 0)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="windows per forward, ours and the peer's calibration batch size (default: 8)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for each side (default: all cores)")
    p.add_argument("--no-warm", action="store_true", help="skip our second (warm) pass")
    p.add_argument("--peer-python", default=os.environ.get("LLMC_PYTHON", DEFAULT_PEER_PYTHON),
                   help=f"python of the llm-compressor venv (default: $LLMC_PYTHON, else {DEFAULT_PEER_PYTHON})")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--verbose", action="store_true", help="show the workers' output (llm-compressor's log)")
    # the workers (this file run again, in our venv or in the peer's)
    p.add_argument("--ours-worker", choices=list(CASES), help=argparse.SUPPRESS)
    p.add_argument("--peer-worker", choices=list(CASES), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--sparsity", type=float, help=argparse.SUPPRESS)
    p.add_argument("--block-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dampening", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.warm = not args.no_warm
    internal = ("work", "out", "sparsity", "block_size", "dampening")
    if not (args.ours_worker or args.peer_worker) and any(getattr(args, k) is not None for k in internal):
        p.error("--work, --out, --sparsity, --block-size and --dampening are the workers' (internal) options")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def main(args) -> int:
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        raise SystemExit(f"unknown case(s) {unknown}; valid: {', '.join(CASES)}")
    if not (os.path.isfile(args.peer_python) and os.access(args.peer_python, os.X_OK)):
        print(f"llm-compressor python not found at {args.peer_python} (--peer-python / LLMC_PYTHON); "
              f"create it with: {PEER_VENV_RECIPE}")
        return 2

    from converters import load_model
    from converters.hf import export_hf
    from neuroal_jax.evaluation.data import calibration_windows, eval_windows

    args.block_size, args.dampening = default_sparsegpt_settings()
    model = load_model(args.model)
    cfg = model.config
    if cfg.family != "llama":
        raise SystemExit(f"the peer's targets and the comparison assume a Llama model; {args.model} is {cfg.family}")
    windows = calibration_windows(args.calib, model.tokenizer, args.nsamples, args.seqlen, args.seed, cfg.vocab_size)
    eval_ids = eval_windows(args.eval, model.tokenizer, args.seqlen, args.eval_nsamples, cfg.vocab_size)
    print(f"{args.model}: {cfg.num_layers} blocks; calibration {args.calib} {args.nsamples} × {args.seqlen}; eval "
          f"{args.eval} {len(eval_ids)} × {args.seqlen}; {args.threads} thread(s) each, batch {args.batch_size}; "
          f"sparsegpt block {args.block_size}, damping {args.dampening}; peer {args.peer_python}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_peers-") as tmp:
        args.work = tmp
        export_hf(cfg, model.params, Path(tmp) / "dense", tokenizer=model.tokenizer)
        np.save(Path(tmp) / "calib.npy", np.asarray(windows, dtype=np.int64))
        del model
        dense_ppl = folder_perplexity(Path(tmp) / "dense", eval_ids, args.batch_size)
        print(f"dense perplexity: {dense_ppl:.3f}", flush=True)
        for case in cases:
            rows.append(run_case(case, args, eval_ids))

    print()
    print(table(rows))
    print(f"\nratio = llm-compressor seconds / our cold seconds (> 1: we are faster); ours cold includes XLA "
          f"compilation, the peer's time is the oneshot call. Dense perplexity {dense_ppl:.3f}. Masks differ: fraction "
          f"of prunable entries zero on one side only.")
    for r in rows:
        print(f"{r['case']}: masks differ per block: "
              + " ".join(f"{b}:{d:.1e}" for b, d in r["mask_diff_per_block"].items()))
        if r["other_tensors_changed_ours"] or r["other_tensors_changed_peer"]:
            print(f"warning: {r['case']}: non-prunable tensors changed: ours {r['other_tensors_changed_ours']}, "
                  f"peer {r['other_tensors_changed_peer']}")
    if args.json:
        settings = {k: getattr(args, k) for k in ("model", "calib", "eval", "nsamples", "seqlen", "seed",
                                                  "batch_size", "threads", "block_size", "dampening", "peer_python")}
        Path(args.json).write_text(json.dumps({**settings, "eval_windows": len(eval_ids),
                                               "dense_ppl": dense_ppl, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    cli = parse_args()
    if cli.peer_worker:
        peer_worker(cli)
    elif cli.ours_worker:
        ours_worker(cli)
    else:
        from neuroal_jax.runtime import reexec_with_hugepages

        reexec_with_hugepages()  # huge-page malloc, as the CLI runs (the workers inherit it)
        sys.exit(main(cli))
