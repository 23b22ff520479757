"""Block-streamed, resumable pruning runs (`prune(..., stream=True)`, `neuroal-jax prune --stream`), and the
folder of any resumable run (`open_run`, the digests of its inputs; `finetune` keeps its checkpoints there too).

Weights are read one block at a time (memory-mapped safetensors or GGUF, `converters.stream`),
pruned, and written to the output checkpoint one block at a time, so peak host memory is about one
block plus the calibration activations, not the model.

The run lives in `.<out>.partial/` next to `out` until it is complete, then is renamed to `out`:

    .neuroal-jax.json              our marker (neuroal_jax.outputs.files)
    run.json                       the settings and digests of the inputs (model files, calibration and
                                   evaluation windows); --resume refuses a run whose settings or inputs differ
    allocation/, allocation.json   the top-up's result (the NeuroAL search runs once)
    model-block-00007.safetensors  block 7, pruned (written atomically)
    routing/block-00007.json       a MoE block 7's expert token counts, for report.json's moe_tokens
    masks/block-00007/             block 7's masks (orbax), written last: block 7 is done

A killed run continues with `resume=True` (`--resume`): finished blocks are read back and only
advance the calibration stream, so the result is identical to an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from .errors import UsageError
from .outputs.files import json_safe, new_folder, publish, write_json
from .outputs.report import write_report

RUN_FILE = "run.json"
ALLOCATION_DIR, ALLOCATION_INFO = "allocation", "allocation.json"
ROUTING_DIR = "routing"


# ---------------------------------------------------------------- what a resumed run must see again

def array_digest(arr) -> str:
    a = np.ascontiguousarray(np.asarray(arr))
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()[:16]


def files_digest(source: str | os.PathLike) -> str:
    """Digest of the names, sizes and modification times of a model file, or of the files in a model folder."""
    p = Path(source)
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def params_digest(params: dict) -> str:
    import jax
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(params):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- the run folder

def open_run(part: Path, record: dict, resume: bool) -> bool:
    """Start the run in `part` (created), or continue the interrupted one there (resume); returns whether it
    continues. `record` = {"settings": ..., "inputs": digests}; a resumed run must repeat both."""
    record = json_safe(record)
    if part.exists() and resume:
        try:
            saved = json.loads((part / RUN_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            raise UsageError(f"{part} is not a resumable run (no readable {RUN_FILE}); "
                             "pass --force without --resume to start over") from None
        def changed(what):
            now, then = record.get(what) or {}, saved.get(what) or {}
            return [(k, then.get(k), now.get(k)) for k in sorted(now.keys() | then.keys()) if now.get(k) != then.get(k)]

        problems = [f"{k}: {then!r} then, {now!r} now" for k, then, now in changed("settings")]
        problems += [f"the {k} changed" for k, _, _ in changed("inputs")]
        if problems:
            raise UsageError(f"--resume: the interrupted run at {part} was made with other settings or inputs ("
                             + "; ".join(problems) + "); rerun with the same settings and inputs, or pass --force "
                             "without --resume to start over")
        return True
    new_folder(part, "partial")
    write_json(part / RUN_FILE, record)
    return False


def finish_run(part: Path, out: Path) -> None:
    """Drop the resume bookkeeping and publish the completed run as `out`."""
    for d in (ALLOCATION_DIR, ROUTING_DIR):
        shutil.rmtree(part / d, ignore_errors=True)
    for f in (ALLOCATION_INFO, RUN_FILE):
        (part / f).unlink(missing_ok=True)
    publish(part, Path(out), "prune")


class StreamedRun:
    """A run that reads and writes one block at a time in `.<out>.partial/` (kept for --resume when interrupted),
    renamed to `out` when complete. Same interface as `api.InMemoryRun`."""

    def __init__(self, req, part: Path):
        self.req, self.part = req, part

    def saved_allocation(self, record: dict):
        return load_allocation(self.part) if open_run(self.part, record, self.req.resume) else None

    def keep_allocation(self, allocation) -> None:
        if allocation.refine is None:  # a refining top-up (DSnoT) is rebuilt on resume
            save_allocation(self.part, allocation)

    def prune(self, job, allocation):
        summary = streamed_prune(job, allocation, self.part)
        return reopen_pruned(job.cfg, job.params, self.part, job.params["embed"]["weight"].dtype), None, summary

    def finish(self, cfg, pruned, tokenizer, masks, dist, make_report):
        if tokenizer is not None:
            tokenizer.save_pretrained(str(self.part))
        report = write_report(self.part, make_report())
        finish_run(self.part, self.req.out)
        return report, reopen_pruned(cfg, pruned, self.req.out, pruned["embed"]["weight"].dtype)


# ---------------------------------------------------------------- the allocation, computed once

def save_allocation(part: Path, allocation) -> None:
    from .outputs.checkpoint import save_masks
    write_json(part / ALLOCATION_INFO, allocation.info)
    save_masks(part / ALLOCATION_DIR, {}, allocation.dist)  # orbax: float64 per-row vectors stay exact


def load_allocation(part: Path):
    """The saved Allocation of an interrupted run, or None. (DSnoT's refine is rebuilt by the caller.)"""
    from .outputs.checkpoint import load_distribution
    from .topups.base import Allocation
    if not (part / ALLOCATION_DIR).exists() or not (part / ALLOCATION_INFO).exists():
        return None
    return Allocation(load_distribution(part / ALLOCATION_DIR), json.loads((part / ALLOCATION_INFO).read_text()))


# ---------------------------------------------------------------- a MoE block's token counts, kept for the report

def routing_file(part: Path, b: int) -> Path:
    return part / ROUTING_DIR / f"block-{b:05d}.json"


def save_routing(part: Path, b: int, tokens: dict) -> None:
    """Block b's {expert layer: (tokens routed, tokens covered)} (`prune_on_stream`'s routing[b]), in its order."""
    routing_file(part, b).parent.mkdir(exist_ok=True)
    write_json(routing_file(part, b), tokens)


def load_routing(part: Path, b: int) -> dict | None:
    """What `save_routing` wrote for block b, or None (a dense block)."""
    f = routing_file(part, b)
    return {k: tuple(v) for k, v in json.loads(f.read_text()).items()} if f.exists() else None


# ---------------------------------------------------------------- the pass

def streamed_prune(job, allocation, part: Path) -> dict:
    """Prune `job` (a topups.PruneJob) with `allocation` block by block into `part` (shards + per-block masks);
    returns the sparsity summary. Blocks an earlier run finished are read back instead of pruned again.
    A MoE model's expert token counts go into `allocation.info` (`moe_info`); a restored block's are read back."""
    from converters.stream import ShardWriter

    from .outputs.checkpoint import block_dir, load_masks, save_masks
    from .outputs.report import moe_info
    from .pruning.sequential import prune_blocks
    from .pruning.targets import layer_sparsities, summarize_sparsity
    from .runtime import return_free_memory

    cfg, params, dist = job.cfg, job.params, allocation.dist
    dtype = params["embed"]["weight"].dtype
    writer = ShardWriter(part, cfg)
    masks_dir = part / "masks"

    layer, sizes, routing = {}, {}, {}

    def restore(b):
        done = block_dir(masks_dir, b)
        if done.exists() and writer.has_block(b):
            if (tokens := load_routing(part, b)) is not None:
                routing[b] = tokens
            return writer.read_block(b, dtype), load_masks(done)
        return None

    for b, p_new, m in prune_blocks(cfg, params, job.windows, dist, job.method, job.structure, job.batch_size,
                                    allocation.refine, job.progress, restore, routing):
        if not block_dir(masks_dir, b).exists():
            writer.write_block(b, p_new)
            if b in routing:
                save_routing(part, b, routing[b])
            save_masks(block_dir(masks_dir, b), m, {k: dist[k] for k in m})
        frac, n = layer_sparsities(m)
        layer.update(frac), sizes.update(n)
        del p_new, m  # before the next block is read: one block in memory at a time
        return_free_memory()
    writer.write_top(params)
    writer.finish(np.dtype(params["embed"]["weight"].dtype).name)
    allocation.info.update(moe_info(cfg, routing))
    return summarize_sparsity(cfg, layer, sizes)


def reopen_pruned(cfg, params: dict, part: Path, dtype) -> dict:
    """The pruned model in `part` as params with lazily read blocks (for evaluation)."""
    from converters.stream import LazyBlocks, ShardWriter
    writer = ShardWriter(part, cfg)
    return {**{k: v for k, v in params.items() if k != "blocks"},
            "blocks": LazyBlocks(cfg, lambda b: writer.read_block(b, dtype))}
