"""Reading the reference fixture (tests/fixtures/tiny-llama, produced by the NeuroAL reference code).

The fixture keys layers "<module>-<block>" and stores masks with True = pruned; we use
"<block>.<module>" and True = kept.
"""
from __future__ import annotations

import ast
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent / "fixtures" / "tiny-llama"


def our_key(ref_key: str) -> str:
    name, block = ref_key.rsplit("-", 1)
    return f"{block}.{name}"


def _literal(v):
    return ast.literal_eval(v) if isinstance(v, str) and v[:1] in "[{(" else v


@lru_cache(maxsize=None)
def case(method: str, variant: str) -> tuple[dict, dict]:
    """(json fields with stringified containers parsed, npz arrays)."""
    stem = f"{method}_s0.70_{variant}"
    meta = {k: _literal(v) for k, v in json.loads((ROOT / f"{stem}.json").read_text()).items()}
    arrays = dict(np.load(ROOT / f"{stem}.npz"))
    return meta, arrays


def kept_masks(arrays: dict) -> dict:
    return {our_key(k[len("mask/"):]): ~v for k, v in arrays.items() if k.startswith("mask/")}


def distribution(arrays: dict, meta: dict) -> dict:
    """The sparsity the reference's final pruning used, per layer (scalar or per-row)."""
    dist = {our_key(k): v for k, v in meta["dist_scalar"].items() if v is not None}
    # one-element vectors are the block step's scalars
    dist.update({our_key(k[len("dist/"):]): (float(v[0]) if v.shape == (1,) else v)
                 for k, v in arrays.items() if k.startswith("dist/")})
    return dist


def calib_tokens() -> np.ndarray:
    return np.load(ROOT / "calib_tokens.npy").astype(np.int32)


def model_dir() -> Path:
    return ROOT / "model"
