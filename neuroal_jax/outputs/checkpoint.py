"""Masks and sparsity distributions as an orbax checkpoint.

One orbax PyTree checkpoint (folder `masks/` of a prune output folder) holds

    {"masks": {"<block>.<module>": bool[out, in]  (True = kept)},
     "dist":  {"<block>.<module>": float (one sparsity for the layer) | float64[out] (per row)},
     "format_version": 1}

A block-streamed prune (`stream=True`) writes the same tree once per block, as `masks/block-00000/`,
`masks/block-00001/`, ... (each is also the run's resume point); the readers below merge them.

Bool masks are stored as they are; orbax's compression brings a random 50% mask to about
1.6 bits per weight. Everything comes back as NumPy on the host.

    from neuroal_jax import load_masks
    masks = load_masks("runs/llama-wanda-50")          # the prune output folder, or its masks/
    sparsity = 1 - masks["3.mlp.down_proj"].mean()
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..runtime import signals_deferred

FORMAT_VERSION = 1
MASKS_DIR = "masks"


def _checkpointer():
    """A PyTree checkpointer of this process alone: in a multi-process run only process 0 writes (api.writes_outputs),
    without waiting at orbax's cross-process barriers for processes that do not."""
    import jax
    import orbax.checkpoint as ocp
    me = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(), active_processes={jax.process_index()})
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(multiprocessing_options=me), multiprocessing_options=me)


def _host_dist_value(v):
    """A layer's target: a Python float, or a float64 vector of per-row sparsities."""
    return float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64)


def save_masks(directory: str | os.PathLike, masks: dict, dist: dict | None = None) -> Path:
    """Write masks (bool [out, in], True = kept) and the sparsity distribution to a new orbax checkpoint."""
    directory = Path(directory).absolute()
    if directory.exists():
        raise FileExistsError(f"{directory} already exists")
    tree = {"masks": {k: np.asarray(m, dtype=bool) for k, m in masks.items()},
            "dist": {k: _host_dist_value(v) for k, v in (dist or {}).items()},
            "format_version": FORMAT_VERSION}
    with signals_deferred():  # a stop signal waits for orbax's writer threads, which would outlive the cleanup
        _checkpointer().save(directory, tree)
    return directory


def block_dir(directory: str | os.PathLike, b: int) -> Path:
    return Path(directory) / f"block-{b:05d}"


def _is_checkpoint(d: Path) -> bool:
    return (d / "_METADATA").exists() or (d / "_CHECKPOINT_METADATA").exists()


def _block_checkpoints(d: Path) -> list[Path]:
    """Finished per-block checkpoints (orbax's temporary folders have a suffix and are skipped)."""
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("block-[0-9]*") if re.fullmatch(r"block-\d{5}", p.name) and _is_checkpoint(p))


def _resolve(directory: str | os.PathLike) -> list[Path]:
    """The checkpoint folder(s) of a masks checkpoint, a per-block one, or a prune output folder."""
    d = Path(directory).absolute()
    for cand in (d / MASKS_DIR, d):
        if _is_checkpoint(cand):
            return [cand]
        if blocks := _block_checkpoints(cand):
            return blocks
    if (d / MASKS_DIR).is_dir():
        raise FileNotFoundError(f"{d / MASKS_DIR} holds no masks checkpoint (no orbax metadata, no finished "
                                "block-NNNNN/): it is empty or was not written by neuroal-jax")
    if not d.is_dir():
        raise FileNotFoundError(f"{directory}: no such masks checkpoint")
    raise FileNotFoundError(f"{directory} is not a masks checkpoint (no orbax metadata, no masks/ inside)")


def _restore_one(directory: Path) -> dict:
    try:
        _check_manifests(directory)
        tree = _checkpointer().restore(directory)
    except Exception as e:  # orbax's and tensorstore's errors of a damaged folder (their texts are whole specs)
        what = type(e).__name__
    else:
        what = None
    if what is not None:
        _drop_failed_reads()
        raise UsageError(f"{directory} is a corrupt masks checkpoint ({what} while reading it); write it again with "
                         "the run that made it")
    version = int(tree.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise UsageError(f"{directory}: masks format version {version} is newer than this neuroal_jax "
                         f"reads ({FORMAT_VERSION})")
    return tree


def _check_manifests(directory: Path) -> None:
    """Read the checkpoint's OCDBT manifests with one synchronous tensorstore call each: a damaged one fails here,
    before orbax's concurrent reads, whose threads would go on calling into a closed event loop (and print)."""
    import tensorstore as ts
    for manifest in sorted(directory.rglob("manifest.ocdbt")):
        ts.KvStore.open({"driver": "ocdbt", "base": f"file://{manifest.parent.absolute()}"}).result().list().result()


def _drop_failed_reads() -> None:
    """Collect the read tasks of a failed restore now, without asyncio's "Task exception was never retrieved" log
    for each (they failed with the error already reported; left to the interpreter's exit they print pages)."""
    import gc
    import logging

    class Quiet(logging.Filter):
        def filter(self, record):
            return False
    log, quiet = logging.getLogger("asyncio"), Quiet()
    log.addFilter(quiet)
    try:
        gc.collect()
    finally:
        log.removeFilter(quiet)


def _restore(directory) -> dict:
    merged = {"masks": {}, "dist": {}}
    for d in _resolve(directory):
        tree = _restore_one(d)
        merged["masks"].update(tree.get("masks", {}))
        merged["dist"].update(tree.get("dist") or {})
    return merged


def load_masks(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """{"<block>.<module>": bool np.ndarray (out, in)}, True = kept."""
    return {k: np.asarray(v, dtype=bool) for k, v in _restore(directory)["masks"].items()}


def load_distribution(directory: str | os.PathLike) -> dict:
    """{"<block>.<module>": float | float64 np.ndarray (out,)}: the target sparsities the pruning used."""
    return {k: _host_dist_value(v) for k, v in _restore(directory).get("dist", {}).items()}
