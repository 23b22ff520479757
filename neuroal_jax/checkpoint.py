"""Masks and sparsity distributions as an orbax checkpoint.

One orbax PyTree checkpoint (folder `masks/` of a prune output folder) holds

    {"masks": {"<block>.<module>": bool[out, in]  (True = kept)},
     "dist":  {"<block>.<module>": float (one sparsity for the layer) | float64[out] (per row)},
     "format_version": 1}

Bool masks are stored as they are; orbax's compression brings a random 50% mask to about
1.6 bits per weight. Everything comes back as NumPy on the host.

    from neuroal_jax import load_masks
    masks = load_masks("runs/llama-wanda-50")          # the prune output folder, or its masks/
    sparsity = 1 - masks["3.mlp.down_proj"].mean()
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
MASKS_DIR = "masks"


def _checkpointer():
    import orbax.checkpoint as ocp
    return ocp.PyTreeCheckpointer()


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
    _checkpointer().save(directory, tree)
    return directory


def _resolve(directory: str | os.PathLike) -> Path:
    """Accept the checkpoint folder itself or a prune output folder that holds `masks/`."""
    d = Path(directory).absolute()
    if (d / MASKS_DIR / "_METADATA").exists() or (d / MASKS_DIR / "_CHECKPOINT_METADATA").exists():
        return d / MASKS_DIR
    if not d.is_dir():
        raise FileNotFoundError(f"{directory}: no such masks checkpoint")
    if not ((d / "_METADATA").exists() or (d / "_CHECKPOINT_METADATA").exists()):
        raise FileNotFoundError(f"{directory} is not a masks checkpoint (no orbax metadata, no masks/ inside)")
    return d


def _restore(directory) -> dict:
    tree = _checkpointer().restore(_resolve(directory))
    version = int(tree.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise ValueError(f"{directory}: masks format version {version} is newer than this neuroal_jax "
                         f"reads ({FORMAT_VERSION})")
    return tree


def load_masks(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """{"<block>.<module>": bool np.ndarray (out, in)}, True = kept."""
    return {k: np.asarray(v, dtype=bool) for k, v in _restore(directory)["masks"].items()}


def load_distribution(directory: str | os.PathLike) -> dict:
    """{"<block>.<module>": float | float64 np.ndarray (out,)}: the target sparsities the pruning used."""
    return {k: _host_dist_value(v) for k, v in _restore(directory).get("dist", {}).items()}
