"""Block-streamed, resumable pruning runs (`prune(..., stream=True)`, `neuroal-jax prune --stream`).

Weights are read one block at a time (memory-mapped safetensors or GGUF, `converters.stream`),
pruned, and written to the output checkpoint one block at a time, so peak host memory is about one
block plus the calibration activations, not the model.

The run lives in `.<out>.partial/` next to `out` until it is complete, then is renamed to `out`:

    run.json                       the settings; --resume refuses a run made with other settings
    allocation/, allocation.json   the top-up's result (the NeuroAL search runs once)
    model-block-00007.safetensors  block 7, pruned (written atomically)
    masks/block-00007/             block 7's masks (orbax), written last: block 7 is done

A killed run continues with `resume=True` (`--resume`): finished blocks are read back and only
advance the calibration stream, so the result is identical to an uninterrupted run.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from .report import json_safe, write_json

RUN_FILE = "run.json"
ALLOCATION_DIR, ALLOCATION_INFO = "allocation", "allocation.json"


def partial_dir(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.partial"


def open_run(out: Path, settings: dict, force: bool, resume: bool) -> tuple[Path, bool]:
    """(folder of the run, whether it continues an interrupted one)."""
    part = partial_dir(out)
    settings = json_safe(settings)
    if part.exists() and resume:
        try:
            saved = json.loads((part / RUN_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            raise ValueError(f"{part} is not a resumable run (no readable {RUN_FILE}); "
                             "pass --force without --resume to start over") from None
        changed = sorted(k for k in settings.keys() | saved.keys() if settings.get(k) != saved.get(k))
        if changed:
            raise ValueError(f"--resume: the interrupted run at {part} used other settings ("
                             + "; ".join(f"{k}: {saved.get(k)!r} then, {settings.get(k)!r} now" for k in changed)
                             + "); rerun with the same settings, or pass --force without --resume to start over")
        return part, True
    if part.exists():
        if not force:
            raise FileExistsError(f"an interrupted run of {out} is at {part}; pass --resume to continue it, "
                                  "or --force to discard it and start over")
        shutil.rmtree(part)
    part.mkdir(parents=True)
    write_json(part / RUN_FILE, settings)
    return part, False


def finish_run(part: Path, out: Path) -> None:
    """Drop the resume bookkeeping and rename the completed run to `out` (replacing an existing `out`,
    which the caller allowed)."""
    from .io_utils import replace_dir
    shutil.rmtree(part / ALLOCATION_DIR, ignore_errors=True)
    for f in (ALLOCATION_INFO, RUN_FILE):
        (part / f).unlink(missing_ok=True)
    replace_dir(part, Path(out))


# ---------------------------------------------------------------- the allocation, computed once

def save_allocation(part: Path, allocation) -> None:
    from .checkpoint import save_masks
    write_json(part / ALLOCATION_INFO, allocation.info)
    save_masks(part / ALLOCATION_DIR, {}, allocation.dist)  # orbax: float64 per-row vectors stay exact


def load_allocation(part: Path):
    """The saved Allocation of an interrupted run, or None. (DSnoT's refine is rebuilt by the caller.)"""
    from .allocation import Allocation
    from .checkpoint import load_distribution
    if not (part / ALLOCATION_DIR).exists() or not (part / ALLOCATION_INFO).exists():
        return None
    return Allocation(load_distribution(part / ALLOCATION_DIR), json.loads((part / ALLOCATION_INFO).read_text()))


# ---------------------------------------------------------------- the pass

def streamed_prune(cfg, params, windows, dist, method, structure, batch_size, refine, progress, part: Path,
                   dtype) -> dict:
    """Prune block by block into `part` (shards + per-block masks); returns the sparsity summary.
    Blocks an earlier run finished are read back instead of pruned again."""
    from converters.stream import ShardWriter

    from .checkpoint import block_dir, load_masks, save_masks
    from .pruning import layer_sparsities, prune_blocks, summarize_sparsity

    writer = ShardWriter(part, cfg)
    masks_dir = part / "masks"

    def restore(b):
        done = block_dir(masks_dir, b)
        if done.exists() and writer.has_block(b):
            return writer.read_block(b, dtype), load_masks(done)
        return None

    layer, sizes = {}, {}
    for b, p_new, m in prune_blocks(cfg, params, windows, dist, method, structure, batch_size, refine, progress,
                                    restore):
        if not block_dir(masks_dir, b).exists():
            writer.write_block(b, p_new)
            save_masks(block_dir(masks_dir, b), m, {k: dist[k] for k in m})
        frac, n = layer_sparsities(m)
        layer.update(frac), sizes.update(n)
    writer.write_top(params)
    writer.finish(np.dtype(params["embed"]["weight"].dtype).name)
    return summarize_sparsity(cfg, layer, sizes)


def reopen_pruned(cfg, params: dict, part: Path, dtype) -> dict:
    """The pruned model in `part` as params with lazily read blocks (for evaluation)."""
    from converters.stream import LazyBlocks, ShardWriter
    writer = ShardWriter(part, cfg)
    return {**{k: v for k, v in params.items() if k != "blocks"},
            "blocks": LazyBlocks(cfg, lambda b: writer.read_block(b, dtype))}
